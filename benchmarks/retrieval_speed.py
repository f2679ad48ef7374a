"""Retrieval speed: ragtune's BM25 and FAISS paths against calling bm25s and FAISS directly (the floor).

    python benchmarks/retrieval_speed.py [--sizes 1000 100000] [--queries 200] [--k 10] [--threads 1]
                                         [--encode-up-to 1000] [--out benchmarks/results]
    # smoke run (a minute or two): sizes 500 and 5000, 50 queries, synthetic vectors only
    python benchmarks/retrieval_speed.py --quick --out /tmp/retrieval_speed

For every corpus size N, in one process and on the same passages:

**BM25.** ragtune: ``build_index(kind="bm25")`` on a JSONL file of the N passages (one passage per
document: chunking is turned off with a chunk size above the longest passage), then
``load_index(...)`` (which checks every file's sha256) and ``Index.search`` / ``search_batch``.
Floor: ``bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer("english"))`` +
``bm25s.BM25().index(...)`` in memory, and ``retrieve(bm25s.tokenize([query], ...), k)``. Both use
bm25s's defaults (Lucene, k1 1.5, b 0.75) and the same word pattern, stopwords and stemmer; ragtune
tokenizes with its own (Chinese-aware) tokenizer and returns ``Hit`` objects. ragtune's build time
includes reading the corpus file, writing ``passages.jsonl``, saving the bm25s index and the
manifest checksums; the floor's does not save anything (its save time is recorded in the JSON).

**FAISS.** One embeddings matrix (N x 384, float32, L2-normalised) is shared by both sides: ragtune
loads it memory-mapped with ``ragtune.retrieval.dense.load_embeddings`` and builds/searches with
``dense.build_faiss`` / ``dense.search_faiss``; the floor builds ``faiss.IndexFlatIP``,
``IndexHNSWFlat`` and ``IndexIVFPQ`` from the in-memory array with the same parameters (HNSW M 32,
efConstruction 80, efSearch max(64, k); IVFPQ ``dense.ivfpq_params``: nlist, m, 8 bits, nprobe) and
calls ``index.search``. Sizes up to ``--encode-up-to`` (default 1000) use real MiniLM embeddings of
the passages and questions (``dense.write_embeddings`` / ``encode_queries``; all-MiniLM-L6-v2
encodes only ~20-40 passages/s on a small CPU). Larger sizes use **synthetic vectors of the same
shape** (standard normal, seed 0, L2-normalised) for passages and queries: FAISS speed depends on
N, the dimension and the index parameters, not on what the vectors mean. The output says which.
Query *encoding* is not part of the FAISS numbers; with real embeddings the MiniLM single-query
encoding latency is reported on its own.

**Passages.** Up to 1,048 (the paragraphs of ``../shared/data/squad_v1.1/dev-part1.json``): the real
SQuAD paragraphs, in file order. Beyond: **synthetic text**, a seeded word sampler over the SQuAD
vocabulary (the words of the dev-part1 paragraphs drawn with their corpus frequencies; passage
lengths drawn from the real paragraph lengths; seed 0). Without the data file the benchmark stops
with a message.

**Queries.** ``--queries`` SQuAD questions (a seeded sample of dev-part1, seed 0), k = ``--k``.
Latency: each query alone, ragtune and the floor alternating query by query (which one goes first
alternates too), after 5 warm-up queries; p50 and p95 in ms. Batch: all queries in one call
(``search_batch`` / one ``retrieve`` / one ``index.search``), in queries per second.

Output: a Markdown table on stdout, JSON in ``OUT/retrieval_speed.json`` (``retrieval_speed_quick.json``
with ``--quick``), and as the last line ``RESULT key=value ...`` with, for each size N, the ragtune and
floor p50 latencies (ms) of BM25 and of each FAISS kind, and the BM25 build seconds.
``--threads`` sets FAISS's OpenMP threads and torch's threads (default 1: on a shared machine, more
threads than idle cores slow everything down).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SQUAD = ROOT.parent / "shared" / "data" / "squad_v1.1" / "dev-part1.json"
DIM = 384
WARMUP = 5
FAISS_KINDS = ("flat", "hnsw", "ivfpq")
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000], help="corpus sizes (passages)")
    p.add_argument("--queries", type=int, default=200, help="SQuAD questions timed per size")
    p.add_argument("--k", type=int, default=10, help="hits per query")
    p.add_argument("--threads", type=int, default=1, help="FAISS OpenMP and torch threads (default 1)")
    p.add_argument("--encode-up-to", type=int, default=1000, metavar="N",
                   help="sizes up to N use real MiniLM embeddings; larger ones synthetic vectors (default 1000)")
    p.add_argument("--faiss", nargs="+", default=list(FAISS_KINDS), choices=FAISS_KINDS, help="FAISS kinds to time")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON results")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: sizes 500 5000, 50 queries, synthetic vectors (unless --encode-up-to is given)")
    args = p.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        if "--sizes" not in given:
            args.sizes = [500, 5000]
        if "--queries" not in given:
            args.queries = 50
        if "--encode-up-to" not in given:
            args.encode_up_to = 0
    if any(n < 1 for n in args.sizes) or args.queries < 1 or args.k < 1 or args.threads < 1:
        p.error("--sizes, --queries, --k and --threads must be positive")
    return args


# --------------------------------------------------------------------------------------------- data


def load_squad() -> tuple[list[str], list[str]]:
    """``(paragraphs, questions)`` of dev-part1, in file order; stops with a message when absent."""
    if not SQUAD.is_file():
        print(f"SKIP: the SQuAD file {SQUAD} is not there; this benchmark needs it (../shared/data beside "
              "the repository)", file=sys.stderr)
        raise SystemExit(0)
    data = json.loads(SQUAD.read_text(encoding="utf-8"))
    paragraphs = [p["context"] for a in data["data"] for p in a["paragraphs"]]
    questions = [q["question"] for a in data["data"] for p in a["paragraphs"] for q in p["qas"]]
    return paragraphs, questions


def synthetic_passages(n: int, paragraphs: list[str], seed: int = SEED) -> list[str]:
    """``n`` passages of words drawn with their SQuAD frequencies, lengths drawn from the real paragraphs."""
    counts = Counter(w for p in paragraphs for w in re.findall(r"\S+", p))
    words = np.array(list(counts))
    probs = np.array(list(counts.values()), dtype=np.float64)
    probs /= probs.sum()
    lengths = np.array([len(p.split()) for p in paragraphs])
    rng = np.random.default_rng(seed)
    sizes = rng.choice(lengths, size=n)
    flat = rng.choice(len(words), size=int(sizes.sum()), p=probs)
    out, start = [], 0
    for i, size in enumerate(sizes):
        # a leading serial number keeps every passage distinct (ragtune drops duplicate passages)
        out.append(f"s{i} " + " ".join(words[flat[start:start + size]]))
        start += size
    return out


def passages_for(n: int, paragraphs: list[str]) -> tuple[list[str], str]:
    if n <= len(paragraphs):
        return paragraphs[:n], f"real SQuAD paragraphs (the first {n} of dev-part1)"
    return synthetic_passages(n, paragraphs), ("synthetic text: seeded word sampler over the SQuAD dev-part1 "
                                               "vocabulary (unigram frequencies, real paragraph lengths)")


def synthetic_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


# ------------------------------------------------------------------------------------------- timing


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p95_ms": round(float(np.percentile(ms, 95)), 4),
            "mean_ms": round(float(ms.mean()), 4)}


def alternate(first, second, items) -> tuple[list[float], list[float]]:
    """Per-item seconds of ``first(item)`` and ``second(item)``, called in turn (order swapped every item)."""
    for item in items[:WARMUP]:
        first(item)
        second(item)
    a, b = [], []
    for i, item in enumerate(items):
        order = ((first, a), (second, b)) if i % 2 == 0 else ((second, b), (first, a))
        for fn, times in order:
            t = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t)
    return a, b


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


# --------------------------------------------------------------------------------------------- BM25


def bench_bm25(texts: list[str], queries: list[str], k: int, work: Path) -> dict:
    import bm25s
    import Stemmer

    from ragtune.retrieval import build_index, load_index

    corpus = work / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"id": f"p{i}", "text": text}, ensure_ascii=False) + "\n"
                      for i, text in enumerate(texts))
    longest = max(len(t.split()) for t in texts)
    chunk = max(128, 2 * longest)  # larger than any passage: one passage per document
    _, build_s = timed(lambda: build_index([corpus], work / "bm25_index", kind="bm25", chunk_tokens=chunk,
                                           chunk_overlap=0, progress=False))
    index, load_s = timed(lambda: load_index(work / "bm25_index"))
    if len(index) != len(texts):
        raise SystemExit(f"ragtune indexed {len(index)} passages for {len(texts)} texts; the comparison needs the same")

    stemmer = Stemmer.Stemmer("english")

    def raw_build():
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return retriever

    raw, raw_build_s = timed(raw_build)
    _, raw_save_s = timed(lambda: raw.save(str(work / "bm25_raw"), show_progress=False))

    def raw_search(query_list):
        tokens = bm25s.tokenize(query_list, stopwords="en", stemmer=stemmer, show_progress=False)
        return raw.retrieve(tokens, k=k, show_progress=False)

    rt_times, raw_times = alternate(lambda q: index.search(q, k=k), lambda q: raw_search([q]), queries)
    _, rt_batch_s = timed(lambda: index.search_batch(queries, k=k))
    _, raw_batch_s = timed(lambda: raw_search(queries))
    # agreement of the top hit (same scoring; tokenizers differ in details, e.g. ragtune's CJK handling)
    rt_top = [h[0].id if h else None for h in index.search_batch(queries, k=1)]
    raw_rows, raw_scores = raw_search(queries)
    raw_top = [f"p{int(r[0])}::0" if s[0] > 0 else None for r, s in zip(raw_rows, raw_scores)]
    agree = sum(a == b for a, b in zip(rt_top, raw_top)) / len(queries)
    return {
        "ragtune": {"build_s": round(build_s, 3), "load_s": round(load_s, 3), **percentiles(rt_times),
                    "batch_qps": round(len(queries) / rt_batch_s, 1)},
        "floor": {"build_s": round(raw_build_s, 3), "save_s": round(raw_save_s, 3), **percentiles(raw_times),
                  "batch_qps": round(len(queries) / raw_batch_s, 1)},
        "top1_agreement": round(agree, 3),
    }


# -------------------------------------------------------------------------------------------- FAISS


def raw_faiss(kind: str, embeddings: np.ndarray, k: int):
    """The floor: a FAISS index built directly, with ragtune's parameters."""
    import faiss

    from ragtune.retrieval import dense

    n, dim = embeddings.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, dense.HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = dense.HNSW_EF_CONSTRUCTION
    else:
        params = dense.ivfpq_params(n, dim)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, params["nlist"], params["m"], params["nbits"],
                                 faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1
        index.pq.cp.min_points_per_centroid = 1
        train = embeddings
        if n > dense.IVFPQ_MAX_TRAIN:
            train = embeddings[np.sort(np.random.default_rng(SEED).choice(n, dense.IVFPQ_MAX_TRAIN, replace=False))]
        index.train(train)
        index.nprobe = params["nprobe"]
    index.add(embeddings)
    if kind == "hnsw":
        index.hnsw.efSearch = max(64, k)
    return index


