"""Optimizers and learning-rate schedules, built from plain values.

* ``sgd``: ``torch.optim.SGD`` with momentum (the seed article's choice); weight decay is L2.
* ``adamw``: ``torch.optim.AdamW``; weight decay is decoupled and skipped for biases and norms;
  embeddings' position table is decayed like any weight. It runs PyTorch's fused kernel
  (``fused=True``, one kernel per parameter group instead of a dozen ``foreach`` ops; it saved
  0.05-0.1 s of a ~1 s MiniLM step on two CPU threads in an exploratory profile, see BENCHMARKS.md) when every parameter is a float tensor on a device that kernel
  supports, and the ``foreach`` implementation otherwise. Same update rule; results agree to rounding.

Schedules (``torch.optim.lr_scheduler.LambdaLR``): a linear warmup over ``warmup_steps`` optimizer
steps from 0 to the peak ``lr``, then ``constant``, ``linear`` decay to 0 at ``total_steps``, or
``cosine`` decay to 0 at ``total_steps``. :func:`optimizer_and_scheduler` builds both from ``train:``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ragtune.errors import RagtuneError

from ragtune.config import TrainConfig

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "linear", "cosine")


def layer_decay_scales(layer_groups: list[list[nn.Parameter]], decay: float) -> list[tuple[list[nn.Parameter], float]]:
    """Learning-rate scales for layer-ordered parameters ``[embeddings, layer 0, ..., layer N-1, head]``.

    The head (last group) and the top layer get 1, each layer below the one above's scale × ``decay``,
    the embeddings (first group) ``decay**N``.
    """
    if not 0 < decay <= 1:
        raise RagtuneError(f"train.layer_lr_decay: must be in (0, 1] (got {decay})")
    if len(layer_groups) < 2:
        raise RagtuneError("train.layer_lr_decay: the model has no layers to decay over")
    *body, head = layer_groups
    top = len(body) - 1
    return [(params, decay ** (top - i)) for i, params in enumerate(body)] + [(head, 1.0)]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    param_scales: list[tuple[list[nn.Parameter], float]] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``model``'s trainable parameters.

    ``param_scales`` (e.g. from :func:`layer_decay_scales`) gives groups of parameters and the factor
    of ``lr`` each trains with; every parameter of ``model`` must be in one of them. Each group's
    ``lr`` is its initial rate, which the schedule (``LambdaLR``) multiplies.
    """
    if name not in OPTIMIZERS:
        raise RagtuneError(f"train.optimizer: unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")
    if param_scales is None:
        param_scales = [(list(model.parameters()), 1.0)]
    else:
        covered = {id(p) for params, _ in param_scales for p in params}
        missing = [n for n, p in model.named_parameters() if id(p) not in covered]
        if missing:
            raise ValueError(f"param_scales leaves out parameters of the model: {missing[:5]}")
    groups = []
    for params, scale in param_scales:
        trainable = [p for p in params if p.requires_grad]
        if name == "sgd":
            parts = [(trainable, weight_decay)]
        else:  # adamw: no decay for biases and norms
            parts = [([p for p in trainable if p.ndim >= 2], weight_decay), ([p for p in trainable if p.ndim < 2], 0.0)]
        for part, decay in parts:
            if part or len(param_scales) == 1:
                groups.append({"params": part, "weight_decay": decay, "lr": lr * scale})
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr, fused=_fused_supported(groups))


def _fused_supported(groups: list[dict]) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` accepts every parameter in ``groups``."""
    try:  # private, but it is the list torch itself checks against
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:
        devices = {"cpu", "cuda"}
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise RagtuneError(f"train.schedule: unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`."""
    if schedule not in SCHEDULES:
        raise RagtuneError(f"train.schedule: unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, schedule, warmup_steps, total_steps)
    )


def steps_per_epoch(cfg: TrainConfig, batches_per_pass: int) -> int:
    """Optimizer steps per epoch: ``train.steps_per_epoch``, else one pass over the stream's batches."""
    return cfg.steps_per_epoch or max(1, batches_per_pass // cfg.grad_accum_steps)


def optimizer_and_scheduler(model: nn.Module, cfg: TrainConfig, batches_per_pass: int,
                            layer_groups: list[list[nn.Parameter]] | None = None,
                            param_scales: list[tuple[list[nn.Parameter], float]] | None = None):
    """``(optimizer, scheduler)`` of ``cfg`` for ``model`` over ``epochs ×`` :func:`steps_per_epoch` steps.
    ``layer_groups`` are the model's parameters from the bottom up (embeddings, layers, head; see
    ``ragtune.models.hf.layer_ordered_parameters``); ``cfg.layer_lr_decay`` needs them. ``param_scales``
    (see :func:`build_optimizer`) gives parts of the model their own factor of ``cfg.lr`` instead (e.g. a
    query encoder trained beside a LoRA reader); the two cannot be combined."""
    if cfg.layer_lr_decay is not None:
        if param_scales is not None:
            raise RagtuneError(f"train.layer_lr_decay: {cfg.layer_lr_decay} cannot be combined with a second learning "
                               "rate for part of the model (retrieval.query_encoder_lr)")
        if layer_groups is None:
            raise RagtuneError(f"train.layer_lr_decay: {cfg.layer_lr_decay} needs a model with encoder layers "
                               "(model.backbone: hf)")
        param_scales = layer_decay_scales(layer_groups, cfg.layer_lr_decay)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, param_scales)
    total_steps = steps_per_epoch(cfg, batches_per_pass) * cfg.epochs
    return optimizer, build_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, total_steps)
