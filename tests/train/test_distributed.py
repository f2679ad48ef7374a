"""`torchrun --nproc_per_node 2 -m ragtune run`: DistributedDataParallel on 2 CPU processes (gloo).

The 2-process run must follow the single-process run with the same global batch step by step: each
rank takes half of every batch and DDP averages the gradients, so the losses agree up to the order
of floating-point sums (tolerance below). Dropout is off (its masks differ per rank), and both runs
read one tokenizer file (tokenizer training is not reproducible across processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tiny_hf import small_run_config

from ragtune.cli import main

TOLERANCE = 1e-4  # per-step training loss, absolute (losses are ~1)


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    pytest.importorskip("torch.distributed")
    source = tmp_path / "tok"
    source.mkdir()
    assert main(["run", str(small_run_config(source)), "train.epochs=1", "--out", str(source / "run"), "--quiet"]) == 0
    config = small_run_config(tmp_path, str(source / "run" / "tokenizer.json"))
    common = ["model.dropout=0", "train.epochs=2"]

    assert main(["run", str(config), *common, "--out", str(tmp_path / "single"), "--quiet"]) == 0
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "ragtune", "run", str(config), *common, "--out", str(tmp_path / "ddp"), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    single, ddp = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(single) == len(ddp) > 20
    worst = max(abs(a - b) for a, b in zip(single, ddp))
    assert worst <= TOLERANCE, (worst, single[:5], ddp[:5])
    print(f"largest per-step loss difference over {len(single)} steps: {worst:.2e}")
    assert single[-1] < single[0]  # it trains at all
    m1 = json.loads((tmp_path / "single" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert abs(m1["test"]["accuracy"] - m2["test"]["accuracy"]) <= 1 / 40 + 1e-9  # at most one of 40 test rows
    assert m2["training"]["tokens"] == m1["training"]["tokens"]  # tokens of every rank counted once
    assert list(scratch.glob("ragtune-rank*")) == []  # rank 1 worked in a temporary folder and removed it
    assert done.stdout.count("run directory:") == 1  # only rank 0 reports
