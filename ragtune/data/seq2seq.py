"""Reading data for translation (source → target pairs) and text generation (prompt → response).

Translation data comes in one of two shapes::

    read_pairs("data/train.tsv", source_column="en", target_column="de")      # one table, two columns
    read_pairs({"source": "data/train.en", "target": "data/train.de"})        # two line-aligned text files

Both return a :class:`pandas.DataFrame` with the columns ``source`` and ``target`` (strings, index
0..n-1, file order); ``list(zip(df.source, df.target))`` gives the pairs.

Generation data is a table with a prompt and a response column, or with one text column whose
texts the model learns to write from nothing (the prompt is then ``""``); a ``.txt`` file is one
text per line::

    read_generation("data/qa.jsonl", prompt_column="question", response_column="answer")
    read_generation("data/poems.csv", text_column="poem")
    read_generation("data/poems.txt")
    read_generation("squad/dev.json")          # SQuAD format: each question -> its first answer

Both return a DataFrame with the columns ``prompt`` and ``response``.

Rules (every problem is a :class:`~ragtune.errors.RagtuneError` naming the file):

* Tables are read by :func:`ragtune.data.io.read_table` (CSV, TSV, JSONL, Parquet: UTF-8, empty files
  are errors, ...). Rows are numbered from 1, header not counted.
* Text files must be UTF-8 (a byte-order mark is dropped); lines end with ``\\n`` or ``\\r\\n``, and
  only those split lines (a form feed or U+2028 inside a sentence does not shift the alignment).
  A final newline does not make an extra line. Two files of a pair must have the same number of
  lines; the error names both files and both counts.
* Leading and trailing whitespace of each text is removed. A translation pair needs text on both
  sides and a generation example needs a response: an empty one is an error naming the file and the
  row (table) or line (text file). Prompts may be empty.
* A missing cell (JSONL ``null``, Parquet null) counts as empty; numbers become their text.
"""

from __future__ import annotations

import json

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ragtune.data.io import EXTENSIONS, _check_file, _read_text, did_you_mean, read_table
from ragtune.data.squad import iter_squad
from ragtune.errors import RagtuneError

__all__ = ["read_generation", "read_lines", "read_pairs"]

