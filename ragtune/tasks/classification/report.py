"""``report.md``: the page a person reads first after a run."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING

from ragtune.runs import device_line, fmt, report_title, table
from ragtune.train.loop import TrainResult

if TYPE_CHECKING:
    from ragtune.tasks.classification.config import ClassificationConfig as RunConfig

_CLASS_KEYS = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall", "loss", "n")
_REG_KEYS = ("mse", "mae", "rmse", "r2", "pearson", "loss", "n")


def write_report(
    run_dir: Path,
    cfg: RunConfig,
    metrics: dict,
    result: TrainResult,
    data_report: dict,
    pictures: dict[str, str],
    model_summary: dict,
    wall_seconds: float,
) -> Path:
    """Write ``run_dir/report.md`` and return its path."""
    from ragtune.tasks.classification.data_report import data_report_markdown

    splits = [s for s in ("validation", "test") if s in metrics]
    keys = _CLASS_KEYS if cfg.task == "classification" else _REG_KEYS
    m = cfg.model
    lines = [
        report_title(cfg),
        "",
        f"*{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}* · task **{cfg.task}** · run directory `{run_dir}`",
        "",
        "## Results",
        "",
        *table(["metric", *splits], ([key, *(fmt(metrics[s].get(key), 4) for s in splits)] for key in keys)),
    ]
    training = metrics.get("training", {})
    lines += [
        "",
        f"Selected weights: epoch {result.best_epoch} by validation `{cfg.selection_metric}`"
        + (" (restored best)" if cfg.train.restore_best else " (last epoch)")
        + (f"; stopped early after epoch {len(result.history)}" if result.stopped_early else "")
        + ".",
        f"Training: {training.get('optimizer_steps')} optimizer steps, {training.get('tokens'):,} tokens, "
        f"{training.get('seconds')} s ({training.get('tokens_per_s')} tokens/s); whole run {wall_seconds:.1f} s.",
        "",
    ]
    r = cfg.retrieval
    if r.top_k and cfg.task == "classification":
        source = "its nearest labelled training texts" if r.source == "train" else f"`{r.index or 'index'}`"
        lines += [f"Retrieval: each text is read with the top {r.top_k} passages ({r.kind}) from {source}."]
        votes = metrics.get("retrieval") or {}
        if votes:
            lines += ["The neighbours' labels alone (majority of the top k / the nearest one): "
                      + "; ".join(f"{s} {v['neighbour_vote_accuracy']:.4f} / {v['top1_accuracy']:.4f}"
                                  for s, v in votes.items()) + "."]
        lines += [""]
    if cfg.task == "classification" and "test" in metrics:
        lines += ["## Per-class results (test)", "", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for label, row in metrics["test"]["per_class"].items():
            lines.append(f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
        lines.append("")
    for key, title in (("confusion_test", "Confusion matrix (test)"), ("confusion_validation", "Confusion matrix (validation)"),
                       ("curves", "Learning curves"), ("step_loss", "Training loss per step")):
        if key in pictures:
            lines += [f"## {title}", "", f"![{title}]({pictures[key]})", ""]
    if result.history:
        wanted = ["epoch", "step", "train_loss", "lr", "validation_loss", f"validation_{cfg.selection_metric}",
                  "validation_accuracy", "validation_macro_f1", "validation_mse", "validation_r2", "seconds"]
        cols = [k for k in dict.fromkeys(wanted) if k in result.history[0]]
        lines += ["## Epochs", "", *table(cols, ([fmt(entry.get(c), 4) for c in cols] for entry in result.history)), ""]
    lines += [
        "## Model",
        "",
        f"{model_summary['class']}: " + (f"pretrained `{m.name_or_path}`, " if m.backbone == "hf" else
                                         f"{m.layers} layers, {m.heads} heads × head_dim {m.head_dim}, d_model {m.d_model}, "
                                         f"ffn_dim {m.ffn_dim}, dropout {m.dropout}, ") + f"max_length {m.max_length}; "
        f"{model_summary['parameters']:,} parameters ({model_summary['non_embedding_parameters']:,} non-embedding).",
        f"Optimizer {cfg.train.optimizer} lr {cfg.train.lr}"
        + (f" momentum {cfg.train.momentum}" if cfg.train.optimizer == "sgd" else "")
        + f", schedule {cfg.train.schedule}, batch {cfg.train.batch_size}, {cfg.train.epochs} epochs"
        + (f" × {cfg.train.steps_per_epoch} steps" if cfg.train.steps_per_epoch else "")
        + f", precision {cfg.train.precision}, seed {cfg.train.seed}.",
        device_line(metrics.get("training", {})),
        "",
        "## Data",
        "",
        data_report_markdown(data_report).replace("\n# ", "\n### ").replace("\n## ", "\n### "),
        "",
    ]
    for key, title in (("class_balance", "data_class_balance.png"), ("lengths", "data_lengths.png")):
        if (run_dir / title).exists():
            lines += [f"![{key}]({title})", ""]
    lines += [
        "## Files",
        "",
        "`config.yaml` (resolved config) · `inputs.json` (sha256 of inputs) · `metrics.json` · `history.json` · "
        "`train_log.jsonl` · `run.log` · `tokenizer.json` · `model.json` · `model.safetensors` · `checkpoints/`",
        "",
        "Use the model: `ragtune predict RUN_DIR \"some text\"` · `ragtune eval RUN_DIR --data FILE`",
        "",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
