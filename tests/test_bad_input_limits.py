"""Bad input, round two: inputs whose size or shape would turn into unbounded work or memory.

Alias bombs and huge configs, a CSV header of a million columns, absurd integer flags, a model too big
for the machine's memory, a run folder whose ``model.json`` is not a ragtune one, and deeply nested
input of every kind. The contract is the one of tests/test_bad_input.py: exit 2, one message naming
the file / key / flag and the limit, no traceback, nothing already written changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_bad_input import digest, expect_user_error, finished_run, good_rows, write_config  # noqa: F401  (the session's run)

from ragtune.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m ragtune ARGV`` in a subprocess (an abort or a hang must not take pytest with it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ragtune", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def expect_exit_2(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle.lower() in proc.stderr.lower(), (needle, proc.stderr[-3000:])
    return proc.stderr


def alias_bomb(levels: int = 9, width: int = 9) -> list[str]:
    """The lines of a "billion laughs": a0 holds ``width`` strings, each a<i> ``width`` aliases of a<i-1>."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return lines


# ------------------------------------------------------------------------------------------------
# 1. YAML: alias bombs, huge files
# ------------------------------------------------------------------------------------------------

def test_an_alias_bomb_in_a_config_is_refused_before_it_is_expanded(tmp_path, capsys):
    good_rows().to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path)
    text = config.read_text(encoding="utf-8").replace("data:\n", "\n".join(alias_bomb()) + "\ndata:\n", 1)
    text = text.replace("data:\n", "data:\n  keep_labels: *a9\n", 1)  # a list key: pydantic would expand it
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text, encoding="utf-8")
    expect_exit_2(run_cli("validate", str(bomb), timeout=60), "bomb.yaml", "aliases", "200,000")


def test_an_alias_bomb_in_an_override_is_refused(tmp_path, capsys):
    good_rows().to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path)
    value = "[&a0 [" + ", ".join(["lol"] * 10) + "]"
    value += "".join(f", &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)) + "]"
    expect_user_error(capsys, ["validate", str(config), f"data.keep_labels={value}"],
                      "override data.keep_labels", "aliases", "200,000")


def test_a_value_that_holds_itself_is_refused(tmp_path, capsys):
    # `&a [*a]` is a recursive YAML node: sizing it must not loop (found by tests/test_cli_fuzz.py: 8 GB, no end)
    good_rows().to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path)
    for value in ("&a [*a]", "&a {x: [1, *a]}"):
        expect_user_error(capsys, ["validate", str(config), f"train.lr={value}"], "override train.lr", "holds itself")
    text = config.read_text(encoding="utf-8") + "x-loop: &loop [1, *loop]\n"
    (tmp_path / "loop.yaml").write_text(text, encoding="utf-8")
    expect_exit_2(run_cli("validate", str(tmp_path / "loop.yaml"), timeout=60), "loop.yaml", "holds itself")


def test_a_few_aliases_and_merges_still_work(tmp_path, capsys):
    good_rows().to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path)
    tree = yaml.safe_load(config.read_text(encoding="utf-8"))
    text = yaml.safe_dump({k: v for k, v in tree.items() if k != "train"})
    text += ("base: &base {optimizer: adamw, lr: 0.003, epochs: 1, batch_size: 8, seed: 0}\n"
             "train:\n  <<: *base\n  threads: 1\n").replace("base: &base", "x-base: &base")
    path = tmp_path / "anchors.yaml"
    path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert main(["validate", str(path)]) == 2  # x-base is not a key; the anchors themselves are fine
    assert "x-base" in capsys.readouterr().err
    assert main(["validate", str(config), "data.keep_labels=[&x sport, *x, economy]"]) == 0


def test_a_huge_config_is_refused_by_its_size(tmp_path, capsys):
    huge = tmp_path / "huge.yaml"
    with huge.open("w", encoding="utf-8") as f:
        f.write("task: classification\n")
        f.write("# padding\n" * (11 * 2**20 // 10))
    expect_user_error(capsys, ["validate", str(huge)], "huge.yaml", "too large for a config", "10,485,760")
    expect_user_error(capsys, ["run", str(huge), "--out", str(tmp_path / "run"), "--quiet"], "huge.yaml", "too large")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------
# 3. integer flags with an upper bound
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, needles", [
    (["explain", "{run}", "text", "--steps", str(10**9)], ("--steps", "1-1,000", "1,000,000,000")),
    (["explain", "{run}", "text", "--steps", "0"], ("--steps", "1-1,000", "got 0")),
    (["predict", "{run}", "text", "--beam-size", str(10**6)], ("--beam-size", "1-128")),
    (["predict", "{run}", "text", "--max-new-tokens", str(10**9)], ("--max-new-tokens", "1-8,192")),
    (["retrieve", "{tmp}/idx", "query", "-k", str(10**9)], ("-k", "1-10,000")),
    (["eval-retrieval", "{tmp}/idx", "--questions", "q.json", "-k", "1", str(10**8)], ("-k", "1-10,000")),
    (["retrieve", "{tmp}/idx", "query", "--rerank", "{tmp}/r", "--candidates", str(10**9)], ("--candidates", "1-10,000")),
    (["index", "{tmp}/docs", "--out", "{tmp}/idx2", "--chunk-tokens", str(10**9)], ("--chunk-tokens", "1-8,192")),
    (["index", "{tmp}/docs", "--out", "{tmp}/idx2", "--batch-size", str(10**9)], ("--batch-size", "1-4,096")),
    (["train-reranker", "{tmp}/idx", "--questions", "q.json", "--out", "{tmp}/r2", "--max-length", str(10**7)],
     ("--max-length", "1-8,192")),
    (["serve", "{run}", "--workers", "100000", "--port", "0"], ("--workers", "1-256")),
    (["serve", "{run}", "--max-batch-size", str(10**9), "--port", "0"], ("--max-batch-size", "1-4,096")),
])
def test_absurd_integer_flags_name_the_flag_and_its_range(argv, needles, tmp_path, capsys):
    run = tmp_path / "not_even_a_run"  # the flags are checked before the folders are read
    run.mkdir()
    argv = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in argv]
    expect_user_error(capsys, argv, *needles)
    assert not (tmp_path / "idx2").exists() and not (tmp_path / "r2").exists()