_TEXT_EXTENSIONS = (".txt", ".text")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, each stripped of surrounding whitespace (blank lines kept as ``""``).

    Only ``\\n`` (with an optional ``\\r`` before it) ends a line, and a final newline does not add an
    empty line. An empty file, or one that is not UTF-8, is an error naming it.
    """
    path = Path(path)
    _check_file(path)
    text = _read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def _column_error(path, role: str, column: str, existing: list[str], hint: str) -> RagtuneError:
    shown = ", ".join(f"'{c}'" for c in existing)
    return RagtuneError(
        f"{path}: no {role} column '{column}'{did_you_mean(column, existing)}; the file has columns: {shown} ({hint})"
    )


def _read_columns(
    path: Path, columns: dict[str, str], fmt: str, max_rows: int | None, hint: str
) -> pd.DataFrame:
    """Read a table and return the given columns renamed ``{role: column}`` -> role, as stripped strings."""
    if fmt == "auto" and path.suffix.lower() not in EXTENSIONS:
        _check_file(path)
        raise RagtuneError(
            f"{path}: cannot tell the table format from extension '{path.suffix}'; supported extensions: "
            f"{', '.join(EXTENSIONS)} ({hint})"
        )
    df = read_table(path, fmt=fmt, max_rows=max_rows)
    existing = [str(c) for c in df.columns]
    for role, column in columns.items():
        if column not in existing:
            raise _column_error(path, role, column, existing, hint)
    return pd.DataFrame({role: [_cell(v) for v in df[column].tolist()] for role, column in columns.items()})


def _first_empty(values: list[str]) -> int | None:
    return next((i for i, value in enumerate(values) if not value), None)


def read_pairs(
    spec: str | Path | Mapping[str, str | Path],
    source_column: str = "source",
    target_column: str = "target",
    fmt: str = "auto",
    max_rows: int | None = None,
) -> pd.DataFrame:
    """Read translation pairs into a DataFrame with columns ``source`` and ``target``.

    ``spec`` is either the path of one table (CSV, TSV, JSONL, Parquet; ``fmt`` as in
    :func:`~ragtune.data.io.read_table`) whose ``source_column`` and ``target_column`` hold the
    texts, or a mapping ``{"source": path, "target": path}`` of two line-aligned UTF-8 text files
    (line *i* of the target file translates line *i* of the source file; the column arguments and
    ``fmt`` are then unused). ``max_rows`` keeps the first that many pairs (the line counts of two
    text files are still checked on the whole files).
    """
    if max_rows is not None and max_rows <= 0:
        raise RagtuneError(f"max_rows must be positive (got {max_rows})")
    if isinstance(spec, Mapping):
        unknown = sorted(set(map(str, spec)) - {"source", "target"})
        missing = [k for k in ("source", "target") if k not in spec]
        if unknown or missing:
            raise RagtuneError(
                "two-file translation data needs exactly the keys 'source' and 'target' "
                f"(e.g. {{source: train.en, target: train.de}}); got keys: {', '.join(map(str, spec)) or 'none'}"
            )
        src_path, tgt_path = Path(spec["source"]), Path(spec["target"])
        src, tgt = read_lines(src_path), read_lines(tgt_path)
        if len(src) != len(tgt):
            raise RagtuneError(
                f"the source and target files are not line-aligned: {src_path} has {len(src)} lines but "
                f"{tgt_path} has {len(tgt)} lines (line i of one must translate line i of the other)"
            )
        for side, lines, path in (("source", src, src_path), ("target", tgt, tgt_path)):
            bad = _first_empty(lines)
            if bad is not None:
                raise RagtuneError(
                    f"{path}: line {bad + 1} is empty; every {side} line needs text (the pair at that line "
                    "cannot be learned; remove the line from both files)"
                )
        frame = pd.DataFrame({"source": src, "target": tgt})
        return frame if max_rows is None else frame.iloc[:max_rows].reset_index(drop=True)

    path = Path(spec)
    if source_column == target_column:
        raise RagtuneError(f"source_column and target_column are both '{source_column}'; they must differ")
    hint = (
        "choose source_column / target_column from these; for two line-aligned text files give "
        "{source: a.en, target: a.de}"
    )
    frame = _read_columns(path, {"source": source_column, "target": target_column}, fmt, max_rows, hint)
    for side, column in (("source", source_column), ("target", target_column)):
        bad = _first_empty(frame[side].tolist())
        if bad is not None:
            raise RagtuneError(
                f"{path}: row {bad + 1} (1-based, header not counted) has an empty {side} text in column "
                f"'{column}'; every pair needs text on both sides"
            )
    return frame


def read_generation(
    path: str | Path,
    prompt_column: str = "prompt",
    response_column: str = "response",
    text_column: str | None = None,
    fmt: str = "auto",
    max_rows: int | None = None,
) -> pd.DataFrame:
    """Read generation examples into a DataFrame with columns ``prompt`` and ``response``.

    With ``text_column`` set, each text of that column is a response to an empty prompt (the model
    learns to continue / write such texts); otherwise ``prompt_column`` and ``response_column`` are
    read. A ``.txt`` / ``.text`` file (with ``fmt="auto"``) is one text per line, blank lines
    skipped, read like a ``text_column``. Prompts may be empty; responses may not.
    """
    path = Path(path)
    if max_rows is not None and max_rows <= 0:
        raise RagtuneError(f"max_rows must be positive (got {max_rows})")
    if fmt == "auto" and path.suffix.lower() == ".json":  # SQuAD format: question -> first answer
        prompts, responses = [], []
        for title, p_index, _, qas in iter_squad(path):
            for q in qas:
                answers = q.get("answers") or [] if isinstance(q, dict) else []
                text = _cell(answers[0].get("text")) if answers and isinstance(answers[0], dict) else ""
                if isinstance(q, dict) and _cell(q.get("question")) and text:
                    prompts.append(_cell(q["question"]))
                    responses.append(text)
        if not prompts:
            raise RagtuneError(f"{path}: no answerable question (a 'question' with a non-empty first answer) in the SQuAD file")
        if max_rows is not None:
            prompts, responses = prompts[:max_rows], responses[:max_rows]
        return pd.DataFrame({"prompt": prompts, "response": responses})
    if fmt == "auto" and path.suffix.lower() in _TEXT_EXTENSIONS:
        texts = [line for line in read_lines(path) if line]
        if not texts:
            raise RagtuneError(f"{path}: the file is empty (only blank lines)")
        if max_rows is not None:
            texts = texts[:max_rows]
        return pd.DataFrame({"prompt": [""] * len(texts), "response": texts})

    if text_column is not None:
        hint = "choose text_column from these"
        frame = _read_columns(path, {"text": text_column}, fmt, max_rows, hint)
        bad = _first_empty(frame["text"].tolist())
        if bad is not None:
            raise RagtuneError(
                f"{path}: row {bad + 1} (1-based, header not counted) has an empty text in column '{text_column}'"
            )
        return pd.DataFrame({"prompt": [""] * len(frame), "response": frame["text"].tolist()})

    if prompt_column == response_column:
        raise RagtuneError(f"prompt_column and response_column are both '{prompt_column}'; they must differ")
    hint = "choose prompt_column / response_column from these, or set text_column to continue plain texts"
    frame = _read_columns(path, {"prompt": prompt_column, "response": response_column}, fmt, max_rows, hint)
    bad = _first_empty(frame["response"].tolist())
    if bad is not None:
        raise RagtuneError(
            f"{path}: row {bad + 1} (1-based, header not counted) has an empty response in column "
            f"'{response_column}'; every example needs a response"
        )
    return frame


@dataclass
class PairData:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    info: dict


def split_examples(cfg, read: Callable, describe: Callable, columns: tuple[str, str]) -> PairData:
    """Read ``data.train`` / ``validation`` / ``test`` with ``read(spec)`` into DataFrames of the two
    ``columns``; a missing validation or test split is carved from train by a seeded random
    permutation (``train.seed``, ``data.validation_fraction`` / ``data.test_fraction``)."""
    d = cfg.data
    train = read(d.train)
    frames = {"validation": read(d.validation) if d.validation else None,
              "test": read(d.test) if d.test else None}
    sources = {"train": describe(d.train), "validation": describe(d.validation) if d.validation else None,
               "test": describe(d.test) if d.test else None}
    carve = {name: frac for name, frac in (("validation", d.validation_fraction), ("test", d.test_fraction))
             if frames[name] is None}
    if carve:
        order = np.random.default_rng(cfg.train.seed).permutation(len(train))
        start = 0
        for name, frac in carve.items():
            n = max(1, round(frac * len(train)))
            frames[name] = train.iloc[np.sort(order[start:start + n])].reset_index(drop=True)
            sources[name] = f"{frac:.0%} of train (seeded split)"
            start += n
        train = train.iloc[np.sort(order[start:])].reset_index(drop=True)
        if len(train) < 1:
            raise RagtuneError(f"data.train: {describe(d.train)} has too few examples to carve validation/test splits from")
    splits = {"train": train, **frames}
    a, b = columns

    def chars(value) -> int:  # a text, or a list of messages (their contents)
        return len(value) if isinstance(value, str) else sum(len(m["content"]) for m in value)

    info = {"splits": {name: {"pairs": len(df), "source": sources[name],
                              f"{a}_chars_mean": round(float(df[a].map(chars).mean()), 1) if len(df) else 0,
                              f"{b}_chars_mean": round(float(df[b].map(chars).mean()), 1) if len(df) else 0}
                       for name, df in splits.items()}}
    return PairData(splits["train"], splits["validation"], splits["test"], info)


ROLES = ("system", "user", "assistant")


def _messages(value, path: Path, row: int, column: str) -> list[dict]:
    """One cell of a messages column as a list of ``{"role", "content"}`` (a list, or its JSON text in a
    CSV cell), checked: known roles, text contents, the last one the assistant's (the response)."""
    where = f"{path}: row {row + 1} (1-based, header not counted), column '{column}'"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RagtuneError(f"{where}: not a JSON list of messages ({exc.msg} at character {exc.pos})") from None
    if hasattr(value, "tolist"):  # Parquet gives numpy arrays of structs
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise RagtuneError(f"{where}: needs a non-empty list of {{role, content}} messages (got {type(value).__name__})")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RagtuneError(f"{where}: message {i} needs role ({', '.join(ROLES)}) and a text content (got {str(m)[:80]!r})")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant" or not out[-1]["content"].strip():
        raise RagtuneError(f"{where}: the last message must be the assistant's non-empty reply (the response the model "
                           f"learns); it is the {out[-1]['role']}'s")
    if not any(m["role"] == "user" for m in out[:-1]):
        raise RagtuneError(f"{where}: no user message before the assistant's reply")
    return out


