"""train.report_to: TensorBoard and MLflow read back with their own readers, W&B's offline run through its
record format (wandb's protobuf records); a missing package and a failing tracker."""

import json

import pytest
import yaml

from ragtune.cli import main
from ragtune.train import tracking

TINY = {
    "task": "classification", "name": "tracked", "data": {"demo": True},
    "tokenizer": {"vocab_size": 300, "min_frequency": 1},
    "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 32},
    "train": {"optimizer": "adamw", "lr": 0.003, "epochs": 2, "batch_size": 32, "steps_per_epoch": 4, "seed": 0,
              "log_every_steps": 1},
}


def _config(tmp_path, **train):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], **train}}), encoding="utf-8")
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_tensorboard_holds_the_step_log_the_epochs_the_test_metrics_and_the_pictures(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, report_to=["tensorboard"])), "--out", str(out), "--quiet"]) == 0
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    steps = _lines(out / "train_log.jsonl")
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [s["step"] for s in steps] == list(range(1, 9))
    assert [e.value for e in loss] == pytest.approx([s["loss"] for s in steps], rel=1e-6)
    history = json.loads((out / "history.json").read_text())
    assert [e.value for e in events.Scalars("validation/accuracy")] == pytest.approx([h["validation_accuracy"] for h in history])
    metrics = json.loads((out / "metrics.json").read_text())
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(metrics["test"]["accuracy"])
    assert any(tag.startswith("pictures/") for tag in events.Tags()["images"])  # curves.png and the others
    assert "config/text_summary" in events.Tags()["tensors"]


def test_a_study_logs_each_trial_as_an_mlflow_run_of_one_experiment(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns: keep it out of the checkout
    cfg = {**TINY, "train": {**TINY["train"], "epochs": 1, "report_to": ["mlflow"]},
           "tune": {"trials": 2, "sampler": "random", "seed": 1, "space": {"train.lr": {"choice": [0.003, 0.001]}}}}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["tune", str(path), "--out", str(tmp_path / "study"), "--quiet"]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        trial = tmp_path / "study" / "trials" / run.info.run_name
        assert trial.is_dir()  # one MLflow run per trial folder
        assert run.data.params["train.lr"] == str(yaml.safe_load((trial / "config.yaml").read_text())["train"]["lr"])
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.value for m in history] == pytest.approx([s["loss"] for s in _lines(trial / "train_log.jsonl")])
        assert "validation/accuracy" in run.data.metrics
        pictures = {p.name for pattern in ("*.png", "report.md") for p in trial.glob(pattern)}
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == pictures  # a trial writes no report


def test_a_missing_tracker_package_stops_before_the_run_directory_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(tracking.PACKAGES, "wandb", "no_such_package_for_ragtune")
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path)), "train.report_to=[wandb]", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train.report_to: wandb needs the package(s) no_such_package_for_ragtune: pip install 'ragtune[tracking]'" in err
    assert not out.exists()
    assert main(["validate", str(_config(tmp_path)), "train.report_to=[neptune]"]) == 2
    assert "tensorboard" in capsys.readouterr().err  # the valid choices


def test_a_tracker_that_fails_mid_run_is_dropped_and_the_run_finishes(tmp_path, monkeypatch, caplog):
    pytest.importorskip("tensorboard")
    calls = []

    def broken(self, values, step):
        calls.append(step)
        raise ConnectionError("tracking server gone")

    monkeypatch.setattr(tracking._TensorBoard, "scalars", broken)
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, report_to=["tensorboard"])), "--out", str(out), "--quiet"]) == 0
    assert calls == [1]  # tried once, then left out
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] >= 0
    assert sum("tensorboard failed (ConnectionError: tracking server gone)" in r.message for r in caplog.records) == 1


def test_a_run_logs_its_config_metrics_and_pictures_to_mlflow(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns: keep it out of the checkout
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, report_to=["mlflow"])), "--out", str(out), "--quiet"]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.info.run_name == "run" and run.data.params["model.d_model"] == "32"
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "report.md"} <= artifacts
    assert (tmp_path / "mlruns").is_dir()  # the artifacts in the test's folder, not the checkout's
    assert json.loads((out / "tracking.json").read_text()) == {"mlflow": run.info.run_id}  # what --resume continues


def _wandb_records(path):
    """The records of a W&B transaction log (``run-<id>.wandb``), read as wandb's own datastore did before its
    reader moved into the Go core: a 7-byte file header, then LevelDB-style 32 KiB blocks of records (4-byte
    checksum, 2-byte length, 1-byte type: full, first, middle, last), each a ``wandb_internal_pb2.Record``."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, pending, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # the zero padding at the end of a block
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_holds_the_step_log_the_config_the_test_metrics_and_the_pictures(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, report_to=["wandb"])), "--out", str(out), "--quiet"]) == 0
    (folder,) = (out / "wandb").glob("offline-run-*")
    run_id = json.loads((out / "tracking.json").read_text())["wandb"]
    records = _wandb_records(folder / f"run-{run_id}.wandb")
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    steps = _lines(out / "train_log.jsonl")
    losses = [h["train/loss"] for h in history if "train/loss" in h]
    assert losses == pytest.approx([s["loss"] for s in steps], rel=1e-6) and len(losses) == 8
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["model.d_model"] == 32 and run.project == "tracked"
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    pictures = {p.name.split("_8_")[0] for p in (folder / "files" / "media" / "images" / "pictures").glob("*.png")}
    assert {"curves", "confusion_matrix_test"} <= pictures
