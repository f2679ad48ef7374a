"""Token attributions (integrated gradients), passage influence and their HTML/PNG renderings."""

from __future__ import annotations

import html
import json
import random
import re

import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_MODEL, _news_rows
from PIL import Image
from tiny_hf import make_bert, make_tokenizer

from ragtune.tasks import load_config
from ragtune.data.tokenizer import encode, encode_pairs, train_tokenizer
from ragtune.errors import RagtuneError
from ragtune.explain import embedding_layer, explain, to_html, to_png
from ragtune.models.hf import HFSequenceModel
from ragtune.models.transformer import TransformerConfig, TransformerForRegression
from ragtune.tasks import run
from ragtune.tasks.classification.predictor import Predictor
from ragtune.retrieval.augment import ContextRetriever, read_neighbour_labels, write_neighbour_corpus
from ragtune.retrieval.index import build_index, load_index


def _train(root, cfg: dict):
    """Train ``cfg`` (relative data paths under ``root``) on one torch thread; the run directory."""
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(load_config(path), root / "run", progress=False, evaluate_test=False, reports=False)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The tiny bilingual classification run of ``tiny_config``, trained once for the module."""
    root = tmp_path_factory.mktemp("explain_run")
    (root / "data").mkdir()
    _news_rows(120).to_csv(root / "data" / "train.csv", index=False)
    cfg = {"task": "classification", "data": {"train": "data/train.csv"},
           "tokenizer": {"vocab_size": 200, "min_frequency": 1}, "model": TINY_MODEL,
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 16, "seed": 0, "threads": 1}}
    return Predictor.from_run_dir(_train(root, cfg))


def _rag_rows(n, seed):
    rng = random.Random(seed)
    words = {"sport": ["match", "goal", "team", "cup", "比赛"], "economy": ["bank", "rates", "shares", "market", "银行"]}
    filler = ["the", "a", "today", "news", "said", "week"]
    return pd.DataFrame([{"text": " ".join(rng.choice(words[label]) if rng.random() < 0.4 else rng.choice(filler)
                                           for _ in range(8)), "label": label}
                         for label in (list(words)[i % 2] for i in range(n))])


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    """A retrieval-augmented run: each text read with its 2 labelled nearest training texts."""
    root = tmp_path_factory.mktemp("explain_rag")
    (root / "data").mkdir()
    _rag_rows(80, 0).to_csv(root / "data" / "train.csv", index=False)
    cfg = {"data": {"train": "data/train.csv"}, "tokenizer": {"vocab_size": 200, "min_frequency": 1},
           "model": {**TINY_MODEL, "max_length": 40},
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1, "batch_size": 16, "seed": 0, "threads": 1},
           "retrieval": {"top_k": 2, "source": "train"}}
    return Predictor.from_run_dir(_train(root, cfg))


def _ids(predictor: Predictor, text: str) -> list[int]:
    if predictor.retriever is not None:
        return encode_pairs(predictor.tokenizer, [text], predictor.retriever.contexts([text]), predictor.max_length)[0]
    return encode(predictor.tokenizer, [text], predictor.max_length, predictor.meta.get("truncation", "head"),
                  predictor.meta.get("head_tokens"))[0]


def _check_completeness(predictor: Predictor, text: str, e: dict) -> None:
    """sum(attributions) = F(input) - F(baseline), both recomputed here, within Captum's convergence delta."""
    ids = _ids(predictor, text)
    assert [t["token"] for t in e["tokens"]] == [predictor.tokenizer.id_to_token(i) for i in ids]
    pad = int(predictor.meta.get("pad_id", 0))
    baseline = [i if t["segment"] == "special" else pad for i, t in zip(ids, e["tokens"])]
    assert baseline[0] == ids[0] and any(b != i for b, i in zip(baseline, ids))  # [CLS] kept, words replaced
    predictor.model.eval()
    with torch.no_grad():
        out = predictor.model(torch.tensor([ids, baseline]), torch.ones(2, len(ids), dtype=torch.long))
    f = out[:, predictor.labels.index(e["target"])] if predictor.task == "classification" else out
    change = float(f[0] - f[1])
    assert e["output"] == pytest.approx(float(f[0]), abs=1e-5)
    assert e["baseline_output"] == pytest.approx(float(f[1]), abs=1e-5)
    total = sum(t["attribution"] for t in e["tokens"])
    assert abs(total - change) <= abs(e["convergence_delta"]) + 1e-4
    assert abs(e["convergence_delta"]) <= 0.1 * max(1.0, abs(change))  # the integral converged (32 steps: a few %)
    assert all(t["attribution"] == 0.0 for t in e["tokens"] if t["segment"] == "special")
    assert any(abs(t["attribution"]) > 1e-4 for t in e["tokens"])