def bench_faiss_kind(kind: str, emb_path: Path, in_memory: np.ndarray, query_vectors: np.ndarray, k: int) -> dict:
    """ragtune's ``build_faiss``/``search_faiss`` on the memory-mapped file against FAISS on the array."""
    from ragtune.retrieval import dense

    if kind == "ivfpq" and len(in_memory) < dense.IVFPQ_MIN_PASSAGES:
        return {"skipped": f"ivfpq needs at least {dense.IVFPQ_MIN_PASSAGES} passages"}
    start = time.perf_counter()
    rt_index, params = dense.build_faiss(dense.load_embeddings(emb_path), kind)
    rt_build_s = time.perf_counter() - start
    start = time.perf_counter()
    raw_index = raw_faiss(kind, in_memory, k)
    raw_build_s = time.perf_counter() - start
    rows = list(range(len(query_vectors)))
    rt_times, raw_times = alternate(lambda i: dense.search_faiss(rt_index, query_vectors[i:i + 1], k),
                                    lambda i: raw_index.search(query_vectors[i:i + 1], k), rows)
    _, rt_batch_s = timed(lambda: dense.search_faiss(rt_index, query_vectors, k))
    _, raw_batch_s = timed(lambda: raw_index.search(query_vectors, k))
    rt_top = [hits[0][0] for hits in dense.search_faiss(rt_index, query_vectors, 1)]
    raw_top = raw_index.search(query_vectors, 1)[1][:, 0].tolist()
    return {
        "params": params,
        "ragtune": {"build_s": round(rt_build_s, 3), **percentiles(rt_times),
                    "batch_qps": round(len(rows) / rt_batch_s, 1)},
        "floor": {"build_s": round(raw_build_s, 3), **percentiles(raw_times),
                  "batch_qps": round(len(rows) / raw_batch_s, 1)},
        "top1_agreement": round(sum(a == b for a, b in zip(rt_top, raw_top)) / len(rows), 3),
    }


