"""`task: generation` end to end: `ragtune run`, `predict`, `eval`, `/v1/generate` on tiny tasks.

* reversal: the prompt is a few words, the response the same words reversed (the model learns it);
* retrieval: "what colour is the itemN ?" whose answer is only in a corpus document: with retrieved
  passages the model answers; without them it can only guess among eight colours;
* Chinese texts to continue (a `.txt` file, no prompts): perplexity, continuation, predict.
"""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from tiny_llm import reversal_rows

from ragtune.cli import main
from ragtune.tasks import load_config
from ragtune.errors import RagtuneError
from ragtune.tasks.generation.predictor import GenerationPredictor, split_for_continuation
from ragtune.serve.app import create_app
from ragtune.serve.service import load_service

WORDS = "alpha beta gamma delta eps zeta eta theta iota kappa".split()
COLOURS = "red blue green yellow black white pink brown".split()


def reversal_examples(n: int, seed: int) -> list[dict]:
    return reversal_rows(n, seed, WORDS)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path.name


def tiny_config(folder, train, name="gen.yaml", epochs: int = 8, **extra) -> str:
    tree = {
        "task": "generation",
        "name": "tiny_generation",
        "data": {"train": train},
        "tokenizer": {"vocab_size": 400, "min_frequency": 1},
        "model": {"heads": 2, "head_dim": 32, "layers": 2, "d_model": 64, "ffn_dim": 128, "dropout": 0.0, "max_length": 48},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 0.003, "optimizer": "adamw", "threads": 2, "seed": 0},
        "eval": {"max_decode_rows": 40},
        "decode": {"strategy": "greedy"},
    }
    for key, value in extra.items():
        section, leaf = key.split("__")
        tree.setdefault(section, {})[leaf] = value
    path = folder / name
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def reversal_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generation")
    # 1,200 examples and 10 epochs: with 400 and 8 the tiny model stopped at ~80 ROUGE-L on some
    # library versions and seeds (it reversed most words, not all); this size learns the task fully.
    train = write_jsonl(folder / "train.jsonl", reversal_examples(1200, seed=0))
    config = tiny_config(folder, train, epochs=10)
    run_dir = folder / "run"
    assert main(["run", config, "--out", str(run_dir), "--quiet"]) == 0
    return folder, run_dir


def test_run_learns_to_reverse_and_writes_the_run_dir(reversal_run):
    _, run_dir = reversal_run
    for name in ("config.yaml", "inputs.json", "model.json", "tokenizer.json", "model.safetensors", "metrics.json",
                 "history.json", "report.md", "data_report.json", "checkpoints/best"):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("rougeL", "rouge1", "rouge2", "bleu", "loss", "perplexity"):
        assert key in metrics["test"], key
    # a random order of the same words scores about 40 ROUGE-L; the reversal is learned far beyond that
    assert metrics["test"]["rougeL"] > 60, metrics["test"]
    assert metrics["test"]["perplexity"] < 3
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["task"] == "generation" and meta["prompts"] is True and meta["retrieval"] is None
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 10 and "validation_rougeL" in history[0]
    assert history[-1]["validation_rougeL"] > history[0]["validation_rougeL"]
    assert "Examples (test)" in (run_dir / "report.md").read_text()


