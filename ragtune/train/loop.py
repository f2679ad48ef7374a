"""The training loop: one explicit function a reader can follow top to bottom.

:func:`train_model` runs ``epochs × steps_per_epoch`` optimizer steps over a :class:`BatchStream`,
validates after every epoch, keeps the best weights (by the selection metric; on a tie, the epoch with
the lower validation ``loss`` wins), checkpoints, and stops early when asked.
There is no Trainer object and no callback system: the few places where other parts of ragtune
need to step in are plain function arguments:

* ``batch_loss(k) -> (loss, tokens)`` — the task's loss on batch ``k`` of the stream (each task
  brings its own; the loop only sums, backpropagates and steps);
* ``optimizer`` and ``scheduler`` — built by the caller (``ragtune.train.optim.optimizer_and_scheduler``);
* ``evaluate()`` → dict of validation metrics (must contain the selection metric);
* ``on_epoch_end(epoch, metrics) -> bool`` — report the metric each epoch (tuning) and return
  ``True`` to stop (pruning);
* ``before_epoch(epoch)`` — e.g. refresh a retrieval index.

Devices and precision: the model comes on its device (:func:`training_device` resolves ``train.device``;
the recipe moves the model there before building the optimizer, and each task's ``batch_loss`` moves its
batch); the loop runs ``batch_loss`` under the autocast of ``train.precision`` on that device, scales the
loss for fp16 (``torch.amp.GradScaler``), optionally compiles the model (``train.compile``: ``torch.compile``), records
the device, its name and the peak memory, and turns an out-of-memory error into one message naming the batch
size and the maximum length, with the last checkpoint intact.

Under torchrun the loop averages the gradients over the ranks once per optimizer step (one all-reduce,
ragtune/train/distributed.py) for whatever model and ``batch_loss`` the task brings; there is no
DistributedDataParallel wrapper.

Files written into ``out_dir`` (when given; each torchrun rank writes its own, rank 0's is the run's):
``checkpoints/last/`` (weights, optimizer, scheduler, RNG and :class:`TrainState`, each epoch and every
``checkpoint_every_steps``), ``checkpoints/best/model.safetensors``, ``train_log.jsonl`` (one JSON
line every ``log_every_steps`` steps) and ``history.json`` (one entry per epoch).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ragtune import devices
from ragtune.config import TrainConfig
from ragtune.errors import RagtuneError
from ragtune.evaluate.metrics import metric_direction
from ragtune.train import distributed, tracking
from ragtune.train.batches import BatchStream
from ragtune.train.checkpoint import (
    checkpoint_exists,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
)
from ragtune.train.optim import steps_per_epoch as epoch_steps

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
class TrainState:
    """Where training stands: what ``checkpoints/last/state.pt`` resumes besides the weights, optimizer,
    scheduler and RNG states. A field added here is saved and restored with the others."""

    epoch: int = 0  # the next epoch (0-based)
    step_in_epoch: int = 0  # the next optimizer step inside it
    batch_index: int = 0  # the next batch of the stream
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    best_loss: float | None = None  # validation loss of the best epoch (breaks ties on the metric)
    optimizer_steps: int = 0
    tokens: int = 0

    def state_dict(self) -> dict:
        """The fields by name; ``history`` as JSON text ``history_json`` (``torch.load(weights_only=True)``)."""
        state = {f.name: getattr(self, f.name) for f in fields(TrainState)}
        state["history_json"] = json.dumps(state.pop("history"))
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`'s dict; a field an older checkpoint lacks keeps its default."""
        for f in fields(TrainState):
            if f.name in state:
                setattr(self, f.name, state[f.name])
        self.history = json.loads(state["history_json"])


@dataclass
class TrainResult(TrainState):
    """What :func:`train_model` returns: its final :class:`TrainState` and what a checkpoint does not keep."""

    #: all validation metrics of the best epoch, when it ran in this process (not restored on resume)
    best_metrics: dict | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    #: the device it trained on, its name and the peak memory (:func:`ragtune.devices.describe` / ``peak_memory``)
    device: dict = field(default_factory=dict)


def training_device(cfg: TrainConfig) -> torch.device:
    """The device this process trains on: ``train.device`` resolved (``cuda:LOCAL_RANK`` under torchrun),
    the precision checked against it, TF32 set as ``train.tf32`` asks. The recipe moves its model there."""
    world = distributed.info()
    device = devices.resolve(cfg.device, local_rank=world.local_rank if world.world_size > 1 else None)
    devices.check_precision(device, cfg.precision)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        devices.set_tf32(cfg.tf32)
    if cfg.precision == "bf16" and device.type == "cpu" and not native_bf16():
        log.warning("train.precision: bf16 on a CPU without native bf16 (no avx512_bf16/AMX) is emulated and usually "
                    "several times slower than fp32; set train.precision=fp32 on this machine")
    if cfg.precision == "fp16" and device.type == "cpu":
        log.warning("train.precision: fp16 on the CPU runs (with its gradient scaler) but is rarely faster than "
                    "fp32; bf16 is the CPU's lower precision")
    return device


