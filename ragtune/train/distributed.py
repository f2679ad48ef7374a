"""Data-parallel training under PyTorch's own launcher, ``torchrun``.

::

    torchrun --nproc_per_node 2 -m ragtune run CONFIG --out RUN_DIR          # 2 processes on this machine
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 \\
             --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m ragtune run CONFIG --out RUN_DIR   # each node

``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous; :func:`init_from_env` joins the process group (``gloo`` on CPU, ``nccl`` when CUDA is
there). Then:

* every rank reads the data and builds the same model (same seed; DistributedDataParallel also
  broadcasts rank 0's weights); the tokenizer is trained once, on rank 0, and sent to the others
  (:func:`same_on_every_rank`: tokenizer training is not reproducible across processes);
* batch ``k`` of the stream is the same global batch of ``train.batch_size`` examples as in a
  single process; rank ``r`` takes rows ``r, r + W, r + 2W, ...`` of it (:func:`shard`), and
  DistributedDataParallel averages the gradients, so a step equals the single-process step (up to
  floating-point summation order, and the dropout masks, which differ per rank);
* the logged training loss is the mean over ranks; validation runs on every rank (the same model
  and data give the same numbers) and only rank 0 writes the run directory (the other ranks work
  in a temporary folder that is removed at the end).

Limits: tasks classification and regression (``Task.data_parallel`` in ragtune/tasks); ``--resume`` needs the run
directory on a file system every node sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ragtune.errors import RagtuneError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> DistInfo:
    """Join the process group ``torchrun`` set up (idempotent); a single process gets ``DistInfo()``."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        try:
            dist.init_process_group(backend=backend)
        except Exception as exc:  # rendezvous errors come in several types; say what to check
            raise RagtuneError(f"cannot join the torchrun process group ({exc}); check --rdzv-endpoint and that "
                               "every node can reach it") from None
    return info()


def info() -> DistInfo:
    """This process's rank and the world size (``DistInfo()`` outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shard(rows: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s rows of a global batch: ``rows[rank::world_size]``. A batch smaller than the
    world gives the ranks without a row of their own the first row (DistributedDataParallel needs every
    rank in every step)."""
    mine = rows[rank::world_size]
    return mine if len(mine) else rows[:1]


def same_on_every_rank(tokenizer):
    """Rank 0's ``tokenizers.Tokenizer`` on every rank (a no-op in a single process)."""
    if info().world_size == 1:
        return tokenizer
    from tokenizers import Tokenizer

    box = [tokenizer.to_str() if info().is_main else None]
    dist.broadcast_object_list(box, src=0)
    return tokenizer if info().is_main else Tokenizer.from_str(box[0])


def reduce_step(loss: float, tokens: int) -> tuple[float, int]:
    """A training step's ``(mean loss over ranks, tokens summed over ranks)``, in one all-reduce."""
    world = info().world_size
    if world == 1:
        return loss, tokens
    t = torch.tensor([float(loss), float(tokens)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0].item()) / world, int(round(t[1].item()))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
