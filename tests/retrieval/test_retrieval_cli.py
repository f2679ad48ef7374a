"""`ragtune index`, `ragtune retrieve` and `ragtune eval-retrieval` end to end through ragtune.cli.main."""

import json
import re

from ragtune.cli import main


def test_index_retrieve_and_eval_retrieval(small_corpus, squad_file, tmp_path, capsys):
    out = tmp_path / "index"
    assert main(["index", str(small_corpus), str(squad_file), "--out", str(out), "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"indexed 11 documents as 11 passages \(0 duplicates removed\) in [\d.]+ s: {re.escape(str(out))} "
                        r"\(bm25, 11 passages in all\)", line), line

    assert main(["retrieve", str(out), "capital of France", "绿茶", "-k", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {"id", "doc_id", "score", "text", "source"} <= set(lines[0])
    first = [x for x in lines if x["query"] == "capital of France"]
    assert first[0]["rank"] == 1 and first[0]["text"] == "Paris capital of France."
    assert first[0]["source"] == str(small_corpus / "kg.tsv") and first[0]["score"] > 0
    assert [x for x in lines if x["query"] == "绿茶"][0]["doc_id"] == "tea"

    assert main(["eval-retrieval", str(out), "--questions", str(squad_file), "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"recall@1", "recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@10", "n_questions"}
    assert metrics["n_questions"] == 4 and metrics["recall@1"] == 1.0
    assert main(["eval-retrieval", str(out), "--questions", str(squad_file), "-k", "3", "--quiet"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"recall@3", "mrr@10", "ndcg@10", "n_questions"}


def test_dense_hybrid_and_add_through_the_cli(tiny_encoder, small_corpus, tmp_path, capsys):
    out = tmp_path / "index"
    assert main(["index", str(small_corpus), "--out", str(out), "--kind", "hybrid", "--encoder", str(tiny_encoder),
                 "--faiss", "hnsw", "--chunk-tokens", "6", "--chunk-overlap", "2", "--batch-size", "4", "--quiet"]) == 0
    assert "(hybrid, " in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["faiss_index"] == "hnsw" and manifest["chunking"]["chunk_tokens"] == 6
    assert manifest["encoder"] == str(tiny_encoder)
    extra = tmp_path / "extra.txt"
    extra.write_text("Volcanoes erupt lava.", encoding="utf-8")
    assert main(["index", str(extra), "--out", str(out), "--add", "--quiet"]) == 0
    assert re.match(r"added 1 documents as 1 passages \(0 duplicates removed\)", capsys.readouterr().out)
    assert main(["retrieve", str(out), "volcanoes erupt lava", "-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["doc_id"] == "extra"


def test_user_errors_exit_2(small_corpus, tmp_path, capsys):
    out = tmp_path / "index"
    assert main(["index", str(small_corpus), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["index", str(small_corpus), "--out", str(out), "--quiet"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["retrieve", str(out), "cats", "-k", "100"]) == 2
    assert "k=100 is larger than the number of passages in the index" in capsys.readouterr().err
    assert main(["retrieve", str(tmp_path / "nowhere"), "cats"]) == 2
    assert "index folder not found" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "missing"), "--out", str(tmp_path / "i2"), "--quiet"]) == 2
    assert "corpus path not found" in capsys.readouterr().err
    assert main(["index", str(small_corpus), "--out", str(out), "--add", "--overwrite"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["index", str(small_corpus), "--out", str(out), "--add", "--kind", "dense", "--chunk-tokens", "64"]) == 2
    assert "--add keeps the settings the index was built with; leave out --kind, --chunk-tokens" in capsys.readouterr().err
    (out / "passages.jsonl").write_text("{}\n", encoding="utf-8")
    assert main(["retrieve", str(out), "cats"]) == 2
    assert "passages.jsonl was changed or corrupted" in capsys.readouterr().err
