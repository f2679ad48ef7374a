"""evaluate_retrieval on SQuAD-format questions: gold found by content, ranks per document, hand-computed values."""

import copy
import json

import pytest

from ragtune.errors import RagtuneError
from ragtune.retrieval import build_index, evaluate_retrieval, load_index

KEYS = {"recall@1", "recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@10", "n_questions"}


def test_squad_file_indexed_as_is(squad_file, tmp_path):
    index = load_index(build_index([squad_file], tmp_path / "index", progress=False))
    metrics = evaluate_retrieval(index, squad_file)
    assert set(metrics) == KEYS
    assert metrics["n_questions"] == 4  # the unanswerable question is skipped
    assert metrics["recall@1"] == 1.0 and metrics["mrr@10"] == 1.0 and metrics["ndcg@10"] == 1.0


def test_gold_is_matched_by_content_with_chunking(squad_data, tmp_path):
    paragraphs = [p for article in squad_data["data"] for p in article["paragraphs"]]
    # the corpus holds three of the four paragraphs, under other ids and without titles
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"x{i}", "text": p["context"]}, ensure_ascii=False)
                                for i, p in enumerate(paragraphs) if i != 2), encoding="utf-8")
    questions = copy.deepcopy(squad_data)
    # a question about paragraph 0 that shares no word with any passage: BM25 finds nothing
    questions["data"][0]["paragraphs"][0]["qas"].append(
        {"id": "q6", "question": "Which zebra plays the xylophone?", "answers": [{"text": "none", "answer_start": 0}]})
    questions_file = tmp_path / "questions.json"
    questions_file.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    out = build_index([corpus], tmp_path / "index", chunk_tokens=8, chunk_overlap=2, progress=False)
    index = load_index(out)
    assert len(index) > 3 and max(p["id"].count("::") for p in index.passages) == 1
    assert {p["doc_id"] for p in index.passages} == {"x0", "x1", "x3"}
    metrics = evaluate_retrieval(index, questions_file, ks=(1, 2))
    # scored: q1, q2, q4 (found at rank 1) and q6 (never found); q3's paragraph is not in the index
    assert metrics == {"recall@1": 0.75, "recall@2": 0.75, "mrr@10": 0.75, "ndcg@10": 0.75, "n_questions": 4}


def test_question_files_that_cannot_be_scored(squad_data, squad_file, tmp_path):
    index = load_index(build_index([squad_file], tmp_path / "index", progress=False))
    no_questions = copy.deepcopy(squad_data)
    for article in no_questions["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = []
    path = tmp_path / "no_questions.json"
    path.write_text(json.dumps(no_questions), encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"no_questions.json: no answerable questions"):
        evaluate_retrieval(index, path)
    elsewhere = {"data": [{"title": "Other", "paragraphs": [
        {"context": "A paragraph that was never indexed.",
         "qas": [{"id": "z", "question": "What was never indexed?", "answers": [{"text": "A paragraph"}]}]}]}]}
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(elsewhere), encoding="utf-8")
    with pytest.raises(RagtuneError, match="none of the 1 questions of .*elsewhere.json has its paragraph in the index"):
        evaluate_retrieval(index, path)
    with pytest.raises(RagtuneError, match="SQuAD file not found"):
        evaluate_retrieval(index, tmp_path / "missing.json")
