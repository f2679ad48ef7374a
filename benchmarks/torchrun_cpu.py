"""Every task under `torchrun --nproc_per_node 2` on this machine's CPU, against one process.

For each task a short run of its real config (../shared/data) trains twice with the same global batch and
`model.dropout: 0`: once in one process with `train.threads: 2`, once as 2 torchrun processes (gloo)
with `train.threads: 1` each, reading the tokenizer the first run trained. Reported: the wall time of the
whole `ragtune run` command, the training time (metrics.json `training.seconds`), and the largest per-step
difference of the logged training loss. On 2 cores no speed-up is expected (the two processes share the
cores the single process used, and add an all-reduce per step); the point is that each task runs and
matches. Results: benchmarks/results/torchrun_cpu.json and the table in BENCHMARKS.md.

    .venv/bin/python benchmarks/torchrun_cpu.py [--tasks classification,qa,...] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

#: task -> (config, overrides that make it a short run)
RUNS = {
    "classification": ("configs/bbc3_scratch.yaml", []),
    # qa: validation and test cut to ~1 article each (the reader reads the top 5 of every question: slow on 2 cores)
    "qa": ("configs/squad_rag.yaml", ["train.batch_size=8", "data.validation_fraction=0.05", "data.test_fraction=0.05"]),
    "qa-rag": ("configs/squad_rag.yaml", ["train.batch_size=8", "data.validation_fraction=0.05", "data.test_fraction=0.05",
                                          "retrieval.kind=dense", "retrieval.train_query_encoder=true",
                                          "retrieval.refresh_every_epochs=null"]),
    "translation": ("configs/multi30k_en_de.yaml", ["train.early_stopping_patience=null"]),
    "generation": ("configs/squad_generate.yaml", []),
}


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def _run(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(RUNS))
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (one epoch)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "torchrun_cpu.json"))
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: this benchmark reads the real data sets")
    rows = []
    with tempfile.TemporaryDirectory(prefix="torchrun-bench-") as scratch:
        scratch = Path(scratch)
        for task in args.tasks.split(","):
            config, extra = RUNS[task]
            common = [config, *extra, "train.epochs=1", f"train.steps_per_epoch={args.steps}", "train.log_every_steps=1",
                      "train.precision=fp32", "train.device=cpu", "train.checkpoint_every_steps=null", "--quiet"]
            if task != "qa" and task != "qa-rag":
                common.append("model.dropout=0")
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            one, two = scratch / f"{task}-1", scratch / f"{task}-2"
            single_wall = _run([sys.executable, "-m", "ragtune", "run", *common, "train.threads=2", "--out", str(one)], env)
            shared = [f"tokenizer.path={one / 'tokenizer.json'}"] if (one / "tokenizer.json").exists() else []
            ddp_wall = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "ragtune", "run", *common, *shared, "train.threads=1", "--out", str(two)], env)
            a, b = _losses(one), _losses(two)
            m1, m2 = (json.loads((d / "metrics.json").read_text())["training"] for d in (one, two))
            row = {"task": task, "steps": len(a), "single_wall_s": round(single_wall, 1), "torchrun_wall_s": round(ddp_wall, 1),
                   "single_train_s": m1["seconds"], "torchrun_train_s": m2["seconds"],
                   "max_step_loss_diff": max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else None,
                   "first_loss": a[0], "last_loss": a[-1]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "rows": rows}
    try:
        from ragtune.devices import cpu_name

        result["cpu"] = cpu_name()
    except ImportError:
        pass
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| task | steps | 1 process: wall / training s | torchrun 2 processes: wall / training s | max per-step loss diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['steps']} | {r['single_wall_s']} / {r['single_train_s']} | "
              f"{r['torchrun_wall_s']} / {r['torchrun_train_s']} | {r['max_step_loss_diff']:.1e} |")


if __name__ == "__main__":
    main()
