"""read_table / require_columns: every format, and every file problem gives one clear RagtuneError."""

import json

import pandas as pd
import pytest

from ragtune.data.io import read_table, require_columns
from ragtune.errors import RagtuneError

ROWS = [("good film", "pos"), ("NA", "neg"), ("None", "pos"), ("体育新闻：中国队夺冠", "体育")]


def _frame():
    return pd.DataFrame(ROWS, columns=["text", "label"])


def _check(df):
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == [r[0] for r in ROWS]  # "NA" and "None" stay texts
    assert df["label"].tolist() == [r[1] for r in ROWS]


@pytest.mark.parametrize("name", ["d.csv", "d.CSV"])
def test_csv(tmp_path, name):
    path = tmp_path / name
    _frame().to_csv(path, index=False)
    _check(read_table(path))


@pytest.mark.parametrize("name", ["d.tsv", "d.tab"])
def test_tsv(tmp_path, name):
    path = tmp_path / name
    _frame().to_csv(path, sep="\t", index=False)
    _check(read_table(path))


@pytest.mark.parametrize("name", ["d.jsonl", "d.ndjson"])
def test_jsonl(tmp_path, name):
    path = tmp_path / name
    lines = [json.dumps({"text": t, "label": lab}, ensure_ascii=False) for t, lab in ROWS]
    path.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n", encoding="utf-8")  # blank line ok
    _check(read_table(path))


@pytest.mark.parametrize("name", ["d.parquet", "d.pq"])
def test_parquet(tmp_path, name):
    path = tmp_path / name
    _frame().to_parquet(path, index=False)
    _check(read_table(path))


def test_explicit_format_overrides_extension(tmp_path):
    path = tmp_path / "data.txt"
    _frame().to_csv(path, index=False)
    _check(read_table(path, fmt="csv"))


def test_csv_multiline_quoted_text_and_max_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"line one\nline two, with comma",a\nsecond,b\nthird,c\n', encoding="utf-8")
    df = read_table(path)
    assert df["text"].tolist()[0] == "line one\nline two, with comma"
    assert len(df) == 3
    assert read_table(path, max_rows=2)["label"].tolist() == ["a", "b"]


def test_bom_is_stripped(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nhello,a\n")
    df = read_table(path)
    assert list(df.columns) == ["text", "label"]


def test_missing_file(tmp_path):
    with pytest.raises(RagtuneError, match=r"data file not found: .*nope\.csv"):
        read_table(tmp_path / "nope.csv")


def test_directory(tmp_path):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(RagtuneError, match="is a directory"):
        read_table(folder)


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(RagtuneError) as exc:
        read_table(path)
    msg = str(exc.value)
    assert "data.xlsx" in msg and "'.xlsx'" in msg
    for ext in (".csv", ".tsv", ".jsonl", ".parquet"):
        assert ext in msg


def test_not_utf8_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.csv"
    content = "text,label\ncafé,a\n".encode("latin-1")
    path.write_bytes(content)
    offset = content.index(b"\xe9")
    with pytest.raises(RagtuneError) as exc:
        read_table(path)
    msg = str(exc.value)
    assert "latin1.csv" in msg and "not UTF-8" in msg
    assert f"byte offset {offset}" in msg and "line 2" in msg


def test_not_utf8_offset_counts_the_bom(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\n\xffbad,a\n")
    with pytest.raises(RagtuneError, match="byte offset 14"):
        read_table(path)


@pytest.mark.parametrize("name", ["empty.csv", "empty.tsv", "empty.jsonl", "empty.parquet"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(RagtuneError, match=rf"{name}: the file is empty"):
        read_table(path)


def test_whitespace_only_file_is_empty(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(RagtuneError, match="the file is empty"):
        read_table(path)


def test_header_only_csv(tmp_path):
    path = tmp_path / "head.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"head\.csv: the file has a header \(text, label\) but no data rows"):
        read_table(path)


def test_header_only_parquet(tmp_path):
    path = tmp_path / "head.parquet"
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(RagtuneError, match="but no data rows"):
        read_table(path)


def test_not_parquet(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("text,label\na,b\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"fake\.parquet: cannot read as Parquet"):
        read_table(path)


def test_bad_jsonl_line_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        read_table(path)


def test_jsonl_line_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n["b", "y"]\n', encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"list\.jsonl: line 3 holds a JSON list"):
        read_table(path)


def test_csv_row_with_too_many_fields(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("text,label\na,b\nc,d,e\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"ragged\.csv: cannot parse as CSV: Expected 2 fields in line 3, saw 3"):
        read_table(path)


def test_require_columns_lists_existing_and_close_match(tmp_path):
    df = pd.DataFrame({"Text": ["a"], "category": ["b"]})
    with pytest.raises(RagtuneError) as exc:
        require_columns(df, tmp_path / "train.csv", ["text", "label"])
    msg = str(exc.value)
    assert "train.csv" in msg
    assert "missing columns 'text' (did you mean 'Text'?), 'label'" in msg
    assert "the file has columns: 'Text', 'category'" in msg


def test_require_columns_passes():
    require_columns(pd.DataFrame({"text": ["a"], "label": ["b"]}), "x.csv", ["text", "label"])


@pytest.mark.parametrize("name, sep", [("dup.csv", ","), ("dup.tsv", "\t")])
def test_header_with_a_column_twice(tmp_path, name, sep):
    """`text,label,text` silently used the first `text` column."""
    path = tmp_path / name
    path.write_text(sep.join(["text", "label", "text"]) + "\n" + sep.join(["a", "x", "b"]) + "\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"dup\.[ct]sv: the header names column 'text' twice \(columns 1 and 3\)"):
        read_table(path)


def test_deeply_nested_jsonl_line_is_one_clear_error(tmp_path):
    """A JSONL line nested 100,000 deep ended in RecursionError."""
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "y"}\n',
                    encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"deep\.jsonl: line 2 is nested too deeply"):
        read_table(path)


def test_jsonl_lone_surrogate_named(tmp_path):
    # "\ud800" is legal JSON but no character: refused with its line (found by tests/test_cli_fuzz.py)
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": "x\\ud800", "label": "b"}\n{"text": "\\ud83d\\ude00", "label": "c"}\n',
                    encoding="utf-8")
    with pytest.raises(RagtuneError, match="line 2 holds a lone UTF-16 surrogate"):
        read_table(path)
    path.write_text('{"text": "\\ud83d\\ude00 paired is fine", "label": "c"}\n', encoding="utf-8")
    assert read_table(path)["text"].tolist() == ["\U0001F600 paired is fine"]
