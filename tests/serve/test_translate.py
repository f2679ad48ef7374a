"""/v1/translate on a tiny translation run: the same outputs as Seq2SeqPredictor, decoding options, limits."""

import pytest
from fastapi.testclient import TestClient
from tasks.translation.test_recipe import make_pairs, tiny_config, write_files

from ragtune.cli import main
from ragtune.tasks.translation.predictor import Seq2SeqPredictor
from ragtune.serve.app import create_app
from ragtune.serve.service import load_service


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_translation")
    train = write_files(folder, "train", make_pairs(300, seed=0))
    test = write_files(folder, "test", make_pairs(30, seed=1))
    config = tiny_config(folder, train, test=test, epochs=4, serve__max_texts_per_request=3)
    assert main(["run", config, "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def test_translate_is_the_predictor(translation_run):
    texts = ["red cat runs", "big dog sees small bird"]
    predictor = Seq2SeqPredictor.from_run_dir(translation_run)
    with TestClient(create_app(load_service(translation_run))) as c:
        health = c.get("/healthz").json()
        assert health["task"] == "translation" and health["endpoints"] == ["/v1/translate"]
        got = c.post("/v1/translate", json={"texts": texts})
        assert got.status_code == 200, got.text
        assert got.json()["translations"] == predictor.generate(texts)
        beam = c.post("/v1/translate", json={"texts": texts, "strategy": "beam", "beam_size": 3}).json()
        assert beam["translations"] == predictor.generate(texts, strategy="beam", beam_size=3)
        one = c.post("/v1/translate", json={"texts": texts[:1], "strategy": "sample", "seed": 7, "max_new_tokens": 2})
        assert one.json()["translations"] == predictor.generate(texts[:1], strategy="sample", seed=7, max_new_tokens=2)
        assert len(one.json()["translations"][0]["output"].split()) <= 2
        # limits and bad options
        assert c.post("/v1/translate", json={"texts": ["a"] * 4}).status_code == 413  # serve.max_texts_per_request: 3
        lone = c.post("/v1/translate", content=b'{"texts": ["a", "\\udc00"]}', headers={"Content-Type": "application/json"})
        assert lone.status_code == 422 and lone.json()["detail"] == "texts[1]: not valid Unicode text (a lone surrogate)"
        bad = c.post("/v1/translate", json={"texts": ["a"], "strategy": "nucleus"})
        assert bad.status_code == 422 and "strategy" in bad.json()["detail"]
        over = c.post("/v1/translate", json={"texts": ["a"], "max_new_tokens": 500})
        assert over.status_code == 422 and "model.max_length - 1" in over.json()["detail"]
        assert c.post("/v1/predict", json={"texts": ["a"]}).status_code == 404
    with pytest.raises(Exception, match="translation run"):
        load_service(translation_run, engine="onnx")