def bench_faiss(kinds: list[str], emb_path: Path, query_vectors: np.ndarray, k: int) -> dict:
    import logging

    logging.getLogger("ragtune").setLevel(logging.ERROR)  # ivfpq's small-corpus note, once per build
    in_memory = np.ascontiguousarray(np.load(emb_path), dtype=np.float32)
    return {kind: bench_faiss_kind(kind, emb_path, in_memory, query_vectors, k) for kind in kinds}


def embeddings_for(n: int, texts: list[str], queries: list[str], args: argparse.Namespace, work: Path,
                   encoder_cache: dict) -> tuple[Path, np.ndarray, str, dict | None]:
    """``(embeddings.npy path, query vectors, description, encoder timings or None)``."""
    from ragtune.retrieval import dense

    path = work / "embeddings.npy"
    if n > args.encode_up_to:
        np.save(path, synthetic_vectors(n, SEED))
        return path, synthetic_vectors(len(queries), SEED + 1), (
            f"synthetic vectors ({DIM}-d, standard normal, L2-normalised, seed {SEED}; queries seed {SEED + 1})"), None
    if "model" not in encoder_cache:
        encoder_cache["model"] = dense.load_encoder("minilm")
    model = encoder_cache["model"]
    _, encode_s = timed(lambda: dense.write_embeddings(path, model, texts, batch_size=64))
    query_vectors, _ = timed(lambda: dense.encode_queries(model, queries))
    single = []
    for q in queries[:WARMUP]:
        dense.encode_queries(model, [q])
    for q in queries:
        t = time.perf_counter()
        dense.encode_queries(model, [q])
        single.append(time.perf_counter() - t)
    info = {"passages_per_s": round(n / encode_s, 1), "query_encode": percentiles(single)}
    return path, query_vectors, "MiniLM (all-MiniLM-L6-v2) embeddings of the passages and questions", info


