"""The real CLI, end to end, on tiny configs (subprocess for the console script, main() for speed)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_MODEL

from ragtune.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_console_script_end_to_end(tiny_config, tmp_path):
    out = tmp_path / "run"
    exe = Path(sys.executable).with_name("ragtune")
    proc = subprocess.run([str(exe), "run", str(tiny_config), "train.epochs=3", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout
    for name in ("config.yaml", "inputs.json", "data_report.md", "tokenizer.json", "model.safetensors", "model.json",
                 "metrics.json", "train_log.jsonl", "run.log", "report.md", "curves.png", "confusion_matrix_test.png",
                 "history.json", "checkpoints/last/state.pt"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"validation", "test"}
    assert {"accuracy", "macro_f1", "micro_f1", "weighted_f1", "per_class", "confusion_matrix"} <= set(metrics["test"])
    assert metrics["test"]["accuracy"] > 0.6  # three easy classes, chance is 0.33
    inputs = json.loads((out / "inputs.json").read_text())
    assert len(inputs["data.train"]["sha256"]) == 64
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 3
    report = (out / "report.md").read_text()
    assert "| accuracy |" in report and "confusion_matrix_test.png" in report

    # predict: one JSON line per text, Chinese included
    proc = subprocess.run([str(exe), "predict", str(out), "parliament vote election", "电影 明星 电影"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 2
    assert set(lines[0]["scores"]) == {"economy", "entertainment", "politics"}
    assert abs(sum(lines[0]["scores"].values()) - 1) < 1e-4
    assert lines[0]["label"] == "politics"


def test_eval_and_predict_files(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    test_file = tiny_config.parent / "data" / "test.csv"
    assert main(["eval", str(out), "--data", str(test_file)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"])  # one predictor, one result

    output = tmp_path / "pred.csv"
    assert main(["predict", str(out), "--input", str(test_file), "--output", str(output)]) == 0
    df = pd.read_csv(output)
    assert {"predicted_label", "score_politics", "text", "label"} <= set(df.columns) and len(df) == 30
    # an existing output is not overwritten without --overwrite
    assert main(["predict", str(out), "--input", str(test_file), "--output", str(output)]) == 2
    assert "exists" in capsys.readouterr().err


def test_existing_run_dir_is_refused_and_kept(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and "--overwrite" in err
    assert (out / "precious.txt").read_text() == "keep me"


def test_resume_continues_a_run(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_config), "train.epochs=1", "--out", str(out), "--quiet"]) == 0
    assert main(["run", str(tiny_config), "train.epochs=2", "--resume", str(out), "--quiet"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    capsys.readouterr()
    assert main(["run", str(tiny_config), "model.layers=2", "--resume", str(out), "--quiet"]) == 2
    assert "model.layers: 1 -> 2" in capsys.readouterr().err
    # the data changed since the run started: refused (inputs.json keeps the hash the run was trained on)
    train = tmp_path / "data" / "train.csv"
    inputs = (out / "inputs.json").read_text()
    train.write_text(train.read_text(encoding="utf-8") + "one more row,politics\n", encoding="utf-8")
    assert main(["run", str(tiny_config), "train.epochs=3", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data changed" in err and "data.train" in err and str(train) in err and "Traceback" not in err
    assert (out / "inputs.json").read_text() == inputs
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]


def test_user_errors_exit_2_without_traceback(tiny_config, tmp_path):
    exe = Path(sys.executable).with_name("ragtune")
    proc = subprocess.run([str(exe), "run", str(tiny_config), "model.layrs=2", "data.text_column=body"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "model.layrs: unknown key (did you mean 'model.layers'?)" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([str(exe), "run", str(tiny_config), "data.text_column=body", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "body" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([str(exe), "--debug", "predict", str(tmp_path / "nothing"), "x"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" in proc.stderr  # --debug shows it


def test_validate_show_and_help(tiny_config, capsys):
    assert main(["validate", str(tiny_config), "train.epochs=5", "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 5 and shown["model"]["heads"] == 2
    assert main(["validate", str(tiny_config), "train.epocs=5"]) == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "ragtune run" in capsys.readouterr().out


def test_regression_end_to_end(tmp_path, capsys):
    import random

    rng = random.Random(0)
    rows = []
    for _ in range(160):
        k = rng.randint(0, 5)
        rows.append({"text": " ".join(["good"] * k + ["plain"] * (6 - k)), "score": float(k)})
    pd.DataFrame(rows).to_csv(tmp_path / "scores.csv", index=False)
    cfg = {"task": "regression", "data": {"train": "scores.csv", "label_column": "score"},
           "tokenizer": {"vocab_size": 100, "min_frequency": 1}, "model": TINY_MODEL,
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 4, "batch_size": 16}}
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mse", "mae", "r2", "pearson"} <= set(metrics["test"])
    assert metrics["test"]["r2"] > 0.5
    capsys.readouterr()
    assert main(["predict", str(out), "good good good good good plain"]) == 0
    assert "value" in json.loads(capsys.readouterr().out)


def test_chinese_end_to_end(tmp_path, capsys):
    import random
    import warnings

    rng = random.Random(0)
    words = {"体育": ["比赛", "球队", "冠军", "进球"], "财经": ["股市", "银行", "利率", "投资"], "娱乐": ["电影", "明星", "演唱会", "导演"]}
    filler = ["今天", "新闻", "报道", "我们", "发布"]
    rows = [{"text": "".join(rng.choice(words[label] if rng.random() < 0.5 else filler) for _ in range(6)), "label": label}
            for i in range(150) for label in [list(words)[i % 3]]]
    pd.DataFrame(rows).to_csv(tmp_path / "zh.csv", index=False)
    cfg = {"data": {"train": "zh.csv"}, "tokenizer": {"vocab_size": 300, "min_frequency": 1}, "model": TINY_MODEL,
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 3, "batch_size": 16}}
    path = tmp_path / "zh.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    from ragtune.evaluate.plots import find_cjk_font

    if find_cjk_font():
        assert not [w for w in caught if "Glyph" in str(w.message)], "Chinese labels must render in the pictures"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["test"]["per_class"]) == {"体育", "娱乐", "财经"}
    assert metrics["test"]["accuracy"] > 0.6
    assert "体育" in (out / "report.md").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(out), "球队比赛冠军进球"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["label"] == "体育"


def test_ctrl_c_during_run_prints_one_line_and_exits_130(tiny_config, tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "run"
    exe = Path(sys.executable).with_name("ragtune")
    # SIGINT as a terminal gives it: a job started with `&` by a shell without job control inherits SIGINT
    # ignored (POSIX), and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([str(exe), "run", str(tiny_config), "train.epochs=200", "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "checkpoints").exists() and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("interrupted")] == [lines[-1]], err
    assert lines[-1] == f"interrupted: the run can be resumed with ragtune run {tiny_config} --resume {out}", err


def test_ctrl_c_before_a_run_directory_exists(monkeypatch, capsys):
    import ragtune.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "validate", interrupted)
    assert main(["validate", "whatever.yaml"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("argv", [["predict", "RUN", "fine", b"bad \xff text"],
                                  ["retrieve", "INDEX", "fine", b"bad \xff text"],
                                  ["explain", "RUN", b"bad \xff text"]])
def test_texts_that_are_not_utf8_are_refused(argv, tmp_path):
    exe = Path(sys.executable).with_name("ragtune")
    argv = [str(tmp_path / a) if a in ("RUN", "INDEX") else a for a in argv]
    proc = subprocess.run([str(exe), *argv], capture_output=True, timeout=120)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "not valid UTF-8" in err and "bad \\xff text" in err, err
    position = "text 2" if argv[0] == "predict" else "QUERY 2" if argv[0] == "retrieve" else "text"
    assert position in err, err


@pytest.mark.parametrize("argv, expected", [
    (["predict", "RUN", "--strategy", "greedy", "some text", "more"],
     {"run_dir": "RUN", "texts": ["some text", "more"], "strategy": "greedy"}),
    (["run", "cfg.yaml", "--out", "X", "train.epochs=3", "--quiet", "model.layers=2"],
     {"config": "cfg.yaml", "overrides": ["train.epochs=3", "model.layers=2"], "out": "X", "quiet": True}),
    (["--debug", "retrieve", "IDX", "q1", "-k", "3", "q2"], {"queries": ["q1", "q2"], "k": 3, "debug": True}),
    (["index", "a.txt", "--out", "I", "b.txt", "--kind", "dense"], {"corpus": ["a.txt", "b.txt"], "kind": "dense"}),
])
def test_options_may_stand_among_positional_arguments(argv, expected):
    from ragtune.cli import parse_args

    args = vars(parse_args(argv))
    assert {k: args[k] for k in expected} == expected


def test_unknown_options_are_still_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "RUN", "--bogus", "text"])
    assert exc.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_the_json_schema_accepts_every_example_config_and_refuses_unknown_keys(capsys):
    jsonschema = pytest.importorskip("jsonschema")
    assert main(["validate", "--json-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    validator = jsonschema.Draft202012Validator(schema)
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8"))))
        assert not errors, f"{path.name}: {errors[0].message}"
    assert list(validator.iter_errors({"task": "qa", "train": {"epocs": 3}}))  # a misspelt key
    assert list(validator.iter_errors({"task": "summarise"}))  # no such task


def test_packaged_configs_are_listed_run_by_name_and_copied(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    assert "demo " in listing and "seed_news" in listing and "ragtune cp NAME" in listing
    assert main(["validate", "demo"]) == 0 and capsys.readouterr().out.strip().endswith("demo.yaml: OK")
    assert main(["validate", "dmo"]) == 2 and "did you mean 'demo'?" in capsys.readouterr().err
    # an example whose data is not here: tests/test_api.py::test_a_packaged_example_without_its_data_says_...
    assert main(["cp", "demo"]) == 0 and (tmp_path / "demo.yaml").is_file()
    assert main(["cp", "demo"]) == 2 and "add --overwrite" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    assert main(["cp", "demo", "mine", "--overwrite"]) == 0
    copied = (tmp_path / "mine" / "demo.yaml").read_text(encoding="utf-8")
    from ragtune.api import packaged_configs

    assert copied == packaged_configs()["demo"].read_text(encoding="utf-8")
    assert main(["run", "demo", "train.epochs=1", "train.steps_per_epoch=2", "model.layers=1", "--out", "r", "--quiet"]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["test"]["accuracy"] >= 0


def test_rerun_gives_the_same_metrics_with_the_runs_own_tokenizer(tiny_config, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["run", str(tiny_config), "--out", str(first), "--quiet"]) == 0
    assert main(["rerun", str(first), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    capsys.readouterr()
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert again["tokenizer"]["path"] == str((first / "tokenizer.json").resolve())
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (first, tmp_path / "again"))
    assert a["test"] == b["test"] and a["validation"] == b["validation"]
    assert (first / "tokenizer.json").read_text() == (tmp_path / "again" / "tokenizer.json").read_text()
    assert main(["rerun", str(first), "--out", str(first)]) == 2
    assert "is the run being re-run" in capsys.readouterr().err
    assert main(["rerun", str(tmp_path)]) == 2 and "not a ragtune run directory" in capsys.readouterr().err
