"""The training loop: one explicit function a reader can follow top to bottom.

:func:`train_model` runs ``epochs × steps_per_epoch`` optimizer steps over a :class:`BatchStream`,
validates after every epoch, keeps the best weights (by the selection metric; on a tie, the epoch with
the lower validation ``loss`` wins), checkpoints, and stops early when asked.
There is no Trainer object and no callback system: the few places where other parts of ragtune
need to step in are plain function arguments:

* ``evaluate()`` → dict of validation metrics (must contain the selection metric);
* ``on_epoch_end(epoch, metrics) -> bool`` — report the metric each epoch (tuning) and return
  ``True`` to stop (pruning);
* ``before_epoch(epoch)`` — e.g. refresh a retrieval index;
* ``is_main_process`` — only that process writes files and shows progress (distributed runs).

Files written into ``out_dir`` (when given and on the main process):
``checkpoints/last/`` (weights + optimizer/scheduler/RNG/data-order state, each epoch and every
``checkpoint_every_steps``), ``checkpoints/best/model.safetensors``, ``train_log.jsonl`` (one JSON
line every ``log_every_steps`` steps) and ``history.json`` (one entry per epoch).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ragtune.config import TrainConfig
from ragtune.errors import RagtuneError
from ragtune.evaluate.metrics import metric_direction
from ragtune.train import distributed
from ragtune.train.batches import BatchStream, pad_batch
from ragtune.train.checkpoint import (
    checkpoint_exists,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
)
from ragtune.train.optim import build_optimizer, build_scheduler, layer_decay_scales

log = logging.getLogger("ragtune.train")


#: Substrings of the ``metrics.json`` / ``history.json`` keys that measure wall-clock time: the only
#: values a resumed (or repeated) run with the same seed and thread count may change.
TIMING_KEYS = ("seconds", "tokens_per_s", "elapsed_s", "wall")


def without_timing(value):
    """``value`` (metrics, history: nested dicts and lists) less every key naming a :data:`TIMING_KEYS`
    part; what ``--resume`` after a kill reproduces exactly (tests/train/test_crash_safety.py)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    best_loss: float | None = None  # validation loss of the best epoch (breaks ties on the metric)
    #: all validation metrics of the best epoch, when it ran in this process (not restored on resume)
    best_metrics: dict | None = None
    stopped_early: bool = False
    optimizer_steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


