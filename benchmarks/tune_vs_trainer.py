"""``ragtune tune`` vs the plain Optuna code a user writes around the Hugging Face ``Trainer``.

    python benchmarks/tune_vs_trainer.py --budget 3600 --threads 2          # the benchmark (2 x 1 hour)
    python benchmarks/tune_vs_trainer.py --budget 1500 --threads 2          # 2 x 25 minutes (the measured run)
    python benchmarks/tune_vs_trainer.py --budget 120 --steps 4 --max-length 32 --out /tmp/tune_smoke  # smoke

Both systems search the same space of ``configs/seed_tune.yaml`` (BBC News, 3 classes: learning rate,
optimizer, layers, width, FFN size, dropout) for the same wall-clock budget, one after the other on
the same threads, on the same rows (ragtune's ``prepare_data`` of that config: the same validation
carve), with the same pruning rule (Optuna's MedianPruner, same startup trials and warm-up):

(a) **ragtune**: ``ragtune tune configs/seed_tune.yaml tune.timeout_s=BUDGET tune.trials=1000``.
(b) **Trainer + Optuna**: ``trainer.hyperparameter_search(backend="optuna", ...)``, the documented
    recipe: ``model_init(trial)`` builds a ``BertForSequenceClassification`` of the trial's sizes
    (``num_hidden_layers``, ``hidden_size``, ``intermediate_size``, dropout; heads = width / 64, so
    each head is 64 wide as in ragtune's config), ``hp_space`` gives learning rate and optimizer
    (``sgd``/``adamw_torch``), ``max_steps`` and ``eval_steps`` match ragtune's epochs x steps, the
    objective is ``eval_accuracy``, and the Trainer reports every evaluation to Optuna for pruning.
    It reads the same WordPiece vocabulary (ragtune's study tokenizer, wrapped in
    ``PreTrainedTokenizerFast``) cut to the same ``max_length``.

Measured: best validation accuracy, the time from the study's start until the trial that reached it
finished, trials completed/pruned; for ragtune also the test accuracy of its best trial (the study's
one test evaluation) and of trial 0, which runs the seed's configuration itself (the seed's story:
the starting point, then what tuning found). Output: a Markdown table, ``benchmarks/results/tune_vs_trainer.json``
and as the last line ``RESULT ragtune_best=.. trainer_best=.. ragtune_time_to_best_s=.. trainer_time_to_best_s=.. budget_s=..``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs" / "seed_tune.yaml"
DATA = ROOT.parent / "shared" / "data" / "bbc_news"


def load_only_study(storage: str):
    """The (first) study stored at ``storage``."""
    import optuna

    name = optuna.get_all_study_summaries(storage)[0].study_name
    return optuna.load_study(study_name=name, storage=storage)


def study_numbers(storage: str) -> dict:
    """Best value, time to best (from the first trial's start) and trial counts of a stored study."""
    from optuna.trial import TrialState

    study = load_only_study(storage)
    trials = study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    best = study.best_trial
    states = [t.state for t in trials]
    return {"best_validation_accuracy": best.value, "best_trial": best.number, "best_params": best.params,
            "time_to_best_s": round((best.datetime_complete - start).total_seconds(), 1),
            "study_s": round((end - start).total_seconds(), 1),
            "complete": states.count(TrialState.COMPLETE), "pruned": states.count(TrialState.PRUNED),
            "failed": states.count(TrialState.FAIL)}


def run_ragtune(out: Path, overrides: list[str], threads: int | None) -> dict:
    study_dir = out / "ragtune"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        overrides = [*overrides, f"train.threads={threads}"]
    if not (study_dir / "summary.json").exists():
        cmd = [sys.executable, "-m", "ragtune", "tune", str(CONFIG), *overrides, "--out", str(study_dir), "--quiet"]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=sys.stderr)
    numbers = study_numbers(f"sqlite:///{study_dir / 'study.db'}")
    summary = json.loads((study_dir / "summary.json").read_text())
    numbers["best_test_accuracy"] = summary["best"]["test"].get("accuracy")
    numbers["seed_config"] = seed_config_result(f"sqlite:///{study_dir / 'study.db'}")
    return numbers


def seed_config_result(storage: str) -> dict:
    """Trial 0 runs the config's own values (``tune.start_from_config``): the seed's configuration under the
    same budget. Its validation accuracy, and its test accuracy (evaluated here, after the study)."""
    from ragtune.tasks import config_from_dict
    from ragtune.tasks import evaluate_test_split

    first = load_only_study(storage).get_trials(deepcopy=False)[0]
    cfg = config_from_dict(first.user_attrs["config"], "trial 0", saved=True)
    test = evaluate_test_split(cfg, first.user_attrs["run_dir"])
    return {"params": first.params, "state": first.state.name, "validation_accuracy": first.value,
            "test_accuracy": test["accuracy"],
            "seconds": round((first.datetime_complete - first.datetime_start).total_seconds(), 1)}


