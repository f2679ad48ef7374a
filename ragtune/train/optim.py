"""Optimizers and learning-rate schedules, built from plain values.

* ``sgd``: ``torch.optim.SGD`` with momentum (the seed article's choice); weight decay is L2.
* ``adamw``: ``torch.optim.AdamW``; weight decay is decoupled and skipped for biases, norms and
  embeddings' position table is decayed like any weight.

Schedules (``torch.optim.lr_scheduler.LambdaLR``): a linear warmup over ``warmup_steps`` optimizer
steps from 0 to the peak ``lr``, then ``constant``, ``linear`` decay to 0 at ``total_steps``, or
``cosine`` decay to 0 at ``total_steps``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ragtune.errors import RagtuneError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "linear", "cosine")


def build_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``model``'s trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        decay, no_decay = [], []
        for pname, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr)
    raise RagtuneError(f"train.optimizer: unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")


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