# ------------------------------------------------------------------------------------------------
# 5. a model.json that is not a ragtune one
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def trained_run(finished_run):
    return finished_run / "run"


def _empty_object(path):
    path.write_text("{}", encoding="utf-8")
    return ("no 'task' key",)


def _a_list(path):
    path.write_text("[]", encoding="utf-8")
    return ("JSON list, not an object",)


def _unknown_task(path):
    path.write_text(json.dumps({"task": "nope"}), encoding="utf-8")
    return ("'nope'", "classification")


def _hf_config(path):
    path.write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 768}), encoding="utf-8")
    return ("no 'task' key", "hugging face config.json")


def _invalid_json(path):
    path.write_text('{"task": "classification", ', encoding="utf-8")
    return ("not valid JSON",)


def _a_folder(path):
    path.mkdir()
    return ("is a folder",)


def _keys_missing(path):
    path.write_text(json.dumps({"task": "classification"}), encoding="utf-8")
    return ("missing key 'model_config'",)


def _wrong_types(path):
    meta = json.loads((path.parent / "model.json.orig").read_text(encoding="utf-8"))
    path.write_text(json.dumps({**meta, "model_config": [1, 2, 3]}), encoding="utf-8")
    return ("not the model.json of a finished ragtune classification run",)


META_CASES = {"{}": _empty_object, "[]": _a_list, "unknown task": _unknown_task, "a Hugging Face config": _hf_config,
              "invalid JSON": _invalid_json, "a folder": _a_folder, "keys missing": _keys_missing,
              "wrong types": _wrong_types}


@pytest.mark.parametrize("case", list(META_CASES))
def test_a_model_json_that_is_not_ragtune_s(case, trained_run, tmp_path, capsys):
    from ragtune.serve.service import load_service

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "model.json").rename(run / "model.json.orig")
    needles = META_CASES[case](run / "model.json")
    before = digest(run)
    name = str(run / "model.json")
    expect_user_error(capsys, ["predict", str(run), "some text"], name, *needles)
    expect_user_error(capsys, ["serve", str(run), "--port", "0"], name, *needles)
    expect_user_error(capsys, ["explain", str(run), "some text", "--steps", "2"], name, *needles)
    good_rows(6).to_csv(tmp_path / "eval.csv", index=False)
    expect_user_error(capsys, ["eval", str(run), "--data", str(tmp_path / "eval.csv")], name, *needles)
    with pytest.raises(Exception) as info:
        load_service(run)
    assert type(info.value).__name__ == "RagtuneError" and name in str(info.value)
    assert digest(run) == before


# ------------------------------------------------------------------------------------------------
# 6. deeply nested input: JSONL (tests/test_bad_input.py), SQuAD JSON, YAML, overrides
# ------------------------------------------------------------------------------------------------

