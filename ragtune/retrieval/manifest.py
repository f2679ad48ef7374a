"""``manifest.json`` of an index folder: what was indexed, how, and the checksum of every file written.

The manifest makes an index reproducible and tamper-evident. Its keys::

    format            1 (this layout)
    kind              "bm25" | "dense" | "hybrid"
    created, updated  ISO timestamps (UTC)
    corpus_sha256     sha256 over the per-file sha256 digests of the inputs, in order
    inputs            [{"path": absolute path, "sha256", "documents", "passages"}, ...]
    chunking          {"chunk_tokens", "chunk_overlap", "token_pattern"}
    documents         number of documents indexed (with at least one passage)
    passages          number of passages (rows of passages.jsonl, embeddings.npy, the BM25 and FAISS indexes)
    bm25              {"folder": "bm25", "tokenizer", "method", "k1", "b"} or null
    encoder           the encoder as given ("minilm", a folder, a Hub id) or null (bm25)
    encoder_path      where it was loaded from (alias → package folder; folder → absolute path)
    encoder_weights   sha256 over the encoder folder's weight files (null for a Hub id): an index
                      whose encoder folder now holds other weights is refused when loaded
    vectors           {"path", "rows", "sha256"} of precomputed vectors (``--vectors``) or null
    embedding_dim     dimension of the embeddings or null
    faiss_index       "flat" | "hnsw" | "ivfpq" or null; faiss_params: its parameters
    versions          library versions: ragtune, bm25s, faiss-cpu, sentence-transformers, jieba, ...
    files             {relative path: sha256} of every file the index wrote (all but manifest.json)
    history           [{"action": "build" | "add", "time", "files", "documents", "passages_added",
                        "duplicates_removed", "empty_documents", "seconds"}, ...]

:func:`verify_files` recomputes every checksum when an index is loaded, so an edited, truncated or
missing file is a RagtuneError naming the file and saying to rebuild.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from importlib import metadata
from pathlib import Path

from ragtune.errors import RagtuneError

MANIFEST = "manifest.json"
FORMAT = 1
#: Distributions whose versions are recorded.
LIBRARIES = ("ragtune", "bm25s", "faiss-cpu", "sentence-transformers", "jieba", "PyStemmer", "pypdf",
             "transformers", "torch", "numpy")


def weights_sha256(folder: str | Path) -> str | None:
    """sha256 over the weight files (``*.safetensors``, ``*.bin``, ``*.pt``) of a model folder, in
    path order; None when ``folder`` is not a local folder (a Hub id) or holds no weight file."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".bin", ".pt"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(folder).as_posix().encode("utf-8") + b"\0" + sha256_file(f).encode("ascii"))
    return digest.hexdigest()


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def corpus_sha256(file_digests: list[str]) -> str:
    """sha256 over the hex digests of the corpus files, in order (one per line)."""
    return hashlib.sha256("".join(d + "\n" for d in file_digests).encode("ascii")).hexdigest()


def library_versions() -> dict[str, str | None]:
    """Installed versions of :data:`LIBRARIES` (None for one that is not installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now() -> str:
    """The current UTC time, ISO 8601, seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def checksum_folder(folder: Path, skip: str = MANIFEST) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``folder`` except those named ``skip`` (the manifest)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != skip}


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (sorted, indented JSON)."""
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_record(folder: Path, name: str, *, what: str, not_found: str, make: str, fix: str, fmt: int,
                required: tuple[str, ...] = ()) -> dict:
    """The JSON record ``name`` (a format-``fmt`` object) that describes the folder ``folder``.

    Shared by index manifests and ``reranker.json``. A missing folder, a folder without the record,
    invalid JSON, another format or a missing ``required`` key is a RagtuneError: ``what`` names the
    kind of folder, ``not_found`` is added to the "folder not found" message, ``make`` says how to
    create one, ``fix`` what to do about a bad record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RagtuneError(f"{what} folder not found: {folder}{not_found}")
    path = folder / name
    if not path.is_file():
        raise RagtuneError(f"{folder} is not a ragtune {what} folder (no {name}); {make}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RagtuneError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        found = record.get("format") if isinstance(record, dict) else None
        raise RagtuneError(f"{path}: unknown {what} format {found!r} (this ragtune reads format {fmt}); {fix}")
    for key in required:
        if key not in record:
            raise RagtuneError(f"{path}: the {name} has no '{key}'; {fix}")
    return record


def verify_checksums(folder: Path, files: dict[str, str], *, what: str, since: str, fix: str) -> None:
    """Check every file of ``files`` (path relative to ``folder`` → sha256); name the first bad one.

    ``what`` names the files (``"index file"``), ``since`` when they were written (``"the index was
    built"``), ``fix`` what to do (``"rebuild the index (ragtune index ... --overwrite)"``).
    """
    folder = Path(folder)
    for rel, expected in files.items():
        path = folder / rel
        if not path.is_file():
            raise RagtuneError(f"{what} {path} is missing; {fix}")
        actual = sha256_file(path)
        if actual != expected:
            raise RagtuneError(f"{what} {path} was changed or corrupted since {since} "
                               f"(sha256 {actual[:12]}… instead of {expected[:12]}…); {fix}")


def read_manifest(folder: Path) -> dict:
    """The manifest of the index folder ``folder``; a missing or unreadable one is a RagtuneError."""
    folder = Path(folder)
    record = read_record(folder, MANIFEST, what="index", not_found="",
                         make=f"build one with `ragtune index CORPUS... --out {folder}`", fix="rebuild the index",
                         fmt=FORMAT, required=("kind", "passages", "files", "chunking"))
    if not isinstance(record["files"], dict):
        raise RagtuneError(f"{folder / MANIFEST}: 'files' must map file names to sha256; rebuild the index")
    return record


def verify_files(folder: Path, manifest: dict) -> None:
    """Check every file listed in ``manifest["files"]`` against its sha256; name the first bad one."""
    verify_checksums(folder, manifest["files"], what="index file", since="the index was built",
                     fix="rebuild the index (ragtune index ... --overwrite)")