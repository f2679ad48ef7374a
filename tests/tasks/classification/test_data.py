"""prepare_data / load_eval_file: labels, keep_labels, empty texts, carving, and every user error."""

import json
import math

import pandas as pd
import pytest

from ragtune.tasks import config_from_dict
from ragtune.tasks.classification.data import PreparedData, load_eval_file, prepare_data
from ragtune.errors import RagtuneError


def _csv(path, rows, columns=("text", "label")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def _cfg(**data):
    task = data.pop("task", "classification")
    seed = data.pop("seed", 0)
    return config_from_dict({"task": task, "data": data, "train": {"seed": seed}})


def _balanced(n_per_class, labels=("a", "b", "c"), prefix="text"):
    return [(f"{prefix} {label} number {i}", label) for i in range(n_per_class) for label in labels]


def _three_files(tmp_path, train, validation, test):
    return {
        "train": str(_csv(tmp_path / "train.csv", train)),
        "validation": str(_csv(tmp_path / "validation.csv", validation)),
        "test": str(_csv(tmp_path / "test.csv", test)),
    }


# --- basics -----------------------------------------------------------------------------------


def test_three_files_numeric_labels_become_strings(tmp_path):
    files = _three_files(
        tmp_path,
        [("good", 1), ("bad", 0), ("fine", 1), ("awful", 0)],
        [("nice", 1), ("poor", 0)],
        [("great", 1), ("meh", 0)],
    )
    prepared = prepare_data(_cfg(**files))
    assert isinstance(prepared, PreparedData)
    assert prepared.labels == ["0", "1"]
    assert prepared.train["label"].tolist() == ["1", "0", "1", "0"]
    assert prepared.train["row"].tolist() == [1, 2, 3, 4]
    assert list(prepared.train.columns) == ["text", "label", "row"]
    assert prepared.info["train"]["source"] == files["train"]
    assert prepared.info["validation"]["carved"] is False
    assert prepared.info["test"]["rows_read"] == 2
    json.dumps(prepared.info)  # plain data


def test_jsonl_float_labels_and_null_text(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"text": "a", "label": 1.0},
                {"text": None, "label": 0},
                {"text": "b", "label": 0},
                {"text": "c", "label": 1},
            ]
        ),
        encoding="utf-8",
    )
    val = _csv(tmp_path / "v.csv", [("x", 1), ("y", 0)])
    prepared = prepare_data(_cfg(train=str(train), validation=str(val), test=str(val)))
    assert prepared.labels == ["0", "1"]
    assert prepared.train["label"].tolist() == ["1", "0", "1"]
    assert prepared.train["row"].tolist() == [1, 3, 4]
    assert prepared.info["train"]["empty_text_skipped"] == 1


def test_custom_columns_and_chinese_labels(tmp_path):
    rows = [("国足夺冠", "体育"), ("股市大涨", "财经"), ("新片上映", "娱乐"), ("篮球联赛开幕", "体育")]
    train = _csv(tmp_path / "train.csv", rows, columns=("标题", "类别"))
    other = _csv(tmp_path / "other.csv", [("央行降息", "财经"), ("足球比赛", "体育")], columns=("标题", "类别"))
    cfg = _cfg(train=str(train), validation=str(other), test=str(other), text_column="标题", label_column="类别")
    prepared = prepare_data(cfg)
    assert prepared.labels == sorted(["体育", "财经", "娱乐"])
    assert prepared.test["label"].tolist() == ["财经", "体育"]
    assert prepared.train["text"].tolist()[0] == "国足夺冠"


def test_missing_column_names_existing(tmp_path):
    train = _csv(tmp_path / "train.csv", [("a", "x")], columns=("sentence", "label"))
    with pytest.raises(RagtuneError) as exc:
        prepare_data(_cfg(train=str(train)))
    msg = str(exc.value)
    assert "train.csv" in msg and "missing column 'text'" in msg and "'sentence', 'label'" in msg


def test_missing_train_file(tmp_path):
    with pytest.raises(RagtuneError, match=r"data file not found: .*absent\.csv"):
        prepare_data(_cfg(train=str(tmp_path / "absent.csv")))


def test_max_rows(tmp_path):
    files = _three_files(tmp_path, _balanced(10), _balanced(5), _balanced(5))
    prepared = prepare_data(_cfg(max_rows=9, **files))
    assert len(prepared.train) == 9 and len(prepared.test) == 9


# --- keep_labels ------------------------------------------------------------------------------


