"""Config loading, overrides, path resolution and error reporting."""

from pathlib import Path

import pytest
import yaml

from ragtune.config import TaskConfig, TrainConfig, to_yaml
from ragtune.tasks import config_from_dict, config_reference, load_config, valid_keys
from ragtune.errors import RagtuneError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, TaskConfig)
    # round trip: the resolved YAML validates to the same config
    assert config_from_dict(yaml.safe_load(to_yaml(cfg))) == cfg
    if cfg.tune.space:  # a tuning config: its search space is valid too
        from ragtune.tuning import parse_space

        assert parse_space(cfg, cfg.tune.space, cfg.tune.sampler)


def test_seed_config_is_the_articles_example():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "seed_news.yaml")
    m, t = cfg.model, cfg.train
    assert (m.heads, m.layers, m.d_model, m.head_dim, m.ffn_dim) == (6, 12, 256, 64, 1024)
    assert (t.optimizer, t.lr, t.momentum, t.epochs, t.steps_per_epoch, t.batch_size) == ("sgd", 0.001, 0.9, 10, 100, 16)
    assert cfg.data.keep_labels == ["politics", "business", "entertainment"]
    assert cfg.data.train.endswith("shared/data/bbc_news/train.csv")


def _write(tmp_path, tree, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def test_overrides_are_typed_and_dotted(tmp_path):
    path = _write(tmp_path, {"data": {"train": "t.csv"}})
    cfg = load_config(path, ["train.epochs=7", "model.layers=4", "train.lr=3e-4", "data.keep_labels=[a, b]"])
    assert cfg.train.epochs == 7 and cfg.model.layers == 4 and cfg.train.lr == 3e-4
    assert cfg.data.keep_labels == ["a", "b"]


def test_null_override_unsets_to_default(tmp_path):
    path = _write(tmp_path, {"data": {"train": "t.csv"}, "train": {"steps_per_epoch": 100, "epochs": 9}})
    cfg = load_config(path, ["train.steps_per_epoch=null", "train.epochs=null", "train.clip_grad_norm=null"])
    assert cfg.train.steps_per_epoch is None
    assert cfg.train.clip_grad_norm is None  # nullable: null disables clipping
    assert cfg.train.epochs == TrainConfig().epochs  # not nullable: back to the default


def test_relative_paths_resolve_against_config_folder_and_cwd(tmp_path):
    sub = tmp_path / "configs"
    sub.mkdir()
    path = _write(sub, {"data": {"train": "../data/train.csv", "test": "/abs/test.csv"}})
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    cfg = load_config(path, ["data.validation=val.csv"], cwd=elsewhere)
    assert cfg.data.train == str(tmp_path / "data" / "train.csv")
    assert cfg.data.test == "/abs/test.csv"
    assert cfg.data.validation == str(elsewhere / "val.csv")


def test_all_errors_reported_at_once_with_suggestions(tmp_path):
    path = _write(tmp_path, {"data": {"trian": "t.csv"}, "model": {"heads": 0, "dropuot": 0.1}, "train": {"optimizer": "adam", "lr": -1}})
    with pytest.raises(RagtuneError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "data.trian: unknown key (did you mean 'data.train'?)" in msg
    assert "model.dropuot: unknown key (did you mean 'model.dropout'?)" in msg
    assert "model.heads" in msg and "greater than 0" in msg
    assert "train.optimizer: must be one of 'sgd' or 'adamw' (got 'adam')" in msg
    assert "train.lr" in msg
    assert "data.train: required" in msg  # the misspelt key leaves it unset: every error at once
    assert "6 config errors" in msg


def test_unknown_top_level_key_and_wrong_section_key(tmp_path):
    with pytest.raises(RagtuneError) as info:
        config_from_dict({"tsak": "classification", "data": {"train": "x.csv"}, "train": {"layers": 3}})
    msg = str(info.value)
    assert "tsak: unknown key (did you mean 'task'?)" in msg
    assert "train.layers: unknown key (did you mean 'model.layers'?)" in msg


def test_semantic_errors(tmp_path):
    with pytest.raises(RagtuneError) as info:
        config_from_dict({"task": "regression", "data": {"keep_labels": ["a"]}, "train": {"label_smoothing": 0.1}, "eval": {"metric": "accuracy"}})
    msg = str(info.value)
    assert "data.train: required" in msg
    assert "train.label_smoothing" in msg and "data.keep_labels" in msg
    assert "eval.metric: 'accuracy' is not a regression metric" in msg


def test_bad_override_syntax_and_files(tmp_path):
    with pytest.raises(RagtuneError, match="not of the form key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(RagtuneError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed", encoding="utf-8")
    with pytest.raises(RagtuneError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string", encoding="utf-8")
    with pytest.raises(RagtuneError, match="must be a YAML mapping"):
        load_config(scalar)


def test_reference_documents_every_key():
    ref = config_reference()
    for key in valid_keys():
        assert f"`{key}`" in ref
    assert "| `train.lr` | float | `0.001` |" in ref


def test_docs_config_reference_is_current():
    readme = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    start, end = "<!-- config-reference:start -->\n", "\n<!-- config-reference:end -->"
    assert start in readme and end in readme
    documented = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert documented == config_reference().strip(), "regenerate with `python docs/gen_reference.py`"


# the per-task schemas (ragtune/tasks/<task>/config.py) and their union

MINIMAL = {
    "classification": {"data": {"demo": True}},
    "regression": {"task": "regression", "data": {"train": "x.csv"}},
    "qa": {"task": "qa", "data": {"train": "x.json"}, "model": {"name_or_path": "some/reader"}},
    "translation": {"task": "translation", "data": {"train": {"source": "a.en", "target": "a.de"}}},
    "generation": {"task": "generation", "data": {"train": "x.csv"}},
}


@pytest.mark.parametrize("task", list(MINIMAL))
def test_every_task_selects_on_its_own_metrics(task):
    cfg = config_from_dict(MINIMAL[task])
    metrics = type(cfg).METRICS[task]
    assert cfg.selection_metric == metrics[0]
    for metric in metrics:  # each one selects
        assert config_from_dict({**MINIMAL[task], "eval": {"metric": metric}, "tune": {"metric": metric}}).selection_metric == metric
    with pytest.raises(RagtuneError) as info:
        config_from_dict({**MINIMAL[task], "eval": {"metric": "nope"}})
    assert f"eval.metric: 'nope' is not a {task} metric; choose one of {list(metrics)}" in str(info.value)


def test_generation_metric_validates(tmp_path, capsys):
    """`ragtune validate configs/squad_generate.yaml eval.metric=rougeL` died with KeyError: 'generation'."""
    from ragtune.cli import main

    squad = tmp_path / "squad.json"
    squad.write_text("{}", encoding="utf-8")
    config = CONFIGS[0].parent / "squad_generate.yaml"
    paths = [f"data.train={squad}", f"retrieval.corpus=[{squad}]"]
    assert main(["validate", str(config), "eval.metric=rougeL", *paths]) == 0
    assert main(["validate", str(config), "eval.metric=accuracy", *paths]) == 2
    assert "eval.metric: 'accuracy' is not a generation metric; choose one of ['rougeL'" in capsys.readouterr().err


def test_three_mistakes_report_three_errors():
    """A type error, an enum error and a cross-field rule: the rules run on the config without the bad keys."""
    with pytest.raises(RagtuneError) as info:
        config_from_dict({"data": {"demo": True}, "train": {"lr": "fast"}, "model": {"activation": "tanh"},
                          "retrieval": {"chunk_overlap": 200}})
    msg = str(info.value)
    assert "3 config errors" in msg
    assert "train.lr: Input should be a valid number" in msg
    assert "model.activation: must be one of 'gelu' or 'relu' (got 'tanh')" in msg
    assert "retrieval.chunk_overlap: must be smaller than retrieval.chunk_tokens (128) (got 200)" in msg


def test_keys_of_another_task_or_backbone_are_unknown_and_say_where_they_belong():
    with pytest.raises(RagtuneError) as info:
        config_from_dict({"data": {"demo": True, "source_column": "en"}, "model": {"doc_stride": 64, "lora": {"r": 4},
                          "d_modle": 64}, "decode": {"beam_size": 2}})
    msg = str(info.value)
    assert "data.source_column: unknown key (only applies to task: translation)" in msg
    assert "model.doc_stride: unknown key (only applies to task: qa)" in msg
    assert "model.lora: unknown key (only applies to model.backbone: hf)" in msg
    assert "model.d_modle: unknown key (did you mean 'model.d_model'?)" in msg
    assert "decode: unknown key (only applies to task: qa, translation or generation)" in msg
    with pytest.raises(RagtuneError) as info:  # no union tag in an error's key
        config_from_dict({"data": {"demo": True}, "model": {"backbone": "hf", "name_or_path": "m", "lora": {"enabled": "maybe"}}})
    assert "  - model.lora.enabled: Input should be a valid boolean" in str(info.value)
    with pytest.raises(RagtuneError, match=r"model.backbone: must be one of 'scratch' or 'hf' \(got 'bert'\)"):
        config_from_dict({"task": "generation", "data": {"train": "x.csv"}, "model": {"backbone": "bert"}})
    with pytest.raises(RagtuneError, match=r"model.heads: unknown key \(only applies to model.backbone: scratch\)"):
        config_from_dict({"data": {"demo": True}, "model": {"backbone": "hf", "name_or_path": "m", "heads": 2}})


@pytest.mark.parametrize("task", list(MINIMAL))
def test_to_yaml_writes_the_tasks_keys_and_reads_back(task):
    cfg = config_from_dict(MINIMAL[task])
    tree = yaml.safe_load(to_yaml(cfg))
    assert set(tree) == set(type(cfg).model_fields) and ("decode" in tree) == (task in ("qa", "translation", "generation"))
    assert config_from_dict(tree) == cfg


@pytest.mark.parametrize("name", ["saved_classification_0.1.yaml", "saved_translation_0.1.yaml"])
def test_a_saved_run_config_of_every_key_still_reads(name):
    """RUN_DIR/config.yaml written before the per-task schema holds every key of every task (at its default):
    ``saved=True`` (--resume, predict, eval, tune results) drops the keys of other tasks and backbones."""
    tree = yaml.safe_load((Path(__file__).parent / "fixtures" / name).read_text(encoding="utf-8"))
    with pytest.raises(RagtuneError, match="unknown key"):
        config_from_dict(tree)
    cfg = config_from_dict(tree, saved=True)
    assert cfg.task == tree["task"] and cfg.train.epochs == tree["train"]["epochs"]
    own = {k: v for k, v in tree.items() if k in type(cfg).model_fields}
    assert yaml.safe_load(to_yaml(cfg)).keys() == own.keys()
    with pytest.raises(RagtuneError, match="model.no_such_key: unknown key"):  # a key no task has is still an error
        config_from_dict({**tree, "model": {**tree["model"], "no_such_key": 1}}, saved=True)


def test_reference_has_a_table_per_task():
    ref = config_reference()
    for title in ("### `task: classification / regression`", "### `task: qa`", "### `task: translation`", "### `task: generation`"):
        assert title in ref
    assert "| `model.lora.r` |" in ref and "*`model.backbone: hf` only.*" in ref


def test_label_column_must_differ_from_text_column():
    """label_column == text_column was accepted and gave classes without training rows."""
    with pytest.raises(RagtuneError, match=r"data.label_column: must differ from data.text_column \(both 'x'\)"):
        config_from_dict({"task": "classification", "data": {"train": "t.csv", "text_column": "x", "label_column": "x"}})
    config_from_dict({"task": "classification", "data": {"train": "t.csv", "text_column": "x", "label_column": "y"}})


@pytest.mark.parametrize("text, key, line, first", [
    ("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.5\n", "lr", 4, 2),  # duplicate key
    ("data:\n  train: a.csv\ntrain:\n  lr: 0.1\ndata:\n  train: b.csv\n", "data", 5, 1),  # duplicate section
])
def test_duplicate_yaml_keys_are_errors(tmp_path, text, key, line, first):
    """Duplicate keys and sections were accepted, the last one winning."""
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RagtuneError, match=rf"dup\.yaml: line {line}: key '{key}' appears twice in one mapping "
                                           rf"\(first on line {first}\)"):
        load_config(path)


def test_yaml_merge_keys_still_override(tmp_path):
    from ragtune.config import read_yaml

    path = tmp_path / "merge.yaml"
    path.write_text("x: &b {lr: 0.1, epochs: 2}\ny:\n  <<: *b\n  lr: 0.5\n", encoding="utf-8")
    assert read_yaml(path)["y"] == {"lr": 0.5, "epochs": 2}


def test_deeply_nested_yaml_is_one_clear_error(tmp_path):
    """A config nested 10,000 deep ended in RecursionError."""
    path = tmp_path / "deep.yaml"
    path.write_text("data: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"deep\.yaml: nested too deeply"):
        load_config(path)
