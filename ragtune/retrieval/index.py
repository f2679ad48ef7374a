"""Build, extend, load and search a retrieval index folder.

::

    from ragtune.retrieval import add_to_index, build_index, load_index

    build_index(["docs/", "faq.jsonl"], "indexes/docs", kind="hybrid", encoder="minilm")
    add_to_index("indexes/docs", ["new_docs/"])
    index = load_index("indexes/docs", expected_encoder="minilm")
    for hit in index.search("how do I reset my password", k=5):
        print(hit.score, hit.doc_id, hit.source, hit.text[:80])
    index.search_batch(["first query", "second query"], k=3)      # one list of hits per query

**Kinds.** ``bm25``: lexical (:mod:`ragtune.retrieval.bm25`; no model needed). ``dense``:
sentence-transformers embeddings searched with FAISS (:mod:`ragtune.retrieval.dense`; ``encoder``
and ``faiss_index`` apply). ``hybrid``: both, fused with reciprocal rank fusion
(:mod:`ragtune.retrieval.fusion`): each retriever returns its best ``max(k, 100)`` passages (at most
all of them) and the fused ranking keeps the first ``k``. A hit's ``score`` is the BM25 score, the
cosine similarity or the RRF score, by kind.

**The index folder**::

    INDEX_DIR/
      passages.jsonl    one passage per line: id, doc_id, title, text, source, doc_sha1 (row i = index row i)
      bm25/             bm25s's own save (bm25 and hybrid)
      embeddings.npy    float32 (passages × dim), L2-normalised (dense and hybrid)
      faiss.index       the FAISS index over embeddings.npy (dense and hybrid)
      manifest.json     what was indexed, how, library versions and the sha256 of every file above

Passages are read from the corpus files by :mod:`ragtune.retrieval.corpus` (formats, chunking,
ids, duplicates). BM25 and the encoder see ``"title\\ntext"`` when a passage has a title.

**Bounded memory.** :func:`build_index` streams: documents are read one at a time (JSONL line by
line), their passages written straight to ``passages.jsonl`` (duplicate checks in a scratch SQLite
file, :mod:`ragtune.retrieval.diskset`), and BM25, the encoder and FAISS then read that file or the
embeddings block by block (:func:`~ragtune.retrieval.bm25.write_bm25_streaming`,
:class:`~ragtune.retrieval.dense.NpyRows`). Peak memory is set by the block sizes and the index
itself, not by the corpus: 1M passages index with BM25 in about the memory of 100k
(``benchmarks/index_scale.py``). What still grows: the BM25 vocabulary, 8 bytes per passage, and
the FAISS index (all vectors for ``flat``/``hnsw``; ``m`` bytes per vector for ``ivfpq``). CSV/TSV
and SQuAD files are read whole (use JSONL for very large corpora). :func:`add_to_index` streams the
same way (the old passages are copied line by line and the old embeddings block by block). A
loaded index whose ``passages.jsonl`` is over 256 MB (``corpus.PASSAGES_IN_MEMORY_BYTES``) reads
passages on demand (:class:`~ragtune.retrieval.corpus.PassageTable`) and memory-maps its BM25
arrays, so serving a million passages does not load them all.

**Safety.** An existing non-empty ``out_dir`` is refused unless ``overwrite=True``. The index is
written into a temporary sibling folder and moved into place only when complete, so a failed or
interrupted build (or add) leaves the previous index untouched. :func:`load_index` verifies every
file against the manifest's checksums; an index built with another encoder than
``expected_encoder`` is refused.

**Devices.** ``build_index``, ``add_to_index`` and ``load_index`` take ``device`` (``auto``, ``cpu``,
``cuda``, ``cuda:N``, ``mps`` or a ``torch.device``; default ``auto``): where a dense or hybrid index's
encoder encodes passages and queries, and, for a loaded index on CUDA with faiss-gpu installed,
where FAISS searches (:func:`~ragtune.retrieval.dense.faiss_on_device`). A ``bm25`` index has no
model and ignores it (torch is not even imported).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ragtune.version import __version__
from ragtune.errors import RagtuneError, check_regular_file
from ragtune.retrieval import manifest as mf
from ragtune.retrieval.corpus import (
    TOKEN_PATTERN,
    PassageMaker,
    PassageTable,
    check_chunking,
    list_corpus_files,
    open_passages,
    read_documents,
    search_text,
)
from ragtune.retrieval.fusion import reciprocal_rank_fusion
from ragtune.staging import staged

log = logging.getLogger("ragtune")

INDEX_KINDS = ("bm25", "dense", "hybrid")
PASSAGES = "passages.jsonl"
BM25_DIR = "bm25"
EMBEDDINGS = "embeddings.npy"
FAISS_FILE = "faiss.index"
#: Candidates each retriever contributes to hybrid fusion (at least k).
HYBRID_DEPTH = 100
#: Defaults of build_index (and of `ragtune index`).
DEFAULT_KIND = "bm25"
DEFAULT_ENCODER = "minilm"
DEFAULT_FAISS = "flat"
DEFAULT_CHUNK_TOKENS = 128
DEFAULT_CHUNK_OVERLAP = 32
#: Passages per block when a build streams passages.jsonl into BM25 or the encoder.
STREAM_BLOCK = 20_000
SCRATCH = ".scratch"


@dataclass
class Hit:
    """One retrieved passage. ``score``: BM25 score, cosine similarity or RRF score (by index kind).

    After reranking (:mod:`ragtune.retrieval.rerank`) ``score`` is the reranker's score and
    ``retrieval_score`` the score the index gave; it is None for hits that were not reranked.
    """

    id: str
    doc_id: str
    score: float
    text: str
    source: str
    title: str | None = None
    retrieval_score: float | None = None

    def to_dict(self) -> dict:
        """The hit as a plain dict (what ``ragtune retrieve`` prints); ``retrieval_score`` only when reranked."""
        out = asdict(self)
        if out["retrieval_score"] is None:
            del out["retrieval_score"]
        return out


# --------------------------------------------------------------------------------------- building


def _check_options(kind: str, faiss_index: str, batch_size: int) -> None:
    from ragtune.retrieval.dense import FAISS_KINDS

    if kind not in INDEX_KINDS:
        raise RagtuneError(f"index kind: unknown {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if faiss_index not in FAISS_KINDS:
        raise RagtuneError(f"faiss index: unknown {faiss_index!r}; choose one of {', '.join(FAISS_KINDS)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RagtuneError(f"batch_size must be a positive integer (got {batch_size!r})")


def _check_out_dir(out_dir: Path, overwrite: bool, files: list[Path]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RagtuneError(f"index folder {out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise RagtuneError(f"index folder {out_dir} exists and is not empty; choose another folder, add "
                               "--overwrite to replace it, or --add to add documents to it")
        root = out_dir.resolve()
        inside = [f for f in files if root in f.resolve().parents]
        if inside:
            raise RagtuneError(f"corpus file {inside[0]} is inside the index folder {out_dir}, which --overwrite "
                               "would delete; move the corpus or choose another index folder")


def _stream_passages(files: list[Path], maker: PassageMaker, fh, vectors,
                     progress: bool) -> tuple[int, list[dict], np.ndarray | None]:
    """Write the passages of ``files`` to the open file ``fh`` as ``maker`` makes them; memory stays bounded.

    Returns ``(passages written, manifest inputs, kept vector rows)``; the counts are ``maker``'s.
    With ``vectors`` (:class:`~ragtune.retrieval.dense.NpyRows` of precomputed embeddings, one row
    per record), every record must give at most one passage, and the rows of records that gave one
    are returned.
    """
    from array import array

    from tqdm.auto import tqdm

    inputs: list[dict] = []
    kept = array("q") if vectors is not None else None
    n, record = 0, 0
    with tqdm(desc="read corpus", unit="document", disable=not progress, mininterval=1.0) as bar:
        for path in files:
            docs_before, n_before = maker.documents, n
            for doc in read_documents(path):
                passages = maker.passages(doc)
                if kept is not None:
                    if len(passages) > 1:
                        raise RagtuneError(
                            f"{doc.origin}: this record gives {len(passages)} passages of at most "
                            f"{maker.chunk_tokens} tokens, but with --vectors each record is one passage (its vector "
                            f"is row {record} of {vectors.path}); raise --chunk-tokens, or split the records before "
                            "computing vectors")
                    if passages:
                        kept.append(record)
                record += 1
                for p in passages:
                    fh.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
                n += len(passages)
                bar.update(1)
            inputs.append({"path": str(path.resolve()), "sha256": mf.sha256_file(path),
                           "documents": maker.documents - docs_before, "passages": n - n_before})
    if vectors is not None and record != len(vectors):
        raise RagtuneError(f"{vectors.path} holds {len(vectors)} vectors but the corpus has {record} records; "
                           "give one vector per record, in the order the corpus files are read")
    return n, inputs, (None if kept is None else np.frombuffer(kept, dtype=np.int64))


def _write_passages(tmp: Path, files: list[Path], chunking: dict, vectors, progress: bool,
                    old: Path | None = None) -> tuple[int, int, list[dict], np.ndarray | None, dict]:
    """Write ``tmp/passages.jsonl``: the lines of ``old`` (an index's ``passages.jsonl``) as they
    were, then the passages of ``files`` (duplicate checks in ``tmp/.scratch``).

    Returns ``(old passages, new passages, manifest inputs, kept vector rows, totals)``; see
    :func:`_stream_passages`.
    """
    from ragtune.retrieval.diskset import SeenStore

    (tmp / SCRATCH).mkdir()
    n_old = 0
    with SeenStore(tmp / SCRATCH / "seen.sqlite") as store, \
            open(tmp / PASSAGES, "w", encoding="utf-8", newline="\n") as fh:
        if old is not None:
            with open(old, encoding="utf-8") as lines:  # the old passages come first, as they were
                for line in lines:
                    record = json.loads(line)
                    store.texts.add(hashlib.sha1(record["text"].encode("utf-8")).digest())
                    store.ids[record["doc_id"]] = record["source"]
                    fh.write(line)
                    n_old += 1
        maker = PassageMaker(chunking["chunk_tokens"], chunking["chunk_overlap"], seen_texts=store.texts,
                             taken_ids=store.ids, explicit_sha=store.explicit)
        n, inputs, kept = _stream_passages(files, maker, fh, vectors, progress)
    totals = {"documents": maker.documents, "duplicates_removed": maker.duplicates_removed,
              "empty_documents": maker.empty_documents, "duplicate_documents": maker.duplicate_documents}
    return n_old, n, inputs, kept, totals


def _passage_text_blocks(path: Path, start: int = 0, block: int = STREAM_BLOCK) -> Iterator[list[str]]:
    """The search texts of ``passages.jsonl`` from row ``start`` on, ``block`` at a time."""
    texts: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in itertools.islice(fh, start, None):
            record = json.loads(line)
            texts.append(search_text(record.get("title"), record["text"]))
            if len(texts) == block:
                yield texts
                texts = []
    if texts:
        yield texts


def _write_bm25(folder: Path, scratch: Path, n: int, progress: bool) -> dict:
    """BM25 over all of ``folder/passages.jsonl`` (streaming); returns the manifest's ``bm25`` entry."""
    from ragtune.retrieval.bm25 import PARAMS, TOKENIZER, write_bm25_streaming

    write_bm25_streaming(_passage_text_blocks(folder / PASSAGES), folder / BM25_DIR, scratch, progress, total=n)
    return {"folder": BM25_DIR, "tokenizer": TOKENIZER, **PARAMS}


def _encoder_source(manifest: dict) -> str:
    """What to load the index's encoder from: the alias again (its package may have moved), else the stored path."""
    from ragtune.models.hf import ALIASES

    return manifest["encoder"] if manifest["encoder"] in ALIASES else manifest["encoder_path"]


def build_index(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    kind: str = DEFAULT_KIND,
    encoder: str = DEFAULT_ENCODER,
    faiss_index: str = DEFAULT_FAISS,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    batch_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
    vectors: str | Path | None = None,
    device="auto",
) -> Path:
    """Index the corpus files/folders ``paths`` into ``out_dir``; returns ``out_dir``.

    Arguments:
        paths: corpus files and folders (see :mod:`ragtune.retrieval.corpus` for the formats).
        out_dir: the index folder; must be new or empty unless ``overwrite``.
        kind: ``bm25``, ``dense`` or ``hybrid``.
        encoder: sentence-transformers model for ``dense``/``hybrid``: ``minilm``, a folder or a Hub id.
        faiss_index: ``flat``, ``hnsw`` or ``ivfpq`` (``dense``/``hybrid``).
        chunk_tokens, chunk_overlap: passage length and overlap in tokens (words; CJK characters).
        batch_size: passages per encoder batch.
        progress: show progress bars.
        overwrite: replace a non-empty ``out_dir`` (only once the new index is complete).
        vectors: a ``.npy`` file of precomputed embeddings (``dense``/``hybrid``), one row per
            corpus record in reading order, computed with ``encoder``; used instead of encoding
            (see :mod:`ragtune.retrieval.dense`). ``encoder`` still encodes the queries.
        device: where ``encoder`` runs (module docstring, Devices).

    Memory stays bounded as the corpus grows (module docstring). The summary (documents, passages, duplicates removed, seconds) is the last entry of the
    manifest's ``history``. An empty corpus is an error naming the paths.
    """
    start = time.perf_counter()
    _check_options(kind, faiss_index, batch_size)
    check_chunking(chunk_tokens, chunk_overlap)
    out_dir = Path(out_dir)
    files = list_corpus_files(paths)
    _check_out_dir(out_dir, overwrite, files)
    dense_kind = kind in ("dense", "hybrid")
    encoder_path, rows = None, None
    if vectors is not None:
        if not dense_kind:
            raise RagtuneError(f"--vectors gives embeddings for a dense index; use --kind dense or hybrid "
                               f"(not {kind})")
        from ragtune.retrieval.dense import NpyRows

        check_regular_file(vectors, "--vectors")
        if not Path(vectors).is_file():
            raise RagtuneError(f"vectors file {vectors} does not exist (or is not a file)")
        rows = NpyRows(vectors)
    if dense_kind:
        from ragtune.retrieval.dense import resolve_encoder

        encoder_path = resolve_encoder(encoder)  # fail on a bad encoder before reading the corpus
    chunking = {"chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap, "token_pattern": TOKEN_PATTERN}
    with staged(out_dir) as tmp:
        _, n, inputs, kept, totals = _write_passages(tmp, files, chunking, rows, progress)
        if n == 0:
            shown = ", ".join(str(p) for p in paths)
            raise RagtuneError(f"the corpus is empty: {shown} hold no text to index "
                               f"({totals['empty_documents']} empty documents)")
        bm25_info = _write_bm25(tmp, tmp / SCRATCH, n, progress) if kind in ("bm25", "hybrid") else None
        dim, faiss_params = None, None
        if dense_kind:
            from ragtune.retrieval import dense

            model = dense.load_encoder(encoder, progress, device)
            if rows is not None:
                dim = dense.copy_vectors(rows, kept, tmp / EMBEDDINGS, model.get_embedding_dimension(), progress)
            else:
                dim = dense.encode_to_file(tmp / EMBEDDINGS, model, _passage_text_blocks(tmp / PASSAGES), n,
                                           batch_size, progress)
            faiss_index_obj, faiss_params = dense.build_faiss(dense.NpyRows(tmp / EMBEDDINGS), faiss_index)
            dense.save_faiss(faiss_index_obj, tmp / FAISS_FILE)
            del faiss_index_obj
        shutil.rmtree(tmp / SCRATCH)
        created = mf.now()
        manifest = {
            "format": mf.FORMAT,
            "kind": kind,
            "created": created,
            "updated": created,
            "corpus_sha256": mf.corpus_sha256([i["sha256"] for i in inputs]),
            "inputs": inputs,
            "chunking": chunking,
            "documents": totals["documents"],
            "passages": n,
            "bm25": bm25_info,
            "encoder": encoder if dense_kind else None,
            "encoder_path": encoder_path,
            "encoder_weights": mf.weights_sha256(encoder_path) if encoder_path else None,
            "embedding_dim": dim,
            "faiss_index": faiss_index if dense_kind else None,
            "faiss_params": faiss_params,
            "vectors": None if rows is None else {"path": str(rows.path.resolve()), "rows": len(rows),
                                                  "sha256": mf.sha256_file(rows.path)},
            "versions": {**mf.library_versions(), "ragtune": __version__},
            "files": mf.checksum_folder(tmp),
            "history": [{"action": "build", "time": created, "files": len(files), "documents": totals["documents"],
                         "passages_added": n, "duplicates_removed": totals["duplicates_removed"],
                         "empty_documents": totals["empty_documents"],
                         "seconds": round(time.perf_counter() - start, 3)}],
        }
        mf.write_manifest(tmp, manifest)
    return out_dir


def add_to_index(
    index_dir: str | Path,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    progress: bool = True,
    device="auto",
) -> Path:
    """Add the documents of ``paths`` to the existing index ``index_dir``; returns ``index_dir``.

    The index's own settings are used (kind, encoder, FAISS kind, chunking). New passages are
    appended (duplicates of passages already indexed are dropped), only the new passages are
    encoded and their embeddings appended, ``flat``/``hnsw`` FAISS indexes get the new vectors
    (``ivfpq`` is retrained on all of them), BM25 is rebuilt from all passages, and the manifest
    is updated (inputs, counts, checksums, a ``history`` entry). A file already in the index is an
    error: rebuild with ``overwrite=True`` to re-index changed files. ``device``: where the encoder
    encodes the new passages (module docstring, Devices).
    """
    start = time.perf_counter()
    index_dir = Path(index_dir)
    manifest = mf.read_manifest(index_dir)
    mf.verify_files(index_dir, manifest)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RagtuneError(f"batch_size must be a positive integer (got {batch_size!r})")
    files = list_corpus_files(paths)
    indexed = {i["path"] for i in manifest.get("inputs", [])}
    for f in files:
        if str(f.resolve()) in indexed:
            raise RagtuneError(f"{f} is already in the index {index_dir}; to re-index a changed file, rebuild the "
                               "index (ragtune index ... --overwrite)")
    root = index_dir.resolve()
    for f in files:
        if root in f.resolve().parents:
            raise RagtuneError(f"corpus file {f} is inside the index folder {index_dir}; move it out first")
    kind = manifest["kind"]
    with staged(index_dir) as tmp:
        n_old, n_new, inputs, _, totals = _write_passages(tmp, files, manifest["chunking"], None, progress,
                                                          old=index_dir / PASSAGES)
        if not n_new and totals["duplicates_removed"] == 0 and totals["duplicate_documents"] == 0:
            shown = ", ".join(str(p) for p in paths)
            raise RagtuneError(f"nothing to add: {shown} hold no text ({totals['empty_documents']} empty documents)")
        n_total = n_old + n_new
        if manifest.get("bm25"):
            manifest["bm25"] = _write_bm25(tmp, tmp / SCRATCH, n_total, progress)
        if kind in ("dense", "hybrid"):
            if n_new:
                from ragtune.retrieval import dense

                _check_encoder_weights(index_dir, manifest)
                model = dense.load_encoder(_encoder_source(manifest), progress, device)
                dense.encode_to_file(tmp / EMBEDDINGS, model, _passage_text_blocks(tmp / PASSAGES, start=n_old),
                                     n_new, batch_size, progress, previous=dense.NpyRows(index_dir / EMBEDDINGS))
                embeddings = dense.NpyRows(tmp / EMBEDDINGS)
                faiss_kind = manifest["faiss_index"]
                if faiss_kind in ("flat", "hnsw"):  # trained once: only the new vectors are added
                    faiss_index = dense.load_faiss(index_dir / FAISS_FILE)
                    dense.add_to_faiss(faiss_index, embeddings, start=n_old)
                else:  # ivfpq: lists and codebooks are retrained for the grown corpus
                    faiss_index, manifest["faiss_params"] = dense.build_faiss(embeddings, faiss_kind)
                dense.save_faiss(faiss_index, tmp / FAISS_FILE)
                del faiss_index
            else:
                shutil.copy2(index_dir / EMBEDDINGS, tmp / EMBEDDINGS)
                shutil.copy2(index_dir / FAISS_FILE, tmp / FAISS_FILE)
        shutil.rmtree(tmp / SCRATCH)
        stamp = mf.now()
        manifest["inputs"] = list(manifest.get("inputs", [])) + inputs
        manifest["corpus_sha256"] = mf.corpus_sha256([i["sha256"] for i in manifest["inputs"]])
        manifest["documents"] = manifest.get("documents", 0) + totals["documents"]
        manifest["passages"] = n_total
        manifest["updated"] = stamp
        manifest["versions"] = {**mf.library_versions(), "ragtune": __version__}
        manifest["files"] = mf.checksum_folder(tmp)
        manifest.setdefault("history", []).append(
            {"action": "add", "time": stamp, "files": len(files), "documents": totals["documents"],
             "passages_added": n_new, "duplicates_removed": totals["duplicates_removed"],
             "empty_documents": totals["empty_documents"], "seconds": round(time.perf_counter() - start, 3)})
        mf.write_manifest(tmp, manifest)
    return index_dir


# ---------------------------------------------------------------------------------------- loading


@dataclass
class Index:
    """A loaded index (:func:`load_index`). ``passages[i]`` is the record of index row ``i``."""

    path: Path
    manifest: dict = field(repr=False)
    passages: Sequence[dict] = field(repr=False)
    bm25: object | None = field(default=None, repr=False)
    faiss_index: object | None = field(default=None, repr=False)
    encoder: object | None = field(default=None, repr=False)
    #: the CPU FAISS index when ``faiss_index`` is its copy on a GPU (searches deeper than faiss-gpu allows use it)
    faiss_cpu: object | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``bm25``, ``dense`` or ``hybrid``."""
        return self.manifest["kind"]

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The best ``k`` passages for ``query``, best first (BM25 may return fewer: only matching passages)."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """:meth:`search` for several queries at once (one batch through the encoder)."""
        return [[self.hit(row, score) for row, score in rows] for rows in self.search_rows(queries, k)]

    def search_rows(self, queries: Sequence[str], k: int = 5) -> list[list[tuple[int, float]]]:
        """Like :meth:`search_batch`, but ``(passage row, score)`` pairs instead of hits."""
        if isinstance(queries, str):
            raise RagtuneError("search_batch/search_rows take a list of queries; use search(query) for one")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RagtuneError(f"k must be a positive integer (got {k!r})")
        if k > len(self.passages):
            raise RagtuneError(f"k={k} is larger than the number of passages in the index {self.path} "
                               f"({len(self.passages)}); ask for at most {len(self.passages)}")
        queries = [str(q) for q in queries]
        if not queries:
            return []
        if self.kind == "bm25":
            return self._bm25(queries, k)
        if self.kind == "dense":
            return self._dense(queries, k)
        depth = min(len(self.passages), max(k, HYBRID_DEPTH))
        lexical, dense = self._bm25(queries, depth), self._dense(queries, depth)
        return [reciprocal_rank_fusion([[r for r, _ in b], [r for r, _ in d]], top=k) for b, d in zip(lexical, dense)]

    def _bm25(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        from ragtune.retrieval.bm25 import search_bm25

        return search_bm25(self.bm25, queries, k)

    def _dense(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        from ragtune.retrieval.dense import GPU_MAX_K, encode_queries, search_faiss

        faiss_index = self.faiss_cpu if self.faiss_cpu is not None and k > GPU_MAX_K else self.faiss_index
        return search_faiss(faiss_index, encode_queries(self.encoder, queries), k)  # CPU query vectors

    def hit(self, row: int, score: float) -> Hit:
        """The :class:`Hit` of passage row ``row`` with ``score``."""
        p = self.passages[row]
        return Hit(id=p["id"], doc_id=p["doc_id"], score=float(score), text=p["text"], source=p["source"],
                   title=p.get("title"))


def _check_encoder_weights(index_dir: Path, manifest: dict) -> None:
    """Refuse an index whose encoder folder now holds other weights than when it was built."""
    from ragtune.retrieval.dense import resolve_encoder

    built_with = manifest.get("encoder_weights")
    if built_with is None:
        return
    folder = resolve_encoder(_encoder_source(manifest))
    if mf.weights_sha256(folder) != built_with:
        raise RagtuneError(
            f"index {index_dir}: the encoder {manifest['encoder']!r} ({folder}) holds other weights than when the "
            "index was built, so queries would be encoded by another model than the passages; restore that "
            "encoder, or rebuild the index (ragtune index ... --overwrite)")


def _same_encoder(expected: str, manifest: dict) -> bool:
    if expected == manifest["encoder"]:
        return True
    from ragtune.retrieval.dense import resolve_encoder

    return resolve_encoder(expected) == manifest["encoder_path"]


def load_index(index_dir: str | Path, expected_encoder: str | None = None, progress: bool = False,
               device="auto") -> Index:
    """Load the index folder ``index_dir`` after checking every file against the manifest; a dense or
    hybrid index's encoder (and, with faiss-gpu, its FAISS index) goes to ``device`` (module docstring).

    ``expected_encoder`` (an alias, folder or Hub id): the encoder the caller will pair with the
    index (e.g. a RAG config's); a dense/hybrid index built with another one is a RagtuneError naming
    both. It is ignored for a ``bm25`` index, which has no encoder.
    """
    index_dir = Path(index_dir)
    manifest = mf.read_manifest(index_dir)
    mf.verify_files(index_dir, manifest)
    kind = manifest["kind"]
    if kind not in INDEX_KINDS:
        raise RagtuneError(f"{index_dir / mf.MANIFEST}: unknown index kind {kind!r}; rebuild the index")
    if expected_encoder is not None and manifest.get("encoder") is not None:
        if not _same_encoder(expected_encoder, manifest):
            raise RagtuneError(
                f"index {index_dir} was built with encoder {manifest['encoder']!r} ({manifest['encoder_path']}), "
                f"but encoder {expected_encoder!r} was asked for; queries must be encoded by the index's encoder: "
                f"use encoder {manifest['encoder']!r}, or rebuild the index with --encoder {expected_encoder}"
            )
    passages = open_passages(index_dir / PASSAGES)  # read on demand when large (bounded memory)
    if len(passages) != manifest["passages"]:
        raise RagtuneError(f"{index_dir / PASSAGES} holds {len(passages)} passages but the manifest says "
                           f"{manifest['passages']}; rebuild the index")
    index = Index(path=index_dir, manifest=manifest, passages=passages)
    if kind in ("bm25", "hybrid"):
        from ragtune.retrieval.bm25 import TOKENIZER, load_bm25

        built_with = (manifest.get("bm25") or {}).get("tokenizer")
        if built_with != TOKENIZER:
            raise RagtuneError(f"index {index_dir} was built with the BM25 tokenizer {built_with!r}; this ragtune "
                               f"tokenizes queries with {TOKENIZER!r}; rebuild the index")
        index.bm25 = load_bm25(index_dir / BM25_DIR, mmap=isinstance(passages, PassageTable))
    if kind in ("dense", "hybrid"):
        from ragtune.devices import resolve
        from ragtune.retrieval.dense import faiss_on_device, load_encoder, load_faiss

        device = resolve(device, key="--device")
        faiss_index = load_faiss(index_dir / FAISS_FILE)
        if faiss_index.ntotal != len(passages):
            raise RagtuneError(f"{index_dir / FAISS_FILE} holds {faiss_index.ntotal} vectors for "
                               f"{len(passages)} passages; rebuild the index")
        _check_encoder_weights(index_dir, manifest)
        index.encoder = load_encoder(_encoder_source(manifest), progress, device)
        index.faiss_index = faiss_on_device(faiss_index, device)
        index.faiss_cpu = faiss_index if index.faiss_index is not faiss_index else None
        dim = index.encoder.get_embedding_dimension()
        if dim is not None and dim != manifest["embedding_dim"]:
            raise RagtuneError(f"encoder {manifest['encoder']!r} gives {dim}-dimensional embeddings but the index "
                               f"{index_dir} holds {manifest['embedding_dim']}-dimensional ones; rebuild the index")
    return index
