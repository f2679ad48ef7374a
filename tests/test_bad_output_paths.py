"""Output paths that cannot be written, stray temporary files, and empty texts given to predict.

Every writing command (run, tune, index, export, train-reranker, predict --output, explain --out)
checks its output path up front (ragtune/paths.py): a path under a regular file, an existing folder
given as a file, a name over the file system's limit, a read-only folder. Each is exit 2 with one
message naming the flag, the path and the reason, before the expensive work, and nothing already
written changes. A write that fails later (a full disk) is the same kind of error and leaves no
``*.tmp*`` file beside its target. Empty or whitespace-only texts are kept and predicted (rows in =
rows out) with one warning naming their rows.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_bad_input import digest, expect_user_error, finished_run, good_rows, write_config  # noqa: F401  (the session's run)

from ragtune.cli import main
from ragtune.data.io import read_table
from ragtune.errors import RagtuneError
from ragtune.paths import check_writable_file, check_writable_folder, write_atomically

LONG = "x" * 300  # over NAME_MAX (255) on every common file system
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # chmod does not stop root from writing


@pytest.fixture
def tiny_run(finished_run):
    """The session's trained tiny classification run (tests/test_bad_input.py), never written to."""
    return finished_run / "run"


@pytest.fixture(scope="module")
def tiny_generation_run(tmp_path_factory):
    """One tiny generation run: 1 epoch on 60 prompts (its outputs are nonsense; only the rows matter)."""
    folder = tmp_path_factory.mktemp("output_paths_generation")
    rows = [{"prompt": f"alpha beta {i}", "response": f"{i} beta alpha"} for i in range(60)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tree = {"task": "generation", "data": {"train": "train.jsonl"}, "tokenizer": {"vocab_size": 300, "min_frequency": 1},
            "model": {"heads": 2, "head_dim": 8, "layers": 1, "d_model": 16, "ffn_dim": 32, "max_length": 24},
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.003, "optimizer": "adamw", "threads": 1, "seed": 0},
            "eval": {"max_decode_rows": 4}, "decode": {"strategy": "greedy", "max_new_tokens": 3}}
    config = folder / "gen.yaml"
    config.write_text(yaml.safe_dump(tree), encoding="utf-8")
    assert main(["run", str(config), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def no_temp_files(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    assert not left, left


# ------------------------------------------------------------------------------------------------
# the shared checks
# ------------------------------------------------------------------------------------------------

def test_check_writable_file_and_folder(tmp_path):
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    (tmp_path / "some_dir").mkdir()
    cases = [
        (check_writable_file, tmp_path / "file.txt" / "out.csv", ("--output", "file.txt", "is a file, not a folder")),
        (check_writable_file, tmp_path / "file.txt" / "deeper" / "out.csv", ("file.txt", "is a file, not a folder")),
        (check_writable_file, tmp_path / "some_dir", ("--output", "some_dir", "is a folder", "file name")),
        (check_writable_file, f"{tmp_path / 'new_dir'}/", ("--output", "new_dir", "is a folder")),
        (check_writable_file, tmp_path / f"{LONG}.csv", ("--output", "304 bytes", "limit of", "shorter name")),
        (check_writable_file, tmp_path / LONG / "out.csv", ("--output", "300 bytes", "shorter name")),
        (check_writable_folder, tmp_path / "file.txt", ("--output", "file.txt", "is a file, not a folder")),
        (check_writable_folder, tmp_path / "file.txt" / "run", ("--output", "cannot create its parent folder")),
        (check_writable_folder, tmp_path / LONG, ("--output", "300 bytes", "shorter name")),
    ]
    for check, path, needles in cases:
        with pytest.raises(RagtuneError) as info:
            check(path, "--output")
        for needle in needles:
            assert needle in str(info.value), (path, needle, str(info.value))
    # fine: a new file in a new folder, an existing file (replacing it is the caller's question), a new folder
    assert check_writable_file(tmp_path / "a" / "b" / "out.csv", "--output") == tmp_path / "a" / "b" / "out.csv"
    check_writable_file(tmp_path / "file.txt", "--output")
    check_writable_folder(tmp_path / "some_dir", "--out")
    check_writable_folder(tmp_path / "new" / "run", "--out")
    check_writable_file(tmp_path / ("y" * 255), "--output")  # exactly the limit
    assert not (tmp_path / "a").exists() and not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.skipif(ROOT, reason="running as root: a read-only folder is still writable")
def test_a_read_only_folder_is_named(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for check, path in ((check_writable_file, ro / "out.csv"), (check_writable_folder, ro / "run"),
                            (check_writable_folder, ro)):
            with pytest.raises(RagtuneError, match="not writable"):
                check(path, "--out")
        expect_user_error(capsys, ["predict", str(tmp_path / "no_run"), "--input", "in.csv", "--output",
                                   str(ro / "p.csv")], "--output", str(ro / "p.csv"), "not writable")
    finally:
        ro.chmod(0o700)


def test_a_failed_write_leaves_no_temp_file_and_the_old_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n", encoding="utf-8")

    def half_then_full(tmp: Path):
        tmp.write_text("half", encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RagtuneError, match=r"--output .*out.csv: cannot write it \(no space left on device\)"):
        write_atomically(target, half_then_full, "--output")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    with pytest.raises(ZeroDivisionError):  # any failure, not only OSError, removes the temporary file
        write_atomically(target, lambda tmp: (tmp.write_text("x"), 1 / 0), "--output")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    write_atomically(tmp_path / ("z" * 250), lambda tmp: tmp.write_text("ok"))  # its .tmp name would be too long
    assert (tmp_path / ("z" * 250)).read_text() == "ok"


# ------------------------------------------------------------------------------------------------
# every writing command
# ------------------------------------------------------------------------------------------------

def test_predict_output_paths_are_checked_before_the_model_is_loaded(tmp_path, capsys):
    """RUN_DIR is not even a run: the output is refused first, so no model would be loaded."""
    (tmp_path / "file.txt").write_text("keep", encoding="utf-8")
    (tmp_path / "some_dir").mkdir()
    good_rows(5).to_csv(tmp_path / "in.csv", index=False)
    base = ["predict", str(tmp_path / "not_a_run"), "--input", str(tmp_path / "in.csv"), "--output"]
    expect_user_error(capsys, base + [str(tmp_path / "file.txt" / "out.csv")],
                      "--output", "file.txt/out.csv", "is a file, not a folder")
    expect_user_error(capsys, base + [str(tmp_path / "some_dir")], "--output", "some_dir", "is a folder")
    expect_user_error(capsys, base + [str(tmp_path / "some_dir") + "/", "--overwrite"], "--output", "is a folder")
    expect_user_error(capsys, base + [str(tmp_path / f"{LONG}.csv")], "--output", "bytes long", "limit of 255")
    assert (tmp_path / "file.txt").read_text(encoding="utf-8") == "keep"


def test_predict_output_written_with_a_full_disk(tiny_run, tmp_path, capsys, monkeypatch):
    good_rows(5).to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "p.csv"
    out.write_text("old predictions\n", encoding="utf-8")
    real = pd.DataFrame.to_csv

    def full_disk(self, path, *args, **kwargs):
        real(self.iloc[:2], path, *args, **kwargs)  # half the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    expect_user_error(capsys, ["predict", str(tiny_run), "--input", str(tmp_path / "in.csv"), "--output", str(out),
                               "--overwrite"], "--output", str(out), "no space left on device")
    assert out.read_text(encoding="utf-8") == "old predictions\n"
    no_temp_files(tmp_path)


def test_run_tune_index_export_reranker_out_paths(tiny_run, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("keep", encoding="utf-8")
    good_rows(40).to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path, tune={"trials": 2, "space": {"train.lr": {"log_uniform": [1e-4, 1e-2]}}})
    under_file, long = tmp_path / "file.txt" / "out", tmp_path / LONG
    before = digest(tiny_run)
    for argv in (["run", str(config), "--quiet"], ["tune", str(config), "--quiet"],
                 ["index", str(tmp_path / "train.csv"), "--quiet"],
                 ["export", str(tiny_run), "--format", "onnx"],
                 ["train-reranker", str(tmp_path / "no_index"), "--questions", "q.json"]):  # before the index is read
        expect_user_error(capsys, argv + ["--out", str(under_file)], "--out", str(under_file),
                          "cannot create its parent folder", "is a file, not a folder")
        expect_user_error(capsys, argv + ["--out", str(long)], "--out", "300 bytes long", "shorter name")
    expect_user_error(capsys, ["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "file.txt")],
                      "--out", "file.txt", "is a file, not a folder")
    assert (tmp_path / "file.txt").read_text(encoding="utf-8") == "keep"
    assert digest(tiny_run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "file.txt", "train.csv"]


def test_an_out_name_too_long_for_its_lock_file(tmp_path, capsys):
    """250 characters pass NAME_MAX, but OUT.lock (255 + ...) would not: still one clear error."""
    (tmp_path / "a.txt").write_text("Rivers flow to the sea.", encoding="utf-8")
    out = tmp_path / ("i" * 254)
    expect_user_error(capsys, ["index", str(tmp_path / "a.txt"), "--out", str(out), "--quiet"],
                      "--out", "cannot create its lock file", "too long")


def test_explain_out_paths(tiny_run, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("keep", encoding="utf-8")
    base = ["explain", str(tiny_run), "bank market", "--steps", "2", "--out"]
    expect_user_error(capsys, base + [str(tmp_path / "file.txt" / "why.html")], "--out", "is a file, not a folder")
    expect_user_error(capsys, base + [str(tmp_path / f"{LONG}.html")], "--out", "bytes long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_export_that_fails_to_write_leaves_no_partial_folder(tiny_run, tmp_path, capsys, monkeypatch):
    import ragtune.export.onnx as onnx

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "export_onnx", full_disk)
    out = tmp_path / "exp"
    expect_user_error(capsys, ["export", str(tiny_run), "--format", "onnx", "--out", str(out)],
                      "--out", str(out), "no space left on device")
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_of_the_machine_is_a_user_error(monkeypatch, capsys):
    import ragtune.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/some/run/model.safetensors")

    monkeypatch.setitem(cli.COMMANDS, "validate", full)
    expect_user_error(capsys, ["validate", "x.yaml"], "/some/run/model.safetensors", "no space left on device")

    def bug(args):
        raise OSError(errno.EBADF, "Bad file descriptor")  # not the machine's doing: a traceback, as bugs are

    monkeypatch.setitem(cli.COMMANDS, "validate", bug)
    with pytest.raises(OSError):
        main(["validate", "x.yaml"])


# ------------------------------------------------------------------------------------------------
# empty and whitespace-only texts: kept, predicted, named in one warning
# ------------------------------------------------------------------------------------------------

def test_read_table_keeps_blank_lines_when_asked(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("text\na\nb\n   \nd\n\ne\n\n\n", encoding="utf-8")
    assert read_table(path, keep_blank_lines=True)["text"].tolist() == ["a", "b", "   ", "d", "", "e"]
    assert read_table(path)["text"].tolist() == ["a", "b", "d", "e"]  # training data: as before
    path.write_text("text,id\na,1\n\nb,2\n", encoding="utf-8")
    assert read_table(path, keep_blank_lines=True).values.tolist() == [["a", "1"], ["", ""], ["b", "2"]]


def test_a_whitespace_row_is_kept_in_order_with_a_warning(tiny_run, tmp_path, capsys):
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inp.write_text("text\nbank market shares\nmatch goal team\n   \nfilm music\nbank shares\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(tiny_run), "--input", str(inp), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: row 3 of {inp} is empty or whitespace only" in err, err
    assert err.count("warning:") == 1
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 5
    assert df.text.tolist() == ["bank market shares", "match goal team", "   ", "film music", "bank shares"]
    assert (df.predicted_label != "").all()
    no_temp_files(tmp_path)
    # an empty line and an empty quoted cell too; JSONL; several rows are named in one warning
    inp.write_text('text\nbank\n\n""\nfilm\n', encoding="utf-8")
    assert main(["predict", str(tiny_run), "--input", str(inp), "--output", str(out), "--overwrite"]) == 0
    assert "warning: rows 2, 3 of" in capsys.readouterr().err
    assert pd.read_csv(out, keep_default_na=False).text.tolist() == ["bank", "", "", "film"]
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"text": "bank"}\n{"text": " \\t "}\n{"text": "goal"}\n', encoding="utf-8")
    assert main(["predict", str(tiny_run), "--input", str(jl), "--output", str(out), "--overwrite"]) == 0
    assert "warning: row 2 of" in capsys.readouterr().err
    assert len(pd.read_csv(out)) == 3


def test_whitespace_texts_on_the_command_line_are_predicted_with_a_warning(tiny_run, capsys):
    capsys.readouterr()
    assert main(["predict", str(tiny_run), "bank market", "  ", ""]) == 0
    captured = capsys.readouterr()
    assert "warning: texts 2, 3 are empty or whitespace only; their predictions carry no information" in captured.err
    assert len(captured.out.strip().splitlines()) == 3


def test_generation_predict_keeps_whitespace_rows(tiny_generation_run, tmp_path, capsys):
    inp, out = tmp_path / "prompts.csv", tmp_path / "out.csv"
    inp.write_text("prompt\nalpha beta 1\nalpha 2\n \nbeta 3\nalpha beta 4\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(tiny_generation_run), "--input", str(inp), "--output", str(out)]) == 0
    assert f"warning: row 3 of {inp} is empty or whitespace only" in capsys.readouterr().err
    df = pd.read_csv(out, keep_default_na=False)
    assert df.prompt.tolist() == ["alpha beta 1", "alpha 2", " ", "beta 3", "alpha beta 4"]
    assert "output" in df.columns
    assert main(["predict", str(tiny_generation_run), "alpha", " "]) == 0
    assert "warning: text 2 is empty or whitespace only" in capsys.readouterr().err