def _check_offsets(source: str, token: dict) -> None:
    piece = source[token["start"]:token["end"]]
    assert piece and piece == piece.strip()
    if token["token"] != "[UNK]":
        assert piece.lower() == token["token"].removeprefix("##")


def test_completeness_offsets_and_prediction(scratch):
    text = "The minister said today: the Election vote was a new report"
    e = explain(scratch, text, n_steps=64)
    json.dumps(e)  # JSON-serialisable
    (prediction,) = scratch.predict([text])
    assert e["label"] == prediction["label"] == e["target"] and e["scores"] == prediction["scores"]
    assert e["n_steps"] == 64 and "passages" not in e
    _check_completeness(scratch, text, e)
    assert e["tokens"][0]["segment"] == "special" and e["tokens"][0]["token"] == "[CLS]"
    words = [t for t in e["tokens"] if t["segment"] == "text"]
    assert [text[t["start"]:t["end"]] for t in words][:3] == ["The", "minister", "said"]
    for t in words:
        _check_offsets(text, t)


def test_chinese_offsets_are_characters(scratch):
    text = "今天 政府 选举，股市银行"
    e = explain(scratch, text)
    words = [t for t in e["tokens"] if t["segment"] == "text"]
    assert "".join(text[t["start"]:t["end"]] for t in words if t["token"] != "[UNK]") == "今天政府选举股市银行"
    for t in words:
        _check_offsets(text, t)
        assert t["end"] - t["start"] == 1
    _check_completeness(scratch, text, e)


def test_target_selection_and_state(scratch):
    text = "market shares bank film"
    tokenizer_state = scratch.tokenizer.truncation
    scratch.model.train()
    try:
        e = explain(scratch, text)
        assert scratch.model.training  # the mode is restored
    finally:
        scratch.model.eval()
    assert scratch.tokenizer.truncation == tokenizer_state
    layer = embedding_layer(scratch.model)
    assert layer is scratch.model.encoder.tok_emb and not layer._forward_hooks  # Captum's hooks removed
    other = next(label for label in scratch.labels if label != e["label"])
    e2 = explain(scratch, text, target=other)
    assert e2["target"] == other and e2["label"] == e["label"] and e2["scores"] == e["scores"]
    assert [t["attribution"] for t in e2["tokens"]] != [t["attribution"] for t in e["tokens"]]
    _check_completeness(scratch, text, e2)
    with pytest.raises(RagtuneError, match=r"unknown class 'sport'; the model knows \['economy', 'entertainment', "
                                           r"'politics'\]"):
        explain(scratch, text, target="sport")
    with pytest.raises(RagtuneError, match="n_steps"):
        explain(scratch, text, n_steps=0)
    onnx = Predictor(scratch.model, scratch.tokenizer, scratch.meta)
    onnx.engine = "onnx"  # an ONNX export has no gradients
    with pytest.raises(RagtuneError, match="torch engine"):
        explain(onnx, text)


def test_html_escapes_and_png_is_written(scratch, tmp_path):
    text = "<script>alert(1)</script> vote 选举 & \"quotes\""
    e = explain(scratch, text, n_steps=8)
    page = to_html(e)
    assert page.startswith("<!DOCTYPE html>") and '<html lang="en">' in page and '<meta charset="utf-8">' in page
    assert "<script" not in page.lower() and "&lt;" in page and "&quot;" in page
    assert text in html.unescape(re.sub(r"<[^>]+>", "", page))  # shown whole, as text
    assert "title=\"vote: " in page and "rgba(" in page and "选" in page
    assert f"Prediction: {e['label']}" in page
    png = tmp_path / "why.png"
    assert to_png(e, png) is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    # a long text: the 40 largest tokens only
    long_text = " ".join(["vote market film 选举"] * 30)
    to_png(explain(scratch, long_text, n_steps=4), tmp_path / "long.png")
    assert (tmp_path / "long.png").stat().st_size > 0


