"""Retrieval metrics: recall@k, MRR@k and nDCG@k over ranked lists of ids (binary relevance).

Each question has a ranked list of retrieved ids (best first) and a non-empty set of gold
(relevant) ids. For one question, with ``rel_i = 1`` when the id at rank ``i`` (from 1) is gold::

    recall@k = |gold ∩ top-k| / |gold|
    MRR@k    = 1 / (rank of the first gold id)      if it is within the top k, else 0
    DCG@k    = Σ_{i=1..k} rel_i / log2(i + 1)
    IDCG@k   = Σ_{i=1..min(k, |gold|)} 1 / log2(i + 1)      (all gold ids ranked first)
    nDCG@k   = DCG@k / IDCG@k

The functions below return the mean over questions. A ranked list shorter than ``k`` is fine (the
missing ranks count as not relevant). Repeated ids in a ranked list count once, at their first
rank (e.g. several passages of one document). With one gold id per question, recall@k is the
"hit rate" (top-k accuracy), and nDCG@k = 1 / log2(rank + 1).

::

    ranked = [["d3", "d1", "d7"], ["d2", "d9"]]
    gold = [{"d1"}, {"d5"}]
    recall_at_k(ranked, gold, 2)      # (1 + 0) / 2 = 0.5
    mrr_at_k(ranked, gold, 10)        # (1/2 + 0) / 2 = 0.25
    ndcg_at_k(ranked, gold, 10)       # (1/log2(3) + 0) / 2 ≈ 0.3155

This module imports only ``errors`` and takes plain lists (like :mod:`ragtune.evaluate.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence

from ragtune.errors import RagtuneError


def _check(ranked: Sequence[Sequence[Hashable]], gold: Sequence[Collection[Hashable]], k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise RagtuneError(f"k must be a positive integer (got {k!r})")
    if len(ranked) != len(gold):
        raise RagtuneError(f"{len(ranked)} ranked lists but {len(gold)} gold sets; give one of each per question")
    if not ranked:
        raise RagtuneError("no questions to compute retrieval metrics on")
    for i, g in enumerate(gold):
        if not g:
            raise RagtuneError(f"question {i} has no gold id; every question needs at least one relevant id")


def _top(ranked: Sequence[Hashable], k: int) -> list[Hashable]:
    """The first ``k`` distinct ids of ``ranked``, in order."""
    seen, out = set(), []
    for item in ranked:
        if item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) == k:
                break
    return out


def recall_one(ranked: Sequence[Hashable], gold: Collection[Hashable], k: int) -> float:
    """recall@k of one question."""
    gold = set(gold)
    return sum(1 for item in _top(ranked, k) if item in gold) / len(gold)


def reciprocal_rank_one(ranked: Sequence[Hashable], gold: Collection[Hashable], k: int) -> float:
    """1 / rank of the first gold id within the top ``k`` (0 when there is none)."""
    gold = set(gold)
    for rank, item in enumerate(_top(ranked, k), start=1):
        if item in gold:
            return 1.0 / rank
    return 0.0


def ndcg_one(ranked: Sequence[Hashable], gold: Collection[Hashable], k: int) -> float:
    """nDCG@k of one question (binary relevance)."""
    gold = set(gold)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, item in enumerate(_top(ranked, k), start=1) if item in gold)
    idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(gold)) + 1))
    return dcg / idcg


def recall_at_k(ranked: Sequence[Sequence[Hashable]], gold: Sequence[Collection[Hashable]], k: int) -> float:
    """Mean recall@k over questions."""
    _check(ranked, gold, k)
    return sum(recall_one(r, g, k) for r, g in zip(ranked, gold)) / len(ranked)


def mrr_at_k(ranked: Sequence[Sequence[Hashable]], gold: Sequence[Collection[Hashable]], k: int) -> float:
    """Mean reciprocal rank, counting only ranks up to ``k``."""
    _check(ranked, gold, k)
    return sum(reciprocal_rank_one(r, g, k) for r, g in zip(ranked, gold)) / len(ranked)


def ndcg_at_k(ranked: Sequence[Sequence[Hashable]], gold: Sequence[Collection[Hashable]], k: int) -> float:
    """Mean nDCG@k over questions."""
    _check(ranked, gold, k)
    return sum(ndcg_one(r, g, k) for r, g in zip(ranked, gold)) / len(ranked)


def retrieval_metrics(
    ranked: Sequence[Sequence[Hashable]],
    gold: Sequence[Collection[Hashable]],
    ks: Sequence[int] = (1, 5, 10, 20),
    mrr_k: int = 10,
    ndcg_k: int = 10,
) -> dict[str, float]:
    """``{"recall@k" for k in ks, "mrr@{mrr_k}", "ndcg@{ndcg_k}"}``: the means over questions."""
    out = {f"recall@{k}": recall_at_k(ranked, gold, k) for k in ks}
    out[f"mrr@{mrr_k}"] = mrr_at_k(ranked, gold, mrr_k)
    out[f"ndcg@{ndcg_k}"] = ndcg_at_k(ranked, gold, ndcg_k)
    return out
