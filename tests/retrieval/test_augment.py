"""Retrieval-augmented classification: neighbours, pair encoding and the YAML route end to end."""

import json
import random

import pandas as pd
import pytest
import yaml

from ragtune.cli import main
from ragtune.tasks import load_config
from ragtune.data.tokenizer import encode_pairs, train_tokenizer
from ragtune.errors import RagtuneError
from ragtune.tasks.classification.predictor import Predictor
from ragtune.retrieval.augment import (ContextRetriever, neighbour_id, neighbour_vote, read_neighbour_labels,
                                       separator_token, write_neighbour_corpus)
from ragtune.retrieval.index import build_index, load_index

TEXTS = ["arsenal win the cup final", "chelsea lose the cup final", "bank raises interest rates",
         "shares fall as bank cuts rates", "球队 赢得 冠军 比赛", "银行 利率 上调", "冠军 比赛 结束"]
LABELS = ["sport", "sport", "economy", "economy", "体育", "财经", "体育"]


@pytest.fixture
def neighbours(tmp_path):
    write_neighbour_corpus(TEXTS, LABELS, tmp_path / "n.jsonl", tmp_path / "labels.json")
    build_index([tmp_path / "n.jsonl"], tmp_path / "index", kind="bm25", progress=False)
    return load_index(tmp_path / "index"), read_neighbour_labels(tmp_path / "labels.json")


def test_a_training_text_never_retrieves_itself(neighbours):
    index, labels = neighbours
    r = ContextRetriever(index, top_k=1, separator="[SEP]", labels=labels)
    own = [neighbour_id(i) for i in range(len(TEXTS))]
    got = r.rows(TEXTS, exclude=own)
    for i, rows in enumerate(got):
        if i == 5:  # no other text shares a word with it: BM25 finds nothing, the text is read alone
            assert rows == []
        else:
            assert len(rows) == 1 and index.passages[rows[0][0]]["doc_id"] != own[i]
    # without the exclusion the text finds itself first
    assert [index.passages[rows[0][0]]["doc_id"] for rows in r.rows(TEXTS)] == own
    # the nearest other text of "arsenal win the cup final" is the other cup final, shown with its label
    assert r.contexts(TEXTS[:1], exclude=own[:1]) == ["sport: chelsea lose the cup final"]
    assert r.contexts(["银行 利率"]) == ["财经: 银行 利率 上调"]  # Chinese through jieba
    assert r.contexts(TEXTS[4:5], exclude=own[4:5]) == ["体育: 冠军 比赛 结束"]
    assert r.hits(["bank rates"])[0][0]["label"] == "economy"


def test_passages_are_joined_by_the_separator_and_unlabelled_without_labels(neighbours):
    index, _ = neighbours
    r = ContextRetriever(index, top_k=2, separator="[SEP]")
    (context,) = r.contexts(["cup final"])
    assert context.count(" [SEP] ") == 1 and "sport:" not in context and "cup final" in context


def test_retriever_errors(neighbours):
    index, labels = neighbours
    with pytest.raises(RagtuneError, match="top_k: 8 is larger than the 7 passages"):
        ContextRetriever(index, top_k=8, separator="[SEP]")
    with pytest.raises(RagtuneError, match="labelled neighbours"):
        neighbour_vote(ContextRetriever(index, top_k=1, separator="[SEP]"), ["x"], ["sport"])


def test_neighbour_vote(neighbours):
    index, labels = neighbours
    r = ContextRetriever(index, top_k=1, separator="[SEP]", labels=labels)
    votes = neighbour_vote(r, ["cup final win", "interest rates bank"], ["sport", "sport"])
    assert votes == {"neighbour_vote_accuracy": 0.5, "top1_accuracy": 0.5}


