"""A translation memory: retrieve similar training sentences with their translations, and feed them
to the encoder next to the sentence to translate.

Translators have long used translation memories: before translating a sentence, look up the most
similar sentences already translated and reuse their wording. Retrieval-augmented neural
translation does the same for the model (Gu et al. 2018; Xu et al. 2020, "Boosting neural machine
translation with similar translations"): the encoder reads the source sentence followed by the
``k`` most similar training sources and their targets, and learns to copy from them where they
fit::

    from ragtune.retrieval.memory import TranslationMemory

    tm = TranslationMemory(train_sources, train_targets)          # a BM25 index over the sources
    tm.augment(["A man in a blue shirt is running."], k=2)
    # ["A man in a blue shirt is running. <tm> A man in a red shirt is running. = Ein Mann in einem
    #   roten Hemd läuft. <tm> ..."]

**Retrieval** is BM25 over the training sources (:mod:`ragtune.retrieval.bm25`: English stemming,
jieba for Chinese), the same scorer as ``ragtune index --kind bm25``, kept in memory: a memory of
Multi30k's 29,000 sentences builds in seconds.

**No leaking the answer.** When the memory augments its *own* training sentences (training the
model with retrieval), a sentence would find itself, with its own translation, as the best match;
the model would learn to copy it and fail at test time, where no such match exists. ``exclude_self``
(on by default in :meth:`TranslationMemory.augment_training`) drops every hit whose source is
identical to the query, so each training sentence is read with *other* sentences' translations.

**The encoder input** is ``source`` then, for every hit, ``separator`` + ``hit source`` +
`` = `` + ``hit target``, cut to ``max_chars`` characters per hit. The separator (default
``<tm>``) should be a token the tokenizer keeps whole (train the tokenizer on augmented text or add
it as a special token) so the model can tell where the memory starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragtune.errors import RagtuneError

SEPARATOR = "<tm>"


class TranslationMemory:
    """BM25 over ``sources`` (row i translates to ``targets[i]``).

    Args:
        sources, targets: the training pairs, aligned.
        separator: put between the sentence and each retrieved pair.
        max_chars: each retrieved source and target is cut to this many characters.
    """

    def __init__(self, sources: Sequence[str], targets: Sequence[str], separator: str = SEPARATOR,
                 max_chars: int = 300, progress: bool = False) -> None:
        from ragtune.retrieval.bm25 import build_bm25

        if len(sources) != len(targets):
            raise RagtuneError(f"translation memory: {len(sources)} sources but {len(targets)} targets; they must align")
        if not sources:
            raise RagtuneError("translation memory: no sentence pairs to index")
        if max_chars < 1:
            raise RagtuneError(f"translation memory: max_chars must be at least 1 (got {max_chars})")
        self.sources = [str(s) for s in sources]
        self.targets = [str(t) for t in targets]
        self.separator = separator
        self.max_chars = max_chars
        self._bm25 = build_bm25(self.sources, progress=progress)

    def __len__(self) -> int:
        return len(self.sources)

    def search(self, queries: Sequence[str], k: int, exclude_self: bool = False) -> list[list[tuple[int, float]]]:
        """For each query, up to ``k`` ``(row, BM25 score)`` pairs, best first (fewer when fewer share a word).

        ``exclude_self``: leave out rows whose source is exactly the query (see the module docstring).
        """
        from ragtune.retrieval.bm25 import search_bm25

        if isinstance(queries, str):
            raise TypeError("queries must be a list of strings, not one string")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RagtuneError(f"translation memory: k must be a positive integer (got {k!r})")
        depth = min(len(self), k + 4 if exclude_self else k)  # room for the query itself and its duplicates
        out = []
        for query, hits in zip(queries, search_bm25(self._bm25, list(queries), depth)):
            if exclude_self:
                hits = [(row, score) for row, score in hits if self.sources[row].strip() != str(query).strip()]
            out.append(hits[:k])
        return out

    def augment(self, sources: Sequence[str], k: int, exclude_self: bool = False) -> list[str]:
        """Each source followed by its ``k`` retrieved pairs (the encoder's input; module docstring)."""
        return [self.join(source, hits) for source, hits in zip(sources, self.search(sources, k, exclude_self))]

    def augment_training(self, k: int) -> list[str]:
        """:meth:`augment` of the memory's own sources, each without itself (for training with retrieval)."""
        return self.augment(self.sources, k, exclude_self=True)

    def join(self, source: str, hits: Sequence[tuple[int, float]]) -> str:
        """``source`` + `` <tm> hit source = hit target`` for every hit."""
        parts = [source]
        for row, _ in hits:
            parts.append(f"{self.separator} {self.sources[row][: self.max_chars]} = {self.targets[row][: self.max_chars]}")
        return " ".join(parts)