def read_messages(path: str | Path, messages_column: str = "messages", fmt: str = "auto",
                  max_rows: int | None = None) -> pd.DataFrame:
    """Read conversations into a DataFrame with columns ``prompt`` (the messages before the last, a list of
    ``{"role", "content"}``) and ``response`` (the last, the assistant's reply the model learns).

    The column holds a list of messages per row (JSONL, Parquet), or its JSON text (CSV/TSV). Roles are
    ``system``, ``user`` and ``assistant``; the last message must be the assistant's. Earlier assistant
    turns are context (given, not learned)."""
    path = Path(path)
    if fmt == "auto" and path.suffix.lower() not in EXTENSIONS:
        _check_file(path)
        raise RagtuneError(f"{path}: a messages column needs a table file ({', '.join(EXTENSIONS)}), got '{path.suffix}'")
    df = read_table(path, fmt=fmt, max_rows=max_rows)
    existing = [str(c) for c in df.columns]
    if messages_column not in existing:
        raise _column_error(path, "messages", messages_column, existing, "choose messages_column from these")
    conversations = [_messages(v, path, i, messages_column) for i, v in enumerate(df[messages_column].tolist())]
    return pd.DataFrame({"prompt": [c[:-1] for c in conversations], "response": [c[-1]["content"] for c in conversations]})


