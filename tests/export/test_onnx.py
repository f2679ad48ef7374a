"""ONNX export (fp32 and int8) of tiny trained runs, and the onnx engine of the Predictor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_MODEL, _news_rows
from tiny_hf import make_bert, make_rows, make_tokenizer

from ragtune.tasks import load_config
from ragtune.data.tokenizer import encode, load_tokenizer
from ragtune.errors import RagtuneError
from ragtune.export.onnx import compare_engines, export_onnx
from ragtune.tasks.classification.onnx_engine import OnnxSequenceModel
from ragtune.tasks import run
from ragtune.tasks.classification.predictor import Predictor, pad_id
from ragtune.train.batches import pad_batch

# one batch of very different lengths (padding), English, Chinese, empty and over-long texts
TEXTS = ["vote", "the parliament vote on the election today said the minister", "股市 银行 inflation market",
         "电影 明星 film actor award music week new report", "", "film " * 60, "银行"]


def _train(root, cfg: dict, name: str = "run"):
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    out = root / name
    run(load_config(path), out, progress=False, reports=False)
    return out


def _news_data(root, n_train=120, n_test=30):
    (root / "data").mkdir(exist_ok=True)
    _news_rows(n_train).to_csv(root / "data" / "train.csv", index=False)
    _news_rows(n_test, seed=1).to_csv(root / "data" / "test.csv", index=False)
    return pd.read_csv(root / "data" / "test.csv")


def _scratch_config(**extra) -> dict:
    cfg = {"task": "classification", "data": {"train": "data/train.csv", "test": "data/test.csv"},
           "tokenizer": {"vocab_size": 200, "min_frequency": 1}, "model": dict(TINY_MODEL),
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 16, "seed": 0, "threads": 1}}
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A tiny scratch classification run and its int8 export: (run dir, export dir, test rows)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run outside the per-test one-thread fixture
    try:
        root = tmp_path_factory.mktemp("onnx_scratch")
        test = _news_data(root)
        out = _train(root, _scratch_config())
        export_onnx(Predictor.from_run_dir(out), root / "export", quantize="int8", source=str(out))
    finally:
        torch.set_num_threads(threads)
    return out, root / "export", test


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    """A tiny random BERT fine-tuned as a ``model.backbone: hf`` run: (run dir, test rows)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("onnx_hf")
        bert = root / "tiny_bert"
        make_bert().save_pretrained(bert)
        make_tokenizer().save_pretrained(bert)
        (root / "data").mkdir()
        make_rows(90).to_csv(root / "data" / "train.csv", index=False)
        make_rows(30, seed=1).to_csv(root / "data" / "test.csv", index=False)
        cfg = {"data": {"train": "data/train.csv", "test": "data/test.csv"},
               "model": {"backbone": "hf", "name_or_path": str(bert), "max_length": 16},
               "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 3, "batch_size": 16, "seed": 0, "threads": 1}}
        out = _train(root, cfg)
    finally:
        torch.set_num_threads(threads)
    return out, pd.read_csv(root / "data" / "test.csv")


def _fp32_predictor(export_dir, meta_from: Predictor, batch_size: int) -> Predictor:
    """The fp32 graph of an export (which serves the int8 one) behind a Predictor."""
    model = OnnxSequenceModel(export_dir / "model.onnx", meta_from.task, pad_id=pad_id(meta_from.meta))
    return Predictor(model, meta_from.tokenizer, meta_from.meta, batch_size, meta_from.retriever, engine="onnx")


# ------------------------------------------------------------------------------------------- files


def test_export_writes_the_documented_files(scratch):
    import onnx

    run_dir, export_dir, _ = scratch
    names = sorted(p.name for p in export_dir.iterdir())
    assert names == ["export.json", "model.int8.onnx", "model.json", "model.onnx", "tokenizer.json"]  # no temp files
    info = json.loads((export_dir / "export.json").read_text())
    import ragtune

    assert info["format"] == "onnx" and info["quantize"] == "int8" and info["model_file"] == "model.int8.onnx"
    assert info["opset"] == 17 and info["source"] == str(run_dir) and info["ragtune_version"] == ragtune.__version__
    assert info["task"] == "classification" and info["labels"] == ["economy", "entertainment", "politics"]
    assert info["check"]["fp32_max_abs_diff"] < 1e-4 and info["check"]["int8_max_abs_diff"] > 0
    assert info["fused_ops"] == {}  # the scratch Transformer is not a family onnxruntime fuses
    assert json.loads((export_dir / "model.json").read_text()) == json.loads((run_dir / "model.json").read_text())
    assert (export_dir / "model.int8.onnx").stat().st_size < (export_dir / "model.onnx").stat().st_size

    graph = onnx.load(str(export_dir / "model.onnx")).graph
    onnx.checker.check_model(str(export_dir / "model.onnx"))
    dims = {i.name: ([d.dim_param for d in i.type.tensor_type.shape.dim], i.type.tensor_type.elem_type)
            for i in graph.input}
    assert dims == {"input_ids": (["batch", "sequence"], onnx.TensorProto.INT64),
                    "attention_mask": (["batch", "sequence"], onnx.TensorProto.INT64)}
    assert [o.name for o in graph.output] == ["logits"]
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


# ---------------------------------------------------------------------------------- fp32 vs torch


def test_fp32_graph_equals_torch_at_any_batch_size_and_length(scratch):
    run_dir, export_dir, test = scratch
    torch_p = Predictor.from_run_dir(run_dir)
    graph = OnnxSequenceModel(export_dir / "model.onnx", "classification")
    # straight through the model: batch 1 (no padding) and batch 7 (lengths 2 .. max_length, padded)
    ids = encode(torch_p.tokenizer, TEXTS, torch_p.max_length)
    assert len({len(i) for i in ids}) >= 5 and max(len(i) for i in ids) == torch_p.max_length
    for chunk in ([ids[1]], ids, ids[2:5]):
        x, mask = pad_batch(chunk, 0)
        with torch.no_grad():
            expected = torch_p.model(x, mask)
        got = graph(x, mask)
        assert got.shape == expected.shape == (len(chunk), 3) and got.dtype == torch.float32
        assert (got - expected).abs().max().item() < 1e-4
    # and through the Predictor, with one text per batch and with mixed lengths in one batch of 7
    for batch_size in (1, 7):
        report = compare_engines(torch_p, _fp32_predictor(export_dir, torch_p, batch_size),
                                 TEXTS + test.text.tolist(), None)
        print(f"fp32 scratch batch_size={batch_size}: max |diff| {report['max_abs_diff']:.2e}")
        assert report["max_abs_diff"] < 1e-4 and report["agreement"] == 1.0


def test_int8_export_is_served_and_agrees_on_most_texts(scratch):
    run_dir, export_dir, test = scratch
    torch_p = Predictor.from_run_dir(run_dir)
    onnx_p = Predictor.from_run_dir(export_dir, engine="onnx")
    assert onnx_p.engine == "onnx" and torch_p.engine == "torch"
    assert onnx_p.model.path.name == "model.int8.onnx"
    assert onnx_p.model.session.get_session_options().intra_op_num_threads == 1  # torch's thread count
    report = compare_engines(torch_p, onnx_p, test.text.tolist(), test.label.tolist())
    print(f"int8 scratch: {report}")
    assert report["n"] == len(test)
    assert 0 < report["max_abs_diff"] < 1.0  # really quantised, and close
    assert report["agreement"] >= 0.9
    assert abs(report["accuracy_candidate"] - report["accuracy_reference"]) <= 0.1


def test_onnx_predictor_is_self_contained_and_predicts_like_torch(tiny_config, tmp_path):
    out = tmp_path / "run"
    run(load_config(tiny_config), out, progress=False, reports=False)
    torch_p = Predictor.from_run_dir(out)
    expected = torch_p.predict(TEXTS)
    export = tmp_path / "export"
    info = export_onnx(torch_p, export, source=str(out))
    assert info["quantize"] is None and info["model_file"] == "model.onnx" and "int8_max_abs_diff" not in info["check"]
    assert not (export / "model.int8.onnx").exists()
    shutil.rmtree(out)  # the export needs nothing from the run directory

    onnx_p = Predictor.from_run_dir(export, engine="onnx", batch_size=3)
    got = onnx_p.predict(TEXTS)
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    for g, e in zip(got, expected):
        assert g["scores"] == pytest.approx(e["scores"], abs=1e-5)
    assert onnx_p.outputs([]).shape == (0, 3)
    metrics = onnx_p.evaluate(["股市 银行", "电影 明星"], ["economy", "entertainment"])
    assert {"accuracy", "loss"} <= set(metrics)


# ------------------------------------------------------------------------------------------- hf


def test_hf_run_exports_with_its_pretrained_tokenizer(hf_run, tmp_path):
    run_dir, test = hf_run
    torch_p = Predictor.from_run_dir(run_dir)
    export = tmp_path / "export"
    attention = torch_p.model.model.config._attn_implementation
    info = export_onnx(torch_p, export, quantize="int8", source=str(run_dir))
    assert torch_p.model.model.config._attn_implementation == attention  # traced in a copy: the run's model is untouched
    assert info["check"]["fp32_max_abs_diff"] < 1e-4 and info["check"]["fused_max_abs_diff"] < 1e-4
    layers = torch_p.model.model.config.num_hidden_layers  # a BERT: onnxruntime fused each layer's ops
    assert info["fused_ops"]["Attention"] == layers and info["fused_ops"]["SkipLayerNormalization"] == 2 * layers

    # tokenizer.json is the pretrained fast tokenizer: the same ids, special tokens included
    reloaded = load_tokenizer(export / "tokenizer.json")
    texts = TEXTS + test.text.tolist() + ["unknownword 未知 [SEP] parliament"]
    assert encode(reloaded, texts, 16) == encode(torch_p.tokenizer, texts, 16)

    for batch_size in (1, 7):
        report = compare_engines(torch_p, _fp32_predictor(export, torch_p, batch_size), texts, None)
        print(f"fp32 hf batch_size={batch_size}: max |diff| {report['max_abs_diff']:.2e}")
        assert report["max_abs_diff"] < 1e-4 and report["agreement"] == 1.0

    onnx_p = Predictor.from_run_dir(export, engine="onnx")
    assert onnx_p.model.path.name == "model.int8.onnx"
    report = compare_engines(torch_p, onnx_p, test.text.tolist(), test.label.tolist())
    print(f"int8 hf: {report}")
    assert 0 < report["max_abs_diff"] < 2.0 and report["agreement"] >= 0.7  # measured: 0.62, 1.0


def test_regression_run_exports_values(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(80):
        k = int(rng.integers(0, 5))
        rows.append({"text": " ".join(["good"] * k + ["plain", "zzz"] * (4 - k)), "score": float(k)})
    pd.DataFrame(rows).to_csv(tmp_path / "scores.csv", index=False)
    cfg = {"task": "regression", "data": {"train": "scores.csv", "label_column": "score"},
           "tokenizer": {"vocab_size": 100, "min_frequency": 1}, "model": {**TINY_MODEL, "max_length": 16},
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 16, "threads": 1}}
    out = _train(tmp_path, cfg)
    torch_p = Predictor.from_run_dir(out)
    export_onnx(torch_p, tmp_path / "export", quantize="int8")
    texts, scores = [r["text"] for r in rows], [r["score"] for r in rows]
    fp32 = _fp32_predictor(tmp_path / "export", torch_p, 64)
    assert fp32.outputs(texts).shape == (len(texts),)  # (B,), as the torch regressor returns
    assert compare_engines(torch_p, fp32, texts)["max_abs_diff"] < 1e-4
    expected = [p["value"] for p in torch_p.predict(texts[:5])]
    assert [p["value"] for p in fp32.predict(texts[:5])] == pytest.approx(expected, abs=1e-4)
    report = compare_engines(torch_p, Predictor.from_run_dir(tmp_path / "export", engine="onnx"), texts, scores)
    print(f"int8 regression: {report}")
    assert {"mse_reference", "mse_candidate", "max_abs_diff"} <= set(report) and "agreement" not in report
    assert report["mse_candidate"] < report["mse_reference"] + 0.5


# ------------------------------------------------------------------------------------- retrieval


def test_retrieval_run_export_carries_its_index(tmp_path):
    test = _news_data(tmp_path)
    cfg = _scratch_config(model={"max_length": 48}, retrieval={"top_k": 2, "source": "train"})
    out = _train(tmp_path, cfg)
    torch_p = Predictor.from_run_dir(out)
    texts = test.text.tolist()[:10]
    expected = torch_p.predict(texts)
    export = tmp_path / "export"
    export_onnx(torch_p, export, source=str(out))
    meta = json.loads((export / "model.json").read_text())
    assert meta["retrieval"]["index"] == "index" and meta["retrieval"]["labels"] == "neighbour_labels.json"
    assert (export / "index" / "manifest.json").exists() and (export / "neighbour_labels.json").exists()
    out.rename(tmp_path / "moved")  # neither the run nor its index is needed any more

    onnx_p = Predictor.from_run_dir(export, engine="onnx")
    assert onnx_p.retriever is not None and onnx_p.retriever.top_k == 2
    got = onnx_p.predict(texts)
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["passages"] for g in got] == [e["passages"] for e in expected]
    assert compare_engines(torch_p, onnx_p, texts)["max_abs_diff"] < 1e-4


