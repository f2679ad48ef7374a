"""Draw validation BLEU against minutes of training from a results file of the Multi30k run.

    python benchmarks/plot_bleu_minutes.py benchmarks/results/multi30k_en_de.json --out benchmarks/results/multi30k_bleu_minutes.png

The JSON holds ``curve`` (one point per epoch: ``training_minutes``, ``greedy_bleu_500``) and
``validation_final`` (the beam-search BLEU on every validation pair after training).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--goal", type=float, default=30.0, help="horizontal goal line (BLEU)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(args.results.read_text())
    xs = [p["training_minutes"] for p in data["curve"]]
    ys = [p["greedy_bleu_500"] for p in data["curve"]]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(xs, ys, marker="o", label="greedy BLEU, 500 validation pairs (each epoch)")
    final = data["validation_final"]
    ax.scatter([data["training"]["seconds"] / 60], [final["bleu"]], color="C3", zorder=3,
               label=f"{final['strategy']} BLEU, all {final['n']} validation pairs (final)")
    ax.axhline(args.goal, color="grey", linestyle="--", linewidth=1, label=f"goal {args.goal:g} BLEU")
    ax.axvline(60, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("minutes of training (2 CPU cores)")
    ax.set_ylabel("BLEU")
    ax.set_title("Multi30k en→de, Transformer from scratch")
    ax.set_ylim(0, max(ys + [final["bleu"]]) + 5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
