"""A catalogue of bad input: data files, configs, the CLI, indexes and the server.

Each case runs the real command in-process (``ragtune.cli.main``) and checks the contract of every
user error: exit code 2, one message on stderr that names the problem (the file, row, key or value),
no traceback, and nothing already written is changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_MODEL

from ragtune.cli import main


def write_config(folder: Path, **sections) -> Path:
    """A tiny classification config in ``folder`` (data/train.csv unless ``data`` is given)."""
    tree = {
        "task": "classification",
        "data": {"train": "train.csv"},
        "tokenizer": {"vocab_size": 200, "min_frequency": 1},
        "model": dict(TINY_MODEL),
        "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1, "batch_size": 8, "seed": 0, "threads": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return path


def good_rows(n: int = 40) -> pd.DataFrame:
    words = {"sport": "match goal team", "economy": "bank market shares", "culture": "film music 电影"}
    labels = list(words)
    return pd.DataFrame({"text": [f"{words[labels[i % 3]]} {i}" for i in range(n)],
                         "label": [labels[i % 3] for i in range(n)]})


def expect_user_error(capsys, argv: list[str], *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.startswith("error: ") or "\nerror: " in err, err
    low = err.lower()
    for needle in needles:
        assert needle.lower() in low, (needle, err)
    return err


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (to show nothing was touched)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# data files: each case writes train.csv (or another file) and runs `ragtune run`
# ------------------------------------------------------------------------------------------------

def _header_only(folder):
    (folder / "train.csv").write_text("text,label\n", encoding="utf-8")
    return {}, ("train.csv",)


def _empty_file(folder):
    (folder / "train.csv").write_bytes(b"")
    return {}, ("train.csv", "empty")


def _not_utf8(folder):
    (folder / "train.csv").write_bytes("text,label\ncaf\xe9 au lait,food\n".encode("latin-1"))
    return {}, ("train.csv", "utf-8")


def _missing_label_column(folder):
    good_rows().rename(columns={"label": "category"}).to_csv(folder / "train.csv", index=False)
    return {}, ("label", "category")


def _regression_nan_target(folder):
    df = pd.DataFrame({"text": [f"t {i}" for i in range(30)], "label": [float(i) for i in range(30)]})
    df.loc[7, "label"] = float("nan")
    df.to_csv(folder / "train.csv", index=False)
    return {"task": "regression"}, ("train.csv", "label")


def _regression_inf_target(folder):
    df = pd.DataFrame({"text": [f"t {i}" for i in range(30)], "label": [str(float(i)) for i in range(30)]})
    df.loc[4, "label"] = "inf"
    df.to_csv(folder / "train.csv", index=False)
    return {"task": "regression"}, ("train.csv", "inf")


def _regression_text_target(folder):
    df = pd.DataFrame({"text": [f"t {i}" for i in range(30)], "label": [str(i) for i in range(30)]})
    df.loc[3, "label"] = "high"
    df.to_csv(folder / "train.csv", index=False)
    return {"task": "regression"}, ("train.csv", "high")


def _train_is_a_directory(folder):
    (folder / "train.csv").mkdir()
    return {}, ("train.csv",)


def _train_is_a_named_pipe(folder):
    os.mkfifo(folder / "train.csv")  # open() would block forever waiting for a writer
    return {}, ("data.train", "train.csv is a named pipe (FIFO), not a regular file")


def _train_is_dev_zero(folder):
    return {"data": {"train": "/dev/zero"}}, ("data.train: /dev/zero is a character device, not a regular file",)


def _train_missing(folder):
    return {"data": {"train": "nowhere.csv"}}, ("nowhere.csv",)


def _unknown_extension(folder):
    good_rows().to_csv(folder / "train.xlsx", index=False)
    return {"data": {"train": "train.xlsx"}}, ("train.xlsx",)


def _broken_jsonl_line(folder):
    (folder / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    return {"data": {"train": "train.jsonl"}}, ("train.jsonl", "line 2")


def _one_class_only(folder):
    df = good_rows()
    df["label"] = "sport"
    df.to_csv(folder / "train.csv", index=False)
    return {}, ("sport",)


def _keep_labels_match_nothing(folder):
    good_rows().to_csv(folder / "train.csv", index=False)
    return {"data": {"keep_labels": ["weather"]}}, ("weather",)


def _all_texts_empty(folder):
    pd.DataFrame({"text": [""] * 20, "label": ["a", "b"] * 10}).to_csv(folder / "train.csv", index=False)
    return {}, ("train.csv",)


def _generation_json_not_squad(folder):
    (folder / "qa.json").write_text(json.dumps({"rows": [1, 2]}), encoding="utf-8")
    return {"task": "generation", "data": {"train": "qa.json"}, "tokenizer": {"vocab_size": 300}}, ("qa.json", "squad")


def _translation_pair_counts_differ(folder):
    (folder / "a.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (folder / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    return ({"task": "translation", "data": {"train": {"source": "a.en", "target": "a.de"}}, "tokenizer": {"vocab_size": 300}},
            ("a.en", "a.de", "3 lines", "2 lines"))


def _list_text_cell(folder):
    lines = [json.dumps({"text": t, "label": lab}) for t, lab in good_rows().itertuples(index=False)]
    lines.insert(2, '{"text": ["a", "b"], "label": "x"}')
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"data": {"train": "train.jsonl"}}, ("train.jsonl", "row 3", "'text'", "list")


def _header_names_a_column_twice(folder):
    rows = "".join(f"{t},{lab},other {i}\n" for i, (t, lab) in enumerate(good_rows().itertuples(index=False)))
    (folder / "train.csv").write_text("text,label,text\n" + rows, encoding="utf-8")
    return {}, ("train.csv", "'text' twice")


def _deeply_nested_jsonl_line(folder):
    lines = [json.dumps({"text": t, "label": lab}) for t, lab in good_rows().itertuples(index=False)]
    lines.insert(1, '{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "x"}')
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"data": {"train": "train.jsonl"}}, ("train.jsonl", "line 2", "nested too deeply")


DATA_CASES = {
    "header only": _header_only,
    "empty file": _empty_file,
    "not UTF-8": _not_utf8,
    "missing label column": _missing_label_column,
    "NaN regression target": _regression_nan_target,
    "inf regression target": _regression_inf_target,
    "text in a regression target": _regression_text_target,
    "train path is a directory": _train_is_a_directory,
    "train file missing": _train_missing,
    "train is a named pipe": _train_is_a_named_pipe,
    "train is /dev/zero": _train_is_dev_zero,
    "unknown file extension": _unknown_extension,
    "broken JSONL line": _broken_jsonl_line,
    "list as a JSONL text cell": _list_text_cell,
    "header names a column twice": _header_names_a_column_twice,
    "JSONL line nested 100,000 deep": _deeply_nested_jsonl_line,
    "one class only": _one_class_only,
    "keep_labels match nothing": _keep_labels_match_nothing,
    "every text empty": _all_texts_empty,
    "generation .json that is not SQuAD": _generation_json_not_squad,
    "translation files of different lengths": _translation_pair_counts_differ,
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data(case, tmp_path, capsys):
    overrides, needles = DATA_CASES[case](tmp_path)
    config = write_config(tmp_path, **overrides)
    out = tmp_path / "run"
    expect_user_error(capsys, ["run", str(config), "--out", str(out), "--quiet"], *needles)
    assert not (out / "model.json").exists() and not (out / "metrics.json").exists()


# ------------------------------------------------------------------------------------------------
# configs: `ragtune validate`
# ------------------------------------------------------------------------------------------------

CONFIG_CASES = {
    "negative lr": ({"train": {"lr": -0.1}}, ("train.lr",)),
    "zero heads": ({"model": {"heads": 0}}, ("model.heads",)),
    "negative layers": ({"model": {"layers": -2}}, ("model.layers",)),
    "unknown optimizer": ({"train": {"optimizer": "adamax"}}, ("train.optimizer", "adamw", "sgd")),
    "misspelt key": ({"trian": {"lr": 0.1}}, ("trian", "train")),
    "lr is text": ({"train": {"lr": "fast"}}, ("train.lr", "fast")),
    "epochs is a float": ({"train": {"epochs": 2.5}}, ("train.epochs",)),
    "unknown task": ({"task": "summarise"}, ("task", "classification", "generation")),
    "every error at once": ({"train": {"lr": -1, "batch_size": 0}, "model": {"heads": 0}},
                            ("train.lr", "train.batch_size", "model.heads")),
    "negative seed": ({"train": {"seed": -1}}, ("train.seed",)),
    "seed past 2**32": ({"train": {"seed": 2**32}}, ("train.seed", "4294967296")),
    "negative tune seed": ({"tune": {"seed": -5}}, ("tune.seed",)),
    "decode section on a classifier": ({"decode": {"beam_size": 2}}, ("decode", "translation or generation")),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(case, tmp_path, capsys):
    overrides, needles = CONFIG_CASES[case]
    good_rows().to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path, **overrides)
    expect_user_error(capsys, ["validate", str(config)], str(config.name), *needles)


def test_missing_inputs_are_named_before_anything_is_written(tmp_path, capsys):
    """validate and run check every file and folder the config names (without reading them); a failed
    run leaves no run directory behind."""
    good_rows().to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path, data={"test": "gone/test.csv"}, tokenizer={"path": "no_tokenizer.json"},
                          retrieval={"top_k": 2, "corpus": ["train.csv", "docs"]})
    err = expect_user_error(capsys, ["validate", str(config)], "3 missing inputs", f"data.test: file not found: {tmp_path / 'gone' / 'test.csv'}",
                            f"tokenizer.path: file not found: {tmp_path / 'no_tokenizer.json'}",
                            f"retrieval.corpus[1]: file not found: {tmp_path / 'docs'}")
    assert "retrieval.corpus[0]" not in err
    hf = tmp_path / "hf.yaml"  # a local model folder (a path: ./x) must exist; a hub id is not checked
    hf.write_text(yaml.safe_dump({"data": {"train": "train.csv"}, "model": {"backbone": "hf", "name_or_path": "./no_model"}}))
    expect_user_error(capsys, ["validate", str(hf)], f"model.name_or_path: folder not found: {tmp_path / 'no_model'}")
    assert main(["validate", str(hf), "model.name_or_path=some/hub-id"]) == 0
    out = tmp_path / "runs" / "new"
    expect_user_error(capsys, ["run", str(config), "--out", str(out), "--quiet"], "data.test: file not found")
    assert not out.exists() and not (tmp_path / "runs").exists()
    expect_user_error(capsys, ["run", str(config), "data.train=nowhere.csv", "--quiet"], "data.train: file not found")
    assert not (Path.cwd() / "runs").exists() or not any((Path.cwd() / "runs").glob("cfg-*"))


def test_config_file_problems(tmp_path, capsys):
    expect_user_error(capsys, ["validate", str(tmp_path / "missing.yaml")], "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- task: classification\n", encoding="utf-8")
    expect_user_error(capsys, ["validate", str(listed)], "list.yaml", "mapping")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: classification\ntrain: {lr: 0.1\n", encoding="utf-8")
    expect_user_error(capsys, ["validate", str(broken)], "broken.yaml", "line")
    ok = write_config(tmp_path)
    expect_user_error(capsys, ["validate", str(ok), "train.lr=-1"], "train.lr")  # a bad override
    expect_user_error(capsys, ["validate", str(ok), "train.nope=1"], "train.nope")


# ------------------------------------------------------------------------------------------------
# the CLI, indexes and the server
# ------------------------------------------------------------------------------------------------

def test_commands_on_wrong_folders(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello", encoding="utf-8")
    expect_user_error(capsys, ["predict", str(tmp_path / "plain"), "a text"], "plain")
    expect_user_error(capsys, ["eval", str(tmp_path / "plain"), "--data", "x.csv"], "plain")
    expect_user_error(capsys, ["retrieve", str(tmp_path / "plain"), "query"], "plain")
    expect_user_error(capsys, ["serve", str(tmp_path / "plain")], "plain")
    expect_user_error(capsys, ["export", str(tmp_path / "plain"), "--format", "onnx", "--out", str(tmp_path / "exp")], "plain")
    expect_user_error(capsys, ["index", str(tmp_path / "no_such_corpus"), "--out", str(tmp_path / "idx")], "no_such_corpus")
    assert digest(tmp_path / "plain") == {"notes.txt": hashlib.sha256(b"hello").hexdigest()}


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A folder with train.csv, cfg.yaml and run/, a finished tiny classification run: trained once per
    session and shared by the bad-input modules (which import this fixture); tests never write to it."""
    folder = tmp_path_factory.mktemp("bad_input_run")
    good_rows(60).to_csv(folder / "train.csv", index=False)
    config = write_config(folder)
    assert main(["run", str(config), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder


def test_nothing_written_is_overwritten(finished_run, tmp_path, capsys):
    run_dir = finished_run / "run"
    before = digest(run_dir)
    config = finished_run / "cfg.yaml"
    expect_user_error(capsys, ["run", str(config), "--out", str(run_dir), "--quiet"], str(run_dir), "--overwrite")
    out = tmp_path / "predictions.csv"
    out.write_text("keep me\n", encoding="utf-8")
    good_rows(5).to_csv(tmp_path / "in.csv", index=False)
    expect_user_error(capsys, ["predict", str(run_dir), "--input", str(tmp_path / "in.csv"), "--output", str(out)],
                      "predictions.csv", "--overwrite")
    assert out.read_text(encoding="utf-8") == "keep me\n"
    expect_user_error(capsys, ["predict", str(run_dir), "--input", str(tmp_path / "missing.csv"),
                               "--output", str(tmp_path / "p2.csv")], "missing.csv")
    expect_user_error(capsys, ["predict", str(run_dir)], "texts")  # neither texts nor --input
    pd.DataFrame({"text": ["a"], "category": ["x"]}).to_csv(tmp_path / "wrong.csv", index=False)
    expect_user_error(capsys, ["eval", str(run_dir), "--data", str(tmp_path / "wrong.csv")], "label")
    expect_user_error(capsys, ["predict", str(run_dir), "a", "--engine", "onnx"], "export")
    assert digest(run_dir) == before


def test_index_problems(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Rivers flow to the sea.", encoding="utf-8")
    index = tmp_path / "idx"
    assert main(["index", str(docs), "--out", str(index), "--quiet"]) == 0
    before = digest(index)
    expect_user_error(capsys, ["index", str(docs), "--out", str(index), "--quiet"], "idx", "--overwrite")
    expect_user_error(capsys, ["retrieve", str(index), "rivers", "-k", "0"], "k must be a positive integer", "got 0")
    empty = tmp_path / "empty_docs"
    empty.mkdir()
    expect_user_error(capsys, ["index", str(empty), "--out", str(tmp_path / "idx2"), "--quiet"], "empty_docs")
    (docs / "bad.jsonl").write_text('{"id": "x", "text": "ok"}\n{"id": "y"}\n', encoding="utf-8")
    expect_user_error(capsys, ["index", str(docs / "bad.jsonl"), "--out", str(tmp_path / "idx3"), "--quiet"],
                      "bad.jsonl", "line 2")
    (docs / "dup.jsonl").write_text('{"id": "a", "text": "rivers"}\n{"id": "a", "text": "mountains"}\n', encoding="utf-8")
    expect_user_error(capsys, ["index", str(docs / "dup.jsonl"), "--out", str(tmp_path / "idx4"), "--quiet"],
                      "'a'", "used twice", "line 1", "line 2")
    original = (index / "manifest.json").read_bytes()
    (index / "manifest.json").write_text(json.dumps({**json.loads(original), "kind": "telepathy"}), encoding="utf-8")
    expect_user_error(capsys, ["retrieve", str(index), "rivers"], "telepathy")
    (index / "manifest.json").write_bytes(original)
    assert digest(index) == before


def test_awkward_but_valid_input_is_accepted(tmp_path, capsys):
    """A byte-order mark, labels of mixed types (read as text) and Windows line ends are not errors."""
    rows = good_rows(45)
    rows.loc[rows.label == "culture", "label"] = "3"  # a number among words: labels are text
    text = rows.to_csv(index=False, lineterminator="\r\n")
    (tmp_path / "train.csv").write_bytes("\ufeff".encode("utf-8") + text.encode("utf-8"))
    config = write_config(tmp_path)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))
    assert sorted(meta["labels"]) == ["3", "economy", "sport"]


def test_training_that_diverges_stops_naming_the_step_and_batch(tmp_path, capsys):
    good_rows(60).to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path, train={"optimizer": "sgd", "lr": 1e30, "momentum": 0.0})
    expect_user_error(capsys, ["run", str(config), "--out", str(tmp_path / "run"), "--quiet"],
                      "training diverged", "loss is", "step", "batch", "train.lr", "1e+30")
    assert not (tmp_path / "run" / "model.safetensors").exists()  # no model is written from a diverged run


