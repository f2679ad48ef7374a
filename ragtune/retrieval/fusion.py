"""Reciprocal rank fusion (RRF): merge several ranked lists into one.

Cormack, Clarke & Büttcher (SIGIR 2009). Each item gets, from every list that contains it,
``1 / (k + rank)`` with ``rank`` counted from 1, and the items are ordered by the sum::

    RRF(d) = Σ_lists 1 / (k + rank_list(d))

``k = 60`` (the paper's value) damps the weight of the very first ranks, so an item that two
retrievers both rank fairly high beats an item that only one of them ranks first. Scores on
different scales (BM25 scores, cosine similarities) never need to be compared, only ranks::

    reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]])
    # [("b", 1/62 + 1/61), ("c", 1/63 + 1/62), ("a", 1/61), ("d", 1/63)]

Ties keep the order in which the items were first seen (first list first), so the result is
deterministic. An item listed twice in one list counts at its best (first) rank only.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from ragtune.errors import RagtuneError

#: The constant of the RRF formula.
DEFAULT_K = 60


def reciprocal_rank_fusion(
    ranked_lists: Sequence[Sequence[Hashable]], k: int = DEFAULT_K, top: int | None = None
) -> list[tuple[Hashable, float]]:
    """Fuse ``ranked_lists`` (each best first) into ``[(item, rrf_score), ...]``, best first.

    ``k`` is the RRF constant (> 0); ``top`` keeps only the first ``top`` items (None: all).
    """
    if k <= 0:
        raise RagtuneError(f"RRF constant k must be positive (got {k})")
    scores: dict[Hashable, float] = {}
    for ranked in ranked_lists:
        seen = set()
        for rank, item in enumerate(ranked, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(scores)}
    fused = sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))
    return fused if top is None else fused[:top]
