"""Data given as Python objects instead of file paths (the Python API, ``ragtune.run``).

A ``data.train`` / ``data.validation`` / ``data.test`` value may be a pandas ``DataFrame``, a Hugging
Face ``datasets.Dataset`` or a list of dicts (one a row). :func:`materialise` writes it once to a file
named by the SHA-256 of its content under the cache (``$RAGTUNE_CACHE_DIR/data`` or
``~/.cache/ragtune/data``) and returns that path, which the config then names. The run reads it as
it reads any file: the same checks and messages (naming the row), its path and hash in the run's
``inputs.json``, and a re-run of the run's ``config.yaml`` finds the same file::

    import pandas as pd, ragtune
    df = pd.DataFrame({"text": ["good film", "bad film"] * 50, "label": ["pos", "neg"] * 50})
    ragtune.run({"task": "classification", "data": {"train": df}, "train": {"epochs": 1}}, out="runs/df")

The format follows the task. Tables (classification, regression, translation, generation) are
written as JSON Lines, the columns as they are. Question answering needs SQuAD JSON: rows with
``question``, ``context`` and ``answers`` are grouped into articles (by ``title`` when the rows have
one) and paragraphs; ``answers`` may be SQuAD's list of ``{"text", "answer_start"}``, the Hugging
Face ``squad`` dataset's ``{"text": [...], "answer_start": [...]}`` or one string (an answer without
``answer_start`` starts at its first occurrence in the context); a row's ``id`` is kept (else
``row-N``). A dict with a ``data`` key is taken as a whole SQuAD document.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ragtune.errors import RagtuneError
from ragtune.paths import write_atomically

#: The config keys whose value may be a Python object (the rest take paths only).
INLINE_KEYS = ("data.train", "data.validation", "data.test")
QA_COLUMNS = ("question", "context", "answers")


def cache_dir() -> Path:
    """Where data given as Python objects is written: ``$RAGTUNE_CACHE_DIR/data`` or ``~/.cache/ragtune/data``."""
    base = os.environ.get("RAGTUNE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ragtune")
    return Path(base) / "data"


def is_inline(value: Any) -> bool:
    """Whether ``value`` is data in memory (a DataFrame, a ``datasets.Dataset``, a list of dicts or a
    SQuAD document) rather than a path, a ``{source, target}`` mapping of paths or null."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(row, dict) for row in value)
    if isinstance(value, dict):
        return "data" in value
    return _is_dataframe(value) or _is_hf_dataset(value)


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _is_hf_dataset(value: Any) -> bool:
    return type(value).__module__.startswith("datasets") and hasattr(value, "to_pandas")


def _rows(value: Any, key: str) -> list[dict]:
    if isinstance(value, list):
        return value
    if _is_hf_dataset(value):
        value = value.to_pandas()
    if _is_dataframe(value):
        if value.empty:
            raise RagtuneError(f"{key}: the DataFrame has no rows")
        return json.loads(value.to_json(orient="records", force_ascii=False))
    raise RagtuneError(f"{key}: give a file path, a pandas DataFrame, a datasets.Dataset or a list of dicts "
                       f"(got {type(value).__name__})")


def materialise(value: Any, key: str, task: str) -> str:
    """Write the in-memory ``value`` of config key ``key`` for a run of ``task``; the file's path.

    Raises RagtuneError naming the key (and the row) for data that cannot be written in the task's format.
    """
    if task == "qa":
        data = value if isinstance(value, dict) else squad_document(_rows(value, key), key)
        text, suffix = json.dumps(data, ensure_ascii=False, sort_keys=True), ".json"
    else:
        if isinstance(value, dict):
            raise RagtuneError(f"{key}: a SQuAD document (a dict with 'data') is data for task: qa, not {task}")
        rows = _rows(value, key)
        text = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
        suffix = ".jsonl"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path = cache_dir() / f"{digest}{suffix}"
    if not path.exists():  # content-addressed: an existing file holds exactly this text
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), key)
    return str(path)


def squad_document(rows: list[dict], key: str = "data") -> dict:
    """SQuAD v1.1 JSON from question rows (``question``, ``context``, ``answers``; ``title`` and ``id``
    optional): one article per title, one paragraph per distinct context, in the rows' order."""
    articles: dict[str, dict[str, list]] = {}
    for i, row in enumerate(rows, start=1):
        missing = [c for c in QA_COLUMNS if c not in row]
        if missing:
            raise RagtuneError(f"{key}: row {i} has no {', '.join(repr(c) for c in missing)} (a question row needs "
                               f"{', '.join(QA_COLUMNS)}; it has {sorted(row)})")
        qa = {"id": str(row.get("id", f"row-{i}")), "question": row["question"], "answers": _answers(row["answers"], row["context"], key, i)}
        articles.setdefault(str(row.get("title") or "untitled"), {}).setdefault(row["context"], []).append(qa)
    return {"version": "1.1", "data": [
        {"title": title, "paragraphs": [{"context": context, "qas": qas} for context, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()]}


def _answers(answers: Any, context: str, key: str, row: int) -> list[dict]:
    """SQuAD answers of one row; an answer without ``answer_start`` starts at its first occurrence."""
    if isinstance(answers, dict) and "text" in answers:  # the HF squad layout: parallel lists
        texts, starts = answers["text"], answers.get("answer_start")
        texts = [texts] if isinstance(texts, str) else list(texts)
        starts = [starts] if isinstance(starts, int) else list(starts if starts is not None else [])
        if starts and len(starts) != len(texts):
            raise RagtuneError(f"{key}: row {row}: answers has {len(texts)} texts but {len(starts)} answer_start values")
        answers = [{"text": t, "answer_start": s} for t, s in zip(texts, starts or [None] * len(texts))]
    elif isinstance(answers, str):
        answers = [{"text": answers}]
    if not (isinstance(answers, list) and all(isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers)):
        raise RagtuneError(f"{key}: row {row}: answers must be a list of {{'text', 'answer_start'}}, a dict "
                           f"{{'text': [...], 'answer_start': [...]}} or a string (got {answers!r:.80})")
    out = []
    for a in answers:
        start = a.get("answer_start")
        if start is None:
            start = context.find(a["text"])
            if start < 0:
                raise RagtuneError(f"{key}: row {row}: the answer {a['text']!r} does not occur in its context")
        out.append({"text": a["text"], "answer_start": int(start)})
    return out
