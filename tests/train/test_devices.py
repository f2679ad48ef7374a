"""Devices and precision (ragtune/devices.py, the training loop): what a CPU-only machine can check.

The CUDA and MPS branches of `resolve` and `check_precision` read only `torch.cuda` / `torch.backends.mps`
state, replaced here; the runs use `train.device: cpu` and `auto` (which is the CPU here), fp16 with its
gradient scaler (CPU autocast has fp16), `train.compile`, an out-of-memory error raised mid-run, and a
checkpoint whose tensors were saved on a GPU, resumed on the CPU.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from tiny_hf import small_run_config

from ragtune import devices
from ragtune.cli import main
from ragtune.errors import RagtuneError

FAST = ["train.epochs=1", "train.steps_per_epoch=6"]


def _fake_gpus(monkeypatch, count: int, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")


def test_resolve_names_each_device_and_refuses_what_is_not_there(monkeypatch):
    if not torch.cuda.is_available() and not devices.mps_available():
        assert devices.resolve("auto") == torch.device("cpu")
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve(" CPU ") == torch.device("cpu")
    with pytest.raises(RagtuneError, match=r"--device: 'gpu' is not a device; choose auto, cpu, cuda, cuda:N or mps"):
        devices.resolve("gpu", key="--device")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RagtuneError, match=r"train.device: cuda, but torch .* choose auto or cpu"):
        devices.resolve("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(RagtuneError, match="train.device: mps, but this machine has no usable Apple MPS device"):
        devices.resolve("mps")
    assert devices.resolve("auto") == torch.device("cpu")

    _fake_gpus(monkeypatch, 2)
    assert devices.resolve("auto") == torch.device("cuda", 0)
    assert devices.resolve("cuda:1") == torch.device("cuda", 1)
    assert devices.resolve("cuda", local_rank=1) == torch.device("cuda", 1)  # torchrun: this process's own GPU
    with pytest.raises(RagtuneError, match=r"train.device: cuda:3 \(GPU 3\), but this machine has 2 GPUs \(cuda:0 to cuda:1\)"):
        devices.resolve("cuda:3")


def test_precision_is_checked_against_the_device(monkeypatch):
    _fake_gpus(monkeypatch, 1, bf16=False)
    with pytest.raises(RagtuneError, match=r"train.precision: bf16, but Tesla V100-SXM2-16GB \(cuda:0\) does not "
                                           r"support bfloat16; set train.precision: fp16"):
        devices.check_precision(torch.device("cuda", 0), "bf16")
    devices.check_precision(torch.device("cuda", 0), "fp16")
    devices.check_precision(torch.device("cpu"), "bf16")
    with pytest.raises(RagtuneError, match="choose one of fp32, bf16, fp16"):
        devices.check_precision(torch.device("cpu"), "fp8")


def test_out_of_memory_errors_are_recognised():
    assert devices.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert devices.is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert devices.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"))
    assert not devices.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert devices.to_device({"a": [torch.ones(1)], "b": 3}, torch.device("cpu"))["b"] == 3


def test_a_bad_device_in_the_config_is_named(tmp_path, capsys):
    config = small_run_config(tmp_path)
    assert main(["run", str(config), "train.device=gpu", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "train.device: must be auto, cpu, cuda, cuda:N (N a GPU number) or mps (got 'gpu')" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_missing_gpu_stops_the_run_before_anything_is_written(tmp_path, capsys):
    config = small_run_config(tmp_path)
    assert main(["run", str(config), "train.device=cuda", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.device: cuda, but torch ") and "choose auto or cpu" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_auto_trains_on_the_cpu_and_metrics_and_report_name_it(tmp_path):
    config = small_run_config(tmp_path)
    assert main(["run", str(config), *FAST, "train.device=auto", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    training = json.loads((tmp_path / "run" / "metrics.json").read_text())["training"]
    expected = "cuda:0" if torch.cuda.is_available() else ("mps" if devices.mps_available() else "cpu")
    assert training["device"] == expected and training["device_name"]
    assert training["precision"] == "fp32"
    assert 0 < training["peak_memory_gib"] < 64 and training["peak_memory_of"]
    assert f"Trained on {expected} (" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")


def test_fp16_trains_with_its_gradient_scaler_and_resumes(tmp_path):
    config = small_run_config(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["run", str(config), *FAST, "train.device=cpu", "train.precision=fp16", "--out", str(run_dir),
                 "--quiet"]) == 0
    losses = [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(0 < x < 10 for x in losses)
    state = torch.load(run_dir / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0  # the scaler's state is checkpointed ...
    assert json.loads((run_dir / "metrics.json").read_text())["training"]["precision"] == "fp16"
    # ... and restored: one more epoch from the checkpoint, in fp32 on resume (a run may change its precision)
    assert main(["run", str(config), "train.epochs=2", "train.steps_per_epoch=6", "train.device=cpu",
                 "train.precision=fp32", "--resume", str(run_dir), "--quiet"]) == 0
    assert len(json.loads((run_dir / "history.json").read_text())) == 2


def test_compile_trains_the_same_model_files(tmp_path):
    pytest.importorskip("torch._inductor")
    source = tmp_path / "tok"
    source.mkdir()
    assert main(["run", str(small_run_config(source)), *FAST, "--out", str(source / "run"), "--quiet"]) == 0
    config = small_run_config(tmp_path, str(source / "run" / "tokenizer.json"))  # one vocabulary for both runs
    same = [*FAST, "model.dropout=0"]  # compiled dropout draws other masks than eager dropout
    assert main(["run", str(config), *same, "train.compile=true", "--out", str(tmp_path / "compiled"), "--quiet"]) == 0
    assert main(["run", str(config), *same, "--out", str(tmp_path / "eager"), "--quiet"]) == 0
    from safetensors.torch import load_file

    compiled, eager = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("compiled", "eager"))
    assert sorted(compiled) == sorted(eager)  # no "_orig_mod." prefix: the run loads like any other
    assert main(["predict", str(tmp_path / "compiled"), "the match and the goal"]) == 0
    step = lambda name: [json.loads(line)["loss"] for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    assert max(abs(a - b) for a, b in zip(step("compiled"), step("eager"))) < 1e-3  # the same training, compiled


def test_out_of_memory_is_one_message_and_the_checkpoint_survives(tmp_path, monkeypatch, capsys):
    from ragtune.tasks.classification import recipe

    config = small_run_config(tmp_path)  # checkpoints every 2 steps
    run_dir = tmp_path / "run"
    real, calls = recipe.compute_loss, {"n": 0}

    def running_out(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # step 5: checkpoints after steps 2 and 4 exist
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "compute_loss", running_out)
    assert main(["run", str(config), *FAST, "--out", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    message = lines[0]
    for part in ("out of memory on cpu in training (epoch 1, step 5)", "train.batch_size 8", "model.max_length 32",
                 "train.batch_size=4 train.grad_accum_steps=2", "model.gradient_checkpointing",
                 f"the last checkpoint in {run_dir / 'checkpoints' / 'last'} is intact"):
        assert part in message, (part, message)
    state = torch.load(run_dir / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["optimizer_steps"] == 4
    monkeypatch.setattr(recipe, "compute_loss", real)
    assert main(["run", str(config), *FAST, "--resume", str(run_dir), "--quiet"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["training"]["optimizer_steps"] == 6


def test_a_checkpoint_saved_on_a_gpu_resumes_on_the_cpu(tmp_path, monkeypatch):
    """state.pt rewritten with every tensor tagged cuda:0 (what torch.save writes on a GPU): a plain
    torch.load fails on a machine without CUDA; the resume maps it to the CPU and continues."""
    config = small_run_config(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["run", str(config), *FAST, "--out", str(run_dir), "--quiet"]) == 0
    last = run_dir / "checkpoints" / "last"
    state = torch.load(last / "state.pt", weights_only=True)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(state, last / "state.pt")
    sums = json.loads((last / "checksums.json").read_text())
    sums["state.pt"] = hashlib.sha256((last / "state.pt").read_bytes()).hexdigest()
    (last / "checksums.json").write_text(json.dumps(sums))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(last / "state.pt", weights_only=True)  # what resuming did before map_location
    assert main(["run", str(config), "train.epochs=2", "train.steps_per_epoch=6", "train.device=auto",
                 "--resume", str(run_dir), "--quiet"]) == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert [e["epoch"] for e in history] == [1, 2] and history[1]["step"] == 12
