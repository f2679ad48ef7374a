"""A seeded, resumable stream of padded batches.

The training data is one endless stream of batches: pass ``p`` over the data visits the examples
in the order ``randperm(n, seed + p)``, cut into batches of ``batch_size`` (the last, smaller
batch of a pass is kept). Batch ``k`` of the stream is therefore a pure function of
``(seed, k)``, so a resumed run only needs to remember how many batches it has consumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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

    def __init__(self, sequences: Sequence[Sequence[int]], targets: torch.Tensor, batch_size: int, seed: int, pad_id: int = 0):
        if len(sequences) != len(targets):
            raise ValueError(f"{len(sequences)} sequences but {len(targets)} targets")
        if not sequences:
            raise ValueError("no training examples")
        self.sequences = sequences
        self.targets = targets
        self.batch_size = batch_size
        self.seed = seed
        self.pad_id = pad_id
        self.batches_per_pass = -(-len(sequences) // batch_size)
        self._pass = -1
        self._order: torch.Tensor | None = None

    def indices(self, k: int) -> torch.Tensor:
        """Example indices of batch ``k`` of the stream."""
        p, offset = divmod(k, self.batches_per_pass)
        if p != self._pass:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
            self._order = torch.randperm(len(self.sequences), generator=g)
            self._pass = p
        return self._order[offset * self.batch_size : (offset + 1) * self.batch_size]

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.indices(k).tolist()
        ids, mask = pad_batch([self.sequences[i] for i in idx], self.pad_id)
        return ids, mask, self.targets[idx]
