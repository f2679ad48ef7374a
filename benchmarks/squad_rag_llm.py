"""RAG fine-tuning of the generator: open-domain QA on SQuAD v1.1 with SmolLM2-135M-Instruct + LoRA.

    python benchmarks/squad_rag_llm.py --rows zero-shot,gold,retrieved,raft,raft-lsr --steps 70 --threads 2
    python benchmarks/squad_rag_llm.py --rows zero-shot --eval-questions 100      # one row, fewer questions

One job at a time on a 2-core machine (a training row is up to an hour there). Every row reads the same
files and the same seeded sample of ``--eval-questions`` (500) test questions, and writes
``OUT/<row>/metrics.json``; a row whose metrics exist is not run again, so a killed benchmark goes on
where it stopped. The rows (``configs/squad_rag_llm.yaml`` with overrides; same model, LoRA, steps,
batch, prompt size and decoding for every row):

=============  ==============================================================================================
zero-shot      the instruct model, no training: BM25 top 3 in the prompt (through the same prompt code)
gold           SFT on (gold passage, question) → answer: what LLaMA-Factory / TRL SFT on such pairs gives
retrieved      ragtune, the BM25 top 3 in training (the gold may be absent)
raft           ragtune, gold + 2 BM25 distractors, the gold left out with probability 0.2
raft-lsr       ragtune ``raft`` with a dense MiniLM retriever whose query encoder the LM trains (REPLUG LSR)
=============  ==============================================================================================

The extractive MiniLM RAG of ``benchmarks/squad_rag.py`` (EM 32.4 / F1 39.1, same split and test sample) is
the reference row; it is not re-run here.

Data: the articles of ``../shared/data/squad_v1.1/dev-part1.json`` split 70/30 by article (seed 0, the split
of ``benchmarks/squad_rag.py``); the corpus is every paragraph of the file. Reported per row: EM / F1 end to
end and with the gold passage, the retriever's recall@1 / @3 (for ``raft-lsr`` before and after training),
abstention (the gold paragraph taken out of the passages), training tokens/s and wall time. Output: a
Markdown table, ``benchmarks/results/squad_rag_llm.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from squad_rag import SQUAD, sample_questions, split_file  # noqa: E402  (the same split and test sample)

CONFIG = ROOT / "configs" / "squad_rag_llm.yaml"
BM25 = ["retrieval.kind=bm25", "retrieval.train_query_encoder=false"]
ROWS = {
    "gold": [*BM25, "qa.train_passages=gold", "qa.cite=false"],
    "retrieved": [*BM25, "qa.train_passages=retrieved", "qa.cite=false"],
    "raft": [*BM25, "qa.train_passages=raft", "qa.p_no_gold=0.2", "qa.cite=false"],
    "raft-lsr": ["qa.train_passages=raft", "qa.p_no_gold=0.2", "qa.cite=false"],  # the config's dense retriever
    # the same at the reader's LoRA rate (3e-4) for the query encoder: what the config did before it had
    # retrieval.query_encoder_lr (recall fell)
    "raft-lsr-lr3e-4": ["qa.train_passages=raft", "qa.p_no_gold=0.2", "qa.cite=false", "retrieval.query_encoder_lr=3e-4"],
}
KEYS = ("exact_match", "f1", "reader_exact_match", "reader_f1", "recall@1", "recall@3", "abstention", "abstained")


def row_overrides(args, train: Path, test: Path) -> list[str]:
    return [f"data.train={train}", f"data.test={test}", "data.validation_fraction=0.03", "data.test_fraction=0.1",
            f"retrieval.corpus=[{SQUAD}]", f"train.steps_per_epoch={args.steps}", f"train.batch_size={args.batch}",
            f"train.threads={args.threads}", f"eval.max_questions={args.eval_questions}",
            f"eval.max_decode_rows={args.validation_questions}"]


def zero_shot(args, out: Path, overrides: list[str]) -> dict:
    """The untrained instruct model read through the recipe's own predictor (BM25 top k, the same prompts)."""
    from ragtune.models.hf_text import load_hf_text_model
    from ragtune.retrieval import build_index, load_index
    from ragtune.tasks import load_config
    from ragtune.tasks.qa.data import prepare_qa_data, sample_questions as sample
    from ragtune.tasks.qa.generative import generative_predictor

    cfg = load_config(str(CONFIG), [*overrides, *BM25, "qa.train_passages=retrieved", "qa.cite=false"])
    r = cfg.retrieval
    folder = out / "zero-shot" / "index"
    if not (folder / "manifest.json").exists():
        build_index([str(SQUAD)], folder, kind="bm25", chunk_tokens=r.chunk_tokens, chunk_overlap=r.chunk_overlap,
                    progress=False)
    tokenizer, model, _ = load_hf_text_model(cfg.model.name_or_path, "causal", cfg.model.max_length)
    model.eval()
    predictor = generative_predictor(cfg, tokenizer, model, load_index(folder), str(folder))
    test = sample(prepare_qa_data(cfg).test, cfg.eval.max_questions, cfg.train.seed)
    started = time.perf_counter()
    metrics = {"test": predictor.evaluate(test)}
    metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="zero-shot,gold,retrieved,raft,raft-lsr")
    ap.add_argument("--out", default="bench_out/squad_rag_llm")
    ap.add_argument("--steps", type=int, default=36, help="training steps per row (default 36: about 30 minutes for "
                    "raft-lsr on 2 AVX2 cores)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval-questions", type=int, default=200, help="test questions scored (a seeded sample)")
    ap.add_argument("--validation-questions", type=int, default=20, help="validation questions answered each epoch")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not SQUAD.exists():
        print(f"skipped: {SQUAD} is not here (see ../shared/data/README.md)")
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train, full_test = split_file(out, 0.3, 0, None)
    test = sample_questions(full_test, out / f"test_sample{args.eval_questions}.json", args.eval_questions, 0)
    overrides = row_overrides(args, train, test)
    results_path = ROOT / "benchmarks" / "results" / "squad_rag_llm.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["setup"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "steps": args.steps,
                        "batch": args.batch, "eval_questions": args.eval_questions, "config": str(CONFIG.relative_to(ROOT))}
    for row in args.rows.split(","):
        run_dir = out / row
        if not (run_dir / "metrics.json").exists():
            print(f"== {row}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            if row == "zero-shot":
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "metrics.json").write_text(json.dumps(zero_shot(args, out, overrides), indent=1))
            elif row in ROWS:
                cmd = [sys.executable, "-m", "ragtune", "run", str(CONFIG), *overrides, *ROWS[row], "--out", str(run_dir),
                       "--overwrite", "--quiet"]
                print("$", " ".join(cmd), file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, cwd=ROOT, stdout=sys.stderr)
            else:
                raise SystemExit(f"unknown row {row!r}; choose from zero-shot, {', '.join(ROWS)}")
            wall = round(time.perf_counter() - started, 1)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            metrics["wall_s"] = wall
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        entry = {k: metrics["test"].get(k) for k in KEYS}
        training = metrics.get("training") or {}
        entry.update(tokens_per_s=training.get("tokens_per_s"), training_s=training.get("seconds"),
                     wall_s=metrics.get("wall_s"))
        if row.startswith("raft-lsr") and "recall_before" not in metrics:  # the untrained encoder on the same questions
            from ragtune.tasks import load_config
            from ragtune.tasks.qa.data import prepare_qa_data, sample_questions as sample
            from ragtune.tasks.qa.predictor import QAPredictor

            cfg = load_config(str(CONFIG), [*overrides, *ROWS[row]])
            predictor = QAPredictor.from_run_dir(run_dir)
            predictor.query_encoder = None
            before = predictor.evaluate(sample(prepare_qa_data(cfg).test, args.eval_questions, 0), with_gold=False,
                                        abstention=False)
            metrics["recall_before"] = {k: before.get(k) for k in ("recall@1", "recall@3", "exact_match", "f1")}
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if "recall_before" in metrics:
            entry["before_training_retriever"] = metrics["recall_before"]
        results[row] = entry
        results_path.write_text(json.dumps(results, indent=1))
        print(json.dumps({row: entry}), flush=True)
    print("| row | EM | F1 | EM / F1 with the gold passage | recall@1 | recall@3 | abstention | training tokens/s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row, e in results.items():
        if row == "setup":
            continue
        print(f"| {row} | {e['exact_match']} | {e['f1']} | {e['reader_exact_match']} / {e['reader_f1']} | "
              f"{e['recall@1']} | {e['recall@3']} | {e['abstention']} | {e['tokens_per_s'] or '–'} | {e['wall_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
