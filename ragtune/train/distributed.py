"""Data-parallel training under PyTorch's own launcher, ``torchrun``.

::

    torchrun --nproc_per_node 2 -m ragtune run CONFIG --out RUN_DIR          # 2 processes on this machine
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 \\
             --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m ragtune run CONFIG --out RUN_DIR   # each node

``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous; :func:`init_from_env` joins the process group (``gloo`` on CPU; with CUDA, ``nccl`` for GPU
tensors and ``gloo`` for CPU ones). Each process trains on its own device: ``train.device`` ``cuda`` or
``auto`` becomes ``cuda:LOCAL_RANK`` (``ragtune.devices.resolve``). Then, for every task:

* every rank reads the data and builds the same model (same seed; :func:`broadcast_module` copies
  rank 0's weights to the others before the first step); a tokenizer is trained once, on rank 0, and
  sent to the others (:func:`same_on_every_rank`: tokenizer training is not reproducible across processes);
* batch ``k`` of the stream is the same global batch of ``train.batch_size`` examples as in a single
  process; rank ``r`` takes rows ``r, r + W, r + 2W, ...`` of it (:func:`share`). Each task's loss is
  normalised by the *global* number of its units (examples, target tokens, answer windows:
  :func:`global_mean`), and the training loop averages the gradients over the ranks once per optimizer
  step (:func:`average_gradients`: one all-reduce of all gradients, after the ``grad_accum_steps``
  micro-batches). So a step equals the single-process step up to floating-point summation order, and
  the dropout masks, which differ per rank;
* whatever a task derives from retrieval (distractor passages, refreshed passage embeddings) is
  computed on rank 0 and sent to the others (:func:`from_main`), so every rank sees the same passages;
* validation runs on rank 0 and its metrics reach every rank (early stopping and the best epoch agree);
  the logged training loss is the mean over ranks; only rank 0 writes the run directory and prints (the
  other ranks work in a temporary folder that is removed at the end, and stop after training).

Limits: ``--resume`` needs the run directory on a file system every node sees. Tuning (``ragtune tune``)
runs in one process.
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
        # with CUDA: NCCL for GPU tensors, gloo for the CPU ones (metrics, objects, a run with train.device cpu)
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
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


def share(rows: torch.Tensor, world: DistInfo | None = None) -> tuple[list[int], int]:
    """This rank's rows of a global batch, ``rows[rank::world_size]``, and how many of them count.

    Returns ``(rows to compute, real count)``. A batch smaller than the world gives a rank without a row
    of its own the first row with a count of 0 (every rank must run every step: its loss, weighted by
    :func:`global_mean`, then adds nothing). In one process: all rows, all counted."""
    world = world or info()
    mine = rows[world.rank::world.world_size].tolist()
    return (mine, len(mine)) if mine else (rows[:1].tolist(), 0)


def global_mean(local_mean: torch.Tensor, local_count: int | float, world: DistInfo | None = None) -> torch.Tensor:
    """A rank's share of the loss over the global batch: ``local_mean`` (the mean over this rank's
    ``local_count`` units: examples, target tokens, answer windows) times ``W * local_count / total``,
    where ``total`` is the count summed over all ranks (one all-reduce of a number).

    Averaged over the ranks — which :func:`average_gradients` does to the gradients and
    :func:`reduce_step` to the logged loss — this is the single-process mean over the whole batch,
    whatever the share of each rank. In one process ``local_mean`` itself."""
    world = world or info()
    if world.world_size == 1:
        return local_mean
    total = torch.tensor([float(local_count)], dtype=torch.float64)
    dist.all_reduce(total)
    if total.item() == 0:  # no rank has anything to learn from: a zero loss that keeps the graph
        return local_mean * 0.0
    return local_mean * (world.world_size * float(local_count) / total.item())


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks: one all-reduce of them all, flattened per
    device and dtype. A parameter without a gradient on this rank (unused in its micro-batches) takes
    part with zeros, so every rank sends the same tensors."""
    world = info()
    if world.world_size == 1:
        return
    groups: dict[tuple, list[torch.nn.Parameter]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        groups.setdefault((p.grad.device, p.grad.dtype), []).append(p)
    for group in groups.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])  # (sum of numel,)
        dist.all_reduce(flat)
        flat /= world.world_size
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (what DistributedDataParallel does when it wraps a model)."""
    if info().world_size == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def from_main(compute):
    """``compute()`` run on rank 0 only, its result (any picklable value, tensors included) returned on
    every rank; in one process just ``compute()``. Every rank must call it at the same point."""
    if info().world_size == 1:
        return compute()
    box = [compute() if info().is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def same_on_every_rank(tokenizer):
    """Rank 0's tokenizer on every rank (a no-op in a single process): a ``tokenizers.Tokenizer`` or a
    ragtune ``Seq2SeqTokenizer`` (its source and target sides); another kind (a pretrained one, the same
    file on every rank) is returned as it is."""
    if info().world_size == 1:
        return tokenizer
    from tokenizers import Tokenizer

    from ragtune.data.seq2seq_tokenizer import Seq2SeqTokenizer

    if isinstance(tokenizer, Seq2SeqTokenizer):
        source = same_on_every_rank(tokenizer.source)
        return Seq2SeqTokenizer(source, None if tokenizer.joint else same_on_every_rank(tokenizer.target))
    if not isinstance(tokenizer, Tokenizer):
        return tokenizer
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
