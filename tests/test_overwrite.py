"""`ragtune run --overwrite` (cli.py, ragtune/staging.py): it never deletes an input of the run, and
it replaces the earlier run only once the new one has finished; until then the earlier run stays as it was."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from ragtune.cli import main
from ragtune.tasks.classification import recipe as classification_recipe


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished tiny classification run: (the config, its run directory), copied per test."""
    import conftest

    folder = tmp_path_factory.mktemp("overwrite")
    (folder / "data").mkdir()
    conftest._news_rows(120).to_csv(folder / "data" / "train.csv", index=False)
    conftest._news_rows(30, seed=1).to_csv(folder / "data" / "test.csv", index=False)
    cfg = {"task": "classification", "data": {"train": "data/train.csv", "test": "data/test.csv"},
           "tokenizer": {"vocab_size": 200, "min_frequency": 1}, "model": conftest.TINY_MODEL,
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1, "batch_size": 16, "seed": 0}}
    config = folder / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["run", str(config), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder


@pytest.fixture
def work(earlier_run, tmp_path, monkeypatch):
    shutil.copytree(earlier_run, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    return tmp_path / "w"


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert (err.startswith("error: ") or "\nerror: " in err) and "Traceback" not in err, err
    return err


def test_a_config_and_data_inside_out_are_never_deleted(work, capsys):
    # the reported case: the config and the training data in DIR, `run DIR/cfg.yaml --out DIR --overwrite`
    folder = work / "project"
    folder.mkdir()
    shutil.copy(work / "data" / "train.csv", folder / "train.csv")
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    config = yaml.safe_load((work / "cfg.yaml").read_text())
    config["data"] = {"train": "train.csv"}
    (folder / "cfg.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    before = digest(folder)
    err = _error(capsys, ["run", str(folder / "cfg.yaml"), "--out", str(folder), "--overwrite", "--quiet"])
    assert "not a ragtune run directory" in err and "config.yaml" in err
    assert digest(folder) == before
    # the same when DIR is a run directory that also holds the run's data
    shutil.copytree(work / "run", folder, dirs_exist_ok=True)
    before = digest(folder)
    err = _error(capsys, ["run", str(folder / "cfg.yaml"), "--out", str(folder), "--overwrite", "--quiet"])
    assert "would delete the config file" in err and str(folder / "cfg.yaml") in err
    config["data"] = {"train": str(folder / "train.csv")}
    (work / "outside.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    before = digest(folder)
    err = _error(capsys, ["run", str(work / "outside.yaml"), "--out", str(folder), "--overwrite", "--quiet"])
    assert "data.train" in err and "train.csv" in err and "input of this run" in err
    assert digest(folder) == before and leftovers(folder) == []


def test_a_data_error_leaves_the_earlier_run_as_it_was(work, capsys):
    before = digest(work / "run")
    (work / "data" / "bad.csv").write_text("text,category\nhello,x\n", encoding="utf-8")
    err = _error(capsys, ["run", "cfg.yaml", "data.train=data/bad.csv", "--out", "run", "--overwrite", "--quiet"])
    assert "label" in err and "earlier run in run is unchanged" in err
    assert digest(work / "run") == before and leftovers(work / "run") == []


def test_ctrl_c_leaves_the_earlier_run_as_it_was(work, capsys, monkeypatch):
    before = digest(work / "run")
    real = classification_recipe.train_model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(classification_recipe, "train_model", interrupted)
    assert main(["run", "cfg.yaml", "--out", "run", "--overwrite", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "earlier run in run is unchanged" in err and "Traceback" not in err
    assert digest(work / "run") == before and leftovers(work / "run") == []
    monkeypatch.setattr(classification_recipe, "train_model", real)


def test_a_finished_run_replaces_the_earlier_one(work, capsys):
    stale = work / ".run.tmp-999999"  # what a killed earlier --overwrite left behind
    stale.mkdir()
    (stale / "x").write_text("x")
    assert main(["run", "cfg.yaml", "train.epochs=2", "--out", "run", "--overwrite", "--quiet"]) == 0
    assert "interrupted earlier write" in capsys.readouterr().err
    assert yaml.safe_load((work / "run" / "config.yaml").read_text())["train"]["epochs"] == 2
    assert (work / "run" / "report.md").exists() and leftovers(work / "run") == []
    assert not (work / "run.lock").exists()


def test_the_current_folder_is_never_replaced(work, capsys, monkeypatch):
    monkeypatch.chdir(work / "run")
    before = digest(work / "run")
    err = _error(capsys, ["run", str(work / "cfg.yaml"), "--out", ".", "--overwrite", "--quiet"])
    assert "current folder" in err
    assert digest(work / "run") == before
    assert os.getcwd() == str(work / "run")
