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

**Bounded memory.** :func:`build_bm25` holds every passage's tokens (about 4 KB per passage of
60 words: 4 GB for a million). :func:`write_bm25_streaming` builds the same index from blocks of
texts with memory bounded by the block size and the vocabulary: pass 1 tokenizes each block,
maps tokens to ids and appends the ids to a scratch file while counting document frequencies;
pass 2 re-reads the ids block by block, computes the BM25 scores exactly as bm25s does (same
formulas, same float32/float64 steps) and writes each token's entries straight into place in
bm25s's CSC files (``os.pwrite``; a counting sort, no memory map). The result is a folder that
``bm25s.BM25.load`` reads like its own save, with the same scores for every query
(``tests/retrieval/test_bm25_streaming.py`` checks it against bm25s's ``index``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
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
    """``(stemmer, english stopwords, chinese stopwords)``, loaded once (``ragtune[retrieval]``)."""
    import Stemmer
    from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN

    return Stemmer.Stemmer("english"), frozenset(STOPWORDS_EN), frozenset(STOPWORDS_CHINESE)


@lru_cache(maxsize=1)
def _jieba():
    """jieba, loaded at the first Chinese text (``ragtune[zh]``; an English corpus does not need it)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def tokenize(text: str) -> list[str]:
    """The BM25 tokens of ``text`` (see the module docstring).

    >>> tokenize("The runners are running")
    ['runner', 'run']
    >>> tokenize("北京大学的学生")
    ['北京', '大学', '北京大学', '学生']
    """
    stemmer, stop_en, stop_zh = _resources()
    text = text.lower()
    words: list[str] = []
    tokens: list[str] = []
    if _HAN.search(text):
        for piece in _jieba().lcut_for_search(text):
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


def build_bm25(texts: Sequence[str], progress: bool = False):
    """A ``bm25s.BM25`` index over ``texts`` (row i of the index is ``texts[i]``)."""
    import bm25s
    from tqdm.auto import tqdm

    if not texts:
        raise RagtuneError("cannot build a BM25 index without passages")
    retriever = bm25s.BM25(method=PARAMS["method"], k1=PARAMS["k1"], b=PARAMS["b"])
    bar = tqdm(texts, desc="BM25 tokenize", unit="passage", disable=not progress, mininterval=1.0)
    retriever.index([tokenize(t) for t in bar], show_progress=progress)
    return retriever


#: Passages per block in pass 2 of :func:`write_bm25_streaming` (bounds its working memory).
SCORE_BLOCK = 50_000


def _bm25s_params(num_docs: int) -> dict:
    """``params.index.json`` as ``bm25s.BM25.save`` writes it for :data:`PARAMS`."""
    import bm25s

    r = bm25s.BM25(method=PARAMS["method"], k1=PARAMS["k1"], b=PARAMS["b"])
    if r.idf_method != "lucene" or r.dtype != "float32":
        raise RagtuneError(f"bm25s {bm25s.__version__} changed its defaults (idf {r.idf_method}, dtype {r.dtype}); "
                           "the streaming BM25 builder needs lucene/float32")
    return {"k1": r.k1, "b": r.b, "delta": r.delta, "method": r.method, "idf_method": r.idf_method,
            "dtype": r.dtype, "int_dtype": r.int_dtype, "num_docs": num_docs, "version": bm25s.__version__,
            "backend": r.backend}


def _new_npy(path: Path, dtype, n: int) -> int:
    """Create the ``.npy`` file ``path`` for ``n`` items of ``dtype`` (zeros, sparse); returns the header size."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        offset = fh.tell()
        fh.truncate(offset + n * np.dtype(dtype).itemsize)
    return offset


def write_bm25_streaming(text_blocks: Iterable[Sequence[str]], folder: Path, work_dir: Path,
                         progress: bool = False, total: int | None = None) -> int:
    """Build the BM25 index of all texts in ``text_blocks`` into ``folder``; returns the number of texts.

    Row i of the index is the i-th text over all blocks. ``work_dir`` holds two scratch files
    (removed at the end). Memory: one block of texts and their tokens, the vocabulary, and
    :data:`SCORE_BLOCK` passages' token ids; see the module docstring. ``total`` (texts) sizes the
    progress bar.
    """
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    ids_path, lengths_path = work_dir / "bm25_ids.bin", work_dir / "bm25_lengths.bin"
    vocab: dict[str, int] = {}
    df = np.zeros(1024, dtype=np.int64)
    n_docs = 0
    bar = tqdm(total=total, desc="BM25 tokenize", unit="passage", disable=not progress, mininterval=1.0)
    try:
        with open(ids_path, "wb") as ids_fh, open(lengths_path, "wb") as len_fh:
            for block in text_blocks:  # pass 1: token ids to disk, document frequencies in memory
                ids: list[int] = []
                lengths = np.empty(len(block), dtype=np.int64)
                for i, text in enumerate(block):
                    tokens = tokenize(text)
                    lengths[i] = len(tokens)
                    ids.extend(vocab.setdefault(t, len(vocab)) for t in tokens)
                flat = np.asarray(ids, dtype=np.int64)
                if len(vocab) > len(df):
                    df = np.concatenate([df, np.zeros(max(len(vocab), 2 * len(df)) - len(df), dtype=np.int64)])
                if len(flat):
                    doc = np.repeat(np.arange(len(block), dtype=np.int64), lengths)
                    pairs = np.unique(doc * len(vocab) + flat)  # one entry per (document, token)
                    df += np.bincount(pairs % len(vocab), minlength=len(df))
                ids_fh.write(flat.astype(np.int32).tobytes())
                len_fh.write(lengths.astype(np.int32).tobytes())
                n_docs += len(block)
                bar.update(len(block))
        bar.close()
        if n_docs == 0:
            raise RagtuneError("cannot build a BM25 index without passages")
        n_vocab = len(vocab)
        df = df[:n_vocab]
        lengths_all = np.fromfile(lengths_path, dtype=np.int32)  # 4 bytes per passage
        avg_doc_len = np.float64(lengths_all.astype(np.int64).sum()) / n_docs  # = np.mean of the lengths
        del lengths_all
        # bm25s: idf_array[token] = float32(math.log(...)) for tokens that occur
        idf = np.array([math.log(1 + (n_docs - d + 0.5) / (d + 0.5)) for d in df.tolist()], dtype=np.float32)
        k1, b = PARAMS["k1"], PARAMS["b"]
        nnz = int(df.sum())
        index_dtype = np.int32 if n_docs < 2**31 else np.int64
        indptr = np.zeros(n_vocab + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        np.save(folder / "indptr.csc.index.npy", indptr)
        data_path, indices_path = folder / "data.csc.index.npy", folder / "indices.csc.index.npy"
        data_offset = _new_npy(data_path, np.float32, nnz)
        indices_offset = _new_npy(indices_path, index_dtype, nnz)
        cursor = indptr[:-1].copy()
        bar = tqdm(total=n_docs, desc="BM25 score", unit="passage", disable=not progress, mininterval=1.0)
        data_fd, indices_fd = os.open(data_path, os.O_WRONLY), os.open(indices_path, os.O_WRONLY)
        try:
            with open(ids_path, "rb") as ids_fh, open(lengths_path, "rb") as len_fh:
                first = 0
                while first < n_docs:  # pass 2: scores, scattered into each token's column
                    lengths = np.fromfile(len_fh, dtype=np.int32, count=SCORE_BLOCK).astype(np.int64)
                    flat = np.fromfile(ids_fh, dtype=np.int32, count=int(lengths.sum())).astype(np.int64)
                    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
                    keys, tf = np.unique(doc * n_vocab + flat, return_counts=True)
                    doc, token = keys // n_vocab, keys % n_vocab
                    order = np.argsort(token, kind="stable")  # by token, then document (keys are by document)
                    doc, token, tf = doc[order], token[order], tf[order].astype(np.float32)
                    l_d = lengths[doc].astype(np.float64)
                    # bm25s's _score_tfc_robertson with l_avg a float64 scalar: float64 throughout
                    tfc = tf / (k1 * ((1 - b) + b * l_d / avg_doc_len) + tf)
                    scores = (idf[token] * tfc).astype(np.float32)
                    rows = (doc + first).astype(index_dtype)
                    counts = np.bincount(token, minlength=n_vocab)
                    start = 0
                    for t in np.flatnonzero(counts).tolist():
                        stop = start + int(counts[t])
                        at = int(cursor[t])
                        os.pwrite(data_fd, scores[start:stop].tobytes(), data_offset + at * 4)
                        os.pwrite(indices_fd, rows[start:stop].tobytes(), indices_offset + at * rows.itemsize)
                        cursor[t] = at + stop - start
                        start = stop
                    first += len(lengths)
                    bar.update(len(lengths))
        finally:
            os.close(data_fd)
            os.close(indices_fd)
            bar.close()
        if not np.array_equal(cursor, indptr[1:]):
            raise RagtuneError("internal error: BM25 columns were not filled as counted; please report it")
        vocab[""] = n_vocab  # bm25s adds the empty token after the last id (for queries with no known token)
        (folder / "vocab.index.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (folder / "params.index.json").write_text(json.dumps(_bm25s_params(n_docs), indent=4))
    finally:
        bar.close()
        for path in (ids_path, lengths_path):
            path.unlink(missing_ok=True)
    return n_docs


def save_bm25(retriever, folder: Path) -> None:
    """Save with bm25s's own ``save`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    retriever.save(str(folder), show_progress=False)


def load_bm25(folder: Path, mmap: bool = False):
    """Load an index written by :func:`save_bm25` or :func:`write_bm25_streaming` (bm25s's own
    ``BM25.load``); ``mmap``: memory-map the score arrays instead of reading them (large indexes)."""
    import bm25s

    if not (folder / "params.index.json").is_file():
        raise RagtuneError(f"{folder}: not a BM25 index folder (no params.index.json); rebuild the index")
    return bm25s.BM25.load(str(folder), show_progress=False, mmap=mmap)


def search_bm25(retriever, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
    """For each query, up to ``k`` ``(row, score)`` pairs, best first; rows with score 0 are left out.

    ``k`` must not exceed the number of indexed passages (the caller checks it).
    """
    if not queries:
        return []
    tokens = [tokenize(q) for q in queries]
    rows, scores = retriever.retrieve(tokens, k=k, show_progress=False)
    return [[(int(r), float(s)) for r, s in zip(row_list, score_list) if s > 0]
            for row_list, score_list in zip(np.asarray(rows), np.asarray(scores))]
