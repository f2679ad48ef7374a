"""ragtune fine-tuning vs the Hugging Face ``Trainer`` vs TF-IDF + LinearSVC, on the same rows.

    python benchmarks/finetune_vs_trainer.py --seeds 0 1 2 --threads 1
    # smoke (a minute or two): a few dozen rows, short texts, one epoch
    python benchmarks/finetune_vs_trainer.py --datasets bbc3 --seeds 0 --max-rows 48 --epochs 1 \\
        --max-length 32 --threads 1 --out /tmp/ft_smoke

For every data set (``bbc3``, ``bbc5``, ``thuc``: ``configs/{bbc3,bbc5,thucnews}_minilm.yaml``) and
every seed S:

(a) **ragtune** fine-tunes all-MiniLM-L6-v2: ``python -m ragtune run CONFIG train.seed=S ...`` in a
    subprocess; accuracy and macro-F1 on test and the training seconds come from its ``metrics.json``.
(b) **Trainer**: ``AutoModelForSequenceClassification`` from the same MiniLM folder, trained by
    ``transformers.Trainer`` with the config's epochs, batch size, lr, warmup steps, weight decay,
    linear schedule, bf16 on CPU, length-grouped batches and seed S, on exactly ragtune's training
    rows (``prepare_data`` on the same resolved config, so carved splits match). Texts are cut by the
    tokenizer to the same ``max_length`` (head truncation, as the configs ask of ragtune: the
    same input tokens on both sides), padded per batch by ``DataCollatorWithPadding``. Time: wall clock around
    ``trainer.train()``. Test accuracy / macro-F1 with scikit-learn on ragtune's test rows.
(c) **TF-IDF + LinearSVC**: ``benchmarks/tfidf_baseline.py`` run on the same resolved config (written
    to ``OUT/<dataset>/seed-S/resolved.yaml``), so it sees the same rows too.

Not identical by design (recorded in the JSON): ragtune's training seconds include its per-epoch
validation pass and checkpoints and it tests the best-validation epoch (``train.restore_best``),
while the Trainer runs no evaluation and tests its last epoch.

``--max-rows N`` replaces each source file by a deterministic class-balanced sample of N rows
(after ``keep_labels``), written to ``OUT/data/``; ``--epochs``/``--max-length`` override the configs.
All three overrides reach both frameworks alike (they change the resolved config both read).

Output: a Markdown table (mean ± std over seeds) on stdout, JSON in
``benchmarks/results/finetune_vs_trainer.json``, and as the last line
``RESULT bbc3_acc=.. bbc5_acc=.. thuc_acc=.. time_ratio_vs_trainer=..`` (ragtune's means; the ratio is
ragtune's mean training seconds over the Trainer's on BBC-3; ``nan`` for what was not run).
A seed whose ragtune run already finished (``metrics.json`` present) is read, not rerun; so is a
finished Trainer run (``trainer/result.json``), so a long benchmark can be run a data set or a seed at
a time and then summarised by one invocation over everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = {
    "bbc3": ROOT / "configs" / "bbc3_minilm.yaml",
    "bbc5": ROOT / "configs" / "bbc5_minilm.yaml",
    "thuc": ROOT / "configs" / "thucnews_minilm.yaml",
}
SYSTEMS = ("ragtune", "trainer", "tfidf")


def _sample_file(src: str, dest: Path, cfg, n: int) -> str:
    """A deterministic class-balanced sample of ``n`` rows of ``src`` (keep_labels applied) as CSV."""

    from ragtune.data.io import read_table

    df = read_table(src, cfg.data.format)
    label = df[cfg.data.label_column].astype(str).str.strip()
    if cfg.data.keep_labels:
        df = df[label.isin(cfg.data.keep_labels)]
        label = label[df.index]
    df = df.sample(frac=1.0, random_state=0)  # fixed: the same rows for every seed
    rank = df.groupby(label[df.index]).cumcount()  # interleave the classes: 1st of each, 2nd of each...
    df = df.assign(_rank=rank.values).sort_values("_rank", kind="stable").head(n).drop(columns="_rank")
    dest.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest, index=False)
    return str(dest)


def build_overrides(name: str, args, out: Path) -> list[str]:
    """Overrides shared by every seed and system (paths absolute, so the cwd does not matter)."""
    from ragtune.tasks import load_config

    base = load_config(DATASETS[name])
    overrides: list[str] = []
    if args.max_rows:
        for split in ("train", "validation", "test"):
            src = getattr(base.data, split)
            if src:
                dest = out / "data" / name / f"{split}.csv"
                overrides.append(f"data.{split}={_sample_file(src, dest, base, args.max_rows)}")
        if base.data.format != "auto":
            overrides.append("data.format=csv")
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    if args.max_length:
        overrides.append(f"model.max_length={args.max_length}")
        if base.model.head_tokens is not None and base.model.head_tokens >= args.max_length:
            overrides.append("model.head_tokens=null")  # a quarter of the new max_length
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    return overrides


def run_ragtune(config: Path, overrides: list[str], seed: int, run_dir: Path, threads: int | None) -> dict:
    if not (run_dir / "metrics.json").exists():
        cmd = [sys.executable, "-m", "ragtune", "run", str(config), *overrides, f"train.seed={seed}",
               "--out", str(run_dir), "--overwrite", "--quiet"]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=sys.stderr)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
            "train_seconds": metrics["training"]["seconds"], "best_epoch": metrics["training"]["best_epoch"],
            "run_dir": str(run_dir)}


def run_trainer(cfg, data, seed: int, work_dir: Path) -> dict:
    """The Trainer's run; its result is kept in ``work_dir/result.json`` and read, not rerun, next time."""
    done = work_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    result = _train_with_trainer(cfg, data, seed, work_dir)
    done.write_text(json.dumps(result, indent=2))
    return result


