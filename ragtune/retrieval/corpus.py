"""Corpus files → documents → passages: reading, chunking and duplicate removal.

This is the first stage of a retrieval index (:mod:`ragtune.retrieval.index` calls it)::

    files = list_corpus_files(["docs/", "faq.jsonl"])        # folders are searched recursively
    documents = [doc for path in files for doc in read_documents(path)]
    result = make_passages(documents, chunk_tokens=128, chunk_overlap=32)
    result.passages[0].id                                    # "intro::0"

Formats (picked from the extension; a folder contributes every file with one of these extensions):

* ``.txt``, ``.md``: one document per file; id = the file name without extension (``notes``).
* ``.jsonl``: one JSON object per line with ``text`` and optional ``id``, ``title``; without ``id``
  the id is ``"{file stem}:{line}"``.
* ``.csv``, ``.tsv``: a ``text`` column and optional ``id``/``title`` columns (without an ``id``
  column the id is ``"{file stem}:{data row}"``, rows counted from 1); **or** a knowledge graph:
  columns ``subject``, ``relation``, ``object`` (and no ``text``), each triple becoming the passage
  ``"subject relation object."`` (underscores in the relation become spaces: ``capital_of`` →
  ``capital of``). Column names are matched case-insensitively.
* ``.json``: SQuAD format (``{"data": [{"title", "paragraphs": [{"context", ...}]}]}``, read by
  :func:`ragtune.data.squad.iter_squad`); every paragraph ``context`` is a document with id
  ``"{title}#p{index}"`` (index within the article, from 0) and the article title as its title.
* ``.pdf``: one document per file: the text of all pages (pypdf), joined by blank lines.

Every document keeps its ``source`` (the file path) and its text exactly as read, so
``doc_sha1 = sha1(text)`` of a SQuAD paragraph equals the sha1 of the ``context`` string in any
SQuAD file: that is how :mod:`ragtune.retrieval.evaluation` finds the gold paragraph of a question.

**Ids.** Explicit ids (the ``id`` field/column) must be unique: a repeated id with the same text is
a duplicate and is skipped, a repeated id with another text is an error naming both places.
Derived ids (file stems, SQuAD titles, line numbers) that collide, e.g. two ``README.md`` files in
different folders, get a suffix: ``README``, ``README~2``.

**Chunking.** A document is cut into passages of ``chunk_tokens`` tokens, consecutive passages
sharing ``chunk_overlap`` tokens. Tokens are words (letters/digits), single punctuation marks, and
single CJK characters (Chinese and Japanese have no spaces; see :data:`TOKEN_PATTERN`). A passage is
a *slice of the original text* from its first token to its last one, so spacing, line breaks and
punctuation are kept. Passage ids are ``"{doc_id}::{n}"`` (n = chunk number within the document,
from 0) and every passage keeps the ``doc_id``, ``title``, ``source`` and ``doc_sha1`` of its
document.

**Duplicates.** A passage whose text equals an earlier passage's text (exactly) is dropped and
counted; a document all of whose passages are duplicates is not indexed (nor counted as a
document). Documents without any token (empty or whitespace) are skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.data.squad import iter_squad
from ragtune.errors import RagtuneError, check_regular_file, special_file_kind

#: Extension → reader name. A folder given as a corpus path contributes the files with these extensions.
CORPUS_EXTENSIONS: dict[str, str] = {
    ".txt": "text",
    ".md": "text",
    ".jsonl": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "squad",
    ".pdf": "pdf",
}

#: The CJK characters that are tokens on their own (Han ideographs incl. extension A and compatibility
#: ideographs, Japanese kana).
CJK_CHARS = "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\u3040-\u30ff"
#: A chunking token: one CJK character, a run of letters/digits (not CJK), or one punctuation mark.
TOKEN_PATTERN = rf"[{CJK_CHARS}]|(?:(?![{CJK_CHARS}])[^\W_])+|[^\w\s]"
_TOKEN = re.compile(TOKEN_PATTERN)

#: Columns that make a CSV/TSV file a knowledge graph of triples.
KG_COLUMNS = ("subject", "relation", "object")

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Document:
    """One document: ``id``, ``text`` (exactly as read), ``source`` (file path), optional ``title``.

    ``origin`` says where it came from for error messages (``"faq.jsonl line 3"``); ``explicit_id``
    is True when the id was given in the file (an ``id`` field/column) rather than derived.
    """

    id: str
    text: str
    source: str
    title: str | None = None
    origin: str = ""
    explicit_id: bool = False

    @property
    def sha1(self) -> str:
        """sha1 (hex) of the UTF-8 text: the ``doc_sha1`` of its passages."""
        return text_sha1(self.text)


@dataclass(frozen=True)
class Passage:
    """One retrievable unit: a chunk of a document. ``id`` is ``"{doc_id}::{n}"``."""

    id: str
    doc_id: str
    text: str
    source: str
    title: str | None
    doc_sha1: str

    def to_dict(self) -> dict:
        """The record written to ``passages.jsonl``."""
        return {"id": self.id, "doc_id": self.doc_id, "title": self.title, "text": self.text,
                "source": self.source, "doc_sha1": self.doc_sha1}


@dataclass
class PassageResult:
    """What :func:`make_passages` returns: the passages and the counts a summary reports."""

    passages: list[Passage]
    documents: int  # documents with at least one passage in the result
    duplicates_removed: int  # passages dropped because an earlier passage had the same text
    empty_documents: int  # documents without any token (skipped)
    duplicate_documents: int = 0  # documents skipped because their explicit id and text repeat an earlier one
    doc_ids: set[str] = field(default_factory=set)


def text_sha1(text: str) -> str:
    """sha1 (hex) of ``text`` encoded as UTF-8."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def search_text(title: str | None, text: str) -> str:
    """The text BM25 and the dense encoder see for a passage: ``"title\\ntext"`` (underscores of the
    title as spaces, so ``Super_Bowl_50`` matches ``super bowl``), or just ``text`` without a title."""
    if not title:
        return text
    return f"{title.replace('_', ' ')}\n{text}"