def test_regression_predictor(tmp_path):
    texts = ["good film good actor", "bad market week", "the vote today"]
    tok = train_tokenizer(texts * 3, vocab_size=100, min_frequency=1)
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=tok.get_vocab_size(), max_length=16, d_model=32, heads=2, head_dim=16,
                               layers=1, ffn_dim=64, dropout=0.0)
    model = TransformerForRegression(config).eval()
    meta = {"task": "regression", "max_length": 16, "target_mean": 3.0, "target_std": 2.0, "truncation": "tail"}
    p = Predictor(model, tok, meta)
    e = explain(p, "good film and a good actor")
    assert e["target"] is None and "label" not in e and "scores" not in e
    assert e["value"] == pytest.approx(p.predict(["good film and a good actor"])[0]["value"], abs=1e-5)
    _check_completeness(p, "good film and a good actor", e)
    with pytest.raises(RagtuneError, match="regression"):
        explain(p, "good", target="x")
    assert "higher value" in to_html(e)
    # a text longer than max_length, cut as in training (head_tail: the first 4 and the last tokens),
    # explained even inside torch.no_grad()
    p.meta.update(truncation="head_tail", head_tokens=4)
    long_text = " ".join(f"w{i}" if i % 2 else "good" for i in range(30)) + " bad market week"
    with torch.no_grad():
        e = explain(p, long_text)
    words = [long_text[t["start"]:t["end"]] for t in e["tokens"] if t["segment"] == "text"]
    assert len(e["tokens"]) == 16 and words[:2] == ["good", "w1"] and words[-3:] == ["bad", "market", "week"]
    _check_completeness(p, long_text, e)
    assert 'class="unread"' in to_html(e)  # the middle that was cut


def test_hf_backbone(tmp_path):
    labels = ["economy", "entertainment", "politics"]
    meta = {"task": "classification", "labels": labels, "max_length": 16, "pad_id": 0}
    p = Predictor(HFSequenceModel(make_bert()), make_tokenizer().backend_tokenizer, meta)
    text = "The film actor won an award today"
    e = explain(p, text, n_steps=48)
    assert embedding_layer(p.model) is p.model.model.get_input_embeddings()
    assert e["scores"] == p.predict([text])[0]["scores"]
    assert [t["token"] for t in e["tokens"]][-1] == "[SEP]" and e["tokens"][-1]["segment"] == "special"
    words = [t for t in e["tokens"] if t["segment"] == "text"]
    assert [t["token"] for t in words] == ["the", "film", "actor", "[UNK]", "[UNK]", "award", "today"]
    for t in words:
        _check_offsets(text, t)
    _check_completeness(p, text, e)
    # the same model reading retrieved passages: the hf pair template ([CLS] a [SEP] b [SEP])
    write_neighbour_corpus(["film actor award", "bank market shares", "vote minister election"],
                           ["entertainment", "economy", "politics"], tmp_path / "n.jsonl", tmp_path / "labels.json")
    build_index([tmp_path / "n.jsonl"], tmp_path / "index", kind="bm25", progress=False)
    p.retriever = ContextRetriever(load_index(tmp_path / "index"), 2, "[SEP]", read_neighbour_labels(tmp_path / "labels.json"))
    e = explain(p, "film award market", n_steps=48)
    assert len(e["passages"]) == 2 and e["passages"][0]["label"] == "entertainment"
    _check_completeness(p, "film award market", e)


def test_retrieval_passages_and_influence(rag, monkeypatch):
    text = "goal team cup bank rates 比赛"
    e = explain(rag, text, n_steps=48)
    json.dumps(e)
    (prediction,) = rag.predict([text])
    assert e["scores"] == prediction["scores"]
    passages = e["passages"]
    assert [(p["id"], p["doc_id"], p["score"], p["label"]) for p in passages] == [
        (p["id"], p["doc_id"], p["score"], p["label"]) for p in prediction["passages"]]
    assert all(p["text"].startswith(p["label"] + ": ") for p in passages)
    _check_completeness(rag, text, e)
    segments = {t["segment"] for t in e["tokens"]}
    assert segments == {"text", "passage", "special"}
    for t in e["tokens"]:
        if t["segment"] == "text":
            _check_offsets(text, t)
        elif t["segment"] == "passage":
            _check_offsets(passages[t["passage"]]["text"], t)
    assert any(t["token"] == "[SEP]" and t["segment"] == "special" for t in e["tokens"][1:-1])

    # influence = p(target | all passages) - p(target | that one left out), recomputed through Predictor.outputs
    target = rag.labels.index(e["target"])
    p_all = float(torch.softmax(torch.from_numpy(rag.outputs([text])[0]), -1)[target])
    sep = f" {rag.retriever.separator} "
    for i, passage in enumerate(passages):
        rest = sep.join(p["text"] for j, p in enumerate(passages) if j != i)
        monkeypatch.setattr(rag.retriever, "contexts", lambda texts, exclude=None, rest=rest: [rest] * len(texts))
        p_without = float(torch.softmax(torch.from_numpy(rag.outputs([text])[0]), -1)[target])
        monkeypatch.undo()
        assert passage["without"] == pytest.approx(p_without, abs=1e-5)
        assert passage["influence"] == pytest.approx(p_all - p_without, abs=1e-5)

    page = to_html(e)
    assert "Retrieved passages" in page and f"{passages[0]['influence']:+.4f}" in page
    assert page.count('class="passage"') == len(passages)