def _train_with_trainer(cfg, data, seed: int, work_dir: Path) -> dict:
    import numpy as np
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments, set_seed)

    from ragtune.models.hf import resolve_name_or_path

    source = resolve_name_or_path(cfg.model.name_or_path)
    labels = data.labels
    label_id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(source)

    def encode(frame, with_labels: bool) -> list[dict]:
        enc = tokenizer(frame.text.tolist(), truncation=True, max_length=cfg.model.max_length)
        rows = [{"input_ids": ids, "attention_mask": mask} for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        if with_labels:
            for row, label in zip(rows, frame.label.tolist()):
                row["labels"] = label_id[label]
        return rows

    train_rows, test_rows = encode(data.train, True), encode(data.test, False)
    set_seed(seed)  # the fresh classification head is initialised here, before the Trainer exists
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_id,
        ignore_mismatched_sizes=True, dtype=torch.float32)
    # transformers 5.x: `group_by_length=True` became `train_sampling_strategy="group_by_length"`
    targs = TrainingArguments(
        output_dir=str(work_dir), num_train_epochs=cfg.train.epochs,
        per_device_train_batch_size=cfg.train.batch_size, per_device_eval_batch_size=cfg.eval.batch_size,
        learning_rate=cfg.train.lr, warmup_steps=cfg.train.warmup_steps, weight_decay=cfg.train.weight_decay,
        lr_scheduler_type="linear", max_grad_norm=cfg.train.clip_grad_norm or 0.0,
        bf16=cfg.train.precision == "bf16", use_cpu=True, train_sampling_strategy="group_by_length",
        seed=seed, eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train_rows,
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its final train metrics
        trainer.train()
    seconds = time.perf_counter() - started
    # Predict with the Trainer's default (sequential) evaluation sampler: in transformers 5.x,
    # train_sampling_strategy="group_by_length" also reorders predict()'s batches by length, and the
    # predictions come back in that order, not the dataset's (chance-level accuracy against the gold).
    predict_args = TrainingArguments(output_dir=str(work_dir), per_device_eval_batch_size=cfg.eval.batch_size,
                                     bf16=cfg.train.precision == "bf16", use_cpu=True, report_to="none",
                                     disable_tqdm=True, dataloader_num_workers=0)
    predictor = Trainer(model=trainer.model, args=predict_args, data_collator=DataCollatorWithPadding(tokenizer),
                        processing_class=tokenizer)
    logits = predictor.predict(test_rows).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    pred = [labels[i] for i in np.asarray(logits).argmax(-1)]
    gold = data.test.label.tolist()
    work_dir.mkdir(parents=True, exist_ok=True)
    return {"accuracy": float(accuracy_score(gold, pred)),
            "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
            "train_seconds": round(seconds, 2), "optimizer_steps": trainer.state.global_step,
            "threads": torch.get_num_threads()}


def run_tfidf(resolved_yaml: Path) -> dict:
    """benchmarks/tfidf_baseline.py on the resolved config; its last stdout line is its JSON rows."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "tfidf_baseline.py"), str(resolved_yaml)]
    done = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])[0]
    return {"accuracy": row["test_accuracy"], "macro_f1": row["test_macro_f1"], "train_seconds": row["seconds"],
            "features": row["features"], "C": row["C"]}


def stat(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="bench_out/finetune", help="folder for the runs (default: bench_out/finetune)")
    ap.add_argument("--max-rows", type=int, help="smoke runs: a class-balanced sample of N rows of each file")
    ap.add_argument("--epochs", type=int, help="override train.epochs (both frameworks)")
    ap.add_argument("--max-length", type=int, help="override model.max_length (both frameworks)")
    ap.add_argument("--threads", type=int, help="torch threads (ragtune's train.threads and the Trainer's process)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "finetune_vs_trainer.json"),
                    help="where the JSON summary goes")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import transformers

    from ragtune.config import to_yaml
    from ragtune.tasks import load_config
    from ragtune.tasks.classification.data import prepare_data

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started_all = time.perf_counter()
    results: dict = {}
    for name in args.datasets:
        overrides = build_overrides(name, args, out)
        runs = []
        for seed in args.seeds:
            seed_dir = out / name / f"seed-{seed}"
            seed_dir.mkdir(parents=True, exist_ok=True)
            cfg = load_config(DATASETS[name], [*overrides, f"train.seed={seed}"])
            resolved = seed_dir / "resolved.yaml"
            resolved.write_text(to_yaml(cfg), encoding="utf-8")
            data = prepare_data(cfg)
            print(f"[{name} seed {seed}] train {len(data.train)}, validation {len(data.validation)}, "
                  f"test {len(data.test)} rows", file=sys.stderr, flush=True)
            row = {"seed": seed, "n_train": len(data.train), "n_validation": len(data.validation), "n_test": len(data.test)}
            row["ragtune"] = run_ragtune(DATASETS[name], overrides, seed, seed_dir / "ragtune", args.threads)
            row["trainer"] = run_trainer(cfg, data, seed, seed_dir / "trainer")
            row["tfidf"] = run_tfidf(resolved)
            for system in SYSTEMS:
                r = row[system]
                print(f"[{name} seed {seed}] {system}: acc {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, "
                      f"{r['train_seconds']:.1f} s", file=sys.stderr, flush=True)
            runs.append(row)
        cfg0 = load_config(DATASETS[name], overrides)
        results[name] = {
            "config": str(DATASETS[name].relative_to(ROOT)),
            "overrides": overrides,
            "settings": {"epochs": cfg0.train.epochs, "batch_size": cfg0.train.batch_size, "lr": cfg0.train.lr,
                         "warmup_steps": cfg0.train.warmup_steps, "weight_decay": cfg0.train.weight_decay,
                         "max_length": cfg0.model.max_length, "precision": cfg0.train.precision,
                         "ragtune_truncation": cfg0.model.truncation, "trainer_truncation": "head",
                         "ragtune_restore_best": cfg0.train.restore_best},
            "runs": runs,
            "summary": {system: {k: stat([r[system][k] for r in runs]) for k in ("accuracy", "macro_f1", "train_seconds")}
                        for system in SYSTEMS},
        }

    def mean(name: str, system: str, key: str) -> float:
        s = results.get(name, {}).get("summary", {}).get(system, {}).get(key)
        return s["mean"] if s else math.nan

    ratio = mean("bbc3", "ragtune", "train_seconds") / mean("bbc3", "trainer", "train_seconds")
    summary = {
        "datasets": results,
        "seeds": args.seeds,
        "time_ratio_vs_trainer_bbc3": None if math.isnan(ratio) else ratio,
        "smoke": bool(args.max_rows or args.epochs or args.max_length),
        "notes": ["ragtune train_seconds include its per-epoch validation pass and checkpoints; the Trainer's do not",
                  "ragtune tests the best-validation epoch (restore_best), the Trainer its last epoch",
                  "TF-IDF seconds: vectorizer fit + C search on validation + test prediction"],
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "transformers": transformers.__version__},
        "wall_seconds": round(time.perf_counter() - started_all, 1),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    dest = Path(args.json)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(summary, indent=2))

    def cell(s: dict | None, digits: int) -> str:
        return "n/a" if not s else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"

    print("| data set | system | test accuracy | test macro-F1 | training s | n train / test | seeds |\n"
          "|---|---|---|---|---|---|---|")
    for name, res in results.items():
        r0 = res["runs"][0]
        for system in SYSTEMS:
            s = res["summary"][system]
            print(f"| {name} | {system} | {cell(s['accuracy'], 4)} | {cell(s['macro_f1'], 4)} | "
                  f"{cell(s['train_seconds'], 1)} | {r0['n_train']} / {r0['n_test']} | {len(res['runs'])} |")
    print(f"\nwritten: {dest}")
    fmt = lambda x: "nan" if math.isnan(x) else f"{x:.4f}"  # noqa: E731
    print(f"RESULT bbc3_acc={fmt(mean('bbc3', 'ragtune', 'accuracy'))} bbc5_acc={fmt(mean('bbc5', 'ragtune', 'accuracy'))} "
          f"thuc_acc={fmt(mean('thuc', 'ragtune', 'accuracy'))} time_ratio_vs_trainer={fmt(ratio)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
