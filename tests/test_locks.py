"""One writer per output folder (ragtune/locks.py): a second `ragtune run` on the same --out stops with exit 2."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragtune.cli import main
from ragtune.errors import RagtuneError
from ragtune.locks import folder_lock, lock_path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_runs_on_the_same_out_one_wins_the_other_exits_2(tiny_config, tmp_path):
    out = tmp_path / "same"
    cmd = [sys.executable, "-m", "ragtune", "run", str(tiny_config), "--out", str(out), "--overwrite", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close(), p.stderr.close()
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert str(out) in loser and "PID" in loser and str(lock_path(out)) in loser
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    keys = [json.dumps(line, sort_keys=True) for line in lines]
    steps = [(line.get("epoch"), line.get("step"), line.get("split"), line.get("event")) for line in lines]
    assert len(set(steps)) == len(steps), f"two runs' lines interleave: {keys}"
    assert not lock_path(out).exists()


def test_a_held_lock_is_refused_with_the_pid(tmp_path):
    out = tmp_path / "f"
    path = lock_path(out)
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "command": "ragtune run x"}))
    with pytest.raises(RagtuneError, match=rf"PID {os.getppid()}.*ragtune run x"):
        with folder_lock(out):
            pass
    assert path.exists()  # someone else's lock is left alone


def test_a_stale_lock_is_taken_over_and_the_run_succeeds(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r"
    lock_path(out).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "command": "ragtune run"}))
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    assert "stale lock" in capsys.readouterr().err
    assert (out / "report.md").exists() and not lock_path(out).exists()


def test_the_lock_is_gone_after_a_failed_run(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 2  # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err
    assert not lock_path(out).exists()


def test_the_lock_is_gone_after_ctrl_c(tmp_path):
    out = tmp_path / "f"
    with pytest.raises(KeyboardInterrupt):
        with folder_lock(out) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
            raise KeyboardInterrupt
    assert not lock_path(out).exists()


def test_an_out_folder_under_a_file_is_one_clear_error(tmp_path):
    """--out whose parent is a file: exit 2 naming the folder, no traceback (the lock's parent folder cannot exist)."""
    import subprocess
    import sys

    (tmp_path / "afile").write_text("x", encoding="utf-8")
    for argv in (["run", "configs/demo.yaml", "--out", str(tmp_path / "afile" / "run"), "--quiet"],
                 ["index", "README.md", "--out", str(tmp_path / "afile" / "idx")]):
        proc = subprocess.run([sys.executable, "-m", "ragtune", *argv], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "cannot create its parent folder" in proc.stderr and "Traceback" not in proc.stderr


RACER = """
import json, os, sys, time
from pathlib import Path
from ragtune.errors import RagtuneError
import ragtune.locks
from ragtune.locks import folder_lock
check = ragtune.locks._stale
def slow_check(path, info):  # widen the window between finding a lock stale and removing it (a slow disk)
    stale = check(path, info)
    time.sleep(0.3)
    return stale
ragtune.locks._stale = slow_check
out, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    pass
try:
    with folder_lock(out):
        (out.parent / f"held-{os.getpid()}").write_text(json.dumps([time.time(), time.time() + 1.0]))
        time.sleep(1.0)
except RagtuneError:
    sys.exit(2)
"""


def test_many_processes_taking_over_one_stale_lock_get_it_once(tmp_path):
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for attempt in range(3):  # three races, each from a fresh stale lock
        lock_path(out).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "command": "x"}))
        start = time.time() + 2.0
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(out), str(start)], env=env,
                                  stderr=subprocess.DEVNULL) for _ in range(6)]
        codes = sorted(p.wait(timeout=60) for p in procs)
        held = sorted(tmp_path.glob("held-*"))
        assert codes == [0, 2, 2, 2, 2, 2] and len(held) == 1, (attempt, codes, held)
        for h in held:
            h.unlink()
        assert not lock_path(out).exists()
