"""Step 7 from the command line: `ragtune export`, `ragtune serve --engine onnx` (its app) and `ragtune explain`."""

import json

import pytest
from fastapi.testclient import TestClient

from ragtune.cli import main
from ragtune.tasks.classification.predictor import Predictor
from ragtune.serve.app import create_app
from ragtune.serve.service import load_service


@pytest.fixture
def run_dir(tiny_config, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    return out


def test_export_int8_then_serve_it(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--format", "onnx", "--quantize", "int8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |logit difference| vs PyTorch" in printed and "test accuracy: PyTorch" in printed
    check = json.loads((out / "check.json").read_text())
    assert check["checked_on"] == "the run's test split" and check["n"] == 30
    assert check["agreement"] >= 0.8
    assert f"PyTorch {check['accuracy_reference']:.4f} -> ONNX {check['accuracy_candidate']:.4f}" in printed
    assert {"model.onnx", "model.int8.onnx", "model.json", "tokenizer.json", "export.json", "config.yaml"} <= {
        p.name for p in out.iterdir()}
    assert not (tmp_path / "export.partial").exists()
    # served by the onnx engine: same labels as the onnx predictor, reported as such
    texts = ["parliament vote", "银行 股市 market"]
    expected = Predictor.from_run_dir(out, engine="onnx").predict(texts)
    with TestClient(create_app(load_service(out, engine="onnx"))) as c:
        assert c.get("/healthz").json()["engine"] == "onnx"
        got = c.post("/v1/predict", json={"texts": texts}).json()["predictions"]
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert main(["predict", str(out), *texts, "--engine", "onnx"]) == 0  # the CLI's predict runs it too
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["label"] for line in lines] == [e["label"] for e in expected]
    # nothing is overwritten without --overwrite
    before = (out / "model.int8.onnx").stat().st_mtime_ns
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "model.int8.onnx").stat().st_mtime_ns == before
    # --overwrite replaces only an earlier export, and never deletes the --data it checks on
    (out / "check.csv").write_text("text,label\nvote,politics\n", encoding="utf-8")
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out), "--overwrite",
                 "--data", str(out / "check.csv")]) == 2
    assert "would delete --data" in capsys.readouterr().err and (out / "check.csv").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep", encoding="utf-8")
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(mine), "--overwrite"]) == 2
    assert "not a ragtune export" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "model.int8.onnx").exists() and (out / "model.onnx").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".export.", "export.partial"))]


def test_export_errors(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(run_dir / "inside")]) == 2
    assert "inside the run directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: an unknown --quantize choice
        main(["export", str(run_dir), "--format", "onnx", "--quantize", "int4", "--out", str(tmp_path / "y")])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    (tmp_path / "data.csv").write_text("text,label\nvote,sports\n", encoding="utf-8")
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "z"),
                 "--data", str(tmp_path / "data.csv")]) == 2
    assert "sports" in capsys.readouterr().err
    assert not (tmp_path / "z").exists() and not (tmp_path / "z.partial").exists()  # nothing written
    assert main(["serve", str(run_dir), "--engine", "onnx"]) == 2
    assert "ragtune export" in capsys.readouterr().err


def test_explain_writes_html_and_png(run_dir, tmp_path, capsys):
    html = tmp_path / "why" / "explanation.html"
    assert main(["explain", str(run_dir), "parliament vote 选举 <b>bold</b>", "--out", str(html), "--steps", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = Predictor.from_run_dir(run_dir).predict(["parliament vote 选举 <b>bold</b>"])[0]
    assert result["label"] == result["target"] == expected["label"]
    assert {t["token"] for t in result["tokens"]} >= {"parliament", "vote"}
    page = html.read_text(encoding="utf-8")
    assert "&lt;" in page and "<b>" not in page  # the text is escaped, token by token
    assert html.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["explain", str(run_dir), "vote", "--out", str(html)]) == 2
    assert "exists; add --overwrite" in capsys.readouterr().err
    labels = Predictor.from_run_dir(run_dir).labels
    assert main(["explain", str(run_dir), "vote", "--target", "sports"]) == 2
    err = capsys.readouterr().err
    assert "sports" in err and all(label in err for label in labels)
    other = next(label for label in labels if label != expected["label"])
    assert main(["explain", str(run_dir), "parliament vote", "--target", other, "--steps", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == other