# ------------------------------------------------------------------------------------------ files


def list_corpus_files(paths: Sequence[str | Path]) -> list[Path]:
    """The corpus files named by ``paths``, in order: files as given, folders expanded recursively.

    Inside a folder, files with an extension of :data:`CORPUS_EXTENSIONS` are taken (sorted by path;
    hidden files and folders, and ragtune index folders, are skipped). A file given explicitly must
    have one of those extensions. A missing path, or a folder without any corpus file, is an error.
    A file named twice is read once.
    """
    if not paths:
        raise RagtuneError("no corpus paths given: name at least one file or folder to index")
    known = ", ".join(CORPUS_EXTENSIONS)
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise RagtuneError(f"corpus path not found: {path}")
        if path.is_dir():
            # ragtune index folders inside the corpus folder (manifest.json + passages.jsonl) are not corpus
            indexes = {m.parent for m in path.rglob("manifest.json") if (m.parent / "passages.jsonl").is_file()}
            found = []
            for p in sorted(path.rglob("*")):
                if (p.suffix.lower() not in CORPUS_EXTENSIONS
                        or any(part.startswith(".") for part in p.relative_to(path).parts)
                        or indexes.intersection(p.parents)):
                    continue
                kind = special_file_kind(p)  # a named pipe would block the read, a device never end
                if kind is not None:
                    warnings.warn(f"corpus folder {path}: skipping {p}, a {kind}, not a regular file", stacklevel=2)
                elif p.is_file():
                    found.append(p)
            if not found:
                raise RagtuneError(f"corpus folder {path} holds no corpus files (extensions {known})")
            files.extend(found)
        elif path.suffix.lower() in CORPUS_EXTENSIONS:
            check_regular_file(path, "corpus file")
            files.append(path)
        else:
            shown = f"extension '{path.suffix}'" if path.suffix else "no extension"
            raise RagtuneError(f"{path}: cannot index a file with {shown}; supported extensions: {known}")
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def read_documents(path: str | Path) -> Iterator[Document]:
    """The documents of one corpus file (format from the extension, see the module docstring)."""
    path = Path(path)
    kind = CORPUS_EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise RagtuneError(f"{path}: unsupported corpus extension '{path.suffix}'; "
                           f"supported: {', '.join(CORPUS_EXTENSIONS)}")
    if kind == "text":
        yield Document(id=path.stem, text=_read_utf8(path), source=str(path), origin=str(path))
    elif kind == "jsonl":
        yield from _read_jsonl(path)
    elif kind in ("csv", "tsv"):
        yield from _read_delimited(path, "\t" if kind == "tsv" else ",")
    elif kind == "squad":
        for title, index, context, _qas in iter_squad(path):
            yield Document(id=f"{title}#p{index}", text=context, source=str(path), title=title,
                           origin=f"{path} article '{title}' paragraph {index}")
    else:
        yield Document(id=path.stem, text=_read_pdf(path), source=str(path), origin=str(path))


