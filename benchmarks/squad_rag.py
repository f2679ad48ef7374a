"""Open-domain QA on SQuAD v1.1 (the dev half in ../shared/data): retrievers, reranker, reader, RAG.

    python benchmarks/squad_rag.py --threads 2                  # the full benchmark (hours on 2 cores)
    python benchmarks/squad_rag.py --quick --threads 2          # a smoke run (small data, few steps)

Everything runs on the same files and split, and each stage's output is kept in ``--out`` (default
``bench_out/squad_rag``), so a killed benchmark continues where it stopped:

1. **split**: the articles of ``dev-part1.json`` are split 70/30 into train/test (seeded, by article:
   no paragraph is in both), written as SQuAD files ``train.json`` / ``test.json``.
2. **indexes** over all paragraphs of the file (the corpus; test paragraphs included, as in
   open-domain QA): BM25, dense (all-MiniLM-L6-v2) and hybrid (RRF), passages of 128 tokens.
3. **reranker**: a MiniLM cross-encoder trained on the train questions (BM25 hard negatives).
4. **reader**: ``ragtune run configs/squad_rag.yaml`` on train.json (gold paragraph + 2 BM25 distractors).
5. **RAG**: the same config with a dense index and ``retrieval.train_query_encoder: true`` (the task
   loss trains the query encoder and the reader, marginalising over the top 5 passages).
6. **evaluation on the test questions**: recall@1/5/20 and MRR@10 of the gold paragraph for BM25,
   dense, hybrid, the RAG-trained dense encoder, each with and without the reranker (top 20
   reranked); the reader's EM/F1 given the gold paragraph; end-to-end EM/F1 with each retriever
   (the reader of step 4 reads the top 5; the RAG run with its own encoder and reader).

Output: a Markdown table on stdout, ``benchmarks/results/squad_rag.json``, and as the last line
``RESULT bm25_r1=.. bm25_r5=.. best_r1=.. best_r5=.. best_retriever=.. reader_em=.. reader_f1=.. e2e_em=.. e2e_f1=.. e2e_system=..``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SQUAD = ROOT.parent / "shared" / "data" / "squad_v1.1" / "dev-part1.json"
CONFIG = ROOT / "configs" / "squad_rag.yaml"
KINDS = ("bm25", "dense", "hybrid")


def split_file(out: Path, test_fraction: float, seed: int, max_articles: int | None) -> tuple[Path, Path]:
    """train.json / test.json: whole articles of the SQuAD file, seeded (the split ragtune's split_by_article makes)."""
    train_path, test_path = out / "train.json", out / "test.json"
    if train_path.exists() and test_path.exists():
        return train_path, test_path
    raw = json.loads(SQUAD.read_text(encoding="utf-8"))
    articles = raw["data"][:max_articles] if max_articles else raw["data"]
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    n_test = min(max(1, round(test_fraction * len(articles))), len(articles) - 1)
    test_ids = set(order[:n_test])
    for path, keep in ((train_path, lambda i: i not in test_ids), (test_path, lambda i: i in test_ids)):
        data = {"version": raw.get("version", "1.1"), "data": [a for i, a in enumerate(articles) if keep(i)]}
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return train_path, test_path


def corpus_file(out: Path, max_articles: int | None) -> Path:
    """The corpus: every paragraph of the (possibly cut) SQuAD file."""
    if not max_articles:
        return SQUAD
    path = out / "corpus.json"
    if not path.exists():
        raw = json.loads(SQUAD.read_text(encoding="utf-8"))
        path.write_text(json.dumps({"version": "1.1", "data": raw["data"][:max_articles]}, ensure_ascii=False),
                        encoding="utf-8")
    return path


def timed(what: str, fn):
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    print(f"[squad_rag] {what}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return value, seconds


def ragtune_run(name: str, out: Path, overrides: list[str]) -> Path:
    run_dir = out / "runs" / name
    if not (run_dir / "metrics.json").exists():
        cmd = [sys.executable, "-m", "ragtune", "run", str(CONFIG), *overrides, "--out", str(run_dir), "--overwrite",
               "--quiet"]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=sys.stderr)
    return run_dir


def ranked_doc_sha1s(rows: list[list[tuple[int, float]]], passages: list[dict]) -> list[list[str]]:
    """Retrieved passages as their paragraphs' sha1s, each paragraph once (at its best rank)."""
    out = []
    for per_question in rows:
        seen: list[str] = []
        for row, _ in per_question:
            sha = passages[row]["doc_sha1"]
            if sha not in seen:
                seen.append(sha)
        out.append(seen)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/squad_rag")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 articles, a few training steps")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "squad_rag.json"))
    args = ap.parse_args()
    if not SQUAD.exists():
        print(f"SKIP: {SQUAD} not found (the benchmark needs ../shared/data beside the project)")
        return 0
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from ragtune.data.squad import read_squad
    from ragtune.evaluate.retrieval_metrics import retrieval_metrics
    from ragtune.models.reader import load_reader
    from ragtune.qa_predictor import QAPredictor
    from ragtune.retrieval.corpus import text_sha1
    from ragtune.retrieval.index import build_index, load_index
    from ragtune.retrieval.rerank import RerankedIndex, load_reranker, train_reranker

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    max_articles = 4 if args.quick else None
    train_json, test_json = split_file(out, 0.3, args.seed, max_articles)
    corpus = corpus_file(out, max_articles)
    test = read_squad(test_json)
    questions = [r.question for r in test]
    gold = [{text_sha1(r.context)} for r in test]
    timings: dict[str, float] = {}

    # 2. indexes
    indexes = {}
    for kind in KINDS:
        folder = out / "indexes" / kind
        if not (folder / "manifest.json").exists():
            _, timings[f"index_{kind}_s"] = timed(f"index {kind}", lambda: build_index(
                [str(corpus)], folder, kind=kind, encoder="minilm", progress=False, overwrite=True))
        indexes[kind] = load_index(folder)

    # 3. reranker
    reranker_dir = out / "reranker"
    if not (reranker_dir / "reranker.json").exists():
        _, timings["reranker_train_s"] = timed("reranker", lambda: train_reranker(
            indexes["bm25"], train_json, reranker_dir, base="minilm", negatives=3, epochs=1,
            lr=3e-5, seed=args.seed, progress=False, overwrite=True))
    reranker = load_reranker(reranker_dir)

    # 4./5. reader and RAG runs
    quick = ["train.epochs=1", "train.steps_per_epoch=3", "data.validation_fraction=0.3"] if args.quick else []
    threads = [f"train.threads={args.threads}"] if args.threads else []
    common = [f"data.train={train_json}", f"data.test={test_json}", "retrieval.corpus=null", *threads, *quick]
    reader_run = ragtune_run("reader", out, [*common, f"retrieval.index={out / 'indexes' / 'bm25'}"])
    rag_run = ragtune_run("rag", out, [*common, f"retrieval.index={out / 'indexes' / 'dense'}",
                                       "retrieval.train_query_encoder=true", "retrieval.refresh_every_epochs=null"])

    # 6. evaluation on the test questions
    rag = QAPredictor.from_run_dir(rag_run)
    retrievers = {kind: idx for kind, idx in indexes.items()}
    results: dict = {"retrieval": {}, "end_to_end": {}}
    for name, idx in retrievers.items():
        for reranked in (False, True):
            searcher = RerankedIndex(idx, reranker, candidates=20) if reranked else idx
            label = f"{name}+rerank" if reranked else name
            rows, seconds = timed(f"retrieve {label}", lambda: searcher.search_rows(questions, 20))
            metrics = retrieval_metrics(ranked_doc_sha1s(rows, idx.passages), gold, ks=(1, 5, 20))
            results["retrieval"][label] = {**metrics, "seconds": round(seconds, 1)}
    # the RAG-trained query encoder over its passage embeddings (rows = the dense index's passages)
    trained_rows = [[(row, score) for row, score, _ in per_q] for per_q in rag._retrieve(questions, 20)]
    results["retrieval"]["dense-trained (RAG)"] = retrieval_metrics(
        ranked_doc_sha1s(trained_rows, rag.index.passages), gold, ks=(1, 5, 20))

    reader, tokenizer = load_reader(str(reader_run / "reader"))
    meta = json.loads((reader_run / "model.json").read_text())
    gold_reader = json.loads((reader_run / "metrics.json").read_text())["test"]
    results["reader_given_gold"] = {"exact_match": gold_reader["reader_exact_match"], "f1": gold_reader["reader_f1"]}
    for name, idx in retrievers.items():
        for reranked in (False, True):
            searcher = RerankedIndex(idx, reranker, candidates=20) if reranked else idx
            label = f"{name}+rerank" if reranked else name
            predictor = QAPredictor(reader, tokenizer, meta, searcher, batch_size=64)
            scores, seconds = timed(f"end-to-end {label}", lambda: predictor.evaluate(test, with_gold=False))
            results["end_to_end"][label] = {"exact_match": scores["exact_match"], "f1": scores["f1"],
                                            "seconds": round(seconds, 1)}
    rag_scores = json.loads((rag_run / "metrics.json").read_text())["test"]
    results["end_to_end"]["RAG (trained encoder + reader)"] = {"exact_match": rag_scores["exact_match"],
                                                               "f1": rag_scores["f1"]}
    results["training_seconds"] = {name: json.loads((run / "metrics.json").read_text())["training"]["seconds"]
                                   for name, run in (("reader", reader_run), ("rag", rag_run))}
    results.update(timings=timings, quick=args.quick, n_test_questions=len(test),
                   n_passages=len(indexes["bm25"]), machine={"cpu": platform.processor() or platform.machine(),
                                                              "threads": torch.get_num_threads()},
                   command="python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    dest = Path(args.json if not args.quick else str(Path(args.json).with_name("squad_rag_quick.json")))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2))

    print("| retriever | recall@1 | recall@5 | recall@20 | MRR@10 |\n|---|---|---|---|---|")
    for name, m in results["retrieval"].items():
        print(f"| {name} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['recall@20']:.3f} | {m['mrr@10']:.3f} |")
    print("\n| system | EM | F1 |\n|---|---|---|")
    print(f"| reader given the gold paragraph | {results['reader_given_gold']['exact_match']:.1f} | "
          f"{results['reader_given_gold']['f1']:.1f} |")
    for name, m in results["end_to_end"].items():
        print(f"| {name} | {m['exact_match']:.1f} | {m['f1']:.1f} |")
    best = max(results["retrieval"], key=lambda n: (results["retrieval"][n]["recall@1"], results["retrieval"][n]["recall@5"]))
    e2e = max(results["end_to_end"], key=lambda n: results["end_to_end"][n]["exact_match"])
    b = results["retrieval"]
    print(f"\nwritten: {dest}")
    print(f"RESULT bm25_r1={b['bm25']['recall@1']:.4f} bm25_r5={b['bm25']['recall@5']:.4f} "
          f"best_r1={b[best]['recall@1']:.4f} best_r5={b[best]['recall@5']:.4f} best_retriever={best.replace(' ', '_')} "
          f"reader_em={results['reader_given_gold']['exact_match']:.2f} reader_f1={results['reader_given_gold']['f1']:.2f} "
          f"e2e_em={results['end_to_end'][e2e]['exact_match']:.2f} e2e_f1={results['end_to_end'][e2e]['f1']:.2f} "
          f"e2e_system={e2e.replace(' ', '_')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
