"""benchmarks/gpu_check.py: its helpers, and the whole script in --smoke mode on the CPU (slow, ~3 min)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_int8_packing_round_trips_within_half_a_step():
    gc = _module()
    torch.manual_seed(0)
    weights = {"w": torch.randn(50, 30), "b": torch.randn(30), "ids": torch.arange(4)}
    packed = gc.pack_int8(weights)
    assert packed["w.int8"].dtype == torch.int8 and packed["w.scale"].shape == (50, 1)
    back = gc.unpack_int8(packed)
    assert set(back) == {"w", "b", "ids"} and back["w"].dtype == torch.float32
    step = packed["w.scale"].float()
    assert ((back["w"] - weights["w"]).abs() <= step / 2 + 1e-6).all()
    assert torch.allclose(back["b"], weights["b"], atol=1e-2) and torch.equal(back["ids"], weights["ids"])


def test_compare_applies_the_stated_tolerances():
    gc = _module()
    ref = {"status": "ok", "losses": [1.0, 0.9, 0.8], "device": "cpu"}
    rows = {"cpu fp32": ref,
            "cuda fp32": {"status": "ok", "losses": [1.0, 0.9, 0.8 + 2 * gc.FP32_TOL], "device": "cuda:0"},
            "cuda bf16": {"status": "ok", "losses": [1.0, 0.95, 0.85], "device": "cuda:0"},
            "cuda fp16": {"status": "ok", "losses": [1.0, 0.9, 0.8], "device": "cpu"}}  # ran on the wrong device
    gc.compare("classification", rows, "cuda")
    assert not rows["cuda fp32"]["check"]["ok"]
    assert rows["cuda bf16"]["check"]["ok"] and rows["cuda bf16"]["check"]["tolerance"] == gc.HALF_TOL
    assert not rows["cuda fp16"]["check"]["ok"] and not rows["cuda fp16"]["check"]["device_ok"]


def test_wheel_list_brings_the_missing_packages_and_not_torch():
    pins = _module().list_wheels([])
    names = {p.split("==")[0] for p in pins}
    assert {"pydantic", "pydantic-core", "faiss-cpu", "fastapi", "uvicorn", "starlette", "optuna", "bm25s"} <= names
    assert not names & {"torch", "transformers", "numpy", "scikit-learn", "sentence-transformers"}


@pytest.mark.slow
def test_smoke_run_reports_every_part(tmp_path):
    gc = _module()
    try:
        gc.minilm_folder(tmp_path)
        gc.data_folder(tmp_path)
    except Exception as exc:  # no MiniLM package / no data beside the project
        pytest.skip(f"needs MiniLM and the data: {exc}")
    out = tmp_path / "gpu_check.json"
    # the smoke run takes 2-3 minutes here; a roomier budget than its default keeps a busy machine from
    # starving the last parts
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--budget-s", "420",
                           "--work", str(tmp_path / "work"), "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["parts"]) == set(gc.PARTS)
    assert all(p["status"] in ("ok", "failed", "skipped") for p in report["parts"].values())
    assert done.returncode == (1 if report["failed_gates"] else 0)
    assert report["failed_gates"] == [], {k: v.get("error") for k, v in report["parts"].items()}
    tasks = report["parts"]["tasks"]["tasks"]
    assert set(tasks) == set(gc.TASKS)
    for task in tasks.values():
        for name, row in task["variants"].items():
            assert row["status"] == "ok" and row["device"] == "cpu" and row["peak_memory_gib"] > 0
            assert len(row["losses"]) >= 2
            if name != "cpu fp32":
                assert row["check"]["ok"] and row["check"]["max_loss_diff"] <= row["check"]["tolerance"]
    serve = report["parts"]["serve"]
    assert serve["predict"]["rows"] == 2 and serve["serve"]["answer"]
    torchrun = report["parts"]["torchrun"]
    assert torchrun["device"] == "cpu" and torchrun["max_loss_diff_vs_single"] <= torchrun["tolerance"]
    minilm = report["parts"]["throughput"]["minilm"]
    for side in ("ragtune", "trainer"):
        assert minilm[side]["tokens_per_s"] > 0 and 0 <= minilm[side]["validation_accuracy"] <= 1
    assert minilm["token_counts_match"] and minilm["speedup"] > 0
    encoder = report["parts"]["throughput"]["encoder"]
    assert encoder["ceiling_tflops"] > 0
    for row in encoder["rows"].values():
        assert row["tokens_per_s"] > 0 and row["mfu"] > 0
    markdown = out.with_suffix(".md").read_text()
    assert "| classification | cpu bf16 | ok |" in markdown and "tokens/s" in markdown
