"""Kill -9 and --resume, measured: what step checkpoints cost, and what a crash loses.

    python benchmarks/crash_resume.py --config configs/demo.yaml --every 10 --kills 3

1. A reference run of ``--config`` (its tokenizer is then read by every other run: training a
   tokenizer is not reproducible to the token across processes).
2. The same config uninterrupted, without step checkpoints and with a checkpoint every ``--every``
   optimizer steps (``train.checkpoint_every_steps``): training seconds of each, so the cost of the
   checkpoints.
3. ``--kills`` times: the checkpointed run is killed with SIGKILL at a random step (seeded), then
   ``ragtune run CONFIG --resume RUN_DIR``; recorded: the step it was killed at, the step it resumed
   from (the log's "resumed at epoch E step S (optimizer step N)"), steps redone, wall seconds of the
   resume, and whether ``metrics.json`` and ``history.json`` equal the uninterrupted checkpointed
   run's except wall-clock fields.

Every run uses the same seed and ``train.threads``; results go to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ragtune.train.loop import without_timing

ROOT = Path(__file__).resolve().parents[1]


def ragtune(*args: str) -> list[str]:
    return [sys.executable, "-m", "ragtune", *args]


ENV = {**os.environ, "PYTHONHASHSEED": "0"}


def run(config: str, out: Path, overrides: list[str]) -> float:
    """An uninterrupted run; returns its training seconds."""
    if out.exists():
        shutil.rmtree(out)
    subprocess.run(ragtune("run", config, *overrides, "--out", str(out), "--quiet"), check=True, env=ENV,
                   capture_output=True, cwd=ROOT)
    return json.loads((out / "metrics.json").read_text())["training"]["seconds"]


def same_results(a: Path, b: Path) -> bool:
    return all(without_timing(json.loads((a / f).read_text())) == without_timing(json.loads((b / f).read_text()))
               for f in ("metrics.json", "history.json"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--every", type=int, default=10, help="train.checkpoint_every_steps of the checkpointed runs")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="chooses the steps to kill at")
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out" / "crash_resume")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "crash_resume.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base = [f"train.threads={args.threads}", "train.log_every_steps=1"]

    run(args.config, args.work / "tokenizer_source", base)
    tokenizer = str(args.work / "tokenizer_source" / "tokenizer.json")
    base.append(f"tokenizer.path={tokenizer}")
    plain = run(args.config, args.work / "plain", base)
    ckpt = base + [f"train.checkpoint_every_steps={args.every}"]
    reference = args.work / "checkpointed"
    with_checkpoints = run(args.config, reference, ckpt)
    total_steps = len((reference / "train_log.jsonl").read_text().splitlines())
    print(f"training seconds: {plain:.1f} without step checkpoints, {with_checkpoints:.1f} with one every "
          f"{args.every} steps ({total_steps} steps)", flush=True)

    rng = random.Random(args.seed)
    kills = []
    for i in range(args.kills):
        kill_at = rng.randint(args.every + 1, total_steps - 2)
        out = args.work / f"crash_{i}"
        if out.exists():
            shutil.rmtree(out)
        started = time.perf_counter()
        proc = subprocess.Popen(ragtune("run", args.config, *ckpt, "--out", str(out), "--quiet"), env=ENV, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = out / "train_log.jsonl"
        while proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            raise SystemExit(f"kill {i}: the run ended (code {proc.returncode}) before step {kill_at}")
        logged = len(log.read_text().splitlines())
        crashed_after = time.perf_counter() - started
        started = time.perf_counter()
        resumed = subprocess.run(ragtune("run", args.config, *ckpt, "--resume", str(out), "--quiet"), env=ENV,
                                 cwd=ROOT, capture_output=True, text=True)
        resume_seconds = time.perf_counter() - started
        if resumed.returncode != 0:
            raise SystemExit(f"kill {i}: --resume failed: {resumed.stderr[-2000:]}")
        match = re.search(r"resumed at epoch (\d+) step (\d+) \(optimizer step (\d+)\)", resumed.stderr)
        from_step = int(match.group(3)) if match else None
        row = {"killed_after_step": logged, "resumed_from_step": from_step,
               "steps_redone": None if from_step is None else logged - from_step,
               "seconds_before_kill": round(crashed_after, 1), "resume_wall_seconds": round(resume_seconds, 1),
               "identical_metrics_and_history": same_results(reference, out)}
        print(json.dumps(row), flush=True)
        kills.append(row)

    result = {"command": " ".join(["python", "benchmarks/crash_resume.py", *sys.argv[1:]]), "config": args.config,
              "total_steps": total_steps, "checkpoint_every_steps": args.every,
              "training_seconds_without_step_checkpoints": plain, "training_seconds_with_step_checkpoints": with_checkpoints,
              "kills": kills}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"RESULT checkpoint_cost={with_checkpoints / plain - 1:+.1%} identical={sum(k['identical_metrics_and_history'] for k in kills)}/{len(kills)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
