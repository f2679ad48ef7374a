"""Open-domain QA on SQuAD v1.1 (the dev half in ../shared/data): retrievers, reranker, reader, RAG.

    python benchmarks/squad_rag.py --threads 2 --reranker-questions 0 --rag-steps 150   # ~3 h on 2 cores
    python benchmarks/squad_rag.py --quick --threads 2 --out /tmp/squad_quick            # a smoke run

Everything runs on the same files and split, and each stage's output is kept in ``--out`` (default
``bench_out/squad_rag``; every measured number goes into ``OUT/results.json`` as soon as it exists),
so a killed benchmark continues where it stopped:

1. **split**: the articles of ``dev-part1.json`` are split 70/30 into train/test (seeded, by article:
   no paragraph is in both), written as SQuAD files ``train.json`` / ``test.json``. Every evaluation
   reads the same seeded sample of ``--eval-questions`` (500) test questions, because reading 5
   passages per question is the slow part; recall without reranking is also given on all of them.
2. **indexes** over all 1,048 paragraphs of the file (the corpus; test paragraphs included, as in
   open-domain QA): BM25, dense (all-MiniLM-L6-v2) and hybrid (RRF), passages of 128 tokens.
3. **retrieval** recall@1/5/20 and MRR@10 of the gold paragraph (a hit is any of its passages).
4. **reader**: ``ragtune run configs/squad_rag.yaml`` on train.json (gold paragraph + 2 BM25
   distractors, ``--reader-epochs`` 1, fp32); EM/F1 given the gold paragraph, and end-to-end EM/F1
   reading the top 5 passages of each retriever.
5. **reranker**: a cross-encoder trained on ``--reranker-questions`` train questions (3 BM25 hard
   negatives each), starting from ``--reranker-base``: ``reader`` (default: the reader of step 4, an
   encoder that already reads questions against passages) or ``minilm`` (the sentence encoder, whose
   scoring head starts from nothing: 800 questions and 207 steps taught it nothing); the top 20 of
   each retriever reranked: retrieval and end-to-end again.
6. **RAG**: the reader of step 4 and the MiniLM query encoder trained further by the task loss
   (``retrieval.train_query_encoder: true``, top 5 dense passages marginalised, passage side frozen)
   for ``--rag-steps`` steps; the trained encoder's recall and the RAG run's end-to-end EM/F1, and
   both again with the reranker rescoring the trained encoder's top 20.

Output: Markdown tables on stdout, ``benchmarks/results/squad_rag.json``, and as the last line
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


def sample_questions(source: Path, dest: Path, n: int | None, seed: int) -> Path:
    """A SQuAD file with ``n`` of ``source``'s questions (seeded), their paragraphs kept whole; all when ``n`` is None."""
    if not n:
        return source
    if not dest.exists():
        raw = json.loads(source.read_text(encoding="utf-8"))
        ids = [qa["id"] for a in raw["data"] for p in a["paragraphs"] for qa in p["qas"]]
        keep = set(random.Random(seed).sample(ids, min(n, len(ids))))
        for a in raw["data"]:
            for p in a["paragraphs"]:
                p["qas"] = [qa for qa in p["qas"] if qa["id"] in keep]
            a["paragraphs"] = [p for p in a["paragraphs"] if p["qas"]]
        raw["data"] = [a for a in raw["data"] if a["paragraphs"]]
        dest.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return dest


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


class CachedRows:
    """A searcher that remembers its top-20 rows per question list, so retrieval metrics and the
    end-to-end run (which reads the top 5) share one search (and one reranking)."""

    def __init__(self, searcher) -> None:
        self.searcher, self.passages, self._cache = searcher, searcher.passages, {}

    def __len__(self) -> int:
        return len(self.searcher)

    def hit(self, row: int, score: float):
        return self.searcher.hit(row, score)

    def search_rows(self, queries, k: int = 5):
        key = tuple(queries)
        if key not in self._cache or len(self._cache[key][0]) < min(k, len(self)):
            self._cache[key] = self.searcher.search_rows(list(queries), max(k, 20))
        return [rows[:k] for rows in self._cache[key]]