def compute_loss(task: str, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for classification (``outputs`` are logits (B, C)), MSE for regression ((B,))."""
    if task == "classification":
        return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)
    if task == "regression":
        return F.mse_loss(outputs.float(), targets.float())
    raise RagtuneError(f"task: unknown task {task!r}; choose one of ['classification', 'regression']")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN sees avx512_bf16 or AMX); without it bf16
    autocast is emulated and several times slower than fp32."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except RuntimeError:
        return True


def _is_better(value: float, best: float | None, direction: str) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    return value > best if direction == "max" else value < best


def train_model(
    model: torch.nn.Module,
    stream: BatchStream,
    *,
    task: str,
    cfg: TrainConfig,
    evaluate: Callable[[], dict],
    selection_metric: str,
    out_dir: Path | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], bool] | None = None,
    before_epoch: Callable[[int], None] | None = None,
    is_main_process: bool = True,
    progress: bool = True,
    layer_groups: list[list[torch.nn.Parameter]] | None = None,
    batch_loss: Callable[[int], tuple[torch.Tensor, int]] | None = None,
) -> TrainResult:
    """Train ``model`` in place; returns the per-epoch history and the best epoch (1-based).

    ``layer_groups`` are the model's parameters from the bottom up (embeddings, layers, head; see
    ``ragtune.models.hf.layer_ordered_parameters``); ``cfg.layer_lr_decay`` needs them.

    ``batch_loss(k) -> (loss, tokens)`` computes the loss of batch ``k`` of the stream (under bf16
    autocast when ``cfg.precision`` asks for it) and the number of tokens it processed. The default
    runs ``model(input_ids, attention_mask)`` on ``stream.batch(k)`` with :func:`compute_loss` for
    ``task``; tasks whose batches are more than padded ids (e.g. question answering with retrieved
    passages) pass their own, and use the stream only for its seeded order (``stream.indices(k)``).
    """
    direction = metric_direction(selection_metric)
    steps_per_epoch = cfg.steps_per_epoch or max(1, stream.batches_per_pass // cfg.grad_accum_steps)
    total_steps = steps_per_epoch * cfg.epochs
    param_scales = None
    if cfg.layer_lr_decay is not None:
        if layer_groups is None:
            raise RagtuneError(
                f"train.layer_lr_decay: {cfg.layer_lr_decay} needs a model with encoder layers (model.backbone: hf)"
            )
        param_scales = layer_decay_scales(layer_groups, cfg.layer_lr_decay)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, param_scales)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, total_steps)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    if cfg.precision == "bf16" and is_main_process and not native_bf16():
        log.warning("train.precision: bf16 on a CPU without native bf16 (no avx512_bf16/AMX) is emulated and usually "
                    "several times slower than fp32; set train.precision=fp32 on this machine")
    world = distributed.info()  # torchrun: this process's share of each global batch (ragtune/train/distributed.py)
    shows = is_main_process and world.is_main  # progress and log lines: rank 0 only (each rank writes its own out_dir)
    if world.world_size > 1 and batch_loss is not None:
        raise RagtuneError(f"distributed training (torchrun, {world.world_size} processes) supports tasks "
                           f"classification and regression; task {task!r} trains in one process")
    if batch_loss is None:
        forward = model
        if world.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(model)

        def batch_loss(k: int) -> tuple[torch.Tensor, int]:
            if world.world_size > 1:  # rows rank, rank + W, ... of the global batch k
                rows = distributed.shard(stream.indices(k), world.rank, world.world_size).tolist()
                input_ids, attention_mask = pad_batch([stream.sequences[i] for i in rows], stream.pad_id)
                targets = stream.targets[rows]
            else:
                input_ids, attention_mask, targets = stream.batch(k)
            with autocast:
                outputs = forward(input_ids, attention_mask)
            return compute_loss(task, outputs, targets, cfg.label_smoothing), int(attention_mask.sum())

    writes = out_dir is not None and is_main_process
    ckpt_dir = Path(out_dir) / "checkpoints" if out_dir is not None else None

    result = TrainResult()
    # Where we are: the next epoch (0-based), the next step inside it, the next batch of the stream.
    epoch, step_in_epoch, batch_index = 0, 0, 0
    epoch_loss_sum, epoch_loss_count, bad_epochs = 0.0, 0, 0
    if resume:
        if ckpt_dir is None or not checkpoint_exists(ckpt_dir / "last"):
            raise RagtuneError(f"cannot resume: no checkpoint in {ckpt_dir / 'last' if ckpt_dir else out_dir}")
        state, _ = load_latest_checkpoint(ckpt_dir / "last", model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        epoch, step_in_epoch, batch_index = state["epoch"], state["step_in_epoch"], state["batch_index"]
        epoch_loss_sum, epoch_loss_count = state["epoch_loss_sum"], state["epoch_loss_count"]
        bad_epochs = state["bad_epochs"]
        result.history = json.loads(state["history_json"])
        result.best_epoch, result.best_metric = state["best_epoch"], state["best_metric"]
        result.best_loss = state.get("best_loss")
        result.optimizer_steps, result.tokens = state["optimizer_steps"], state["tokens"]
        log.info("resumed at epoch %d step %d (optimizer step %d)", epoch + 1, step_in_epoch, result.optimizer_steps)

    def checkpoint() -> None:
        if not writes:
            return
        save_checkpoint(
            ckpt_dir / "last",
            model,
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "batch_index": batch_index,
                "epoch_loss_sum": epoch_loss_sum,
                "epoch_loss_count": epoch_loss_count,
                "bad_epochs": bad_epochs,
                "history_json": json.dumps(result.history),
                "best_epoch": result.best_epoch,
                "best_metric": result.best_metric,
                "best_loss": result.best_loss,
                "optimizer_steps": result.optimizer_steps,
                "tokens": result.tokens,
            },
        )

    step_log = None
    if writes:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        log_path = Path(out_dir) / "train_log.jsonl"
        if resume and log_path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [line for line in log_path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= result.optimizer_steps]
            log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        step_log = open(log_path, "a", encoding="utf-8")
    started = time.perf_counter()
    try:
        while epoch < cfg.epochs:
            if before_epoch is not None:
                before_epoch(epoch)
            model.train()
            bar = tqdm(
                total=steps_per_epoch,
                initial=step_in_epoch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=not (progress and shows),
                leave=False,
                dynamic_ncols=True,
            )
            window_tokens, window_start = 0, time.perf_counter()
            while step_in_epoch < steps_per_epoch:
                step_loss, step_tokens = 0.0, 0
                for _ in range(cfg.grad_accum_steps):
                    loss, n_tokens = batch_loss(batch_index)
                    batch_index += 1
                    loss = loss / cfg.grad_accum_steps
                    if not torch.isfinite(loss):
                        raise RagtuneError(
                            f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, step {step_in_epoch + 1}, "
                            f"batch {batch_index} of the stream; lower train.lr (now {cfg.lr}) or enable train.clip_grad_norm"
                        )
                    loss.backward()
                    step_loss += loss.item()
                    step_tokens += n_tokens
                if world.world_size > 1:  # the logged loss and token count cover every rank
                    step_loss, step_tokens = distributed.reduce_step(step_loss, step_tokens)
                window_tokens += step_tokens
                result.tokens += step_tokens
                if cfg.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_in_epoch += 1
                result.optimizer_steps += 1
                epoch_loss_sum += step_loss
                epoch_loss_count += 1

                elapsed = time.perf_counter() - window_start
                tok_s = window_tokens / elapsed if elapsed > 0 else 0.0
                lr = max(scheduler.get_last_lr())  # the peak rate (the head's, with layer_lr_decay)
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}", refresh=False)
                bar.update(1)
                if step_log is not None and result.optimizer_steps % cfg.log_every_steps == 0:
                    step_log.write(
                        json.dumps(
                            {
                                "step": result.optimizer_steps,
                                "epoch": epoch + 1,
                                "loss": round(step_loss, 6),
                                "lr": lr,
                                "tokens_per_s": round(tok_s, 1),
                                "elapsed_s": round(time.perf_counter() - started, 2),
                            }
                        )
                        + "\n"
                    )
                    step_log.flush()
                if cfg.checkpoint_every_steps and result.optimizer_steps % cfg.checkpoint_every_steps == 0:
                    checkpoint()
            bar.close()

            # ---- end of epoch: validate, keep the best, checkpoint, maybe stop -------------------
            metrics = evaluate()
            if selection_metric not in metrics:
                raise RagtuneError(
                    f"eval.metric: {selection_metric!r} is not among the validation metrics {sorted(metrics)}"
                )
            entry = {
                "epoch": epoch + 1,
                "step": result.optimizer_steps,
                "train_loss": epoch_loss_sum / max(1, epoch_loss_count),
                "lr": max(scheduler.get_last_lr()),
                "seconds": round(time.perf_counter() - started, 2),
            }
            entry.update({f"validation_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
            result.history.append(entry)
            value = metrics[selection_metric]
            loss = metrics.get("loss") if selection_metric != "loss" else None
            tie_won = (value is not None and value == result.best_metric and loss is not None
                       and result.best_loss is not None and loss < result.best_loss)
            if value is not None and (_is_better(value, result.best_metric, direction) or tie_won):
                result.best_metric, result.best_epoch, bad_epochs = value, epoch + 1, 0
                result.best_loss = loss
                result.best_metrics = metrics
                if writes:
                    (ckpt_dir / "best").mkdir(parents=True, exist_ok=True)
                    save_weights(model, ckpt_dir / "best" / "model.safetensors")
            else:
                bad_epochs += 1
            if shows:
                log.info(
                    "epoch %d/%d: train_loss %.4f, validation %s %.4f (best %.4f at epoch %s)",
                    epoch + 1, cfg.epochs, entry["train_loss"], selection_metric, value,
                    result.best_metric, result.best_epoch,
                )
            epoch += 1
            step_in_epoch, epoch_loss_sum, epoch_loss_count = 0, 0.0, 0
            stop = cfg.early_stopping_patience is not None and bad_epochs >= cfg.early_stopping_patience
            if on_epoch_end is not None and on_epoch_end(epoch, metrics):
                stop = True
            checkpoint()
            if writes:
                (Path(out_dir) / "history.json").write_text(json.dumps(result.history, indent=2))
            if stop:
                result.stopped_early = epoch < cfg.epochs
                break
    finally:
        if step_log is not None:
            step_log.close()
    result.seconds = time.perf_counter() - started
    return result
