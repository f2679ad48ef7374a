"""From the config's data section to three clean splits: train, validation, test.

:func:`prepare_data` reads the files named in ``cfg.data`` (or the built-in demo data set), checks
the columns, converts labels, applies ``keep_labels`` and the empty-text rule, carves missing
validation/test splits from train (seeded, stratified) and checks that every validation/test label
was seen in training. :func:`load_eval_file` applies the same rules to another file that a trained
run scores later.

Each split is a DataFrame with columns

* ``text`` – the input text (``str``, as read; never empty after preparation),
* ``label`` – the class name (``str``; numeric labels such as ``0``/``1`` become ``"0"``/``"1"``)
  for classification, the target (``float``) for regression,
* ``row`` – the 1-based data-row number in the split's source file (the header is not counted;
  for JSONL it is the n-th JSON object), so messages and predictions can point back to the file.
"""

from __future__ import annotations

import difflib
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ragtune.data.io import read_table, require_columns, require_scalar_cells
from ragtune.errors import RagtuneError

if TYPE_CHECKING:
    from ragtune.tasks.classification.config import ClassificationConfig as RunConfig

SPLITS = ("train", "validation", "test")
# A whole number written with a zero fraction, as JSON writes it ("1.0", "-3.00"): CSV/TSV cells
# are strings, so without this a CSV's "1" and "1.0" would be two classes while JSONL merges them.
_WHOLE_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.0+")
_SHOW_ROWS = 5  # row numbers quoted in a message