def test_predict_eval_and_decoding_modes(reversal_run, capsys, tmp_path):
    folder, run_dir = reversal_run
    capsys.readouterr()
    assert main(["predict", str(run_dir), "alpha beta gamma", "eta iota"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [set(x) for x in lines] == [{"output"}, {"output"}]
    assert lines[0]["output"] == "gamma beta alpha"
    assert main(["predict", str(run_dir), "alpha beta gamma", "--strategy", "beam", "--beam-size", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == "gamma beta alpha"
    predictor = GenerationPredictor.from_run_dir(run_dir)
    a = predictor.generate(["delta eps"] * 3, strategy="sample", seed=5, temperature=1.5)
    assert a == predictor.generate(["delta eps"] * 3, strategy="sample", seed=5, temperature=1.5)  # seeded
    short = predictor.generate(["alpha beta gamma delta"], max_new_tokens=1)[0]["output"]
    assert len(short.split()) <= 1

    table = tmp_path / "in.csv"
    pd.DataFrame({"prompt": ["kappa theta", "beta beta alpha"]}).to_csv(table, index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", str(run_dir), "--input", str(table), "--output", str(out)]) == 0
    assert pd.read_csv(out).output.tolist()[0] == "theta kappa"

    capsys.readouterr()
    test = tmp_path / "test.jsonl"
    write_jsonl(test, reversal_examples(30, seed=9))
    assert main(["eval", str(run_dir), "--data", str(test)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["rougeL"] > 60 and metrics["n"] == 30


def test_generate_endpoint_is_the_predictor(reversal_run):
    _, run_dir = reversal_run
    prompts = ["alpha beta", "gamma delta eps"]
    predictor = GenerationPredictor.from_run_dir(run_dir)
    with TestClient(create_app(load_service(run_dir))) as c:
        health = c.get("/healthz").json()
        assert health["task"] == "generation" and health["endpoints"] == ["/v1/generate", "/v1/models", "/v1/chat/completions", "/v1/completions"]
        got = c.post("/v1/generate", json={"prompts": prompts})
        assert got.status_code == 200, got.text
        assert got.json()["outputs"] == predictor.generate(prompts)
        beam = c.post("/v1/generate", json={"prompts": prompts, "strategy": "beam", "beam_size": 2}).json()
        assert beam["outputs"] == predictor.generate(prompts, strategy="beam", beam_size=2)
        over = c.post("/v1/generate", json={"prompts": ["a"], "max_new_tokens": 500})
        assert over.status_code == 422 and "model.max_length - 2" in over.json()["detail"]
        assert c.post("/v1/generate", json={"prompts": []}).status_code == 422
        assert c.post("/v1/translate", json={"texts": ["a"]}).status_code == 404
    with TestClient(create_app(load_service(run_dir), api_key="k")) as c:
        assert c.post("/v1/generate", json={"prompts": prompts}).status_code == 401
        assert c.post("/v1/generate", json={"prompts": prompts}, headers={"X-API-Key": "k"}).status_code == 200


def knowledge_base(folder) -> tuple[str, str]:
    """300 items, each with a colour stated only in the corpus; the questions ask for it."""
    rng = random.Random(1)
    colour = {f"item{i}": rng.choice(COLOURS) for i in range(300)}
    corpus = write_jsonl(folder / "kb.jsonl", [{"id": k, "text": f"the {k} is painted {c} ."} for k, c in colour.items()])
    qa = write_jsonl(folder / "qa.jsonl", [{"prompt": f"what colour is the {k} ?", "response": c} for k, c in colour.items()])
    return corpus, qa


def test_retrieved_passages_feed_the_model(tmp_path, capsys):
    corpus, qa = knowledge_base(tmp_path)
    config = tiny_config(tmp_path, qa, retrieval__corpus=[corpus], retrieval__top_k=1, decode__max_new_tokens=4)
    assert main(["run", config, "--out", str(tmp_path / "rag"), "--quiet"]) == 0
    assert main(["run", config, "retrieval.top_k=0", "--out", str(tmp_path / "closed"), "--quiet"]) == 0
    with_passages = json.loads((tmp_path / "rag" / "metrics.json").read_text())["test"]
    without = json.loads((tmp_path / "closed" / "metrics.json").read_text())["test"]
    # the test items' colours are nowhere in training: only the passage tells (chance: 1 in 8)
    assert with_passages["rougeL"] > 80, with_passages
    assert without["rougeL"] < 40, without
    meta = json.loads((tmp_path / "rag" / "model.json").read_text())
    assert meta["retrieval"] == {"index": "index", "top_k": 1, "separator": "<p>"}
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "rag"), "what colour is the item7 ?"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passages"][0]["doc_id"] == "item7" and "item7" in result["passages"][0]["text"]
    assert result["output"] == result["passages"][0]["text"].split()[-2]
    with TestClient(create_app(load_service(tmp_path / "rag"))) as c:
        assert c.get("/healthz").json()["endpoints"] == ["/v1/generate", "/v1/retrieve", "/v1/models", "/v1/chat/completions", "/v1/completions"]
        got = c.post("/v1/generate", json={"prompts": ["what colour is the item12 ?"]}).json()["outputs"][0]
        assert got["passages"][0]["doc_id"] == "item12" and got["output"] in COLOURS
        chat = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "what colour is the item12 ?"}]})
        assert chat.status_code == 200, chat.text  # the OpenAI API: the passages in a field of ragtune's own
        assert chat.json()["choices"][0]["message"]["content"] == got["output"]
        assert chat.json()["ragtune"]["passages"][0]["doc_id"] == "item12"
        stream = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "what colour is the item12 ?"}],
                                                      "stream": True})
        first = json.loads(stream.text.split("\n\n")[0].removeprefix("data: "))
        assert first["ragtune"]["passages"][0]["doc_id"] == "item12"
        assert got["output"] in stream.text and stream.text.endswith("data: [DONE]\n\n")


