"""Time and peak memory of `ragtune index` (BM25) as the corpus grows: 100k and 1M synthetic passages.

    python benchmarks/index_scale.py --sizes 100000 1000000 --out benchmarks/results/index_scale.json

Each corpus is a JSONL file of one-passage documents (``{"id", "text"}``), 60 words each, drawn from
a Zipf-like distribution over a 50,000-word vocabulary (seeded), written under ``--work``
(default ``bench_out/index_scale``). Each ``ragtune index CORPUS --out DIR --kind bm25 --chunk-tokens 128``
runs as its own process; its wall time and peak resident memory (``ru_maxrss`` of the child, from
``os.wait4``) are recorded, with the corpus size on disk. The question the numbers answer: does
peak memory stay bounded as the corpus grows, or grow with it?
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_corpus(path: Path, n: int, seed: int = 0, words_per_passage: int = 60, vocab: int = 50_000) -> None:
    import numpy as np

    if path.exists() and path.stat().st_size > 0:
        return
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1)
    p = 1.0 / ranks
    p /= p.sum()
    words = np.array([f"w{i}" for i in range(vocab)])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            ids = rng.choice(vocab, size=(m, words_per_passage), p=p)
            for row, i in zip(ids, range(start, start + m)):
                f.write(json.dumps({"id": f"d{i}", "text": " ".join(words[row])}) + "\n")
    tmp.replace(path)


def measure(corpus: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "ragtune", "index", str(corpus), "--out", str(out), "--kind", "bm25", "--quiet",
           "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ragtune index failed: {stderr[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "summary": stdout.strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out" / "index_scale")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "index_scale.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        corpus = args.work / f"corpus_{n}.jsonl"
        write_corpus(corpus, n)
        row = {"passages": n, "corpus_mb": round(corpus.stat().st_size / 2**20, 1), **measure(corpus, args.work / f"idx_{n}")}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| passages | corpus MB | seconds | peak RSS MB |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['passages']:,} | {r['corpus_mb']} | {r['seconds']} | {r['peak_rss_mb']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/index_scale.py", *sys.argv[1:]]),
                                    "rows": rows}, indent=2) + "\n")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"RESULT size_ratio={b['passages'] / a['passages']:.0f} memory_ratio={b['peak_rss_mb'] / a['peak_rss_mb']:.2f} "
              f"time_ratio={b['seconds'] / a['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