# ---------------------------------------------------------------------------------------- errors


def test_user_errors_are_named(scratch, tmp_path):
    run_dir, export_dir, _ = scratch
    torch_p = Predictor.from_run_dir(run_dir)
    with pytest.raises(RagtuneError, match=r"quantize: unknown choice 'int4'; valid choices: \['int8'\]"):
        export_onnx(torch_p, tmp_path / "bad", quantize="int4")
    with pytest.raises(RagtuneError, match=r"unknown engine 'tensorrt'; valid choices: \['torch', 'onnx'\]"):
        Predictor.from_run_dir(export_dir, engine="tensorrt")
    with pytest.raises(RagtuneError, match="ragtune export RUN_DIR --format onnx --out DIR"):
        Predictor.from_run_dir(run_dir, engine="onnx")
    with pytest.raises(RagtuneError, match="is an ONNX export, not a run directory; load it with engine onnx"):
        Predictor.from_run_dir(export_dir)
    with pytest.raises(RagtuneError, match="export directory not found"):
        Predictor.from_run_dir(tmp_path / "nowhere", engine="onnx")
    onnx_p = Predictor.from_run_dir(export_dir, engine="onnx")
    with pytest.raises(RagtuneError, match="already runs an ONNX graph"):
        export_onnx(onnx_p, tmp_path / "again")
    with pytest.raises(RagtuneError, match="serves predictions only"):
        onnx_p.model.train(True)
    from ragtune.tasks.qa.predictor import QAPredictor

    with pytest.raises(RagtuneError, match="task: qa runs cannot be exported"):
        export_onnx(object.__new__(QAPredictor), tmp_path / "qa")
    # an incomplete export names what is missing
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    (broken / "model.int8.onnx").unlink()
    with pytest.raises(RagtuneError, match="incomplete ONNX export: missing model.int8.onnx"):
        Predictor.from_run_dir(broken, engine="onnx")


def test_importing_the_predictor_does_not_import_onnxruntime():
    code = "import sys, ragtune.tasks.classification.predictor; sys.exit('onnxruntime' in sys.modules or 'onnx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0
