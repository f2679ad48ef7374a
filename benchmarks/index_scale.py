"""Time and peak memory of `ragtune index` as the corpus grows: 100k and 1M synthetic passages.

    python benchmarks/index_scale.py --sizes 100000 1000000 --out benchmarks/results/index_scale.json

Each corpus is a JSONL file of one-passage documents (``{"id", "text"}``), 60 words each, drawn from
a Zipf-like distribution over a 50,000-word vocabulary (seeded), written under ``--work``
(default ``bench_out/index_scale``), with a ``.npy`` of synthetic 384-dimensional vectors, one per
document (1,000 seeded Gaussian clusters; all-MiniLM-L6-v2's dimension; encoding a million
passages on 2 cores would take many hours, so the dense runs use these precomputed vectors).

Systems, each run as its own process; wall time and peak resident memory (the child's ``VmHWM``
at exit, see :func:`run`) are recorded:

* ``bm25s-in-memory``: the peer: bm25s's own ``BM25.index`` on all tokenized passages, then
  ``save`` (what ragtune did before it streamed; same tokenizer, same index files);
* ``bm25``: ``ragtune index CORPUS --out DIR --kind bm25`` (streaming);
* ``bm25-retrieve``: ``ragtune retrieve`` of 20 queries, k 10, on the ``bm25`` index (loading it
  checks every file's sha256; above 256 MB of passages they are read on demand);
  ``bm25-retrieve-eager``: the same with every passage loaded and the BM25 arrays read into memory
  (what ragtune did before);
* ``dense-ivfpq``: ``ragtune index CORPUS --kind dense --vectors V.npy --faiss ivfpq``;
* ``dense-flat``: the same with ``--faiss flat`` (an exact FAISS index holds every vector in memory).

The question the numbers answer: does peak memory stay bounded as the corpus grows, or grow with it?
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("bm25s-in-memory", "bm25", "bm25-retrieve", "bm25-retrieve-eager", "dense-ivfpq", "dense-flat")


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


def write_vectors(path: Path, n: int, dim: int = 384, clusters: int = 1000, seed: int = 0) -> None:
    """``n`` float32 vectors around 1,000 seeded Gaussian centres, written block by block (no memory map)."""
    import numpy as np

    if path.exists() and path.stat().st_size > 0:
        return
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    tmp = path.with_suffix(".tmp.npy")
    with open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        for start in range(0, n, 50_000):
            m = min(50_000, n - start)
            block = centers[rng.integers(0, clusters, m)] + 0.5 * rng.normal(size=(m, dim)).astype(np.float32)
            fh.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
    tmp.replace(path)


IN_MEMORY = """
import json, sys
from pathlib import Path
from ragtune.retrieval.bm25 import build_bm25, save_bm25
texts = [json.loads(line)["text"] for line in open(sys.argv[1], encoding="utf-8")]
save_bm25(build_bm25(texts), Path(sys.argv[2]))
print(f"bm25s indexed {len(texts)} passages")
"""


EAGER = """
import sys
from ragtune.retrieval import corpus
from ragtune.cli import main
corpus.PASSAGES_IN_MEMORY_BYTES = 1 << 62  # every passage in memory, BM25 arrays read (not memory-mapped)
sys.exit(main(["retrieve", sys.argv[1], *sys.argv[2:], "-k", "10"]))
"""

#: 20 queries of 3 words from the corpus vocabulary (frequent, middle and rare words).
QUERIES = [f"w{a} w{b} w{c}" for a, b, c in zip(range(0, 20), range(100, 2100, 100), range(30_000, 50_000, 1000))]


def command(system: str, corpus: Path, vectors: Path, out: Path) -> list[str]:
    if system == "bm25s-in-memory":
        return [sys.executable, "-c", IN_MEMORY, str(corpus), str(out)]
    if system.startswith("bm25-retrieve"):  # load the bm25 system's index and answer QUERIES
        index = str(out.parent / out.name.replace(system, "bm25"))
        if system == "bm25-retrieve":
            return [sys.executable, "-m", "ragtune", "retrieve", index, *QUERIES, "-k", "10"]
        return [sys.executable, "-c", EAGER, index, *QUERIES]
    cmd = [sys.executable, "-m", "ragtune", "index", str(corpus), "--out", str(out), "--quiet", "--overwrite"]
    if system == "bm25":
        return cmd + ["--kind", "bm25"]
    faiss = system.split("-", 1)[1]
    return cmd + ["--kind", "dense", "--encoder", "minilm", "--vectors", str(vectors), "--faiss", faiss]


#: Runs a command (``-m module args`` or ``-c code args``) and prints its peak resident memory (VmHWM) at exit.
PEAK = """
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                sys.stderr.write("PEAK_RSS_KB " + line.split()[1] + "\\n")
atexit.register(report)
mode, target = sys.argv[1], sys.argv[2]
sys.argv = [target] + sys.argv[3:]
if mode == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv[0] = "-c"
    exec(compile(target, "<benchmark>", "exec"), {"__name__": "__main__"})
"""


def run(cmd: list[str]) -> dict:
    """Run ``cmd`` (``[python, -m|-c, ...]``); its wall time, peak RSS and stdout.

    Peak RSS is the child's own ``VmHWM`` (``/proc/self/status``) read at exit, not ``ru_maxrss``
    from ``wait4``: a child started with vfork+exec inherits its parent's peak in ``ru_maxrss``
    (Linux records the old address space's high-water mark at exec), which made two systems report
    the benchmark process's own 1.65 GB in a first run.
    """
    wrapped = [cmd[0], "-c", PEAK, *cmd[1:]]
    start = time.perf_counter()
    done = subprocess.run(wrapped, capture_output=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed: {stderr[-2000:]}")
    peak_kb = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("PEAK_RSS_KB ")]
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb[-1] / 1024, 1),
            "summary": done.stdout.decode().strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out" / "index_scale")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "index_scale.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        corpus = args.work / f"corpus_{n}.jsonl"
        vectors = args.work / f"vectors_{n}.npy"
        write_corpus(corpus, n)
        if any(s.startswith("dense") for s in args.systems):
            write_vectors(vectors, n)
        for system in args.systems:
            out = args.work / f"idx_{system}_{n}"
            row = {"system": system, "passages": n, "corpus_mb": round(corpus.stat().st_size / 2**20, 1),
                   **run(command(system, corpus, vectors, out))}
            if system.startswith("bm25-retrieve"):
                row["index_mb"], row["summary"] = None, f"{len(row['summary'].splitlines())} hits printed"
            else:
                row["index_mb"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| system | passages | seconds | peak RSS MB | index on disk MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['passages']:,} | {r['seconds']} | {r['peak_rss_mb']} | {'-' if r['index_mb'] is None else r['index_mb']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/index_scale.py", *sys.argv[1:]]),
                                    "rows": rows}, indent=2) + "\n")
    for system in args.systems:
        mine = [r for r in rows if r["system"] == system]
        if len(mine) > 1:
            a, b = mine[0], mine[-1]
            print(f"RESULT {system} size_ratio={b['passages'] / a['passages']:.0f} "
                  f"memory_ratio={b['peak_rss_mb'] / a['peak_rss_mb']:.2f} time_ratio={b['seconds'] / a['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
