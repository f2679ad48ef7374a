"""Reading data files: CSV, TSV, JSONL and Parquet into a :class:`pandas.DataFrame`.

Every problem a user can fix becomes a :class:`~ragtune.errors.RagtuneError` whose message names
the file (and the line, row or byte offset where that helps)::

    df = read_table("data/train.csv")            # format from the extension
    require_columns(df, "data/train.csv", ["text", "label"])

Rules:

* Text files must be UTF-8; a UTF-8 byte-order mark is accepted and stripped. Anything else is an
  error naming the byte offset (and line) of the first byte that is not UTF-8.
* CSV/TSV cells are read as strings, and ``NA``, ``None``, ``null`` ... stay texts (pandas would
  otherwise turn them into missing values). Empty cells become ``""``. TSV follows the same
  quoting rules as CSV (as pandas, Excel and Python's ``csv`` write it): a field that starts with
  a double quote is a quoted field.
* A CSV/TSV header that names a column twice is an error naming the column; one of more than
  10,000 columns (:data:`MAX_COLUMNS`), or a first line over 1 MiB characters, is refused before
  pandas parses the file.
* JSONL holds one JSON object per line; blank lines are skipped; anything else names the line.
* An empty file, or a file with a header but no data rows, is an error.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ragtune.errors import RagtuneError, check_regular_file

#: File extension → format name, for ``fmt="auto"``.
EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: Format names :func:`read_table` accepts.
FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet")

_BOM = b"\xef\xbb\xbf"


def detect_format(path: str | Path) -> str:
    """The format of ``path`` from its extension; an unknown extension is an error listing the known ones."""
    suffix = Path(path).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    known = ", ".join(EXTENSIONS)
    shown = f"extension '{suffix}'" if suffix else "no extension"
    raise RagtuneError(
        f"{path}: cannot tell the file format from {shown}; supported extensions: {known} "
        "(or set data.format to one of csv, tsv, jsonl, parquet)"
    )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise RagtuneError(f"data file not found: {path}")
    if path.is_dir():
        raise RagtuneError(f"data path is a directory, not a file: {path}")
    check_regular_file(path, "data file")  # before any open(): a FIFO would block, /dev/zero never ends


def _read_text(path: Path) -> str:
    """The file's text: UTF-8 (BOM stripped). Empty / not-UTF-8 files are errors."""
    raw = path.read_bytes()
    offset = 0
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
        offset = len(_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start + offset
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start : exc.start + 1].hex()
        raise RagtuneError(
            f"{path}: not UTF-8 text: byte offset {bad} (line {line}) holds byte 0x{byte}, which is not valid "
            "UTF-8; re-save the file as UTF-8 (it may be Latin-1, Windows-1252 or GBK)"
        ) from None
    if not text.strip():
        raise RagtuneError(f"{path}: the file is empty")
    return text