def test_an_index_from_another_encoder_is_refused(tmp_path, capsys):
    """A run whose config names another encoder than its index's, and an encoder folder whose weights were
    replaced after indexing: both would compare query and passage vectors of different models."""
    import shutil

    from tiny_hf import save_tiny_encoder

    encoder = save_tiny_encoder(tmp_path / "encoder", seed=0)
    other = save_tiny_encoder(tmp_path / "other", seed=1)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"{w} market team film {i}"}) + "\n"
                            for i, w in enumerate(["bank", "goal", "music"] * 4)), encoding="utf-8")
    index = tmp_path / "idx"
    assert main(["index", str(docs), "--out", str(index), "--kind", "dense", "--encoder", str(encoder), "--quiet"]) == 0
    before = digest(index)
    good_rows(60).to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path, retrieval={"index": str(index), "top_k": 2, "encoder": str(other)})
    expect_user_error(capsys, ["run", str(config), "--out", str(tmp_path / "run"), "--quiet"],
                      "was built with encoder", str(encoder), str(other), "rebuild the index")
    assert not (tmp_path / "run" / "model.safetensors").exists()
    for f in Path(encoder).glob("*.safetensors"):  # the encoder folder now holds another model's weights
        shutil.copy2(Path(other) / f.name, f)
    expect_user_error(capsys, ["retrieve", str(index), "bank"], "other weights than when the index was built",
                      str(encoder))
    (tmp_path / "more.jsonl").write_text(json.dumps({"text": "new passage about rivers"}) + "\n", encoding="utf-8")
    expect_user_error(capsys, ["index", str(tmp_path / "more.jsonl"), "--out", str(index), "--add", "--quiet"],
                      "other weights than when the index was built")
    assert digest(index) == before