def template_fields(template: str) -> list[str]:
    """The named fields of a ``str.format`` template, in order, without repeats (``{question}`` → ``question``)."""
    import string

    fields = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if not name.isidentifier():
                raise RagtuneError(f"data.prompt_template: fields are column names in braces, e.g. {{question}} "
                                   f"(got {{{name}}}; write {{{{ and }}}} for literal braces)")
            if name not in fields:
                fields.append(name)
    return fields


def read_templated(path: str | Path, template: str, response_column: str = "response", fmt: str = "auto",
                   max_rows: int | None = None) -> pd.DataFrame:
    """Read prompt → response examples whose prompt is ``template`` filled with each row's columns
    (``"Context: {context}\nQuestion: {question}"``); a DataFrame with ``prompt`` and ``response``.
    A SQuAD-format ``.json`` file gives the fields ``context``, ``question`` and ``title`` of each
    answerable question, its first answer the response (``response_column`` is not used)."""
    path = Path(path)
    fields = template_fields(template)
    if fmt == "auto" and path.suffix.lower() == ".json":
        rows = []
        for title, _, context, qas in iter_squad(path):
            for q in qas:
                answers = (q.get("answers") or []) if isinstance(q, dict) else []
                text = _cell(answers[0].get("text")) if answers and isinstance(answers[0], dict) else ""
                if text and _cell(q.get("question")):
                    rows.append({"context": context, "question": _cell(q["question"]), "title": title or "", "_": text})
        unknown = [f for f in fields if f not in ("context", "question", "title")]
        if unknown:
            raise RagtuneError(f"data.prompt_template: {unknown} are not fields of a SQuAD file; choose from "
                               "['context', 'question', 'title']")
        if not rows:
            raise RagtuneError(f"{path}: no answerable question in the SQuAD file")
        rows = rows[:max_rows] if max_rows else rows
        return pd.DataFrame({"prompt": [template.format_map({f: r[f] for f in fields}) for r in rows],
                             "response": [r["_"] for r in rows]})
    hint = "data.prompt_template names columns of the file"
    columns = {f: f for f in fields}
    frame = _read_columns(path, {**columns, "__response": response_column}, fmt, max_rows, hint)
    bad = _first_empty(frame["__response"].tolist())
    if bad is not None:
        raise RagtuneError(f"{path}: row {bad + 1} (1-based, header not counted) has an empty response in column "
                           f"'{response_column}'; every example needs a response")
    prompts = [template.format_map({f: row[f] for f in fields}) for row in frame[fields].to_dict("records")] if fields \
        else [template] * len(frame)
    return pd.DataFrame({"prompt": prompts, "response": frame["__response"].tolist()})