def test_pair_encoding_keeps_a_short_text_and_cuts_the_context():
    tok = train_tokenizer(TEXTS * 3, kind="wordpiece", vocab_size=200, min_frequency=1)
    assert separator_token(tok) == "[SEP]"
    context = " [SEP] ".join(TEXTS)
    (ids,) = encode_pairs(tok, ["bank raises rates"], [context], max_length=12)
    tokens = [tok.id_to_token(i) for i in ids]
    assert len(ids) == 12 and tokens[0] == "[CLS]"
    assert tokens[1:5] == ["bank", "raises", "rates", "[SEP]"]  # the text whole, then the context
    with pytest.raises(ValueError, match="differ in length"):
        encode_pairs(tok, ["a"], [], max_length=12)


def _rows(n, seed):
    rng = random.Random(seed)
    words = {"sport": ["match", "goal", "team", "cup", "比赛"], "economy": ["bank", "rates", "shares", "market", "银行"]}
    filler = ["the", "a", "today", "news", "said", "week"]
    rows = []
    for i in range(n):
        label = list(words)[i % 2]
        rows.append({"text": " ".join(rng.choice(words[label]) if rng.random() < 0.4 else rng.choice(filler)
                                      for _ in range(8)), "label": label})
    return pd.DataFrame(rows)


def test_labelled_neighbours_through_the_yaml_route(tmp_path, capsys):
    _rows(120, 0).to_csv(tmp_path / "train.csv", index=False)
    _rows(40, 1).to_csv(tmp_path / "test.csv", index=False)
    cfg = {"data": {"train": "train.csv", "test": "test.csv"},
           "tokenizer": {"vocab_size": 200, "min_frequency": 1},
           "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 48},
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 3, "batch_size": 16},
           "retrieval": {"top_k": 2, "source": "train"}}
    path = tmp_path / "rac.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\nrun directory")[0])
    metrics = json.loads((out / "metrics.json").read_text())
    votes = metrics["retrieval"]["test"]
    assert summary["retrieval"] == metrics["retrieval"] and 0 < votes["neighbour_vote_accuracy"] <= 1
    meta = json.loads((out / "model.json").read_text())
    assert meta["retrieval"] == {"source": "train", "top_k": 2, "index": "index", "separator": "[SEP]",
                                 "labels": "neighbour_labels.json"}
    n_neighbours = len((out / "neighbours.jsonl").read_text(encoding="utf-8").splitlines())
    assert n_neighbours == len(read_neighbour_labels(out / "neighbour_labels.json")) < 120  # train only, no validation
    assert "Retrieval: each text is read with the top 2 passages" in (out / "report.md").read_text()
    from ragtune.data.tokenizer import load_tokenizer

    vocab = load_tokenizer(out / "tokenizer.json")  # the labels the neighbours are read with are whole tokens
    assert vocab.token_to_id("economy") is not None and vocab.token_to_id("sport") is not None

    # the reloaded run reads every text with its neighbours and scores the test file as the run did
    predictor = Predictor.from_run_dir(out)
    assert predictor.retriever is not None and predictor.retriever.top_k == 2
    test = pd.read_csv(tmp_path / "test.csv")
    again = predictor.evaluate(test.text.tolist(), test.label.tolist())
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    (prediction,) = predictor.predict(["goal goal team cup"])
    assert len(prediction["passages"]) == 2 and {p["label"] for p in prediction["passages"]} <= {"sport", "economy"}
    # `ragtune predict --input` lists the passages each row was read with
    assert main(["predict", str(out), "--input", str(tmp_path / "test.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    assert pd.read_csv(tmp_path / "p.csv").passage_ids.str.count("train-").eq(2).all()


def test_retrieval_config_rules(tmp_path):
    def errors(**retrieval):
        cfg = {"data": {"train": "x.csv"}, "retrieval": retrieval}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        with pytest.raises(RagtuneError) as err:
            load_config(path)
        return str(err.value)

    assert "needs an index" in errors(top_k=3)
    assert "remove retrieval.index/retrieval.corpus" in errors(top_k=3, source="train", corpus=["c.txt"])
    assert "retrieval.source: must be one of 'corpus' or 'train' (got 'neighbours')" in errors(top_k=3, source="neighbours")
