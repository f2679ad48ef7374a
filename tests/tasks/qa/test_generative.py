"""Generative QA with retrieval in the training loop (ragtune/tasks/qa/generative.py): a tiny random Llama
learns to answer from the passages of a synthetic corpus whose answers exist only in it (tiny_llm.codes_squad:
each entity's code, colour and city drawn at random, the test entities never seen in training).

What is shown, each by training the tiny model for a few hundred steps (about 10-30 s a run):
- retrieval in the prompt: end-to-end exact match far above the same model trained closed-book;
- raft: with the gold paragraph taken out of the passages the model answers `qa.no_answer`, and with it in
  it answers (a model trained on `retrieved` passages never abstains);
- the retriever trained by the LM (REPLUG LSR): the query encoder's weights move and recall@1 rises;
- the same with Chinese text (plain prompt, BM25 with jieba, CMRC metrics);
- the run serves its answers with sources: `ragtune predict`, /v1/answer and the OpenAI chat endpoint.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tiny_llm import NO_ANSWER, codes_squad, codes_vocabulary, save_tiny_word_llama

from ragtune.cli import main
from ragtune.tasks import load_config

ENTITIES = 150  # 450 questions: 360 train, 45 validation, 45 test (by entity)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("codes")
    codes_squad(root / "codes.json", entities=ENTITIES)
    save_tiny_word_llama(root / "llm", entities=ENTITIES)
    return root


def qa_config(root, name: str, mode: str, top_k: int, steps: int = 600, **sections) -> str:
    tree = {"task": "qa", "data": {"train": str(root / "codes.json")},
            "model": {"backbone": "hf", "name_or_path": str(root / "llm"), "max_length": 160},
            "qa": {"train_passages": mode, "system_prompt": "answer"},
            "retrieval": {"top_k": top_k, "corpus": [str(root / "codes.json")]} if top_k else {"top_k": 0},
            "train": {"lr": 3e-3, "epochs": 1, "steps_per_epoch": steps, "batch_size": 16, "seed": 0,
                      "warmup_steps": 10, "schedule": "linear", "threads": 1},
            "eval": {"batch_size": 32}}
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return str(path)


def train(root, name: str, *args, **kwargs):
    config = qa_config(root, name, *args, **kwargs)
    run = root / name
    assert main(["run", config, "--out", str(run), "--quiet"]) == 0
    return config, run, json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def retrieved(corpus):
    return train(corpus, "retrieved", "retrieved", 2)


@pytest.fixture(scope="module")
def raft(corpus):
    return train(corpus, "raft", "raft", 2, qa={"p_no_gold": 0.3, "cite": True})


def test_retrieval_in_the_prompt_beats_closed_book(corpus, retrieved):
    _, run, with_passages = retrieved
    _, _, closed = train(corpus, "closed", "none", 0)
    assert closed["test"]["exact_match"] <= 20  # 8 values per attribute: a guess
    assert with_passages["test"]["exact_match"] >= 60
    assert with_passages["test"]["recall@1"] >= 0.9  # BM25 finds the entity's paragraph
    meta = json.loads((run / "model.json").read_text())
    assert meta["reader"] == "generative" and meta["qa"]["train_passages"] == "retrieved"
    assert meta["chat"]["template"] is True  # the tiny model has a ChatML template
    report = (run / "report.md").read_text()
    assert "generative reader" in report and "training passages **retrieved**" in report


def test_raft_learns_to_abstain_when_the_gold_is_removed(retrieved, raft):
    _, _, plain = retrieved
    _, _, m = raft
    assert m["test"]["abstention"] >= 80  # the gold paragraph taken out: "unanswerable"
    assert m["test"]["abstained"] <= 20  # with it in reach, an answer
    assert m["test"]["exact_match"] >= 40
    assert plain["test"]["abstention"] <= 10  # never taught to abstain: answers anyway
    assert m["test"]["citation_precision"] >= 60  # it cites the passage of the gold paragraph


def test_a_raft_run_answers_with_its_sources(corpus, raft):
    from fastapi.testclient import TestClient
    from openai import OpenAI

    from ragtune.serve.app import create_app
    from ragtune.serve.service import load_service
    from ragtune.tasks.qa.predictor import QAPredictor

    _, run, _ = raft
    predictor = QAPredictor.from_run_dir(run)
    question = f"code of e{ENTITIES - 1:02d} ?"
    [answer] = predictor.answer([question])
    assert [p["title"] for p in answer["passages"]].count(f"e{ENTITIES - 1:02d}") == 1
    assert set(answer["citations"]) <= {p["id"] for p in answer["passages"]}
    assert answer["score"] is None and answer["abstained"] is (answer["answer"] == NO_ANSWER)
    service = load_service(run)
    assert service.kind == "qa"
    with TestClient(create_app(service)) as http:
        body = http.post("/v1/answer", json={"questions": [question]}).json()
        assert body["answers"][0]["answer"] == answer["answer"]
        assert body["answers"][0].get("citations", []) == answer["citations"]
        assert len(body["answers"][0]["passages"]) == 2
        chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": question}]}).json()
        content = chat["choices"][0]["message"]["content"]
        assert content.startswith(answer["answer"])  # the model's reply, its citation after the answer
        assert [p["id"] for p in chat["ragtune"]["passages"]] == [p["id"] for p in answer["passages"]]
        assert chat["usage"]["completion_tokens"] >= 1
        events = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": question}],
                                                         "stream": True}).text
        assert content in "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                                  for line in events.splitlines() if line.startswith("data: {"))
        client = OpenAI(base_url=str(http.base_url) + "/v1", api_key="none", http_client=http)
        reply = client.chat.completions.create(model=service.name, messages=[{"role": "user", "content": question}])
        assert reply.choices[0].message.content == content
    out = corpus / "answers.csv"
    (corpus / "questions.csv").write_text(f"question\n{question}\n", encoding="utf-8")
    assert main(["predict", str(run), "--input", str(corpus / "questions.csv"), "--output", str(out)]) == 0
    assert answer["answer"] in out.read_text(encoding="utf-8")


def test_the_lm_trains_the_query_encoder(corpus, retrieved, tmp_path):
    from safetensors.torch import load_file
    from transformers import BertTokenizerFast

    from tiny_hf import save_tiny_encoder

    from ragtune.tasks.qa.data import prepare_qa_data
    from ragtune.tasks.qa.predictor import QAPredictor

    words = [w.lower() for w in codes_vocabulary(ENTITIES) if w not in ("[UNK]", "[PAD]")]
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    encoder = save_tiny_encoder(tmp_path, tokenizer=BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}))
    _, first, _ = retrieved  # start from the reader that learned to read passages
    config = qa_config(corpus, "lsr", "retrieved", 4, steps=300,
                       model={"name_or_path": str(first / "hf_model")}, train={"lr": 1e-3},
                       retrieval={"kind": "dense", "encoder": str(encoder), "train_query_encoder": True,
                                  "temperature": 0.05, "lm_temperature": 0.1})
    run = corpus / "lsr"
    assert main(["run", config, "--out", str(run), "--quiet"]) == 0
    meta = json.loads((run / "model.json").read_text())
    assert meta["retriever"] == "lm_trained"
    trained = load_file(next((run / "query_encoder").rglob("model.safetensors")))
    original = load_file(next(encoder.rglob("model.safetensors")))  # the index reads it from there
    moved = [k for k in trained if not torch.equal(trained[k], original[k])]
    assert moved  # the KL's gradient reached the query encoder
    test = prepare_qa_data(load_config(config)).test
    predictor = QAPredictor.from_run_dir(run)
    after = predictor.evaluate(test, with_gold=False, abstention=False)
    predictor.query_encoder = None  # the index's own (untrained) encoder and vectors
    before = predictor.evaluate(test, with_gold=False, abstention=False)
    assert after["recall@1"] >= before["recall@1"] + 0.3
    assert after["exact_match"] > before["exact_match"]


def test_chinese_corpus_with_the_plain_prompt(tmp_path):
    codes_squad(tmp_path / "codes.json", entities=ENTITIES, chinese=True)
    save_tiny_word_llama(tmp_path / "llm", entities=ENTITIES, chat=False, chinese=True)
    config = qa_config(tmp_path, "zh", "raft", 2, qa={"p_no_gold": 0.3, "no_answer": "无法回答", "chat_template": "none"})
    run = tmp_path / "zh"
    assert main(["run", config, "--out", str(run), "--quiet"]) == 0
    m = json.loads((run / "metrics.json").read_text())["test"]
    assert m["recall@1"] >= 0.8  # BM25 over jieba's words finds the entity's paragraph
    assert m["exact_match"] >= 40  # CMRC 2018 scoring
    assert m["abstention"] >= 70  # "无法回答" without the gold paragraph
    meta = json.loads((run / "model.json").read_text())
    assert meta["chat"]["template"] is False and meta["qa"]["no_answer"] == "无法回答"


def test_config_errors_of_a_generative_reader(tmp_path):
    from ragtune.errors import RagtuneError

    with pytest.raises(RagtuneError) as err:
        load_config(None, ["task=qa", "data.train=x.json", "model.name_or_path=m", "qa.train_passages=raft"])
    assert "qa.train_passages: 'raft' reads retrieved passages; set retrieval.top_k > 0" in str(err.value)
    with pytest.raises(RagtuneError) as err:
        load_config(None, ["task=qa", "data.train=x.json", "model.name_or_path=m", "model.reader=extractive",
                           "qa.cite=true", "decode.strategy=beam"])
    assert "qa.cite: only for a generative reader" in str(err.value)
    assert "decode.strategy: only for a generative reader" in str(err.value)


def test_auto_reader_tells_a_causal_lm_from_an_encoder(corpus, tiny_reader_folder):
    from ragtune.errors import RagtuneError
    from ragtune.tasks.qa.recipe import reader_kind

    base = ["task=qa", "data.train=x.json"]
    assert reader_kind(load_config(None, [*base, f"model.name_or_path={corpus / 'llm'}"])) == "generative"
    assert reader_kind(load_config(None, [*base, "model.name_or_path=tiny.gguf"])) == "generative"
    assert reader_kind(load_config(None, [*base, f"model.name_or_path={tiny_reader_folder}"])) == "extractive"
    with pytest.raises(RagtuneError, match=r"qa.cite, eval.max_questions: only for a generative reader, and .* is not a "
                                           "causal language model"):
        reader_kind(load_config(None, [*base, f"model.name_or_path={tiny_reader_folder}", "qa.cite=true",
                                       "eval.max_questions=5"]))


def test_a_generative_run_reads_its_model_only_from_its_own_folder(tmp_path):
    from ragtune.errors import RagtuneError
    from ragtune.tasks.qa.predictor import QAPredictor

    (tmp_path / "model.json").write_text(json.dumps({"task": "qa", "reader": "generative", "weights": "../elsewhere"}))
    with pytest.raises(RagtuneError, match=r"weights must name a folder of the run, got '../elsewhere'"):
        QAPredictor.from_run_dir(tmp_path)