def test_a_10_mb_text_is_read_and_truncated(tmp_path, capsys):
    """One 10 MB text among normal rows: training reads it (truncated to model.max_len tokens) and
    predict answers for it; the server's size limits are tested in tests/serve."""
    rows = good_rows(45)
    huge = ("bank market shares 银行 " * 500_000)[:10 * 2**20]
    rows.loc[0, "text"] = huge
    rows.to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path)
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    pd.DataFrame({"text": [huge, "goal team"]}).to_csv(tmp_path / "in.csv", index=False)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "--input", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "out.csv")]) == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 2 and len(out.text[0]) == len(huge)
    assert set(out.predicted_label) <= {"sport", "economy", "culture"}


@pytest.mark.parametrize("flag, value, needles", [
    ("--trials", "0", ("--trials", "at least 1", "got 0")),
    ("--trials", "-3", ("--trials", "at least 1", "got -3")),
    ("--workers", "0", ("--workers", "at least 1", "got 0")),
    ("--timeout", "-1", ("--timeout", "positive", "got -1")),
    ("--timeout", "0", ("--timeout", "positive", "got 0")),
    ("--storage", "notaurl", ("--storage", "notaurl", "sqlite:///", "postgresql://")),
    ("--storage", "nosuchdb://host/x", ("--storage", "nosuchdb", "sqlite:///", "postgresql://")),
])
def test_bad_tune_options_are_refused_before_anything_is_written(flag, value, needles, tmp_path, capsys):
    good_rows().to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path, tune={"trials": 2, "space": {"train.lr": {"log_uniform": [1e-4, 1e-2]}}})
    out = tmp_path / "study"
    expect_user_error(capsys, ["tune", str(config), "--out", str(out), flag, value, "--quiet"], *needles)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# special files (named pipes, devices): refused by os.stat before anything opens them
