"""The index folder: build (all formats), manifest and checksums, load checks, search, add_to_index."""

import json

import numpy as np
import pytest

from ragtune.errors import RagtuneError
from ragtune.retrieval import add_to_index, build_index, load_index
from ragtune.retrieval.manifest import sha256_file


def _build(paths, out, **options):
    options.setdefault("progress", False)
    return build_index(paths, out, **options)


def test_bm25_index_of_every_format(small_corpus, squad_file, tmp_path):
    out = _build([small_corpus, squad_file], tmp_path / "index")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "passages.jsonl" in files and "manifest.json" in files and any(f.startswith("bm25/") for f in files)
    assert "embeddings.npy" not in files and "faiss.index" not in files
    records = [json.loads(line) for line in (out / "passages.jsonl").read_text(encoding="utf-8").splitlines()]
    assert set(records[0]) == {"id", "doc_id", "title", "text", "source", "doc_sha1"}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "bm25" and manifest["passages"] == len(records) == 11 and manifest["documents"] == 11
    assert manifest["chunking"]["chunk_tokens"] == 128 and manifest["chunking"]["chunk_overlap"] == 32
    assert manifest["encoder"] is None and manifest["faiss_index"] is None
    assert {"ragtune", "bm25s", "faiss-cpu", "sentence-transformers", "jieba"} <= set(manifest["versions"])
    assert manifest["files"]["passages.jsonl"] == sha256_file(out / "passages.jsonl")
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    assert [i["sha256"] for i in manifest["inputs"]][-1] == sha256_file(squad_file)
    assert len(manifest["corpus_sha256"]) == 64

    index = load_index(out)
    assert index.search("capital of France", k=1)[0].text == "Paris capital of France."
    assert index.search("绿茶的历史", k=1)[0].doc_id == "tea"
    assert index.search("Where is the volcano Etna", k=1)[0].id == "Mount_Etna#p0::0"
    assert index.search("长城 军事 工程", k=1)[0].doc_id == "Great_Wall#p0"
    hit = index.search("knead dough bread", k=1)[0]
    assert hit.doc_id == "guide" and hit.source == str(small_corpus / "guide.md") and hit.score > 0


def test_chunking_settings_reach_the_passages(tmp_path):
    (tmp_path / "long.txt").write_text(" ".join(f"word{i}" for i in range(10)), encoding="utf-8")
    out = _build([tmp_path / "long.txt"], tmp_path / "index", chunk_tokens=4, chunk_overlap=1)
    index = load_index(out)
    assert [p["id"] for p in index.passages] == ["long::0", "long::1", "long::2"]
    assert [p["text"] for p in index.passages] == ["word0 word1 word2 word3", "word3 word4 word5 word6",
                                                   "word6 word7 word8 word9"]
    assert {p["doc_id"] for p in index.passages} == {"long"}
    assert index.search("word5", k=1)[0].id == "long::1"


