"""What the data looks like: sizes, class balance, lengths, duplicates, leakage, warnings.

:func:`data_report` returns a JSON-serialisable dict (plain ints, floats, strings, lists, dicts);
:func:`data_report_markdown` renders it as a Markdown section for the run report. Pictures are
drawn elsewhere (the pipeline), from the same dict.

Duplicates compare the exact text after stripping surrounding whitespace. "Leakage" is a text of
a later split (validation, test) that also occurs in an earlier one (train, validation); it
inflates validation and test scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ragtune.runs import table
from ragtune.tasks.classification.data import SPLITS, PreparedData

RARE_CLASS_SHARE = 0.05  # warn when a class is under 5% of train
HEAVY_TRUNCATION_SHARE = 0.10  # warn when over 10% of a split's texts are truncated
UNK_WARN_RATE = 0.01  # warn when over 1% of the tokens are [UNK]
_EXAMPLES = 3
_EXAMPLE_CHARS = 80
_PAIRS = (("train", "validation"), ("train", "test"), ("validation", "test"))


def _short(text: str, limit: int = _EXAMPLE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _stats(values: list[float] | np.ndarray) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"min": 0.0, "median": 0.0, "mean": 0.0, "p95": 0.0, "max": 0.0}
    return {
        "min": float(arr.min()),
        "median": float(np.median(arr)),
        "mean": round(float(arr.mean()), 2),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


def _duplicates(df: pd.DataFrame, classification: bool) -> dict[str, Any]:
    keys = df["text"].str.strip()
    sizes = keys.value_counts(sort=False)
    dup_keys = sizes[sizes > 1]
    extra_rows = int((dup_keys - 1).sum())
    conflicting = 0
    if classification and len(dup_keys):
        n_labels = df.groupby(keys, sort=False)["label"].nunique()
        conflicting = int((n_labels.loc[dup_keys.index] > 1).sum())
    examples = []
    for key in keys[keys.duplicated(keep=False)].unique()[:_EXAMPLES]:  # in file order
        members = df.loc[keys == key]
        labels = sorted({str(v) for v in members["label"]})
        examples.append({"text": _short(key), "rows": [int(r) for r in members["row"][:5]], "labels": labels[:5]})
    return {
        "duplicate_rows": extra_rows,  # rows whose text already occurred earlier in the split
        "duplicated_texts": int(len(dup_keys)),
        "conflicting_labels": conflicting if classification else None,
        "examples": examples,
    }


def _leakage(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Any]:
    a_keys = a["text"].str.strip()
    b_keys = b["text"].str.strip()
    shared = set(a_keys) & set(b_keys)
    mask_b = b_keys.isin(shared)
    examples = []
    for key in list(dict.fromkeys(b_keys[mask_b]))[:_EXAMPLES]:
        examples.append(
            {
                "text": _short(key),
                "rows_a": [int(r) for r in a.loc[a_keys == key, "row"][:5]],
                "rows_b": [int(r) for r in b.loc[b_keys == key, "row"][:5]],
            }
        )
    return {"rows": int(mask_b.sum()), "texts": len(shared), "examples": examples}


def data_report(prepared: PreparedData, tokenizer=None, max_length: int | None = None) -> dict[str, Any]:
    """Describe the prepared data; with a tokenizer, also token lengths, truncation and [UNK] rate."""
    classification = bool(prepared.labels)
    info = prepared.info or {}
    warnings: list[str] = []
    splits: dict[str, Any] = {}
    token_counts: dict[str, list[int]] = {}

    if tokenizer is not None:
        from ragtune.data.tokenizer import token_lengths, unk_rate

    for name in SPLITS:
        df = prepared.split(name)
        split_info = info.get(name, {})
        entry: dict[str, Any] = {
            "rows": int(len(df)),
            "source": split_info.get("source"),
            "carved": bool(split_info.get("carved", False)),
            "rows_read": split_info.get("rows_read", int(len(df))),
            "dropped_by_keep_labels": int(split_info.get("dropped_by_keep_labels", 0)),
            "dropped_by_keep_labels_per_label": dict(split_info.get("dropped_by_keep_labels_per_label", {})),
            "empty_text_skipped": int(split_info.get("empty_text_skipped", 0)),
        }
        if classification:
            counts = df["label"].value_counts()
            entry["class_counts"] = {label: int(counts.get(label, 0)) for label in prepared.labels}
            total = max(len(df), 1)
            entry["class_share"] = {label: round(n / total, 4) for label, n in entry["class_counts"].items()}
        else:
            targets = df["label"].to_numpy(dtype=np.float64)
            entry["target"] = {**_stats(targets), "std": round(float(targets.std()), 4) if len(targets) else 0.0}
        entry["chars"] = _stats(df["text"].str.len().to_numpy())
        if tokenizer is not None:
            lengths = token_lengths(tokenizer, df["text"].tolist())
            token_counts[name] = lengths
            tokens = _stats(lengths)
            if max_length is not None:
                truncated = int(sum(1 for n in lengths if n > max_length))
                tokens["max_length"] = int(max_length)
                tokens["truncated_rows"] = truncated
                tokens["truncated_share"] = round(truncated / max(len(lengths), 1), 4)
            tokens["unk_rate"] = round(unk_rate(tokenizer, df["text"].tolist()), 5)
            entry["tokens"] = tokens
        else:
            entry["tokens"] = None
        entry["duplicates"] = _duplicates(df, classification)
        splits[name] = entry

    leakage = {f"{a}/{b}": _leakage(prepared.split(a), prepared.split(b)) for a, b in _PAIRS}

    # --- warnings ---------------------------------------------------------------------------
    for pair, leak in leakage.items():
        if leak["rows"]:
            a, b = pair.split("/")
            warnings.append(
                f"leakage: {leak['rows']} {b} row(s) have a text that also occurs in {a} "
                f"({leak['texts']} distinct text(s)); {b} scores will look better than they are"
            )
    for name, entry in splits.items():
        dup = entry["duplicates"]
        if dup["duplicate_rows"]:
            conflict = (
                f", {dup['conflicting_labels']} of them with conflicting labels" if dup["conflicting_labels"] else ""
            )
            warnings.append(
                f"{name}: {dup['duplicate_rows']} duplicate row(s) ({dup['duplicated_texts']} text(s) occur more than once{conflict})"
            )
        if entry["empty_text_skipped"]:
            warnings.append(f"{name}: {entry['empty_text_skipped']} row(s) with an empty text were skipped")
        tokens = entry.get("tokens")
        if tokens and tokens.get("truncated_share", 0) > HEAVY_TRUNCATION_SHARE:
            warnings.append(
                f"{name}: {tokens['truncated_share']:.0%} of the texts are longer than max_length={tokens['max_length']} "
                f"tokens and get truncated (p95 length {tokens['p95']:.0f}); consider a larger model.max_length"
            )
        if tokens and tokens.get("unk_rate", 0) > UNK_WARN_RATE:
            warnings.append(
                f"{name}: {tokens['unk_rate']:.1%} of the tokens are [UNK] (characters or words the tokenizer never saw)"
            )
    if classification:
        train_counts = splits["train"]["class_counts"]
        total = max(splits["train"]["rows"], 1)
        for label, n in train_counts.items():
            if n / total < RARE_CLASS_SHARE:
                warnings.append(
                    f"train: class '{label}' has only {n} row(s) ({n / total:.1%} of train, under {RARE_CLASS_SHARE:.0%})"
                )
        for name in ("validation", "test"):
            absent = [label for label, n in splits[name]["class_counts"].items() if n == 0]
            if absent:
                warnings.append(f"{name}: no rows of class(es) {absent[:10]}; their scores cannot be measured")
    else:
        if splits["train"]["target"]["min"] == splits["train"]["target"]["max"]:
            warnings.append("train: every regression target has the same value; there is nothing to learn")
    for note in info.get("notes", []):
        warnings.append(note)

    return {
        "task": "classification" if classification else "regression",
        "labels": list(prepared.labels),
        "demo": bool(info.get("demo", False)),
        "keep_labels": info.get("keep_labels"),
        "splits": splits,
        "leakage": leakage,
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.1f}"


def data_report_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown section (``## Data`` with tables), for the run report."""
    splits = report["splits"]
    out = ["## Data", ""]
    if report.get("demo"):
        out += ["Built-in synthetic demo data set (a demo, not a benchmark).", ""]
    if report.get("keep_labels"):
        out += [f"Labels kept (`data.keep_labels`): {', '.join(f'`{x}`' for x in report['keep_labels'])}", ""]

    out += ["### Splits", ""]
    out += table(
        ["split", "source", "rows read", "dropped by keep_labels", "empty texts skipped", "rows used", "duplicate rows"],
        [
            [
                name,
                e["source"] or "",
                e["rows_read"],
                e["dropped_by_keep_labels"],
                e["empty_text_skipped"],
                e["rows"],
                e["duplicates"]["duplicate_rows"],
            ]
            for name, e in splits.items()
        ],
    )
    out.append("")

    if report["task"] == "classification":
        out += ["### Class balance", ""]
        rows = []
        for label in report["labels"]:
            row: list[Any] = [label]
            for name in SPLITS:
                n = splits[name]["class_counts"].get(label, 0)
                share = n / max(splits[name]["rows"], 1)
                row.append(f"{n} ({share:.1%})")
            rows.append(row)
        out += table(["label", *SPLITS], rows)
        out.append("")
    else:
        out += ["### Regression target", ""]
        out += table(
            ["split", "min", "median", "mean", "std", "p95", "max"],
            [
                [name, *(f"{splits[name]['target'][k]:.4g}" for k in ("min", "median", "mean", "std", "p95", "max"))]
                for name in SPLITS
            ],
        )
        out.append("")

    out += ["### Text length", ""]
    has_tokens = any(e.get("tokens") for e in splits.values())
    header = ["split", "chars min", "chars median", "chars mean", "chars p95", "chars max"]
    if has_tokens:
        header += ["tokens min", "tokens median", "tokens mean", "tokens p95", "tokens max", "truncated", "[UNK] rate"]
    rows = []
    for name, e in splits.items():
        c = e["chars"]
        row = [name, *(_num(c[k]) for k in ("min", "median", "mean", "p95", "max"))]
        t = e.get("tokens")
        if has_tokens and t:
            truncated = (
                f"{t['truncated_rows']} ({t['truncated_share']:.1%}) at {t['max_length']}" if "truncated_rows" in t else ""
            )
            row += [*(_num(t[k]) for k in ("min", "median", "mean", "p95", "max")), truncated, f"{t['unk_rate']:.2%}"]
        rows.append(row)
    out += table(header, rows)
    out.append("")

    out += ["### Duplicates and leakage", ""]
    out += table(
        ["where", "rows", "distinct texts", "examples"],
        [
            [
                f"within {name}",
                e["duplicates"]["duplicate_rows"],
                e["duplicates"]["duplicated_texts"],
                "; ".join(f"\"{x['text']}\" (rows {x['rows']})" for x in e["duplicates"]["examples"]),
            ]
            for name, e in splits.items()
        ]
        + [
            [
                pair.replace("/", " → "),
                leak["rows"],
                leak["texts"],
                "; ".join(f"\"{x['text']}\" (rows {x['rows_a']} / {x['rows_b']})" for x in leak["examples"]),
            ]
            for pair, leak in report["leakage"].items()
        ],
    )
    out.append("")

    out += ["### Warnings", ""]
    if report["warnings"]:
        out += [f"- {w}" for w in report["warnings"]]
    else:
        out.append("None.")
    out.append("")
    return "\n".join(out)