def run_trainer(out: Path, overrides: list[str], budget: float, threads: int | None) -> dict:
    import numpy as np
    import optuna
    import torch
    from sklearn.metrics import accuracy_score
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        PreTrainedTokenizerFast,
        Trainer,
        TrainingArguments,
    )

    from ragtune.tasks import load_config
    from ragtune.tasks.classification.data import prepare_data

    work = out / "trainer"
    storage = f"sqlite:///{work / 'study.db'}"
    if (work / "done").exists():
        return study_numbers(storage)
    work.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(CONFIG, overrides)
    data = prepare_data(cfg)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(out / "ragtune" / "tokenizer.json"), unk_token="[UNK]",
                                        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    labels = data.labels
    label_id = {label: i for i, label in enumerate(labels)}

    def encode(frame) -> list[dict]:
        enc = tokenizer(frame.text.tolist(), truncation=True, max_length=cfg.model.max_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": label_id[label]}
                for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], frame.label.tolist())]

    train_rows, validation_rows = encode(data.train), encode(data.validation)
    space = cfg.tune.space

    def hp_space(trial: optuna.Trial) -> dict:
        lr = space["train.lr"]["log_uniform"]
        return {"learning_rate": trial.suggest_float("learning_rate", lr[0], lr[1], log=True),
                "optim": trial.suggest_categorical("optim", ["sgd", "adamw_torch"])}

    def model_init(trial) -> BertForSequenceClassification:
        if trial is not None:  # the model's sizes are part of the same trial (the documented model_init(trial) recipe)
            width = trial.suggest_categorical("hidden_size", space["model.d_model"]["choice"])
            layers = trial.suggest_int("num_hidden_layers", *space["model.layers"]["int"])
            ffn = trial.suggest_categorical("intermediate_size", space["model.ffn_dim"]["choice"])
            dropout = trial.suggest_float("dropout", *space["model.dropout"]["uniform"])
        else:  # the Trainer builds one model before the search starts
            width, layers, ffn, dropout = cfg.model.d_model, cfg.model.layers, cfg.model.ffn_dim, cfg.model.dropout
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=width // 64, intermediate_size=ffn, hidden_dropout_prob=dropout,
                            attention_probs_dropout_prob=dropout, max_position_embeddings=cfg.model.max_length,
                            num_labels=len(labels), pad_token_id=tokenizer.pad_token_id)
        return BertForSequenceClassification(config)

    def compute_metrics(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return {"accuracy": float(accuracy_score(prediction.label_ids, np.asarray(logits).argmax(-1)))}

    steps = cfg.train.epochs * cfg.train.steps_per_epoch
    args = TrainingArguments(
        output_dir=str(work / "runs"), max_steps=steps, per_device_train_batch_size=cfg.train.batch_size,
        per_device_eval_batch_size=cfg.eval.batch_size, eval_strategy="steps", eval_steps=cfg.train.steps_per_epoch,
        save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
        seed=cfg.train.seed, dataloader_num_workers=0, lr_scheduler_type="constant",
    )
    trainer = Trainer(model_init=model_init, args=args, train_dataset=train_rows, eval_dataset=validation_rows,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)
    t = cfg.tune
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        trainer.hyperparameter_search(
            hp_space=hp_space, compute_objective=lambda metrics: metrics["eval_accuracy"], n_trials=1000,
            direction="maximize", backend="optuna", timeout=budget, storage=storage, study_name="trainer",
            sampler=optuna.samplers.TPESampler(seed=t.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=t.pruner_startup_trials,
                                               n_warmup_steps=t.pruner_warmup_epochs * cfg.train.steps_per_epoch),
        )
    (work / "done").write_text(f"{time.perf_counter() - started:.1f}\n")
    return study_numbers(storage)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=3600, help="seconds each system may start trials for (default 3600)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="override train.steps_per_epoch (smoke runs)")
    ap.add_argument("--max-length", type=int, default=None, help="override model.max_length (smoke runs)")
    ap.add_argument("--out", default="bench_out/tune_vs_trainer")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "tune_vs_trainer.json"))
    args = ap.parse_args()
    if not DATA.exists():
        print(f"SKIP: {DATA} not found (the benchmark needs ../shared/data beside the project)")
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"tune.timeout_s={args.budget}", "tune.trials=1000"]
    if args.steps:
        overrides.append(f"train.steps_per_epoch={args.steps}")
    if args.max_length:
        overrides.append(f"model.max_length={args.max_length}")
    results = {"ragtune": run_ragtune(out, overrides, args.threads)}
    results["trainer"] = run_trainer(out, overrides, args.budget, args.threads)
    results.update(budget_s=args.budget, overrides=overrides, machine={"cpu": platform.processor() or platform.machine(),
                                                                       "threads": args.threads},
                   command="python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    smoke = bool(args.steps or args.max_length)
    dest = Path(args.json).with_name("tune_vs_trainer_smoke.json") if smoke else Path(args.json)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2))
    print("| system | best validation accuracy | time to best (s) | completed | pruned | failed |\n|---|---|---|---|---|---|")
    for name, r in (("ragtune tune", results["ragtune"]), ("Trainer.hyperparameter_search (Optuna)", results["trainer"])):
        print(f"| {name} | {r['best_validation_accuracy']:.4f} | {r['time_to_best_s']:.0f} | {r['complete']} | "
              f"{r['pruned']} | {r['failed']} |")
    r, t = results["ragtune"], results["trainer"]
    seed = r["seed_config"]
    print(f"\nseed config (trial 0): validation {seed['validation_accuracy']:.4f}, test {seed['test_accuracy']:.4f}; "
          f"ragtune's best trial: validation {r['best_validation_accuracy']:.4f}, test {r['best_test_accuracy']:.4f}; "
          f"study {r['study_s']:.0f} s")
    print(f"\nwritten: {dest}")
    print(f"RESULT ragtune_best={r['best_validation_accuracy']:.4f} trainer_best={t['best_validation_accuracy']:.4f} "
          f"ragtune_time_to_best_s={r['time_to_best_s']:.0f} trainer_time_to_best_s={t['time_to_best_s']:.0f} "
          f"budget_s={args.budget:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