class TrainedDenseRows:
    """The RAG run's retriever (its trained query encoder against the frozen passage vectors) as a
    searcher, so the reranker can rescore its top 20 like any index's."""

    def __init__(self, rag) -> None:
        self.rag, self.index, self.passages = rag, rag.index, rag.index.passages

    def __len__(self) -> int:
        return len(self.passages)

    def hit(self, row: int, score: float):
        return self.index.hit(row, score)

    def search_rows(self, queries, k: int = 5):
        return [[(row, score) for row, score, _ in per_q] for per_q in self.rag._retrieve(list(queries), k)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/squad_rag")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 articles, a few training steps")
    ap.add_argument("--reader-epochs", type=int, default=1, help="epochs of reader training (default 1)")
    ap.add_argument("--rag-epochs", type=int, default=1,
                    help="epochs of RAG training, which starts from the reader of step 4 (default 1)")
    ap.add_argument("--rag-steps", type=int, default=30, help="optimizer steps per RAG epoch (default 30: 480 questions)")
    ap.add_argument("--eval-questions", type=int, default=500,
                    help="test questions evaluated (a seeded sample; 0: all; default 500)")
    ap.add_argument("--reranker-questions", type=int, default=800,
                    help="training questions the reranker learns from (a seeded sample; 0: all; default 800)")
    ap.add_argument("--reranker-base", choices=("reader", "minilm"), default="reader",
                    help="what the reranker starts from: the reader of step 4 (default) or the MiniLM sentence encoder")
    ap.add_argument("--reranker-epochs", type=int, default=1, help="epochs of reranker training (default 1)")
    ap.add_argument("--reranker-lr", type=float, default=1e-4, help="peak learning rate of the reranker (default 1e-4)")
    ap.add_argument("--reranker-max-length", type=int, default=192,
                    help="tokens per question+passage pair (passages are 128 tokens; default 192)")
    ap.add_argument("--rerank-kinds", nargs="+", default=list(KINDS), choices=KINDS,
                    help="retrievers whose top 20 the reranker rescores (default: all three)")
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
    from ragtune.tasks.qa.predictor import QAPredictor
    from ragtune.retrieval.corpus import text_sha1
    from ragtune.retrieval.index import build_index, load_index
    from ragtune.retrieval.rerank import RerankedIndex, load_reranker, train_reranker

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    max_articles = 4 if args.quick else None
    train_json, full_test_json = split_file(out, 0.3, args.seed, max_articles)
    corpus = corpus_file(out, max_articles)
    full_test = read_squad(full_test_json)
    # every evaluation below reads the same seeded sample of the test questions (end-to-end reading is
    # the slow part); recall without reranking is also given on the whole test split
    test_json = sample_questions(full_test_json, out / f"test_sample{args.eval_questions}.json",
                                 None if args.quick else args.eval_questions, args.seed)
    reranker_json = sample_questions(train_json, out / f"reranker_train{args.reranker_questions}.json",
                                     None if args.quick else args.reranker_questions, args.seed)
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

    # Each result is written to ``--out``/results.json as soon as it is measured, so a stopped run
    # keeps what it measured and a restarted one skips it.
    cache_path = out / "results.json"
    results: dict = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for key in ("retrieval", "end_to_end", "timings", "training_seconds"):
        results.setdefault(key, {})
    results["timings"].update(timings)

    def save() -> None:
        cache_path.write_text(json.dumps(results, indent=2))

    def measure_retrieval(label: str, searcher) -> None:
        if label not in results["retrieval"]:
            rows, seconds = timed(f"retrieve {label}", lambda: searcher.search_rows(questions, 20))
            metrics = retrieval_metrics(ranked_doc_sha1s(rows, searcher.passages), gold, ks=(1, 5, 20))
            results["retrieval"][label] = {**metrics, "seconds": round(seconds, 1)}
            save()

    def measure_end_to_end(label: str, predictor) -> None:
        if label not in results["end_to_end"]:
            scores, seconds = timed(f"end-to-end {label}", lambda: predictor.evaluate(test, with_gold=False))
            results["end_to_end"][label] = {"exact_match": scores["exact_match"], "f1": scores["f1"],
                                            "seconds": round(seconds, 1)}
            save()

    # 3. retrieval without reranking (on the sample, and on the whole test split)
    searchers = {kind: CachedRows(idx) for kind, idx in indexes.items()}
    for kind, searcher in searchers.items():
        measure_retrieval(kind, searcher)
    if "retrieval_full_test" not in results:
        full_gold = [{text_sha1(r.context)} for r in full_test]
        results["retrieval_full_test"] = {
            kind: retrieval_metrics(ranked_doc_sha1s(idx.search_rows([r.question for r in full_test], 20), idx.passages),
                                    full_gold, ks=(1, 5, 20)) for kind, idx in indexes.items()}
        results["n_full_test_questions"] = len(full_test)
        save()

    # 4. the reader (trained with BM25 distractors), given the gold paragraph and behind each retriever
    quick = ["train.epochs=1", "train.steps_per_epoch=3", "data.validation_fraction=0.3"] if args.quick else []
    threads = [f"train.threads={args.threads}"] if args.threads else []
    common = [f"data.train={train_json}", f"data.test={test_json}", "retrieval.corpus=null", *threads, *quick]
    reader_epochs = [] if args.quick else [f"train.epochs={args.reader_epochs}"]
    reader_run = ragtune_run("reader", out, [*common, *reader_epochs, f"retrieval.index={out / 'indexes' / 'bm25'}"])
    reader_metrics = json.loads((reader_run / "metrics.json").read_text())
    results["training_seconds"]["reader"] = reader_metrics["training"]["seconds"]
    results["reader_given_gold"] = {"exact_match": reader_metrics["test"]["reader_exact_match"],
                                    "f1": reader_metrics["test"]["reader_f1"]}
    save()
    reader, tokenizer = load_reader(str(reader_run / "reader"))
    meta = json.loads((reader_run / "model.json").read_text())
    for kind, searcher in searchers.items():
        measure_end_to_end(kind, QAPredictor(reader, tokenizer, meta, searcher, batch_size=64))

    # 5. the reranker (top 20 of each retriever rescored), then retrieval and end-to-end with it
    # (its folder and results are named by its settings, so another reranker is measured afresh)
    setting = (f"{args.reranker_base}_q{args.reranker_questions}_e{args.reranker_epochs}_lr{args.reranker_lr:g}"
               f"_len{args.reranker_max_length}")
    if results.get("reranker", {}).get("setting") != setting:
        for section in ("retrieval", "end_to_end"):
            results[section] = {k: v for k, v in results[section].items() if "+rerank" not in k}
        results["reranker"] = {"setting": setting}
        save()
    reranker_dir = out / f"reranker_{setting}"
    if not (reranker_dir / "reranker.json").exists():
        base = str(reader_run / "reader") if args.reranker_base == "reader" else "minilm"
        _, results["timings"]["reranker_train_s"] = timed("reranker", lambda: train_reranker(
            indexes["bm25"], reranker_json, reranker_dir, base=base, negatives=3, epochs=args.reranker_epochs,
            lr=args.reranker_lr, max_length=args.reranker_max_length, seed=args.seed, progress=True,
            overwrite=True))
        save()
    info = json.loads((reranker_dir / "reranker.json").read_text())
    results["reranker"].update(base=args.reranker_base, counts=info["counts"], loss=info["loss"],
                               seconds=info["seconds"], settings=info["settings"])
    save()
    reranker = load_reranker(reranker_dir, batch_size=64)
    for kind, idx in indexes.items():
        if kind not in args.rerank_kinds:
            continue
        label = f"{kind}+rerank"
        if label in results["retrieval"] and label in results["end_to_end"]:
            continue
        searcher = CachedRows(RerankedIndex(idx, reranker, candidates=20))
        measure_retrieval(label, searcher)
        measure_end_to_end(label, QAPredictor(reader, tokenizer, meta, searcher, batch_size=64))

    # 6. RAG: the reader of step 4 and the MiniLM query encoder trained further by the task loss,
    # marginalising over the top 5 dense passages (passage side frozen)
    rag_epochs = [] if args.quick else [f"train.epochs={args.rag_epochs}", f"train.steps_per_epoch={args.rag_steps}",
                                        "train.warmup_steps=10"]
    rag_run = ragtune_run(f"rag_s{args.rag_steps}", out, [*common, *rag_epochs, f"retrieval.index={out / 'indexes' / 'dense'}",
                                       f"model.name_or_path={reader_run / 'reader'}",
                                       "retrieval.train_query_encoder=true", "retrieval.refresh_every_epochs=null"])
    rag = QAPredictor.from_run_dir(rag_run)
    trained_rows = [[(row, score) for row, score, _ in per_q] for per_q in rag._retrieve(questions, 20)]
    label = f"RAG-trained dense ({args.rag_steps} steps)"
    results["retrieval"][label] = retrieval_metrics(ranked_doc_sha1s(trained_rows, rag.index.passages), gold, ks=(1, 5, 20))
    rag_metrics = json.loads((rag_run / "metrics.json").read_text())
    results["end_to_end"][f"RAG: trained encoder + reader ({args.rag_steps} steps)"] = {
        "exact_match": rag_metrics["test"]["exact_match"], "f1": rag_metrics["test"]["f1"]}
    results["training_seconds"][f"rag_{args.rag_steps}_steps"] = rag_metrics["training"]["seconds"]
    save()
    # the RAG-trained retriever's top 20 reranked, read by the RAG run's reader (the reranked passages
    # carry reranker scores, so the answer is scored by the reader alone, not with log p(z|x))
    if "dense" in args.rerank_kinds:
        label = f"RAG-trained dense ({args.rag_steps} steps)+rerank"
        searcher = CachedRows(RerankedIndex(TrainedDenseRows(rag), reranker, candidates=20))
        measure_retrieval(label, searcher)
        measure_end_to_end(label, QAPredictor(rag.reader, rag.tokenizer, rag.meta, searcher, batch_size=64))
    results.update(quick=args.quick, n_test_questions=len(test), n_reranker_questions=len(read_squad(reranker_json)), n_train_questions=len(read_squad(train_json)),
                   n_passages=len(indexes["bm25"]), machine={"cpu": platform.processor() or platform.machine(),
                                                              "threads": torch.get_num_threads()},
                   command="python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    save()
    dest = Path(args.json if not args.quick else str(Path(args.json).with_name("squad_rag_quick.json")))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2))

    print(f"{len(test)} sampled test questions:\n| retriever | recall@1 | recall@5 | recall@20 | MRR@10 |\n|---|---|---|---|---|")
    for name, m in results["retrieval"].items():
        print(f"| {name} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['recall@20']:.3f} | {m['mrr@10']:.3f} |")
    print(f"\nwithout reranking, all {results['n_full_test_questions']} test questions:")
    for name, m in results["retrieval_full_test"].items():
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