def _compile(model: torch.nn.Module) -> None:
    """``torch.compile`` in place (``nn.Module.compile``: the state dict keeps its keys); a module with no
    forward of its own (e.g. RAG's reader + query encoder) has its children compiled. ``dynamic=True``:
    one graph for every batch width (padded lengths vary from batch to batch), not one per width."""
    for module in [model] if type(model).forward is not torch.nn.Module.forward else model.children():
        module.compile(dynamic=True)


def _out_of_memory(cfg: TrainConfig, max_length: int | None, where: str, device: torch.device,
                   ckpt_dir: Path | None) -> RagtuneError:
    length = f" and model.max_length {max_length}" if max_length else ""
    kept = (f"the last checkpoint in {ckpt_dir / 'last'} is intact" if ckpt_dir is not None
            and checkpoint_exists(ckpt_dir / "last") else "no checkpoint had been written yet")
    return RagtuneError(
        f"out of memory on {device} {where} with train.batch_size {cfg.batch_size}{length}: lower train.batch_size "
        f"and raise train.grad_accum_steps to keep the same batch per step (e.g. train.batch_size={max(1, cfg.batch_size // 2)} "
        f"train.grad_accum_steps={cfg.grad_accum_steps * 2}), shorten model.max_length, or set "
        f"model.gradient_checkpointing: true where the model has it; {kept}")


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
    batch_loss: Callable[[int], tuple[torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    cfg: TrainConfig,
    evaluate: Callable[[], dict],
    selection_metric: str,
    out_dir: Path | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], bool] | None = None,
    before_epoch: Callable[[int], None] | None = None,
    progress: bool = True,
    max_length: int | None = None,
) -> TrainResult:
    """Train ``model`` in place; returns the per-epoch history and the best epoch (1-based).

    ``batch_loss(k) -> (loss, tokens)``: the loss of batch ``k`` of the stream (under bf16 autocast when
    ``cfg.precision`` asks for it) and the number of tokens it processed; e.g. ``model(input_ids,
    attention_mask)`` on ``stream.batch(k)`` (``ragtune.tasks.classification.recipe.sequence_batch_loss``,
    with this rank's share of the batch under torchrun). Tasks whose batches are more than padded ids
    (e.g. question answering with retrieved passages) use the stream only for its seeded order (``stream.indices(k)``).
    """
    direction = metric_direction(selection_metric)
    steps_per_epoch = epoch_steps(cfg, stream.batches_per_pass)
    device = next(model.parameters()).device  # where the recipe put it (training_device)
    autocast = devices.autocast(device, cfg.precision)
    scaler = devices.grad_scaler(device, cfg.precision)  # fp16 only; a pass-through otherwise
    world = distributed.info()  # torchrun: this process's share of each global batch (ragtune/train/distributed.py)
    shows = world.is_main  # progress and log lines: rank 0 only (each rank writes its own out_dir)
    writes = out_dir is not None
    ckpt_dir = Path(out_dir) / "checkpoints" if out_dir is not None else None
    trained = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    devices.reset_peak_memory(device)

    state = TrainResult()  # a TrainState (what a checkpoint resumes), returned with the rest of the result
    if resume:
        if ckpt_dir is None or not checkpoint_exists(ckpt_dir / "last"):
            raise RagtuneError(f"cannot resume: no checkpoint in {ckpt_dir / 'last' if ckpt_dir else out_dir}")
        saved, _ = load_latest_checkpoint(ckpt_dir / "last", model)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        if "scaler" in saved and scaler.is_enabled():
            scaler.load_state_dict(saved["scaler"])
        state.load_state_dict(saved)
        log.info("resumed at epoch %d step %d (optimizer step %d)", state.epoch + 1, state.step_in_epoch,
                 state.optimizer_steps)

    def checkpoint() -> None:
        if writes:
            save_checkpoint(ckpt_dir / "last", model, {"optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "rng": rng_state(),
                            **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}), **state.state_dict()})

    step_log = None
    if writes:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        log_path = Path(out_dir) / "train_log.jsonl"
        if resume and log_path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [line for line in log_path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= state.optimizer_steps]
            log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        step_log = open(log_path, "a", encoding="utf-8")
    distributed.broadcast_module(model)  # every rank starts from rank 0's weights
    if cfg.compile:
        _compile(model)
    started = time.perf_counter()
    where = "before training"
    try:
        while state.epoch < cfg.epochs:
            if before_epoch is not None:
                before_epoch(state.epoch)
            model.train()
            bar = tqdm(total=steps_per_epoch, initial=state.step_in_epoch, desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
                       disable=not (progress and shows), leave=False, dynamic_ncols=True)
            window_tokens, window_start = 0, time.perf_counter()
            while state.step_in_epoch < steps_per_epoch:
                step_loss, step_tokens = 0.0, 0
                where = f"in training (epoch {state.epoch + 1}, step {state.step_in_epoch + 1})"
                for _ in range(cfg.grad_accum_steps):
                    with autocast:
                        loss, n_tokens = batch_loss(state.batch_index)
                    state.batch_index += 1
                    loss = loss / cfg.grad_accum_steps
                    if not torch.isfinite(loss):
                        raise RagtuneError(
                            f"training diverged: loss is {loss.item()} at epoch {state.epoch + 1}, step "
                            f"{state.step_in_epoch + 1}, batch {state.batch_index} of the stream; lower train.lr "
                            f"(now {cfg.lr}) or enable train.clip_grad_norm"
                        )
                    scaler.scale(loss).backward()
                    step_loss += loss.item()
                    step_tokens += n_tokens
                if world.world_size > 1:  # the logged loss and token count cover every rank
                    step_loss, step_tokens = distributed.reduce_step(step_loss, step_tokens)
                window_tokens += step_tokens
                state.tokens += step_tokens
                distributed.average_gradients(trained)  # torchrun: one all-reduce; a no-op in one process
                if cfg.clip_grad_norm:
                    scaler.unscale_(optimizer)  # fp16: clip the true gradients
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                scaler.step(optimizer)  # fp16: skipped when the scaled gradients overflowed
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step_in_epoch += 1
                state.optimizer_steps += 1
                state.epoch_loss_sum += step_loss
                state.epoch_loss_count += 1

                elapsed = time.perf_counter() - window_start
                tok_s = window_tokens / elapsed if elapsed > 0 else 0.0
                lr = max(scheduler.get_last_lr())  # the peak rate (the head's, with layer_lr_decay)
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}", refresh=False)
                bar.update(1)
                if step_log is not None and state.optimizer_steps % cfg.log_every_steps == 0:
                    record = {"step": state.optimizer_steps, "epoch": state.epoch + 1, "loss": round(step_loss, 6),
                              "lr": lr, "tokens_per_s": round(tok_s, 1),
                              "elapsed_s": round(time.perf_counter() - started, 2)}
                    step_log.write(json.dumps(record) + "\n")
                    step_log.flush()
                    tracking.log_step(record)  # train.report_to (a no-op without it)
                if cfg.checkpoint_every_steps and state.optimizer_steps % cfg.checkpoint_every_steps == 0:
                    checkpoint()
            bar.close()

            # ---- end of epoch: validate, keep the best, checkpoint, maybe stop -------------------
            where = f"in validation after epoch {state.epoch + 1}"
            metrics = distributed.from_main(evaluate)  # torchrun: rank 0 validates, every rank gets its metrics
            if selection_metric not in metrics:
                raise RagtuneError(f"eval.metric: {selection_metric!r} is not among the validation metrics {sorted(metrics)}")
            entry = {"epoch": state.epoch + 1, "step": state.optimizer_steps,
                     "train_loss": state.epoch_loss_sum / max(1, state.epoch_loss_count),
                     "lr": max(scheduler.get_last_lr()), "seconds": round(time.perf_counter() - started, 2)}
            entry.update({f"validation_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
            state.history.append(entry)
            value = metrics[selection_metric]
            loss = metrics.get("loss") if selection_metric != "loss" else None
            tie_won = (value is not None and value == state.best_metric and loss is not None
                       and state.best_loss is not None and loss < state.best_loss)
            if value is not None and (_is_better(value, state.best_metric, direction) or tie_won):
                state.best_metric, state.best_epoch, state.bad_epochs = value, state.epoch + 1, 0
                state.best_loss = loss
                state.best_metrics = metrics
                if writes:
                    (ckpt_dir / "best").mkdir(parents=True, exist_ok=True)
                    save_weights(model, ckpt_dir / "best" / "model.safetensors")
            else:
                state.bad_epochs += 1
            if shows:
                log.info("epoch %d/%d: train_loss %.4f, validation %s %.4f (best %.4f at epoch %s)", state.epoch + 1,
                         cfg.epochs, entry["train_loss"], selection_metric, value, state.best_metric, state.best_epoch)
            state.epoch += 1
            state.step_in_epoch, state.epoch_loss_sum, state.epoch_loss_count = 0, 0.0, 0
            stop = cfg.early_stopping_patience is not None and state.bad_epochs >= cfg.early_stopping_patience
            if on_epoch_end is not None and on_epoch_end(state.epoch, metrics):
                stop = True
            checkpoint()
            if writes:
                (Path(out_dir) / "history.json").write_text(json.dumps(state.history, indent=2))
                tracking.log_epoch(entry)
            if stop:
                state.stopped_early = state.epoch < cfg.epochs
                break
    except Exception as exc:
        if not devices.is_out_of_memory(exc):
            raise
        optimizer.zero_grad(set_to_none=True)
        devices.release_cached_memory(device)
        raise _out_of_memory(cfg, max_length, where, device, ckpt_dir) from None
    finally:
        if step_log is not None:
            step_log.close()
    state.seconds = time.perf_counter() - started
    state.device = {**devices.describe(device), "precision": cfg.precision, **devices.peak_memory(device)}
    return state