def test_keep_labels_filters_every_split_and_counts(tmp_path):
    files = _three_files(tmp_path, _balanced(4, ("a", "b", "c", "d")), _balanced(2, ("a", "b", "c")), _balanced(1, ("a", "d")))
    prepared = prepare_data(_cfg(keep_labels=["a", "b"], **files))
    assert prepared.labels == ["a", "b"]
    assert set(prepared.validation["label"]) == {"a", "b"}
    assert prepared.test["label"].tolist() == ["a"]
    assert prepared.info["train"]["dropped_by_keep_labels"] == 8
    assert prepared.info["train"]["dropped_by_keep_labels_per_label"] == {"c": 4, "d": 4}
    assert prepared.info["validation"]["dropped_by_keep_labels_per_label"] == {"c": 2}
    assert prepared.info["test"]["dropped_by_keep_labels"] == 1
    assert prepared.info["keep_labels"] == ["a", "b"]


def test_keep_label_not_in_train(tmp_path):
    files = _three_files(tmp_path, _balanced(2, ("sport", "tech")), _balanced(1), _balanced(1))
    with pytest.raises(RagtuneError) as exc:
        prepare_data(_cfg(keep_labels=["sports", "tech"], **files))
    msg = str(exc.value)
    assert "data.keep_labels" in msg and "'sports'" in msg and "did you mean 'sport'" in msg
    assert "['sport', 'tech']" in msg and "train.csv" in msg


def test_all_rows_dropped_by_keep_labels_in_test(tmp_path):
    files = _three_files(tmp_path, _balanced(3, ("a", "b")), _balanced(1, ("a", "b")), _balanced(2, ("c",)))
    with pytest.raises(RagtuneError) as exc:
        prepare_data(_cfg(keep_labels=["a", "b"], **files))
    msg = str(exc.value)
    assert "test.csv" in msg and "the test data set is empty" in msg and "all 2 rows dropped by keep_labels" in msg


# --- empty texts ------------------------------------------------------------------------------


def _with_empty_texts(tmp_path):
    rows = [("one", "a"), ("", "b"), ("   ", "a"), ("two", "b"), ("three", "a"), ("four", "b")]
    return _three_files(tmp_path, rows, [("x", "a"), ("y", "b")], [("z", "a"), ("\t", "b"), ("w", "b")])


def test_empty_texts_skipped_and_counted(tmp_path):
    prepared = prepare_data(_cfg(empty_text="skip", **_with_empty_texts(tmp_path)))
    assert prepared.train["row"].tolist() == [1, 4, 5, 6]
    assert prepared.info["train"]["empty_text_skipped"] == 2
    assert prepared.info["train"]["empty_text_rows"] == [2, 3]
    assert prepared.info["test"]["empty_text_skipped"] == 1
    assert len(prepared.test) == 2


def test_empty_texts_error_names_file_and_rows(tmp_path):
    with pytest.raises(RagtuneError) as exc:
        prepare_data(_cfg(empty_text="error", **_with_empty_texts(tmp_path)))
    msg = str(exc.value)
    assert "train.csv" in msg and "2 row(s) have an empty text" in msg and "row 2, 3" in msg
    assert "data.empty_text: skip" in msg


def test_all_texts_empty_is_an_empty_data_set(tmp_path):
    files = _three_files(tmp_path, [("", "a"), (" ", "b")], [("x", "a")], [("y", "b")])
    with pytest.raises(RagtuneError, match=r"train\.csv: the train data set is empty: all 2 rows have an empty text"):
        prepare_data(_cfg(**files))


def test_empty_label_is_an_error(tmp_path):
    files = _three_files(tmp_path, [("x", "a"), ("y", ""), ("z", "b")], [("x", "a")], [("y", "b")])
    with pytest.raises(RagtuneError, match=r"train\.csv: 1 row\(s\) have an empty label in column 'label': row 2"):
        prepare_data(_cfg(**files))


# --- unseen labels ----------------------------------------------------------------------------


def test_unseen_label_in_validation_names_label_file_row(tmp_path):
    files = _three_files(tmp_path, _balanced(2, ("a", "b")), [("x", "a"), ("y", "b"), ("z", "zebra")], [("w", "a")])
    with pytest.raises(RagtuneError) as exc:
        prepare_data(_cfg(**files))
    msg = str(exc.value)
    assert "validation.csv" in msg and "row 3" in msg and "'zebra'" in msg and "['a', 'b']" in msg


# --- regression -------------------------------------------------------------------------------


def test_regression_targets_are_floats(tmp_path):
    files = _three_files(tmp_path, [("a", "1.5"), ("b", "-2"), ("c", " 3e2 ")], [("d", 0)], [("e", 1)])
    prepared = prepare_data(_cfg(task="regression", **files))
    assert prepared.labels == []
    assert prepared.train["label"].tolist() == [1.5, -2.0, 300.0]
    assert prepared.train["label"].dtype == "float64"


