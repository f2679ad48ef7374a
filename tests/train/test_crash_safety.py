"""Crash safety: kill -9 mid-training then --resume; corrupted checkpoints; a full disk.

The kill test runs `ragtune run` as a real process, kills it with SIGKILL once a step-level
checkpoint at a random step exists, resumes it, and compares `metrics.json` with an uninterrupted
run of the same config, seed and thread count (only wall-clock fields may differ). Both runs read
the same tokenizer file: training a tokenizer is not reproducible to the token across processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_hf import small_run_config

from ragtune.cli import main
from ragtune.errors import RagtuneError
from ragtune.train.checkpoint import load_latest_checkpoint, save_checkpoint
from ragtune.train.loop import without_timing

def _ragtune(*args: str) -> list[str]:
    return [sys.executable, "-m", "ragtune", *args]


def test_kill_9_then_resume_gives_the_same_metrics(tmp_path):
    first = tmp_path / "tok_source"
    first.mkdir()
    assert main(["run", str(small_run_config(first)), "train.epochs=1", "--out", str(first / "run"), "--quiet"]) == 0
    tokenizer = str(first / "run" / "tokenizer.json")

    ref_dir, crash_dir = tmp_path / "ref", tmp_path / "crash"
    ref_dir.mkdir()
    crash_dir.mkdir()
    ref_cfg, crash_cfg = small_run_config(ref_dir, tokenizer), small_run_config(crash_dir, tokenizer)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(_ragtune("run", str(ref_cfg), "--out", str(ref_dir / "run"), "--quiet"), check=True, env=env,
                   capture_output=True, timeout=600)

    total_steps = len((ref_dir / "run" / "train_log.jsonl").read_text().splitlines())  # one line per step
    assert total_steps >= 30
    kill_after = random.Random().randint(3, total_steps - 3)  # a random step, at least one checkpoint before it

    proc = subprocess.Popen(_ragtune("run", str(crash_cfg), "--out", str(crash_dir / "run"), "--quiet"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    crash_log = crash_dir / "run" / "train_log.jsonl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if crash_log.exists() and len(crash_log.read_text().splitlines()) >= kill_after:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (crash_dir / "run" / "metrics.json").exists()

    resumed = subprocess.run(_ragtune("run", str(crash_cfg), "--resume", str(crash_dir / "run"), "--quiet"), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at epoch" in resumed.stderr
    ref = json.loads((ref_dir / "run" / "metrics.json").read_text())
    got = json.loads((crash_dir / "run" / "metrics.json").read_text())
    assert without_timing(got) == without_timing(ref), f"killed after step {kill_after}"
    ref_history = json.loads((ref_dir / "run" / "history.json").read_text())
    got_history = json.loads((crash_dir / "run" / "history.json").read_text())
    assert without_timing(got_history) == without_timing(ref_history)


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def test_a_corrupted_checkpoint_falls_back_to_the_previous_good_one(tmp_path, caplog):
    folder = tmp_path / "checkpoints" / "last"
    model = _tiny_model()
    save_checkpoint(folder, model, {"step": 1})
    with torch.no_grad():
        model.weight.add_(1.0)
    save_checkpoint(folder, model, {"step": 2})
    assert (tmp_path / "checkpoints" / "last.prev").is_dir()
    state, used = load_latest_checkpoint(folder, _tiny_model())
    assert state["step"] == 2 and used == folder

    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])  # truncated
    fresh = _tiny_model()
    with caplog.at_level("WARNING", logger="ragtune"):
        state, used = load_latest_checkpoint(folder, fresh)
    assert state["step"] == 1 and used.name == "last.prev"
    assert "corrupted" in caplog.text and "last.prev" in caplog.text
    assert torch.equal(fresh.weight, _tiny_model().weight)  # the step-1 weights

    (tmp_path / "checkpoints" / "last.prev" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(RagtuneError, match="no usable checkpoint"):
        load_latest_checkpoint(folder, _tiny_model())


def test_a_crash_between_the_renames_leaves_a_checkpoint(tmp_path):
    folder = tmp_path / "last"
    model = _tiny_model()
    save_checkpoint(folder, model, {"step": 1})
    save_checkpoint(folder, model, {"step": 2})
    os.replace(folder, tmp_path / "last.tmp")  # as if killed after moving `last` aside, before the new one landed
    shutil.rmtree(tmp_path / "last.prev")
    state, used = load_latest_checkpoint(folder, _tiny_model())
    assert state["step"] == 2 and used.name == "last.tmp"


def test_a_full_disk_keeps_the_last_good_checkpoint(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        folder = mount / "last"
        save_checkpoint(folder, torch.nn.Linear(4, 3), {"step": 1})  # a few KB: fits
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        big = torch.nn.Linear(256, 256)  # 256 KB of weights: does not fit in 64 KB
        with pytest.raises(RagtuneError, match=r"no space left on device.*last good checkpoint .*last is intact"):
            save_checkpoint(folder, big, {"step": 2})
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
        assert not (mount / "last.tmp").exists()
        state, _ = load_latest_checkpoint(folder, torch.nn.Linear(4, 3))
        assert state["step"] == 1
    finally:
        subprocess.run(["umount", str(mount)], check=False)
