"""BM25 (sparse, lexical) retrieval with ``bm25s``, Chinese-aware.

::

    retriever = build_bm25(["The cat sat on the mat.", "北京大学在北京。"], progress=False)
    save_bm25(retriever, index_dir / "bm25")
    retriever = load_bm25(index_dir / "bm25")
    search_bm25(retriever, ["where is peking university", "北京大学"], k=1)
    # [[(0, 0.0...)]...]  one list of (passage row, score) per query, best first

**Tokenization** (:func:`tokenize`, the same for passages and queries, recorded in the index
manifest as :data:`TOKENIZER`):

* the text is lowercased;
* a text containing CJK ideographs is segmented with ``jieba.lcut_for_search`` (words *and* their
  shorter sub-words, e.g. ``北京大学`` → ``北京``, ``大学``, ``北京大学``); Chinese pieces are kept
  as they are, except Chinese stopwords (``的``, ``在`` ...: ``bm25s.stopwords.STOPWORDS_CHINESE``);
* every other text (and the non-Chinese pieces of a mixed text) is split like bm25s and
  scikit-learn do (``(?u)\\b\\w\\w+\\b``: words of two or more letters/digits), English stopwords
  are removed (``bm25s.stopwords.STOPWORDS_EN``) and the words are stemmed with PyStemmer's English
  Snowball stemmer (``running`` → ``run``).

**Scoring.** bm25s's defaults: Lucene BM25 with ``k1 = 1.5``, ``b = 0.75``. Only passages that
share at least one token with the query are returned, so a search may give fewer than ``k`` hits.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ragtune.errors import RagtuneError

#: Recorded in the manifest; an index built with another tokenizer must be rebuilt.
TOKENIZER = ("ragtune-bm25-v1: lowercase; jieba.lcut_for_search for CJK text; \\w\\w+ words, "
             "English stopwords, Snowball english stemmer")
#: BM25 parameters (bm25s's defaults), recorded in the manifest.
PARAMS = {"method": "lucene", "k1": 1.5, "b": 0.75}

_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]")
_WORD = re.compile(r"(?u)\b\w\w+\b")


@lru_cache(maxsize=1)
def _resources():
    """``(jieba, stemmer, english stopwords, chinese stopwords)``, loaded once (jieba's log quietened)."""
    import jieba
    import Stemmer
    from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN

    jieba.setLogLevel(logging.WARNING)
    return jieba, Stemmer.Stemmer("english"), frozenset(STOPWORDS_EN), frozenset(STOPWORDS_CHINESE)


def tokenize(text: str) -> list[str]:
    """The BM25 tokens of ``text`` (see the module docstring).

    >>> tokenize("The runners are running")
    ['runner', 'run']
    >>> tokenize("北京大学的学生")
    ['北京', '大学', '北京大学', '学生']
    """
    jieba, stemmer, stop_en, stop_zh = _resources()
    text = text.lower()
    words: list[str] = []
    tokens: list[str] = []
    if _HAN.search(text):
        for piece in jieba.lcut_for_search(text):
            if _HAN.search(piece):
                if piece not in stop_zh:
                    tokens.append(piece)
            else:
                words.extend(w for w in _WORD.findall(piece) if w not in stop_en)
    else:
        words = [w for w in _WORD.findall(text) if w not in stop_en]
    if words:
        tokens.extend(stemmer.stemWords(words))
    return tokens


def tokenize_many(texts: Sequence[str], progress: bool = False) -> list[list[str]]:
    """:func:`tokenize` of each text (with a tqdm bar when ``progress``)."""
    from tqdm.auto import tqdm

    return [tokenize(t) for t in tqdm(texts, desc="BM25 tokenize", unit="passage", disable=not progress,
                                      mininterval=1.0)]


def build_bm25(texts: Sequence[str], progress: bool = False):
    """A ``bm25s.BM25`` index over ``texts`` (row i of the index is ``texts[i]``)."""
    import bm25s

    if not texts:
        raise RagtuneError("cannot build a BM25 index without passages")
    retriever = bm25s.BM25(method=PARAMS["method"], k1=PARAMS["k1"], b=PARAMS["b"])
    retriever.index(tokenize_many(texts, progress), show_progress=progress)
    return retriever


def save_bm25(retriever, folder: Path) -> None:
    """Save with bm25s's own ``save`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    retriever.save(str(folder), show_progress=False)


def load_bm25(folder: Path):
    """Load an index written by :func:`save_bm25` (bm25s's own ``BM25.load``)."""
    import bm25s

    if not (folder / "params.index.json").is_file():
        raise RagtuneError(f"{folder}: not a BM25 index folder (no params.index.json); rebuild the index")
    return bm25s.BM25.load(str(folder), show_progress=False)


def search_bm25(retriever, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
    """For each query, up to ``k`` ``(row, score)`` pairs, best first; rows with score 0 are left out.

    ``k`` must not exceed the number of indexed passages (the caller checks it).
    """
    if not queries:
        return []
    tokens = [tokenize(q) for q in queries]
    rows, scores = retriever.retrieve(tokens, k=k, show_progress=False)
    out = []
    for row_list, score_list in zip(np.asarray(rows), np.asarray(scores)):
        out.append([(int(r), float(s)) for r, s in zip(row_list, score_list) if s > 0])
    return out
