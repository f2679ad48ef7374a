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


def checksum_folder(folder: Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``folder`` except the manifest."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (sorted, indented JSON)."""
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_manifest(folder: Path) -> dict:
    """The manifest of the index folder ``folder``; a missing or unreadable one is a RagtuneError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RagtuneError(f"index folder not found: {folder}")
    path = folder / MANIFEST
    if not path.is_file():
        raise RagtuneError(f"{folder} is not a ragtune index (no {MANIFEST}); build one with "
                           f"`ragtune index CORPUS... --out {folder}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RagtuneError(f"{path}: not valid JSON ({exc}); rebuild the index") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise RagtuneError(f"{path}: unknown index format {found!r} (this ragtune reads format {FORMAT}); "
                           "rebuild the index")
    for key in ("kind", "passages", "files", "chunking"):
        if key not in manifest:
            raise RagtuneError(f"{path}: the manifest has no '{key}'; rebuild the index")
    return manifest


def verify_files(folder: Path, manifest: dict) -> None:
    """Check every file listed in ``manifest["files"]`` against its sha256; name the first bad one."""
    folder = Path(folder)
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise RagtuneError(f"index file {path} is missing; the index is incomplete, rebuild it "
                               "(ragtune index ... --overwrite)")
        actual = sha256_file(path)
        if actual != expected:
            raise RagtuneError(f"index file {path} was changed or corrupted since the index was built "
                               f"(sha256 {actual[:12]}… instead of {expected[:12]}…); rebuild the index "
                               "(ragtune index ... --overwrite)")