def test_duplicates_are_removed_and_counted(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("The same sentence in two files.", encoding="utf-8")
    (tmp_path / "c.txt").write_text("Another sentence.", encoding="utf-8")
    manifest = json.loads((_build([tmp_path], tmp_path / "index") / "manifest.json").read_text())
    assert manifest["passages"] == 2
    assert manifest["history"][-1]["duplicates_removed"] == 1 and manifest["history"][-1]["passages_added"] == 2


def test_empty_corpus_and_bad_options(tmp_path):
    (tmp_path / "blank.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "empty.md").write_text("", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"the corpus is empty: .*blank.txt, .*empty.md hold no text"):
        _build([tmp_path / "blank.txt", tmp_path / "empty.md"], tmp_path / "index")
    assert not (tmp_path / "index").exists()
    (tmp_path / "ok.txt").write_text("text", encoding="utf-8")
    with pytest.raises(RagtuneError, match="index kind: unknown 'sparse'; choose one of bm25, dense, hybrid"):
        _build([tmp_path / "ok.txt"], tmp_path / "index", kind="sparse")
    with pytest.raises(RagtuneError, match="faiss index: unknown 'ivf'; choose one of flat, hnsw, ivfpq"):
        _build([tmp_path / "ok.txt"], tmp_path / "index", kind="dense", faiss_index="ivf")


def test_existing_index_is_refused_without_overwrite_and_kept_on_failure(tmp_path):
    (tmp_path / "a.txt").write_text("apples and pears", encoding="utf-8")
    out = _build([tmp_path / "a.txt"], tmp_path / "index")
    before = (out / "manifest.json").read_text()
    with pytest.raises(RagtuneError, match="exists and is not empty; choose another folder, add --overwrite"):
        _build([tmp_path / "a.txt"], out)
    (tmp_path / "blank.txt").write_text(" ", encoding="utf-8")
    with pytest.raises(RagtuneError, match="the corpus is empty"):
        _build([tmp_path / "blank.txt"], out, overwrite=True)
    assert (out / "manifest.json").read_text() == before  # a failed rebuild leaves the old index alone
    (tmp_path / "b.txt").write_text("bananas", encoding="utf-8")
    _build([tmp_path / "b.txt"], out, overwrite=True)
    assert load_index(out).search("bananas", k=1)[0].doc_id == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "blank.txt", "index"]  # no temp folders
    # an index inside the corpus folder is not read as corpus (its passages.jsonl, manifest.json)
    inner = _build([tmp_path], tmp_path / "index2")
    assert {p["doc_id"] for p in load_index(inner).passages} == {"a", "b"}


@pytest.mark.parametrize("target", ["passages.jsonl", "bm25/vocab.index.json", "embeddings.npy", "faiss.index"])
def test_an_edited_file_is_detected(tiny_encoder, small_corpus, tmp_path, target):
    out = _build([small_corpus], tmp_path / "index", kind="hybrid", encoder=str(tiny_encoder))
    load_index(out)  # fine before the edit
    path = out / target
    if target == "passages.jsonl":  # still valid JSON lines, one passage text changed
        path.write_text(path.read_text(encoding="utf-8").replace("Cats sleep", "Dogs sleep"), encoding="utf-8")
    elif target == "embeddings.npy":
        embeddings = np.load(path)
        embeddings[0, 0] += 0.5
        np.save(path, embeddings)
    else:
        path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(RagtuneError, match=rf"index file .*{target} was changed or corrupted.*rebuild the index"):
        load_index(out)
    path.unlink()
    with pytest.raises(RagtuneError, match=rf"index file .*{target} is missing"):
        load_index(out)


def test_not_an_index(tmp_path):
    with pytest.raises(RagtuneError, match="is not a ragtune index folder \\(no manifest.json\\)"):
        load_index(tmp_path)
    with pytest.raises(RagtuneError, match="index folder not found"):
        load_index(tmp_path / "missing")


def test_encoder_mismatch_and_k_too_large(tiny_encoder, other_encoder, small_corpus, tmp_path):
    out = _build([small_corpus], tmp_path / "index", kind="dense", encoder=str(tiny_encoder))
    with pytest.raises(RagtuneError, match=r"built with encoder '.*tiny_encoder.*st'.*but encoder '.*other_encoder.*st' "
                                           r"was asked for"):
        load_index(out, expected_encoder=str(other_encoder))
    index = load_index(out, expected_encoder=str(tiny_encoder))
    assert len(index) == 7
    with pytest.raises(RagtuneError, match=r"k=8 is larger than the number of passages in the index .* \(7\)"):
        index.search("cats", k=8)
    assert len(index.search("cats", k=7)) == 7
    # a bm25 index has no encoder: expected_encoder does not apply
    bm25 = _build([small_corpus], tmp_path / "bm25_index")
    assert load_index(bm25, expected_encoder=str(other_encoder)).kind == "bm25"


def test_hybrid_fuses_both_retrievers(tiny_encoder, small_corpus, tmp_path):
    out = _build([small_corpus], tmp_path / "index", kind="hybrid", encoder=str(tiny_encoder), faiss_index="flat")
    index = load_index(out)
    hits = index.search("Iron rusts when exposed to water and oxygen.", k=3)
    assert hits[0].doc_id == "n1"  # first for BM25 and (same text) for the dense side
    assert hits[0].score == pytest.approx(2 / 61)  # RRF: rank 1 in both lists
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.id for h in hits}) == 3