@pytest.mark.parametrize("bad", ["NaN", "inf", "abc", ""])
def test_regression_bad_target_names_file_row_value(tmp_path, bad):
    files = _three_files(tmp_path, [("a", "1"), ("b", bad), ("c", "2")], [("d", 0)], [("e", 1)])
    with pytest.raises(RagtuneError) as exc:
        prepare_data(_cfg(task="regression", **files))
    msg = str(exc.value)
    assert "train.csv" in msg and "row 2" in msg and repr(bad) in msg and "finite number" in msg


def test_regression_nan_in_jsonl(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": NaN}\n', encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"t\.jsonl: row 2: .* got nan"):
        prepare_data(_cfg(task="regression", train=str(path)))


def test_regression_carved_unstratified(tmp_path):
    rows = [(f"text {i}", i / 10) for i in range(50)]
    train = _csv(tmp_path / "train.csv", rows)
    prepared = prepare_data(_cfg(task="regression", train=str(train)))
    assert (len(prepared.train), len(prepared.validation), len(prepared.test)) == (40, 5, 5)
    assert prepared.info["test"]["source"] == "carved from train (seeded unstratified 10%)"
    assert not any(math.isnan(x) for x in prepared.train["label"])


# --- carving ----------------------------------------------------------------------------------


def test_carved_sizes_stratified_and_disjoint(tmp_path):
    rows = _balanced(60, ("a",)) + _balanced(30, ("b",)) + _balanced(10, ("c",))  # 100 rows, 60/30/10
    train = _csv(tmp_path / "train.csv", rows)
    prepared = prepare_data(_cfg(train=str(train), validation_fraction=0.2, test_fraction=0.1))
    assert (len(prepared.train), len(prepared.validation), len(prepared.test)) == (70, 20, 10)
    assert prepared.validation["label"].value_counts().to_dict() == {"a": 12, "b": 6, "c": 2}
    assert prepared.test["label"].value_counts().to_dict() == {"a": 6, "b": 3, "c": 1}
    all_rows = [set(prepared.split(s)["row"]) for s in ("train", "validation", "test")]
    assert set().union(*all_rows) == set(range(1, 101)) and sum(map(len, all_rows)) == 100
    assert prepared.train["row"].is_monotonic_increasing  # file order kept
    info = prepared.info
    assert info["validation"]["carved"] and info["test"]["carved"]
    assert info["validation"]["source"] == "carved from train (seeded stratified 20%)"
    assert info["train"]["rows_read"] == 100 and info["train"]["carved_out"] == {"test": 10, "validation": 20}
    # each carved row keeps its text/label pairing from the file
    for _, r in prepared.test.iterrows():
        assert rows[r["row"] - 1] == (r["text"], r["label"])


def test_carving_is_seeded(tmp_path):
    train = str(_csv(tmp_path / "train.csv", _balanced(30)))
    first = prepare_data(_cfg(train=train, seed=1))
    again = prepare_data(_cfg(train=train, seed=1))
    other = prepare_data(_cfg(train=train, seed=2))
    assert first.test["row"].tolist() == again.test["row"].tolist()
    assert first.validation["row"].tolist() == again.validation["row"].tolist()
    assert first.test["row"].tolist() != other.test["row"].tolist()


def test_only_validation_carved(tmp_path):
    train = _csv(tmp_path / "train.csv", _balanced(20, ("a", "b")))
    test = _csv(tmp_path / "test.csv", _balanced(3, ("a", "b")))
    prepared = prepare_data(_cfg(train=str(train), test=str(test)))
    assert (len(prepared.train), len(prepared.validation), len(prepared.test)) == (36, 4, 6)
    assert prepared.info["test"]["carved"] is False and prepared.info["validation"]["carved"] is True


def test_unstratified_fallback_noted(tmp_path):
    rows = _balanced(20, ("a", "b")) + [("lonely row", "rare")]
    train = _csv(tmp_path / "train.csv", rows)
    prepared = prepare_data(_cfg(train=str(train)))
    assert "rare" in prepared.labels
    assert any("unstratified" in note for note in prepared.info["notes"])
    assert "unstratified" in prepared.info["test"]["source"]
    assert len(prepared.train) + len(prepared.validation) + len(prepared.test) == 41


def test_too_few_rows_to_carve(tmp_path):
    train = _csv(tmp_path / "train.csv", [("only", "a"), ("two", "b")])
    with pytest.raises(RagtuneError, match=r"train\.csv: only 1 training row\(s\) left, too few to carve a validation split"):
        prepare_data(_cfg(train=str(train)))


# --- demo -------------------------------------------------------------------------------------


def test_demo_into_folder(tmp_path):
    prepared = prepare_data(_cfg(demo=True), demo_dir=tmp_path / "demo")
    assert (len(prepared.train), len(prepared.validation), len(prepared.test)) == (600, 150, 150)
    assert prepared.labels == ["economy", "entertainment", "politics"]
    assert (tmp_path / "demo" / "train.csv").is_file()
    assert prepared.info["demo"] is True


def test_demo_in_temporary_folder():
    prepared = prepare_data(_cfg(demo=True))
    assert len(prepared.train) == 600
    assert "demo data set" in prepared.info["train"]["source"]


def test_demo_needs_classification():
    cfg = config_from_dict({"task": "regression", "data": {"demo": True}})
    with pytest.raises(RagtuneError, match="demo data set is a classification data set"):
        prepare_data(cfg)


# --- load_eval_file ---------------------------------------------------------------------------


def test_load_eval_file_applies_the_same_rules(tmp_path):
    cfg = _cfg(train="unused.csv", keep_labels=["a", "b"])
    path = _csv(tmp_path / "eval.csv", [("x", "a"), ("y", "c"), ("", "b"), ("z", "b")])
    df = load_eval_file(path, cfg, ["a", "b"])
    assert df["label"].tolist() == ["a", "b"] and df["row"].tolist() == [1, 4]
    assert df.attrs["info"]["dropped_by_keep_labels"] == 1 and df.attrs["info"]["empty_text_skipped"] == 1


def test_load_eval_file_unseen_label(tmp_path):
    cfg = _cfg(train="unused.csv")
    path = _csv(tmp_path / "eval.csv", [("x", "a"), ("y", "new")])
    with pytest.raises(RagtuneError) as exc:
        load_eval_file(path, cfg, ["a", "b"])
    msg = str(exc.value)
    assert "eval.csv" in msg and "row 2" in msg and "'new'" in msg


def test_load_eval_file_empty_text_error(tmp_path):
    cfg = _cfg(train="unused.csv", empty_text="error")
    path = _csv(tmp_path / "eval.csv", [("x", "a"), (" ", "a")])
    with pytest.raises(RagtuneError, match=r"eval\.csv: 1 row\(s\) have an empty text .*row 2"):
        load_eval_file(path, cfg, ["a"])


def test_load_eval_file_without_labels(tmp_path):
    cfg = _cfg(train="unused.csv")
    path = _csv(tmp_path / "texts.csv", [("x",), ("y",)], columns=("text",))
    with pytest.raises(RagtuneError, match="missing column 'label'"):
        load_eval_file(path, cfg, ["a"])
    df = load_eval_file(path, cfg, ["a"], require_label=False)
    assert df["text"].tolist() == ["x", "y"] and df["label"].isna().all()


def test_load_eval_file_regression(tmp_path):
    cfg = _cfg(task="regression", train="unused.csv")
    path = tmp_path / "eval.jsonl"
    path.write_text('{"text": "a", "label": 2.5}\n{"text": "b", "label": "x"}\n', encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"eval\.jsonl: row 2: .*got 'x'"):
        load_eval_file(path, cfg, [])


def test_csv_labels_1_and_1_0_are_one_class(tmp_path):
    """CSV `1` and `1.0` were two classes; JSONL merges them, and so must CSV/TSV."""
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"t{i},{lab}\n" for i, lab in enumerate(["1", "1.0", "0", "0.0"] * 5)),
                     encoding="utf-8")
    prepared = prepare_data(_cfg(train=str(train)))
    assert prepared.labels == ["0", "1"]
    tsv = tmp_path / "train.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"t{i}\t{lab}\n" for i, lab in enumerate(["2", "2.00", "-3", "-3.0"] * 5)),
                   encoding="utf-8")
    assert prepare_data(_cfg(train=str(tsv))).labels == ["-3", "2"]