def test_chinese_texts_to_continue(tmp_path, capsys):
    rng = random.Random(3)
    phrases = ["今天天气很好", "我们去公园散步", "北京是中国的首都", "他喜欢看新闻", "经济增长很快", "电影非常好看"]
    lines = ["，".join(rng.sample(phrases, 3)) + "。" for _ in range(300)]
    (tmp_path / "zh.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tiny_config(tmp_path, "zh.txt", epochs=3)
    cfg = load_config(config)
    assert cfg.selection_metric == "perplexity" and not cfg.generation_prompts
    assert main(["run", config, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert metrics["perplexity"] < 4, metrics  # byte-level BPE over 6 phrases: far below the vocabulary size
    assert metrics["rougeL"] > 20, metrics  # the second half of each text, written after its first half
    assert json.loads((tmp_path / "run" / "model.json").read_text())["prompts"] is False
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "北京是中国"]) == 0
    out = json.loads(capsys.readouterr().out)["output"]
    assert out and not out.startswith("北京")  # a continuation, not a repetition of the beginning
    assert split_for_continuation("一二三四") == ("一二", "三四")
    assert split_for_continuation("a b c d e") == ("a b", "c d e")


def test_bad_input_and_config_errors(tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame({"prompt": ["a b", "c d"], "response": ["x", ""]}).to_csv(table, index=False)
    config = tiny_config(tmp_path, "t.csv", epochs=1)
    assert main(["run", config, "--out", str(tmp_path / "r1"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "t.csv" in err and "row 2" in err and "response" in err
    config = tiny_config(tmp_path, "t.csv", epochs=1, data__response_column="answer")
    assert main(["run", config, "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "t.csv" in err and "answer" in err and "prompt" in err  # names the column and lists those there
    assert not (tmp_path / "r2" / "model.json").exists()

    bad = {"task": "generation", "data": {"train": "x.txt", "source_column": "en"}, "tokenizer": {"joint": False},
           "retrieval": {"top_k": 2, "corpus": ["c.txt"]}, "model": {"backbone": "hf", "name_or_path": "gpt2", "freeze_layers": 2}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad), encoding="utf-8")
    with pytest.raises(RagtuneError) as exc:
        load_config(path)
    msg = str(exc.value)
    for key in ("data.source_column", "tokenizer.joint", "retrieval.top_k", "model.freeze_layers"):
        assert key in msg, key
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"data": {"train": "x.csv", "prompt_column": "q"}}))
    with pytest.raises(RagtuneError, match="data.prompt_column: unknown key .only applies to task: generation"):
        load_config(other)