@dataclass
class PreparedData:
    """The prepared splits plus what happened on the way (for the data report)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    labels: list[str]  # classification: sorted training labels (index = class id); regression: []
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return "classification" if self.labels else "regression"

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; choose one of {SPLITS}")
        return getattr(self, name)


# ---------------------------------------------------------------------------------------------
# Cell conversion
# ---------------------------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts
        return False


def _to_text(value: Any) -> str:
    if _is_missing(value):
        return ""
    return value if isinstance(value, str) else str(value)


def _to_label(value: Any) -> str:
    """A class label as a string: ``1``/``1.0`` (numbers or CSV text) → ``"1"``, ``" sport "`` → ``"sport"``, missing → ``""``."""
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value).strip()
    if _WHOLE_DECIMAL.fullmatch(text):
        return str(int(text.split(".")[0]))
    return text


def _to_target(value: Any) -> float | None:
    """A regression target as a finite float, or None when it is not one."""
    if _is_missing(value) or isinstance(value, bool):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _show_value(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_SHOW_ROWS])
    more = f" and {len(rows) - _SHOW_ROWS} more" if len(rows) > _SHOW_ROWS else ""
    return f"{shown}{more}"


# ---------------------------------------------------------------------------------------------
# Reading one file
# ---------------------------------------------------------------------------------------------


def _read_split(
    path: str | Path,
    *,
    split: str,
    task: str,
    text_column: str,
    label_column: str,
    fmt: str,
    max_rows: int | None,
    keep_labels: list[str] | None,
    empty_text: str,
    require_label: bool = True,
    check_keep_labels: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read one file into text/label/row, apply keep_labels and the empty-text rule.

    Order: keep_labels filter, then the empty-text rule, then label checks (so a blank trailing
    row counts as an empty text, not as a bad label). Labels are not checked against the training
    labels here. Returns the frame and its info.
    """
    raw = read_table(path, fmt, max_rows)
    require_columns(raw, path, [text_column, label_column] if require_label else [text_column])
    has_label = label_column in raw.columns
    require_scalar_cells(raw, path, [text_column, label_column] if has_label else [text_column])
    n_read = len(raw)
    df = pd.DataFrame(
        {
            "text": [_to_text(v) for v in raw[text_column].tolist()],
            "row": np.arange(1, n_read + 1, dtype=np.int64),
        }
    )
    info: dict[str, Any] = {
        "source": str(path),
        "carved": False,
        "rows_read": n_read,
        "dropped_by_keep_labels": 0,
        "dropped_by_keep_labels_per_label": {},
        "empty_text_skipped": 0,
        "empty_text_rows": [],
    }
    raw_labels = raw[label_column].tolist() if has_label else [None] * n_read
    if not has_label:
        df["label"] = None
    elif task == "classification":
        df["label"] = [_to_label(v) for v in raw_labels]
    else:
        df["label"] = [_to_target(v) for v in raw_labels]  # None where not a finite number
        df["raw_label"] = raw_labels
    del raw

    if has_label and task == "classification" and keep_labels is not None:
        if check_keep_labels:
            _check_keep_labels(keep_labels, df["label"], path)
        keep = set(keep_labels)
        mask = df["label"].isin(keep)
        dropped = df.loc[~mask, "label"]
        info["dropped_by_keep_labels"] = int(len(dropped))
        info["dropped_by_keep_labels_per_label"] = {
            str(k): int(v) for k, v in sorted(dropped.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
        }
        df = df.loc[mask]
        if len(df) == 0:
            found = sorted(info["dropped_by_keep_labels_per_label"])
            raise RagtuneError(
                f"{path}: the {split} data set is empty: all {n_read} rows dropped by keep_labels "
                f"{list(keep_labels)} (labels in the file: {found[:20]})"
            )

    empty_mask = df["text"].str.strip() == ""
    empty_rows = df.loc[empty_mask, "row"].tolist()
    if empty_rows:
        if empty_text == "error":
            raise RagtuneError(
                f"{path}: {len(empty_rows)} row(s) have an empty text in column '{text_column}': "
                f"row {_rows_text(empty_rows)} (set data.empty_text: skip to drop them)"
            )
        info["empty_text_skipped"] = len(empty_rows)
        info["empty_text_rows"] = [int(r) for r in empty_rows[:20]]
        df = df.loc[~empty_mask]
        if len(df) == 0:
            why = "all rows left after keep_labels" if info["dropped_by_keep_labels"] else f"all {n_read} rows"
            raise RagtuneError(
                f"{path}: the {split} data set is empty: {why} have an empty text in column '{text_column}'"
            )

    if has_label and task == "classification":
        empty_label = df.loc[df["label"] == "", "row"].tolist()
        if empty_label:
            raise RagtuneError(
                f"{path}: {len(empty_label)} row(s) have an empty label in column '{label_column}': "
                f"row {_rows_text(empty_label)}"
            )
    elif has_label:
        bad = df.loc[df["label"].isna()]
        if len(bad):
            first = bad.iloc[0]
            more = f" ({len(bad)} such rows: {_rows_text(bad['row'].tolist())})" if len(bad) > 1 else ""
            raise RagtuneError(
                f"{path}: row {int(first['row'])}: the regression target in column '{label_column}' must be a "
                f"finite number, got {_show_value(first['raw_label'])}{more}"
            )
        df = df.assign(label=df["label"].astype(np.float64))
    df = df[["text", "label", "row"]].reset_index(drop=True)
    info["rows"] = int(len(df))
    return df, info


def _check_known_labels(df: pd.DataFrame, path: str | Path, labels: list[str], split: str) -> None:
    known = set(labels)
    unseen = df.loc[~df["label"].isin(known)]
    if len(unseen) == 0:
        return
    first = unseen.iloc[0]
    names = sorted(set(unseen["label"]))
    others = f" (unseen labels: {names[:10]})" if len(names) > 1 else ""
    shown = labels if len(labels) <= 30 else labels[:30] + ["..."]
    raise RagtuneError(
        f"{path}: row {int(first['row'])}: label '{first['label']}' in the {split} data never occurs in the "
        f"training data{others}; training labels: {shown}"
    )


# ---------------------------------------------------------------------------------------------
# Carving validation / test from train
# ---------------------------------------------------------------------------------------------


def _carve(
    df: pd.DataFrame, size: int, seed: int, stratify: bool, name: str, source: str
) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """Split ``df`` into (rest, carved) with ``size`` carved rows. Returns a note when stratification was impossible."""
    from sklearn.model_selection import train_test_split

    if len(df) < 2 or size >= len(df):
        raise RagtuneError(
            f"{source}: only {len(df)} training row(s) left, too few to carve a {name} split of {size} row(s); "
            f"provide data.{name} or more training rows"
        )
    index = np.arange(len(df))
    note = None
    try:
        rest, carved = train_test_split(
            index, test_size=size, random_state=seed, shuffle=True, stratify=df["label"].to_numpy() if stratify else None
        )
    except ValueError as exc:
        if not stratify:
            raise RagtuneError(f"{source}: cannot carve a {name} split of {size} row(s): {exc}") from None
        rest, carved = train_test_split(index, test_size=size, random_state=seed, shuffle=True)
        note = f"{name}: carved unstratified, because a stratified split is impossible ({exc})"
    rest_df = df.iloc[np.sort(rest)].reset_index(drop=True)
    carved_df = df.iloc[np.sort(carved)].reset_index(drop=True)
    return rest_df, carved_df, note


def _carved_info(df: pd.DataFrame, fraction: float, stratified: bool, from_rows: int) -> dict[str, Any]:
    how = "stratified" if stratified else "unstratified"
    return {
        "source": f"carved from train (seeded {how} {fraction * 100:g}%)",
        "carved": True,
        "stratified": stratified,
        "fraction": fraction,
        "rows_read": int(len(df)),
        "carved_from_rows": int(from_rows),
        "dropped_by_keep_labels": 0,
        "dropped_by_keep_labels_per_label": {},
        "empty_text_skipped": 0,
        "empty_text_rows": [],
        "rows": int(len(df)),
    }


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _check_keep_labels(keep_labels: list[str], train_labels: pd.Series, path: str | Path) -> None:
    present = sorted(set(train_labels))
    missing = [k for k in keep_labels if k not in set(present)]
    if not missing:
        return
    parts = []
    for name in missing:
        close = difflib.get_close_matches(name, present, n=1, cutoff=0.6)
        parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    shown = present if len(present) <= 30 else present[:30] + ["..."]
    noun = "label" if len(missing) == 1 else "labels"
    raise RagtuneError(
        f"data.keep_labels: {noun} {', '.join(parts)} never occur(s) in the training file {path}; "
        f"labels there: {shown}"
    )


def prepare_data(cfg: RunConfig, demo_dir: str | Path | None = None) -> PreparedData:
    """Read, check, filter and split the data named in ``cfg.data``.

    With ``cfg.data.demo`` the built-in synthetic demo data set is written to ``demo_dir`` (or a
    temporary folder, removed afterwards) and used instead of files; its columns are always
    ``text`` and ``label``.
    """
    d = cfg.data
    if d.demo:
        if cfg.task != "classification":
            raise RagtuneError("data.demo: the demo data set is a classification data set (set task: classification)")
        from ragtune.data.demo import DEMO_DESCRIPTION, write_demo_dataset

        if demo_dir is None:
            with tempfile.TemporaryDirectory(prefix="ragtune-demo-") as tmp:
                prepared = _prepare(cfg, write_demo_dataset(Path(tmp)), "text", "label", "csv", demo=True)
            for split in SPLITS:
                prepared.info[split]["source"] = f"demo data set ({split}.csv, written by ragtune.data.demo)"
        else:
            prepared = _prepare(cfg, write_demo_dataset(Path(demo_dir)), "text", "label", "csv", demo=True)
        prepared.info["demo_description"] = DEMO_DESCRIPTION
        return prepared
    paths: dict[str, Path | None] = {
        "train": Path(d.train),
        "validation": Path(d.validation) if d.validation else None,
        "test": Path(d.test) if d.test else None,
    }
    return _prepare(cfg, paths, d.text_column, d.label_column, d.format, demo=False)


def _prepare(
    cfg: RunConfig,
    paths: dict[str, Path | None],
    text_column: str,
    label_column: str,
    fmt: str,
    demo: bool,
) -> PreparedData:
    d = cfg.data
    task = cfg.task
    seed = cfg.train.seed
    keep = list(d.keep_labels) if (d.keep_labels is not None and task == "classification") else None
    common = dict(
        task=task,
        text_column=text_column,
        label_column=label_column,
        fmt=fmt,
        max_rows=d.max_rows,
        empty_text=d.empty_text,
    )

    train_path = paths["train"]
    assert train_path is not None
    # keep_labels must name labels that exist in the training file (checked before filtering).
    train, train_info = _read_split(train_path, split="train", keep_labels=keep, check_keep_labels=True, **common)
    labels = sorted(set(train["label"])) if task == "classification" else []
    if task == "classification" and len(labels) < 2:
        raise RagtuneError(
            f"{train_path}: classification needs at least two classes in the training data; every row has the label "
            f"{labels[0] if labels else None!r}" + (" (after data.keep_labels)" if keep else "")
        )

    frames: dict[str, pd.DataFrame] = {"train": train}
    infos: dict[str, dict[str, Any]] = {"train": train_info}
    notes: list[str] = []
    for split in ("validation", "test"):
        path = paths[split]
        if path is None:
            continue
        frame, info = _read_split(path, split=split, keep_labels=keep, **common)
        if task == "classification":
            _check_known_labels(frame, path, labels, split)
        frames[split], infos[split] = frame, info

    # Carve the missing splits from train; fractions are shares of the whole training file.
    missing = [s for s in ("test", "validation") if s not in frames]
    if missing:
        stratify = task == "classification"
        n_total = len(train)
        rest = train
        fractions = {"validation": d.validation_fraction, "test": d.test_fraction}
        carved_counts = {}
        for split in missing:
            size = max(1, int(round(fractions[split] * n_total)))
            rest, carved, note = _carve(rest, size, seed, stratify, split, str(train_path))
            stratified = stratify and note is None
            if note:
                notes.append(note)
            frames[split] = carved
            infos[split] = _carved_info(carved, fractions[split], stratified, n_total)
            carved_counts[split] = int(len(carved))
        frames["train"] = rest
        infos["train"]["rows"] = int(len(rest))
        infos["train"]["carved_out"] = carved_counts

    info: dict[str, Any] = {
        "task": task,
        "demo": demo,
        "text_column": text_column,
        "label_column": label_column,
        "keep_labels": keep,
        "seed": seed,
        **{split: infos[split] for split in SPLITS},
        "notes": notes,
    }
    return PreparedData(
        train=frames["train"], validation=frames["validation"], test=frames["test"], labels=labels, info=info
    )


def load_eval_file(
    path: str | Path,
    cfg: RunConfig,
    labels: list[str],
    fmt: str = "auto",
    *,
    max_rows: int | None = None,
    require_label: bool = True,
) -> pd.DataFrame:
    """Read another file to score with a trained run, under the same rules as :func:`prepare_data`.

    ``labels`` are the trained run's labels (``[]`` for regression); a label outside them is an
    error naming the label and the row. ``cfg.data.max_rows`` is *not* applied (pass ``max_rows``).
    With ``require_label=False`` a file without the label column is accepted (label column None),
    for prediction only. What happened (rows read, dropped, skipped) is in ``df.attrs["info"]``.
    """
    d = cfg.data
    keep = list(d.keep_labels) if (d.keep_labels is not None and cfg.task == "classification") else None
    df, info = _read_split(
        path,
        split="evaluation",
        task=cfg.task,
        text_column=d.text_column,
        label_column=d.label_column,
        fmt=fmt,
        max_rows=max_rows,
        keep_labels=keep,
        empty_text=d.empty_text,
        require_label=require_label,
    )
    if cfg.task == "classification" and df["label"].notna().all():
        _check_known_labels(df, path, list(labels), "evaluation")
    df.attrs["info"] = info
    return df