@pytest.mark.parametrize("cell, kind", [('["a", "b"]', "list"), ('{"a": 1}', "dict")])
def test_list_or_dict_text_cell_is_an_error(tmp_path, cell, kind):
    """A list/dict cell became its Python repr and was used as text."""
    train = tmp_path / "train.jsonl"
    lines = [json.dumps({"text": f"t {i}", "label": "xy"[i % 2]}) for i in range(10)]
    lines.insert(3, '{"text": %s, "label": "x"}' % cell)
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match=rf"train\.jsonl: row 4: column 'text' holds a {kind}"):
        prepare_data(_cfg(train=str(train)))


def test_list_label_and_bytes_text_in_parquet_are_errors(tmp_path):
    train = tmp_path / "train.parquet"
    pd.DataFrame({"text": [f"t {i}" for i in range(10)], "label": [["xy"[i % 2]] for i in range(10)]}).to_parquet(train)
    with pytest.raises(RagtuneError, match=r"train\.parquet: row 1: column 'label' holds a list"):
        prepare_data(_cfg(train=str(train)))
    pd.DataFrame({"text": [f"t {i}".encode() for i in range(10)], "label": ["xy"[i % 2] for i in range(10)]}).to_parquet(train)
    with pytest.raises(RagtuneError, match=r"train\.parquet: row 1: column 'text' holds bytes"):
        prepare_data(_cfg(train=str(train)))
