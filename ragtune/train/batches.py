"""A seeded, resumable stream of padded batches.

The training data is one endless stream of batches: pass ``p`` over the data visits the examples
in the order ``randperm(n, seed + p)``, cut into batches of ``batch_size`` (the last, smaller
batch of a pass is kept). Batch ``k`` of the stream is therefore a pure function of
``(seed, k)``, so a resumed run only needs to remember how many batches it has consumed.

With ``group_by_length`` a pass still starts from ``randperm(n, seed + p)``, but each window of
``GROUP_WINDOW_BATCHES × batch_size`` examples of that order is sorted by length before it is cut
into batches, and the batches of the pass are then visited in a seeded random order: texts of
similar length share a batch (less padding), and batch ``k`` is still a pure function of ``(seed, k)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GROUP_WINDOW_BATCHES = 50  # group_by_length: examples sorted together, in batches


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id lists to the longest one. Returns ``input_ids`` and ``attention_mask``, both (B, T)."""
    width = max(1, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


class BatchStream:
    """Batches of ``(input_ids, attention_mask, targets)`` addressed by their index in the stream."""

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        targets: torch.Tensor,
        batch_size: int,
        seed: int,
        pad_id: int = 0,
        group_by_length: bool = False,
    ):
        if len(sequences) != len(targets):
            raise ValueError(f"{len(sequences)} sequences but {len(targets)} targets")
        if not sequences:
            raise ValueError("no training examples")
        self.sequences = sequences
        self.targets = targets
        self.batch_size = batch_size
        self.seed = seed
        self.pad_id = pad_id
        self.group_by_length = group_by_length
        self.batches_per_pass = -(-len(sequences) // batch_size)
        self._lengths = torch.tensor([len(s) for s in sequences]) if group_by_length else None
        self._pass = -1
        self._batches: list[torch.Tensor] = []

    def indices(self, k: int) -> torch.Tensor:
        """Example indices of batch ``k`` of the stream."""
        p, offset = divmod(k, self.batches_per_pass)
        if p != self._pass:
            self._batches = self._pass_batches(p)
            self._pass = p
        return self._batches[offset]

    def _pass_batches(self, p: int) -> list[torch.Tensor]:
        """The batches of pass ``p``, in the order they are visited."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
        order = torch.randperm(len(self.sequences), generator=g)
        if not self.group_by_length:
            return list(torch.split(order, self.batch_size))
        window = GROUP_WINDOW_BATCHES * self.batch_size
        batches: list[torch.Tensor] = []
        for chunk in torch.split(order, window):
            chunk = chunk[torch.argsort(self._lengths[chunk], stable=True)]
            batches.extend(torch.split(chunk, self.batch_size))
        shuffle = torch.randperm(len(batches), generator=g)
        return [batches[i] for i in shuffle.tolist()]

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.indices(k).tolist()
        ids, mask = pad_batch([self.sequences[i] for i in idx], self.pad_id)
        return ids, mask, self.targets[idx]
