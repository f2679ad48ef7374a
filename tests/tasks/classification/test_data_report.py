"""data_report / data_report_markdown: balance, lengths, duplicates, leakage and warnings."""

import json

import pandas as pd

from ragtune.tasks.classification.data import PreparedData
from ragtune.tasks.classification.data_report import data_report, data_report_markdown
from ragtune.data.tokenizer import train_tokenizer


def _split(rows):
    return pd.DataFrame(
        {"text": [t for t, _ in rows], "label": [lab for _, lab in rows], "row": list(range(1, len(rows) + 1))}
    )


def _prepared():
    train = [(f"news item number {i} about sport", "sport") for i in range(30)]
    train += [(f"股市 新闻 {i}", "财经") for i in range(18)]
    train += [("a rare tech story", "tech")]  # 1 of 51: under 5%
    train += [("news item number 0 about sport ", "sport"), ("news item number 1 about sport", "财经")]  # dups
    validation = [("news item number 3 about sport", "sport"), ("fresh validation text", "财经"), ("其他 新闻", "tech")]
    test = [("  股市 新闻 4", "财经"), ("fresh validation text", "财经"), ("brand new test text", "sport")]
    info = {
        "task": "classification",
        "demo": False,
        "keep_labels": None,
        "train": {"source": "train.csv", "carved": False, "rows_read": 60, "dropped_by_keep_labels": 5,
                  "dropped_by_keep_labels_per_label": {"other": 5}, "empty_text_skipped": 2},
        "validation": {"source": "carved from train (seeded stratified 10%)", "carved": True, "rows_read": 3},
        "test": {"source": "test.csv", "carved": False, "rows_read": 3},
        "notes": [],
    }
    return PreparedData(_split(train), _split(validation), _split(test), ["sport", "tech", "财经"], info)


def test_counts_duplicates_and_leakage():
    report = data_report(_prepared())
    json.dumps(report)  # plain data
    train = report["splits"]["train"]
    assert train["rows"] == 51
    assert train["class_counts"] == {"sport": 31, "tech": 1, "财经": 19}
    assert train["dropped_by_keep_labels"] == 5 and train["empty_text_skipped"] == 2
    assert train["duplicates"]["duplicate_rows"] == 2  # exact text after strip
    assert train["duplicates"]["duplicated_texts"] == 2
    assert train["duplicates"]["conflicting_labels"] == 1
    assert train["tokens"] is None
    assert train["chars"]["max"] >= train["chars"]["median"] >= train["chars"]["min"] > 0

    leak = report["leakage"]
    assert leak["train/validation"]["rows"] == 1
    assert leak["train/validation"]["examples"][0]["rows_a"] == [4]
    assert leak["train/test"]["rows"] == 1 and leak["train/test"]["examples"][0]["text"] == "股市 新闻 4"
    assert leak["validation/test"]["rows"] == 1

    warnings = "\n".join(report["warnings"])
    assert "leakage: 1 validation row(s)" in warnings and "leakage: 1 test row(s)" in warnings
    assert "class 'tech' has only 1 row(s)" in warnings
    assert "conflicting labels" in warnings
    assert "test: no rows of class(es) ['tech']" in warnings


def test_token_lengths_and_truncation():
    prepared = _prepared()
    tok = train_tokenizer(prepared.train["text"], vocab_size=200, min_frequency=1)
    report = data_report(prepared, tok, max_length=4)
    tokens = report["splits"]["train"]["tokens"]
    assert tokens["max_length"] == 4
    assert tokens["truncated_share"] > 0.9 and tokens["truncated_rows"] == 51
    assert tokens["min"] >= 4 and tokens["unk_rate"] == 0.0
    assert any("get truncated" in w for w in report["warnings"])
    assert report["splits"]["validation"]["tokens"]["unk_rate"] > 0  # "其他" never seen in train
    roomy = data_report(prepared, tok, max_length=512)
    assert roomy["splits"]["train"]["tokens"]["truncated_rows"] == 0


def test_markdown_tables():
    prepared = _prepared()
    tok = train_tokenizer(prepared.train["text"], vocab_size=200, min_frequency=1)
    md = data_report_markdown(data_report(prepared, tok, max_length=8))
    assert md.startswith("## Data")
    for heading in ("### Splits", "### Class balance", "### Text length", "### Duplicates and leakage", "### Warnings"):
        assert heading in md
    assert "| 财经 | 19 (37.3%)" in md
    assert "train → test" in md and "股市 新闻 4" in md
    assert "- leakage:" in md
    assert "carved from train (seeded stratified 10%)" in md


def test_clean_data_has_no_warnings_and_regression_report():
    rows = [(f"text {i}", float(i)) for i in range(10)]
    prepared = PreparedData(_split(rows), _split([("other a", 1.0)]), _split([("other b", 2.0)]), [], {})
    report = data_report(prepared)
    assert report["task"] == "regression"
    assert report["warnings"] == []
    assert report["splits"]["train"]["target"]["max"] == 9.0
    md = data_report_markdown(report)
    assert "### Regression target" in md and "None." in md