def test_add_to_index(tiny_encoder, small_corpus, tmp_path):
    out = _build([small_corpus], tmp_path / "index", kind="hybrid", encoder=str(tiny_encoder))
    old_embeddings = np.load(out / "embeddings.npy")
    new = tmp_path / "new"
    new.mkdir()
    (new / "volcano.txt").write_text("Volcanoes erupt molten lava and ash.", encoding="utf-8")
    (new / "copy.txt").write_text("Cats sleep most of the day and purr when they are happy.\n", encoding="utf-8")
    add_to_index(out, [new], progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passages"] == 8 and manifest["documents"] == 8  # copy.txt: only a duplicate passage
    assert [h["action"] for h in manifest["history"]] == ["build", "add"]
    assert manifest["history"][-1]["passages_added"] == 1 and manifest["history"][-1]["duplicates_removed"] == 1
    assert len(manifest["inputs"]) == 7 and manifest["inputs"][-1]["path"].endswith("volcano.txt")
    index = load_index(out)
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.shape == (8, 32) and np.array_equal(embeddings[:7], old_embeddings)  # old rows untouched
    assert index.passages[-1]["id"] == "volcano::0"
    assert index.search("volcanoes erupt lava", k=1)[0].doc_id == "volcano"
    assert index._dense(["Volcanoes erupt molten lava and ash."], 1)[0][0][0] == 7
    with pytest.raises(RagtuneError, match="volcano.txt is already in the index"):
        add_to_index(out, [new / "volcano.txt"], progress=False)
    (tmp_path / "blank.txt").write_text("", encoding="utf-8")
    with pytest.raises(RagtuneError, match="nothing to add: .*blank.txt hold no text"):
        add_to_index(out, [tmp_path / "blank.txt"], progress=False)
    # only duplicates: nothing new, but not an error; the files are recorded
    (tmp_path / "again.md").write_text("Volcanoes erupt molten lava and ash.", encoding="utf-8")
    add_to_index(out, [tmp_path / "again.md"], progress=False)
    manifest = load_index(out).manifest
    assert manifest["passages"] == 8 and manifest["history"][-1]["passages_added"] == 0
    assert manifest["inputs"][-1]["path"].endswith("again.md")


@pytest.mark.parametrize("faiss_kind", ["flat", "ivfpq"])
def test_building_in_two_steps_equals_building_at_once(tiny_encoder, tmp_path, faiss_kind):
    """build(A) + add(B) gives the passages, BM25 scores and vectors of build(A, B)."""
    words = ["market", "bank", "goal", "team", "film", "music", "rain", "river", "北京", "大学"]
    rng = np.random.default_rng(0)
    for name, n in (("a.jsonl", 260), ("b.jsonl", 120)):
        lines = [json.dumps({"text": " ".join(rng.choice(words, 8)) + f" {name} {i}"}, ensure_ascii=False)
                 for i in range(n)]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    once = _build([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "once", kind="hybrid",
                  encoder=str(tiny_encoder), faiss_index=faiss_kind)
    twice = _build([tmp_path / "a.jsonl"], tmp_path / "twice", kind="hybrid", encoder=str(tiny_encoder),
                   faiss_index=faiss_kind)
    add_to_index(twice, [tmp_path / "b.jsonl"], progress=False)
    assert (once / "passages.jsonl").read_bytes() == (twice / "passages.jsonl").read_bytes()
    assert np.allclose(np.load(once / "embeddings.npy"), np.load(twice / "embeddings.npy"), atol=1e-6)
    a, b = load_index(once), load_index(twice)
    for query in ["market bank", "北京 大学 river", "team film 7"]:
        assert a._bm25([query], 10) == b._bm25([query], 10)
        if faiss_kind == "flat":
            assert [r for r, _ in a._dense([query], 10)[0]] == [r for r, _ in b._dense([query], 10)[0]]


def test_a_large_index_reads_its_passages_on_demand(tiny_encoder, small_corpus, squad_file, tmp_path, monkeypatch):
    """Above PASSAGES_IN_MEMORY_BYTES the passages are read row by row and BM25 is memory-mapped:
    same hits, same records."""
    from ragtune.retrieval import corpus
    from ragtune.retrieval.corpus import PassageTable

    out = _build([small_corpus, squad_file], tmp_path / "index", kind="hybrid", encoder=str(tiny_encoder))
    in_memory = load_index(out)
    assert isinstance(in_memory.passages, list)
    monkeypatch.setattr(corpus, "PASSAGES_IN_MEMORY_BYTES", 0)
    lazy = load_index(out)
    assert isinstance(lazy.passages, PassageTable)
    assert len(lazy.passages) == len(in_memory.passages) == len(lazy)
    assert list(lazy.passages) == in_memory.passages
    assert lazy.passages[-1] == in_memory.passages[-1] and lazy.passages[1:3] == in_memory.passages[1:3]
    with pytest.raises(IndexError):
        lazy.passages[len(lazy)]
    for query in ["Where is the volcano Etna?", "长城", "capital of France"]:
        assert [h.to_dict() for h in lazy.search(query, k=4)] == [h.to_dict() for h in in_memory.search(query, k=4)]