# ------------------------------------------------------------------------------------------------

def test_special_files_named_by_validate_and_as_a_config(tmp_path, capsys):
    os.mkfifo(tmp_path / "train.csv")
    config = write_config(tmp_path)
    expect_user_error(capsys, ["validate", str(config)], f"data.train: {tmp_path / 'train.csv'} is a named pipe (FIFO)")
    expect_user_error(capsys, ["validate", str(config), "data.train=/dev/zero"], "data.train: /dev/zero is a character device")
    expect_user_error(capsys, ["validate", "/dev/zero"], "config file: /dev/zero is a character device, not a regular file")
    os.mkfifo(tmp_path / "fifo.yaml")
    expect_user_error(capsys, ["validate", str(tmp_path / "fifo.yaml")], "fifo.yaml is a named pipe (FIFO)")


def test_run_on_a_named_pipe_exits_fast(tmp_path):
    """In a subprocess: were the FIFO opened, the run would hang until the timeout."""
    os.mkfifo(tmp_path / "train.csv")
    config = write_config(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "ragtune", "run", str(config), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "data.train" in proc.stderr and "named pipe (FIFO), not a regular file" in proc.stderr, proc.stderr
    assert not out.exists()


def test_special_files_for_predict_and_eval(finished_run, tmp_path, capsys):
    run_dir = finished_run / "run"
    expect_user_error(capsys, ["predict", str(run_dir), "--input", "/dev/zero", "--output", str(tmp_path / "p.csv")],
                      "--input: /dev/zero is a character device, not a regular file")
    assert not (tmp_path / "p.csv").exists()
    os.mkfifo(tmp_path / "in.csv")
    expect_user_error(capsys, ["predict", str(run_dir), "--input", str(tmp_path / "in.csv"), "--output",
                               str(tmp_path / "p.csv")], "--input", "named pipe (FIFO)")
    expect_user_error(capsys, ["eval", str(run_dir), "--data", str(tmp_path / "in.csv")], "--data", "named pipe (FIFO)")


def test_special_files_in_a_corpus(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Rivers flow to the sea.", encoding="utf-8")
    os.mkfifo(docs / "pipe.txt")
    with pytest.warns(UserWarning, match="skipping .*pipe.txt, a named pipe"):
        assert main(["index", str(docs), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    passages = (tmp_path / "idx" / "passages.jsonl").read_text(encoding="utf-8")
    assert "Rivers" in passages
    expect_user_error(capsys, ["index", str(docs / "pipe.txt"), "--out", str(tmp_path / "idx2"), "--quiet"],
                      f"corpus file: {docs / 'pipe.txt'} is a named pipe (FIFO), not a regular file")
    assert not (tmp_path / "idx2").exists()
    os.mkfifo(tmp_path / "vec.npy")
    expect_user_error(capsys, ["index", str(docs / "a.txt"), "--out", str(tmp_path / "idx3"), "--kind", "dense",
                               "--vectors", str(tmp_path / "vec.npy"), "--quiet"], "--vectors", "named pipe (FIFO)")
