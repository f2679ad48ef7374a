"""Run one config over several seeds and summarise test/validation metrics as mean ± std.

    python benchmarks/run_seeds.py configs/seed_news.yaml --seeds 0 1 2 --out bench_out/seed_news
    python benchmarks/run_seeds.py configs/bbc3_scratch.yaml --seeds 0 1 2 --out bench_out/bbc3_scratch

Each seed is a normal ragtune run (``train.seed=S``) in ``OUT/seed-S``; a seed whose run already
finished (``metrics.json`` present) is read, not rerun, so the script can be restarted. The summary
goes to ``benchmarks/results/<config-stem>.json`` and is printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides for every seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", required=True, help="folder for the per-seed run directories")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        run_dir = out / f"seed-{seed}"
        if not (run_dir / "metrics.json").exists():
            cmd = [sys.executable, "-m", "ragtune", "run", args.config, *args.overrides, f"train.seed={seed}",
                   "--out", str(run_dir), "--overwrite", "--quiet"]
            print("$", " ".join(cmd), flush=True)
            started = time.time()
            subprocess.run(cmd, check=True)
            print(f"seed {seed}: {time.time() - started:.0f} s", flush=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        runs.append({"seed": seed, "run_dir": str(run_dir), **{
            f"{split}_{k}": metrics[split][k]
            for split in ("validation", "test") if split in metrics
            for k in ("accuracy", "macro_f1") if k in metrics[split]
        }, "train_seconds": metrics["training"]["seconds"], "tokens_per_s": metrics["training"]["tokens_per_s"],
            "best_epoch": metrics["training"]["best_epoch"]})

    def stat(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            return None
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    keys = [k for k in runs[0] if k not in ("seed", "run_dir")]
    summary = {
        "config": args.config,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "runs": runs,
        "summary": {k: stat(k) for k in keys},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    dest = ROOT / "benchmarks" / "results" / f"{Path(args.config).stem}.json"
    dest.write_text(json.dumps(summary, indent=2))
    print(f"\n| metric | mean ± std | per seed ({', '.join(map(str, args.seeds))}) |\n|---|---|---|")
    for k, s in summary["summary"].items():
        if s:
            print(f"| {k} | {s['mean']:.4f} ± {s['std']:.4f} | {', '.join(f'{v:.4f}' for v in s['values'])} |")
    print(f"\nwritten: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