def test_a_deeply_nested_yaml_config_and_override(tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("task: classification\nmodel:\n  layers: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    expect_user_error(capsys, ["validate", str(deep)], "deep.yaml", "nested too deeply")
    good_rows().to_csv(tmp_path / "train.csv", index=False)
    config = write_config(tmp_path)
    expect_user_error(capsys, ["validate", str(config), "model.layers=" + "[" * 100_000], "model.layers", "nested too deeply")
    expect_user_error(capsys, ["validate", str(config), "model.layers=" + "{a: " * 50_000], "model.layers", "nested too deeply")


def test_a_deeply_nested_squad_json(tmp_path, capsys):
    deep = tmp_path / "squad.json"
    deep.write_text('{"version": "1.1", "data": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Rivers flow to the sea.", encoding="utf-8")
    assert main(["index", str(docs), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    expect_user_error(capsys, ["eval-retrieval", str(tmp_path / "idx"), "--questions", str(deep), "--quiet"], "squad.json")
    expect_user_error(capsys, ["index", str(deep), "--out", str(tmp_path / "idx2"), "--quiet"], "squad.json")
    assert not (tmp_path / "idx2").exists()


def test_a_deeply_nested_corpus_jsonl_line(tmp_path, capsys):
    deep = tmp_path / "corpus.jsonl"
    deep.write_text('{"text": "ok"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    expect_user_error(capsys, ["index", str(deep), "--out", str(tmp_path / "idx"), "--quiet"],
                      "corpus.jsonl", "line 2", "nested too deeply")
    assert not (tmp_path / "idx").exists()


# ------------------------------------------------------------------------------------------------
# 2. a CSV header of a million columns, a first line without end
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header, needles", [
    ("a," * 1_000_000, ("first line", "longer than 1,048,576 characters")),
    (",".join(f"c{i}" for i in range(20_000)), ("header names 20,000 columns", "at most 10,000")),
])
def test_a_csv_header_of_too_many_columns_exits_2_instead_of_aborting(header, needles, tmp_path):
    """In a subprocess: pandas' C parser aborts the process (or works for minutes) on such a header."""
    (tmp_path / "train.csv").write_text(header + "\n" + "x,y\n" * 3, encoding="utf-8")
    config = write_config(tmp_path)
    out = tmp_path / "run"
    expect_exit_2(run_cli("run", str(config), "--out", str(out), "--quiet"), "train.csv", *needles)
    assert not (out / "model.json").exists()


def test_a_wide_predict_input_is_refused(trained_run, tmp_path, capsys):
    (tmp_path / "in.tsv").write_text("\t".join(["text"] * 10_001) + "\nhello\n", encoding="utf-8")
    expect_user_error(capsys, ["predict", str(trained_run), "--input", str(tmp_path / "in.tsv"), "--output",
                               str(tmp_path / "out.csv")], "in.tsv", "TSV header names 10,001 columns")
    assert not (tmp_path / "out.csv").exists()


# ------------------------------------------------------------------------------------------------
# 4. a model too large for the memory
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task, overrides, needles", [
    ("classification", ["model.d_model=65536", "model.layers=96", "model.ffn_dim=262144"],
     ("model.d_model 65,536", "model.layers 96", "model.ffn_dim 262,144")),
    ("generation", ["tokenizer.vocab_size=100000000000", "model.d_model=1024"], ("tokenizer.vocab_size 100,000,000,000",)),
    ("translation", ["model.layers=100000", "model.d_model=4096"], ("model.layers 100,000",)),
])
def test_a_model_of_more_than_a_terabyte_is_refused_naming_its_keys(task, overrides, needles, tmp_path, capsys):
    good_rows().rename(columns={"text": "source", "label": "target"}).assign(text=lambda d: d.source).to_csv(
        tmp_path / "train.csv", index=False)
    config = write_config(tmp_path, task=task)
    if task != "classification":
        tree = yaml.safe_load(config.read_text(encoding="utf-8"))
        tree["model"].pop("max_length"), tree["model"].update(max_length=32)
        config.write_text(yaml.safe_dump(tree), encoding="utf-8")
    common = ("too large for this machine's memory", "parameters", "GiB to train", "is available", *needles)
    expect_user_error(capsys, ["validate", str(config), *overrides], "cfg.yaml", *common)
    out = tmp_path / "run"
    expect_user_error(capsys, ["run", str(config), *overrides, "--out", str(out), "--quiet"], *common)
    assert not out.exists()


def test_the_memory_estimate_against_a_given_budget(tmp_path):
    from ragtune.config import TRAINING_BYTES_PER_PARAMETER, check_model_memory, scratch_model_size
    from ragtune.errors import RagtuneError
    from ragtune.tasks import config_from_dict

    cfg = config_from_dict({"task": "classification", "data": {"train": "x.csv"}, "tokenizer": {"vocab_size": 8000}})
    params, sizes = scratch_model_size(cfg)
    assert 3_000_000 < params < 4_000_000 and sizes["tokenizer.vocab_size"] == 8000  # 8000*256 + 2 layers
    check_model_memory(cfg, "cfg.yaml", available=params * TRAINING_BYTES_PER_PARAMETER)
    with pytest.raises(RagtuneError, match="cfg.yaml: the model is too large .*model.d_model 256"):
        check_model_memory(cfg, "cfg.yaml", available=params * TRAINING_BYTES_PER_PARAMETER - 1)
    hf = config_from_dict({"task": "classification", "data": {"train": "x.csv"},
                           "model": {"backbone": "hf", "name_or_path": "some/model"}})
    assert scratch_model_size(hf) is None
    check_model_memory(hf, "hf.yaml", available=1)  # a pretrained model is sized by its own files


def test_an_allocation_failure_while_building_names_the_keys(trained_run, tmp_path, capsys):
    """A model.json whose sizes pass no config check (written by hand): torch's allocator refuses the
    table, and the error names the keys instead of a DefaultCPUAllocator traceback."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta = json.loads((run / "model.json").read_text(encoding="utf-8"))
    meta["model_config"]["d_model"] = 2**40
    (run / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    expect_user_error(capsys, ["predict", str(run), "some text"], "not enough memory to build the model",
                      f"model.d_model {2**40}", "tokenizer.vocab_size")