def _read_utf8(path: Path) -> str:
    """The file's text as UTF-8 (BOM stripped; universal newlines like ``open``). Empty is allowed."""
    raw = path.read_bytes()
    offset = 0
    if raw.startswith(_BOM):
        raw, offset = raw[len(_BOM):], len(_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RagtuneError(
            f"{path}: not UTF-8 text: byte offset {exc.start + offset} (line {line}) holds byte "
            f"0x{raw[exc.start:exc.start + 1].hex()}; re-save the file as UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _optional_str(value, path: Path, where: str, key: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RagtuneError(f"{path}: {where}: '{key}' must be a string or a number, not {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    value = str(value).strip()
    return value or None


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file, read line by line (memory stays bounded whatever its size).

    Like :func:`_read_utf8`: a byte-order mark is dropped, ``\\r\\n`` and ``\\r`` end lines too, and a
    byte that is not UTF-8 is an error naming its offset and line.
    """
    number, offset = 0, 0
    with open(path, "rb") as fh:
        for raw in fh:
            start = offset
            offset += len(raw)
            if start == 0 and raw.startswith(_BOM):
                raw, start = raw[len(_BOM):], len(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                pieces = raw[: exc.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n")
                raise RagtuneError(
                    f"{path}: not UTF-8 text: byte offset {start + exc.start} (line {number + pieces + 1}) holds "
                    f"byte 0x{raw[exc.start:exc.start + 1].hex()}; re-save the file as UTF-8"
                ) from None
            text = text[:-1] if text.endswith("\n") else text
            text = text[:-1] if text.endswith("\r") else text
            for piece in text.split("\r"):
                number += 1
                yield number, piece


def _read_jsonl(path: Path) -> Iterator[Document]:
    for number, line in _utf8_lines(path):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RagtuneError(f"{path}: {where} is not valid JSON ({exc.msg}, column {exc.colno})") from None
        except RecursionError:
            raise RagtuneError(f"{path}: {where} is nested too deeply to read (lists or objects inside each other "
                               "beyond Python's recursion limit)") from None
        if not isinstance(obj, dict):
            raise RagtuneError(f"{path}: {where} holds a JSON {type(obj).__name__}; a corpus JSONL file needs "
                               'one object per line, e.g. {"id": "d1", "title": "...", "text": "..."}')
        if "text" not in obj:
            keys = ", ".join(f"'{k}'" for k in obj) or "none"
            raise RagtuneError(f"{path}: {where} has no 'text' field (its keys: {keys})")
        body = obj["text"]
        if body is None:
            body = ""
        if not isinstance(body, str):
            raise RagtuneError(f"{path}: {where}: 'text' must be a string, not {type(body).__name__}")
        doc_id = _optional_str(obj.get("id"), path, where, "id")
        title = _optional_str(obj.get("title"), path, where, "title")
        yield Document(id=doc_id or f"{path.stem}:{number}", text=body, source=str(path), title=title,
                       origin=f"{path} {where}", explicit_id=doc_id is not None)


def _read_delimited(path: Path, sep: str) -> Iterator[Document]:
    from ragtune.data.io import read_table

    df = read_table(path, fmt="tsv" if sep == "\t" else "csv")
    columns = [str(c) for c in df.columns]
    lowered = {c.strip().lower(): c for c in columns}
    has_id, has_title = "id" in lowered, "title" in lowered
    if "text" in lowered:
        text_col = lowered["text"]
        for row, values in enumerate(df.itertuples(index=False), start=1):
            record = dict(zip(columns, values))
            doc_id = (record[lowered["id"]] or "").strip() if has_id else ""
            title = (record[lowered["title"]] or "").strip() if has_title else ""
            yield Document(id=doc_id or f"{path.stem}:{row}", text=record[text_col] or "", source=str(path),
                           title=title or None, origin=f"{path} data row {row}", explicit_id=bool(doc_id))
        return
    if all(c in lowered for c in KG_COLUMNS):
        subject_col, relation_col, object_col = (lowered[c] for c in KG_COLUMNS)
        for row, values in enumerate(df.itertuples(index=False), start=1):
            record = dict(zip(columns, values))
            parts = [(record[subject_col] or "").strip(), (record[relation_col] or "").strip().replace("_", " "),
                     (record[object_col] or "").strip()]
            missing = [name for name, part in zip(KG_COLUMNS, parts) if not part]
            if missing:
                raise RagtuneError(f"{path}: data row {row}: empty {', '.join(missing)} in a knowledge-graph triple")
            doc_id = (record[lowered["id"]] or "").strip() if has_id else ""
            sentence = " ".join(parts)
            if not sentence.endswith((".", "!", "?", "。")):
                sentence += "."
            yield Document(id=doc_id or f"{path.stem}:{row}", text=sentence, source=str(path), title=None,
                           origin=f"{path} data row {row}", explicit_id=bool(doc_id))
        return
    shown = ", ".join(f"'{c}'" for c in columns)
    raise RagtuneError(
        f"{path}: missing column 'text' (a corpus table needs a 'text' column, with optional 'id' and 'title', "
        f"or the columns 'subject', 'relation', 'object' of knowledge-graph triples); the file has columns: {shown}"
    )


def _read_pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise RagtuneError(f"{path}: the PDF is encrypted with a password; decrypt it before indexing")
        pages = [page.extract_text() or "" for page in reader.pages]
    except PdfReadError as exc:
        raise RagtuneError(f"{path}: cannot read as PDF: {exc}") from None
    return "\n\n".join(p.strip() for p in pages if p.strip())


# ---------------------------------------------------------------------------------------- chunking


def chunk_text(text: str, chunk_tokens: int = 128, chunk_overlap: int = 32) -> list[str]:
    """Cut ``text`` into slices of at most ``chunk_tokens`` tokens that overlap by ``chunk_overlap`` tokens.

    Each slice runs from the start of its first token to the end of its last token in ``text``
    (leading/trailing whitespace of the document is not part of any slice). A text with no token
    gives ``[]``; one with at most ``chunk_tokens`` tokens gives one slice.

    >>> chunk_text("a b c d e", chunk_tokens=3, chunk_overlap=1)
    ['a b c', 'c d e']
    >>> chunk_text("北京大学", chunk_tokens=2, chunk_overlap=0)
    ['北京', '大学']
    """
    check_chunking(chunk_tokens, chunk_overlap)
    spans = [m.span() for m in _TOKEN.finditer(text)]
    if not spans:
        return []
    step = chunk_tokens - chunk_overlap
    chunks = []
    for first in range(0, len(spans), step):
        last = min(first + chunk_tokens, len(spans)) - 1
        chunks.append(text[spans[first][0]:spans[last][1]])
        if last == len(spans) - 1:
            break
    return chunks


def check_chunking(chunk_tokens: int, chunk_overlap: int) -> None:
    """Raise a RagtuneError unless ``chunk_tokens >= 1`` and ``0 <= chunk_overlap < chunk_tokens``."""
    if not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise RagtuneError(f"chunk_tokens must be a positive integer (got {chunk_tokens!r})")
    if not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_tokens:
        raise RagtuneError(f"chunk_overlap must be at least 0 and smaller than chunk_tokens={chunk_tokens} "
                           f"(got {chunk_overlap!r})")


class PassageMaker:
    """Chunk documents into passages one document at a time (see the module docstring).

    ::

        maker = PassageMaker(chunk_tokens=128, chunk_overlap=32)
        for doc in read_documents("faq.jsonl"):
            for passage in maker.passages(doc):
                ...                                     # e.g. write it out: nothing is kept here
        maker.documents, maker.duplicates_removed, maker.empty_documents, maker.duplicate_documents

    The maker remembers what it has seen to drop duplicates and keep ids unique: ``seen_texts``
    (sha1 digests of passage texts, ``in`` and ``add``), ``taken_ids`` (doc id → where it came
    from) and ``explicit_sha`` (explicit doc id → sha1 of its text; ``in``, ``[]`` and ``get``).
    They default to an in-memory set and dicts; :mod:`ragtune.retrieval.diskset` gives disk-backed
    ones so that indexing millions of documents keeps memory bounded.
    """

    def __init__(self, chunk_tokens: int = 128, chunk_overlap: int = 32, seen_texts=None, taken_ids=None,
                 explicit_sha=None):
        check_chunking(chunk_tokens, chunk_overlap)
        self.chunk_tokens, self.chunk_overlap = chunk_tokens, chunk_overlap
        self.seen = set() if seen_texts is None else seen_texts
        self.taken = {} if taken_ids is None else taken_ids
        self.explicit_sha = {} if explicit_sha is None else explicit_sha
        self.documents = 0  # documents with at least one passage
        self.duplicates_removed = 0  # passages dropped because an earlier passage had the same text
        self.empty_documents = 0  # documents without any token (skipped)
        self.duplicate_documents = 0  # documents whose explicit id and text repeat an earlier one (skipped)

    def passages(self, doc: Document) -> list[Passage]:
        """The new passages of ``doc`` (none for an empty or duplicate document); updates the counts."""
        doc_id = doc.id
        if doc.explicit_id and doc_id in self.taken:
            if self.explicit_sha.get(doc_id) == doc.sha1:
                self.duplicate_documents += 1
                return []
            raise RagtuneError(f"document id '{doc_id}' is used twice: {self.taken[doc_id]} and {doc.origin}; "
                               "ids must be unique")
        if doc_id in self.taken:
            n = 2
            while f"{doc.id}~{n}" in self.taken:
                n += 1
            doc_id = f"{doc.id}~{n}"
        chunks = chunk_text(doc.text, self.chunk_tokens, self.chunk_overlap)
        if not chunks:
            self.empty_documents += 1
            return []
        doc_sha1 = doc.sha1
        out = []
        for n, chunk in enumerate(chunks):
            digest = hashlib.sha1(chunk.encode("utf-8")).digest()
            if digest in self.seen:
                self.duplicates_removed += 1
                continue
            self.seen.add(digest)
            out.append(Passage(id=f"{doc_id}::{n}", doc_id=doc_id, text=chunk, source=doc.source,
                               title=doc.title, doc_sha1=doc_sha1))
        if out:  # a document whose passages were all duplicates is not in the index
            self.taken[doc_id] = doc.origin or doc.source
            if doc.explicit_id:
                self.explicit_sha[doc_id] = doc_sha1
            self.documents += 1
        return out


def make_passages(
    documents: Iterable[Document],
    chunk_tokens: int = 128,
    chunk_overlap: int = 32,
    seen_texts: set[bytes] | None = None,
    taken_ids: dict[str, str] | None = None,
) -> PassageResult:
    """Chunk ``documents`` into passages, dropping exact-duplicate passages and empty documents.

    ``seen_texts`` (sha1 digests of passage texts) and ``taken_ids`` (doc id → where it came from)
    describe passages/documents already indexed (:func:`~ragtune.retrieval.index.add_to_index`);
    both are updated in place when given. See the module docstring for ids and duplicates, and
    :class:`PassageMaker` to chunk a stream of documents without holding the passages.
    """
    maker = PassageMaker(chunk_tokens, chunk_overlap, seen_texts=seen_texts, taken_ids=taken_ids)
    passages: list[Passage] = []
    for doc in documents:
        passages.extend(maker.passages(doc))
    return PassageResult(passages=passages, documents=maker.documents, duplicates_removed=maker.duplicates_removed,
                         empty_documents=maker.empty_documents, duplicate_documents=maker.duplicate_documents,
                         doc_ids={p.doc_id for p in passages})


def read_passages(path: Path) -> list[dict]:
    """The records of a ``passages.jsonl`` file (id, doc_id, title, text, source, doc_sha1)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RagtuneError(f"{path}: line {number} is not valid JSON ({exc.msg}); rebuild the index") from None
    return records


class PassageTable(Sequence):
    """The records of a large ``passages.jsonl``, read on demand: ``len(t)``, ``t[row]``, ``iter(t)``.

    One pass over the file finds where each line starts and ends (16 bytes per passage); ``t[row]``
    then reads that line with ``os.pread`` (safe from several threads at once) and parses it.
    Iterating streams the file. :func:`open_passages` picks this over a list for large files.
    """

    def __init__(self, path: Path):
        from array import array

        self.path = Path(path)
        starts, ends = array("q"), array("q")
        position = 0
        with open(self.path, "rb") as fh:
            for line in fh:
                if line.strip():
                    starts.append(position)
                    ends.append(position + len(line))
                position += len(line)
        self._starts, self._ends = starts, ends
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(f"passage row {row} out of range (0..{len(self) - 1})")
        start = self._starts[row]
        return json.loads(os.pread(self._fd, self._ends[row] - start, start))

    def __iter__(self) -> Iterator[dict]:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None


#: ``passages.jsonl`` files up to this size are loaded into memory (a list); larger ones are read on demand.
PASSAGES_IN_MEMORY_BYTES = 256 * 2**20


def open_passages(path: Path, in_memory_bytes: int | None = None) -> Sequence[dict]:
    """The records of ``passages.jsonl``: a list (:func:`read_passages`) up to ``in_memory_bytes``
    (default :data:`PASSAGES_IN_MEMORY_BYTES`), a :class:`PassageTable` above it."""
    limit = PASSAGES_IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
    return read_passages(path) if Path(path).stat().st_size <= limit else PassageTable(path)


__all__ = [
    "CORPUS_EXTENSIONS", "TOKEN_PATTERN", "Document", "Passage", "PassageResult", "list_corpus_files",
    "read_documents", "chunk_text", "check_chunking", "make_passages", "PassageMaker",
    "search_text",
    "text_sha1", "read_passages", "PassageTable", "open_passages",
]
