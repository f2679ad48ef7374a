"""The HTTP service on a QA run (/v1/answer, /v1/retrieve) and on a bare index folder (/v1/retrieve)."""

import json

import pytest
import yaml
from fastapi.testclient import TestClient

from ragtune.cli import main
from ragtune.tasks.qa.predictor import QAPredictor
from ragtune.serve.app import create_app
from ragtune.serve.service import load_service


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, tiny_reader_folder):
    from qa_fixtures import make_people_squad

    root = tmp_path_factory.mktemp("qa_serve")
    (root / "squad.json").write_text(json.dumps(make_people_squad()), encoding="utf-8")
    cfg = {
        "task": "qa",
        "data": {"train": "squad.json", "validation_fraction": 0.2, "test_fraction": 0.2},
        "model": {"backbone": "hf", "name_or_path": str(tiny_reader_folder), "max_length": 48, "doc_stride": 8},
        "retrieval": {"corpus": ["squad.json"], "kind": "bm25", "top_k": 2, "chunk_tokens": 16, "chunk_overlap": 4},
        "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1, "batch_size": 8, "seed": 0, "threads": 1},
        "serve": {"max_k": 3},
    }
    (root / "qa.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["run", str(root / "qa.yaml"), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def test_answer_is_the_qa_predictor(qa_run):
    questions = ["who lives in paris ?", "who owns a red car ?"]
    expected = QAPredictor.from_run_dir(qa_run).answer(questions)
    with TestClient(create_app(load_service(qa_run))) as c:
        health = c.get("/healthz").json()
        assert health["task"] == "qa" and health["endpoints"] == ["/v1/answer", "/v1/retrieve"] and health["device"] == "cpu"
        got = c.post("/v1/answer", json={"questions": questions})
        assert got.status_code == 200, got.text
        answers = got.json()["answers"]
        assert [a["answer"] for a in answers] == [e["answer"] for e in expected]
        assert [p["id"] for p in answers[0]["passages"]] == [p["id"] for p in expected[0]["passages"]]
        assert "/" not in answers[0]["passages"][0]["source"]  # the file name only, no path
        # one context per question instead of retrieval
        read = c.post("/v1/answer", json={"questions": ["who lives in rome ?"], "contexts": ["bob lives in rome ."]})
        assert read.status_code == 200 and "passages" not in read.json()["answers"][0]
        bad = c.post("/v1/answer", json={"questions": ["a", "b"], "contexts": ["only one"]})
        assert bad.status_code == 422 and "give one context per question" in bad.json()["detail"]
        raw = b'{"questions": ["who ?"], "contexts": ["\\ud800 lives here"]}'  # a lone surrogate: legal JSON
        lone = c.post("/v1/answer", content=raw, headers={"Content-Type": "application/json"})
        assert lone.status_code == 422 and lone.json()["detail"] == "contexts[0]: not valid Unicode text (a lone surrogate)"
        # retrieval from the run's index
        hits = c.post("/v1/retrieve", json={"queries": ["who lives in paris ?"], "k": 3}).json()["results"]
        assert len(hits) == 1 and len(hits[0]) == 3
        over = c.post("/v1/retrieve", json={"queries": ["x"], "k": 4})
        assert over.status_code == 422 and "give 1 to 3" in over.json()["detail"]
        assert c.post("/v1/predict", json={"texts": ["x"]}).status_code == 404


def test_an_index_folder_serves_retrieval(tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The Broncos won Super Bowl 50 in Santa Clara.", encoding="utf-8")
    (corpus / "b.txt").write_text("长江是中国最长的河流，流经上海。", encoding="utf-8")
    (corpus / "c.txt").write_text("Paris is the capital of France.", encoding="utf-8")
    assert main(["index", str(corpus), "--out", str(tmp_path / "index"), "--kind", "bm25", "--quiet"]) == 0
    with TestClient(create_app(load_service(tmp_path / "index"))) as c:
        assert c.get("/healthz").json()["endpoints"] == ["/v1/retrieve"]
        got = c.post("/v1/retrieve", json={"queries": ["Super Bowl", "长江 河流"], "k": 1}).json()["results"]
        assert "Broncos" in got[0][0]["text"] and "长江" in got[1][0]["text"]
        assert got[0][0]["source"] == "a.txt"
        assert c.post("/v1/retrieve", json={"queries": []}).status_code == 422
    with pytest.raises(Exception, match="index folder"):
        load_service(tmp_path / "index", engine="onnx")