# ------------------------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("ragtune", "bm25s", "faiss-cpu", "sentence-transformers", "torch", "numpy", "PyStemmer"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def fmt(x, digits=2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(results: list[dict]) -> list[str]:
    lines = ["| passages | method | system | build s | p50 ms | p95 ms | batch q/s | p50 vs floor |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        n = f"{r['n']:,}"
        entries = [("BM25", r["bm25"])] + [(f"FAISS {kind}", v) for kind, v in r["faiss"].items()]
        for name, entry in entries:
            if "skipped" in entry:
                lines.append(f"| {n} | {name} | - | - | - | - | - | skipped: {entry['skipped']} |")
                continue
            floor = entry["floor"]
            for system, row in (("ragtune", entry["ragtune"]), ("direct (floor)", floor)):
                ratio = f"{row['p50_ms'] / floor['p50_ms']:.2f}x" if floor["p50_ms"] else "-"
                lines.append(f"| {n} | {name} | {system} | {fmt(row['build_s'])} | {fmt(row['p50_ms'], 3)} | "
                             f"{fmt(row['p95_ms'], 3)} | {row['batch_qps']:,.0f} | {ratio} |")
    return lines


def result_line(results: list[dict]) -> str:
    parts = []
    for r in results:
        n = r["n"]
        bm = r["bm25"]
        parts += [f"bm25_p50_ms_n{n}={bm['ragtune']['p50_ms']:.3f}", f"bm25_floor_p50_ms_n{n}={bm['floor']['p50_ms']:.3f}",
                  f"bm25_build_s_n{n}={bm['ragtune']['build_s']:.2f}", f"bm25_floor_build_s_n{n}={bm['floor']['build_s']:.2f}"]
        for kind, v in r["faiss"].items():
            if "skipped" not in v:
                parts += [f"{kind}_p50_ms_n{n}={v['ragtune']['p50_ms']:.3f}",
                          f"{kind}_floor_p50_ms_n{n}={v['floor']['p50_ms']:.3f}"]
    return "RESULT " + " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    paragraphs, all_questions = load_squad()
    queries = random.Random(SEED).sample(all_questions, min(args.queries, len(all_questions)))
    command = "python benchmarks/retrieval_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = [
        f"- command: `{command.strip()}`",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; FAISS/torch threads {args.threads}",
        "- " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        (f"- queries: {len(queries)} SQuAD dev-part1 questions (seeded sample), k = {args.k}; latency = one query "
         f"per call, ragtune and floor alternating, {WARMUP} warm-up queries"),
        f"- load average before: {os.getloadavg()[0]:.2f}",
    ]
    print("\n".join(header), flush=True)
    results = []
    encoder_cache: dict = {}
    for n in args.sizes:
        texts, source = passages_for(n, paragraphs)
        with tempfile.TemporaryDirectory(prefix=f"retrieval_speed_{n}_") as tmp:
            work = Path(tmp)
            print(f"\n## {n:,} passages: {source}", flush=True)
            bm25 = bench_bm25(texts, queries, args.k, work)
            print(f"BM25: ragtune build {bm25['ragtune']['build_s']:.2f} s, p50 {bm25['ragtune']['p50_ms']:.3f} ms; "
                  f"floor build {bm25['floor']['build_s']:.2f} s, p50 {bm25['floor']['p50_ms']:.3f} ms; top-1 agreement "
                  f"{bm25['top1_agreement']:.0%}", flush=True)
            emb_path, query_vectors, emb_source, encoder = embeddings_for(n, texts, queries, args, work, encoder_cache)
            print(f"FAISS embeddings: {emb_source}", flush=True)
            if encoder:
                print(f"MiniLM: {encoder['passages_per_s']} passages/s encoded; one query encoded in "
                      f"{encoder['query_encode']['p50_ms']:.1f} ms (p50) — not part of the FAISS numbers", flush=True)
            faiss_results = bench_faiss(args.faiss, emb_path, query_vectors, args.k)
            for kind, v in faiss_results.items():
                if "skipped" in v:
                    print(f"FAISS {kind}: skipped ({v['skipped']})", flush=True)
                else:
                    print(f"FAISS {kind}: ragtune build {v['ragtune']['build_s']:.2f} s, p50 {v['ragtune']['p50_ms']:.3f} ms; "
                          f"floor build {v['floor']['build_s']:.2f} s, p50 {v['floor']['p50_ms']:.3f} ms", flush=True)
        results.append({"n": n, "passages": source, "embeddings": emb_source, "encoder": encoder, "bm25": bm25,
                        "faiss": faiss_results})
    header.append(f"- load average after: {os.getloadavg()[0]:.2f}")
    lines = table(results)
    result = result_line(results)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / ("retrieval_speed_quick.json" if args.quick else "retrieval_speed.json")
    payload = {"command": command.strip(), "header": header, "threads": args.threads, "k": args.k,
               "queries": len(queries), "versions": versions(), "cpu": cpu_model(), "results": results,
               "table": lines, "result": result}
    out_file.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print()
    for r in results:
        print(f"- {r['n']:,} passages: {r['passages']}; FAISS vectors: {r['embeddings']}")
    print(f"- load average after: {os.getloadavg()[0]:.2f}")
    print()
    print("\n".join(lines))
    print(f"\nJSON: {out_file}")
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