def _unique_names(names: list[str]) -> list[str]:
    """Make header names unique the way pandas does (``a``, ``a.1``, ``a.2``)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}.{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


def _check_unique_header(path: Path, header: list[str]) -> None:
    """A header naming a column twice is an error (reading would silently use one of them)."""
    first: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if not name:  # unnamed columns (e.g. a written index) are kept apart as before
            continue
        if name in first:
            raise RagtuneError(
                f"{path}: the header names column '{name}' twice (columns {first[name]} and {number}); "
                "rename or remove one of them"
            )
        first[name] = number


#: Most columns a CSV/TSV header may name, and most characters its first line may hold: checked before
#: pandas parses the file (a header of a million columns makes its C parser abort or run for minutes).
MAX_COLUMNS = 10_000
MAX_HEADER_CHARS = 2**20


def _check_header_size(path: Path, text: str, sep: str, kind: str) -> None:
    """Refuse a first line longer than :data:`MAX_HEADER_CHARS` or naming more than :data:`MAX_COLUMNS` columns."""
    end = text.find("\n", 0, MAX_HEADER_CHARS + 1)
    if end == -1 and len(text) > MAX_HEADER_CHARS:
        raise RagtuneError(f"{path}: the first line (the {kind} header) is longer than {MAX_HEADER_CHARS:,} characters; "
                           f"a header names the columns (at most {MAX_COLUMNS:,})")
    line = text if end == -1 else text[:end]
    if line.count(sep) + 1 <= MAX_COLUMNS:
        return
    columns = len(next(csv.reader([line], delimiter=sep), []))  # quoted separators do not count
    if columns > MAX_COLUMNS:
        raise RagtuneError(f"{path}: the {kind} header names {columns:,} columns; at most {MAX_COLUMNS:,} are read "
                           "(is the separator right, or is this file one long row?)")


def _read_delimited(path: Path, sep: str, max_rows: int | None, keep_blank_lines: bool = False) -> pd.DataFrame:
    text = _read_text(path)
    kind = "TSV" if sep == "\t" else "CSV"
    _check_header_size(path, text, sep, kind)
    try:
        # header=None: the first line sets the number of fields, so a data row with too many
        # fields is an error (with a header, pandas would silently use it as an index instead).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = pd.read_csv(
                io.StringIO(text),
                sep=sep,
                header=None,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                quoting=csv.QUOTE_MINIMAL,
                skip_blank_lines=not keep_blank_lines,
                nrows=None if max_rows is None else max_rows + 1,
            )
    except pd.errors.EmptyDataError:
        raise RagtuneError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        msg = str(exc).replace("Error tokenizing data. C error: ", "")
        raise RagtuneError(f"{path}: cannot parse as {kind}: {msg}") from None
    if len(table) == 0:
        raise RagtuneError(f"{path}: the file is empty")
    if keep_blank_lines:  # blank lines at the very end are how files end, not rows; the first line is the header
        while len(table) > 1 and _blank_line(table.iloc[-1]):
            table = table.iloc[:-1]
        if _blank_line(table.iloc[0]):
            raise RagtuneError(f"{path}: the first line is blank; it should be the header (the column names)")
    header = [str(h).strip() for h in table.iloc[0].tolist()]
    _check_unique_header(path, header)
    df = table.iloc[1:].reset_index(drop=True)
    df.columns = _unique_names(header)
    if len(df) == 0:
        raise RagtuneError(f"{path}: the file has a header ({', '.join(header)}) but no data rows")
    return df


def _blank_line(row: pd.Series) -> bool:
    return all(cell == "" for cell in row.tolist())


def _read_jsonl(path: Path, max_rows: int | None) -> pd.DataFrame:
    text = _read_text(path)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RagtuneError(f"{path}: line {number} is not valid JSON ({exc.msg}, column {exc.colno})") from None
        except RecursionError:
            raise RagtuneError(
                f"{path}: line {number} is nested too deeply to read (JSON arrays or objects inside each other beyond "
                'Python\'s recursion limit); each line should be a flat object, e.g. {"text": "...", "label": "..."}'
            ) from None
        if "\\ud" in line.lower():  # a \uD800-\uDFFF escape: legal JSON, but alone it is no character
            try:
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise RagtuneError(f"{path}: line {number} holds a lone UTF-16 surrogate escape (e.g. \"\\ud800\"), "
                                   "which is not a character; fix or remove that text") from None
        if not isinstance(obj, dict):
            raise RagtuneError(
                f"{path}: line {number} holds a JSON {type(obj).__name__}, but JSONL data needs one JSON object "
                'per line, e.g. {"text": "...", "label": "..."}'
            )
        records.append(obj)
        if max_rows is not None and len(records) >= max_rows:
            break
    if not records:
        raise RagtuneError(f"{path}: the file is empty (no JSON objects)")
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path, max_rows: int | None) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise RagtuneError(f"{path}: the file is empty")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise RagtuneError(f"{path}: cannot read as Parquet: {exc}") from None
    if len(df.columns) == 0:
        raise RagtuneError(f"{path}: the Parquet file has no columns")
    if len(df) == 0:
        raise RagtuneError(f"{path}: the file has columns ({', '.join(map(str, df.columns))}) but no data rows")
    df.columns = [str(c) for c in df.columns]
    if max_rows is not None:
        df = df.iloc[:max_rows]
    return df.reset_index(drop=True)


def read_table(path: str | Path, fmt: str = "auto", max_rows: int | None = None,
               keep_blank_lines: bool = False) -> pd.DataFrame:
    """Read a CSV, TSV, JSONL or Parquet file into a DataFrame (index 0..n-1, in file order).

    ``fmt`` is one of ``auto``, ``csv``, ``tsv``, ``jsonl``, ``parquet``; ``auto`` picks it from the
    extension. ``max_rows`` reads at most that many data rows. CSV/TSV columns are strings; JSONL
    and Parquet keep their JSON / Arrow types (callers convert the columns they use).

    ``keep_blank_lines`` (``ragtune predict --input``: rows in = rows out): a blank or whitespace-only
    line between CSV/TSV data rows is a row of empty cells (a whitespace-only line of a one-column file
    keeps its text) instead of being skipped; blank lines at the end of the file are still not rows.
    JSONL blank lines are never rows (a row is a JSON object).
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise RagtuneError(f"{path}: unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
    _check_file(path)
    kind = detect_format(path) if fmt == "auto" else fmt
    if max_rows is not None and max_rows <= 0:
        raise RagtuneError(f"max_rows must be positive (got {max_rows})")
    if kind == "csv":
        return _read_delimited(path, ",", max_rows, keep_blank_lines)
    if kind == "tsv":
        return _read_delimited(path, "\t", max_rows, keep_blank_lines)
    if kind == "jsonl":
        return _read_jsonl(path, max_rows)
    return _read_parquet(path, max_rows)


def did_you_mean(column: str, existing: list[str]) -> str:
    """`` (did you mean 'Text'?)`` naming the column of ``existing`` that ``column`` most likely meant
    (the same name up to case and surrounding spaces, else a close spelling), or '' when none is close."""
    lowered = {c.lower().strip(): c for c in existing}
    key = column.lower().strip()
    close = [lowered[key]] if key in lowered else difflib.get_close_matches(column, existing, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def require_columns(df: pd.DataFrame, path: str | Path, columns: list[str]) -> None:
    """Raise a :class:`RagtuneError` naming every column of ``columns`` that ``df`` lacks.

    The message lists the columns the file has and suggests a close match (e.g. ``Text`` for ``text``).
    """
    existing = [str(c) for c in df.columns]
    missing = [c for c in columns if c not in existing]
    if not missing:
        return
    parts = [f"'{col}'{did_you_mean(col, existing)}" for col in missing]
    noun = "column" if len(missing) == 1 else "columns"
    shown = ", ".join(f"'{c}'" for c in existing)
    raise RagtuneError(
        f"{path}: missing {noun} {', '.join(parts)}; the file has columns: {shown} "
        "(set data.text_column / data.label_column to use other names)"
    )


def _cell_kind(value: object) -> str | None:
    """'a list' / 'a dict' / 'bytes' for a cell that is not a scalar (JSONL arrays and objects,
    Parquet list, struct and binary columns), else None."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, dict):
        return "a dict"
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return "a list"
    return None


def require_scalar_cells(df: pd.DataFrame, path: str | Path, columns: list[str]) -> None:
    """Raise a :class:`RagtuneError` for the first list, dict or bytes cell in ``columns`` of ``df``,
    naming the file, the row (1-based data row) and the column: such a cell would otherwise become
    its Python repr and be used as a text or a label."""
    for column in columns:
        if column not in df.columns or df[column].dtype != object:
            continue
        for row, value in enumerate(df[column].tolist(), start=1):
            kind = _cell_kind(value)
            if kind is None:
                continue
            shown = repr(value.tolist() if isinstance(value, np.ndarray) else value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise RagtuneError(
                f"{path}: row {row}: column '{column}' holds {kind} ({shown}); text and label cells must be a "
                "string or a number"
            )
