"""Retrieval-augmented classification, off vs on, on the same data, split and seeds.

    python benchmarks/retrieval_classification.py configs/thucnews_best.yaml --seeds 0 1 2 --threads 2 \\
        --on retrieval.top_k=5 retrieval.source=train model.max_length=160

For each seed it runs the config twice through ``ragtune run``: as it is (retrieval off) and with
the ``--on`` overrides (e.g. labelled training neighbours, ``retrieval.source: train``). Both runs see
the same split (``train.seed``). Reported per seed and as mean ± std: test accuracy and macro-F1,
training seconds, and, for the ``on`` runs, the accuracy of the neighbours' labels alone (majority
of the top k, and the nearest one), which is the kNN baseline the model has to beat. The TF-IDF +
LinearSVC baseline (``benchmarks/tfidf_baseline.py``) on the same split is shown for reference.

Runs live in ``OUT/<off|on>/seed-S``; a run that finished (``metrics.json``) is read, not rerun. The
summary goes to ``benchmarks/results/retrieval_classification_<config-stem>.json``; the last line is
``RESULT off_acc=<x> on_acc=<x> tfidf_acc=<x> knn_acc=<x>`` (test means).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, overrides: list[str], seed: int, run_dir: Path, threads: int | None) -> dict:
    if not (run_dir / "metrics.json").exists():
        cmd = [sys.executable, "-m", "ragtune", "run", config, *overrides, f"train.seed={seed}",
               *([f"train.threads={threads}"] if threads else []), "--out", str(run_dir), "--overwrite", "--quiet"]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=sys.stderr)
    m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    row = {"accuracy": m["test"]["accuracy"], "macro_f1": m["test"]["macro_f1"],
           "validation_accuracy": m["validation"]["accuracy"], "train_seconds": m["training"]["seconds"],
           "best_epoch": m["training"]["best_epoch"], "run_dir": str(run_dir)}
    votes = (m.get("retrieval") or {}).get("test")
    if votes:
        row["knn_vote_accuracy"] = votes["neighbour_vote_accuracy"]
        row["knn_top1_accuracy"] = votes["top1_accuracy"]
    return row


def tfidf(resolved_yaml: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "tfidf_baseline.py"), str(resolved_yaml)]
    done = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])[0]
    return {"accuracy": row["test_accuracy"], "macro_f1": row["test_macro_f1"]}


def stat(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "values": values}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--on", nargs="+", required=True, metavar="KEY=VALUE",
                    help="overrides that turn retrieval on (e.g. retrieval.top_k=5 retrieval.source=train)")
    ap.add_argument("--common", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for both runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, help="torch threads of each run")
    ap.add_argument("--out", help="folder for the runs (default: bench_out/rac/<config-stem>)")
    ap.add_argument("--json", help="summary file (default: benchmarks/results/retrieval_classification_<stem>.json)")
    args = ap.parse_args()

    from ragtune.config import to_yaml
    from ragtune.tasks import load_config

    stem = Path(args.config).stem
    out = Path(args.out or ROOT / "bench_out" / "rac" / stem).resolve()
    rows = []
    for seed in args.seeds:
        cfg = load_config(args.config, [*args.common, f"train.seed={seed}"])
        resolved = out / f"resolved-seed-{seed}.yaml"
        resolved.parent.mkdir(parents=True, exist_ok=True)
        resolved.write_text(to_yaml(cfg), encoding="utf-8")
        row = {"seed": seed,
               "off": run(args.config, args.common, seed, out / "off" / f"seed-{seed}", args.threads),
               "on": run(args.config, [*args.common, *args.on], seed, out / "on" / f"seed-{seed}", args.threads),
               "tfidf": tfidf(resolved)}
        for name in ("off", "on", "tfidf"):
            r = row[name]
            extra = f", kNN vote {r['knn_vote_accuracy']:.4f}" if "knn_vote_accuracy" in r else ""
            print(f"[seed {seed}] {name}: test acc {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}"
                  + (f", {r['train_seconds']:.0f} s" if "train_seconds" in r else "") + extra, file=sys.stderr, flush=True)
        rows.append(row)

    summary = {name: {k: stat([r[name].get(k) for r in rows])
                      for k in ("accuracy", "macro_f1", "train_seconds", "knn_vote_accuracy", "knn_top1_accuracy")}
               for name in ("off", "on", "tfidf")}
    import torch

    result = {"config": args.config, "common": args.common, "on": args.on, "seeds": args.seeds, "runs": rows,
              "summary": summary, "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                              "threads": args.threads, "cpus": os.cpu_count()}}
    path = Path(args.json or ROOT / "benchmarks" / "results" / f"retrieval_classification_{stem}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")

    def cell(s: dict | None) -> str:
        return "–" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f}"

    print(f"| {stem} ({len(rows)} seeds) | test accuracy | test macro-F1 | training s | kNN vote (top k) |")
    print("|---|---|---|---|---|")
    for name, title in (("off", "retrieval off"), ("on", "retrieval on (" + " ".join(args.on) + ")"),
                        ("tfidf", "TF-IDF + LinearSVC")):
        s = summary[name]
        secs = "–" if s["train_seconds"] is None else f"{s['train_seconds']['mean']:.0f} ± {s['train_seconds']['std']:.0f}"
        print(f"| {title} | {cell(s['accuracy'])} | {cell(s['macro_f1'])} | {secs} | {cell(s['knn_vote_accuracy'])} |")
    knn = summary["on"]["knn_vote_accuracy"]
    print(f"RESULT off_acc={summary['off']['accuracy']['mean']:.4f} on_acc={summary['on']['accuracy']['mean']:.4f} "
          f"tfidf_acc={summary['tfidf']['accuracy']['mean']:.4f} knn_acc={knn['mean'] if knn else float('nan'):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
