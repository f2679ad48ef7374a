"""The Python API (ragtune/api.py): run, load, tune, index, retrieve, with configs as paths, mappings or
config objects and data as DataFrames, lists of dicts and SQuAD rows."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from tiny_hf import make_rows

import ragtune
from ragtune.data.inline import squad_document
from ragtune.data.squad import parse_squad
from ragtune.errors import RagtuneError

WORDS = {"sport": ["goal", "match", "team", "比赛"], "money": ["bank", "shares", "market", "银行"]}
FILLER = ["the", "a", "today", "said", "今天"]
TINY = {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 32}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "cache"))


def _config(train, test) -> dict:
    return {"task": "classification", "data": {"train": train, "test": test},
            "tokenizer": {"vocab_size": 120, "min_frequency": 1}, "model": TINY,
            "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 16, "seed": 0}}


def test_run_a_mapping_with_a_dataframe_and_a_list_of_dicts_then_load_the_predictor(tmp_path):
    train = make_rows(120, 0, WORDS, FILLER, signal=0.6, length=8)
    test_rows = make_rows(30, 1, WORDS, FILLER, signal=0.6, length=8).to_dict(orient="records")
    out = tmp_path / "run"
    result = ragtune.run(_config(train, test_rows), out=out, progress=False)

    assert result.run_dir == out
    assert result.metrics == json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    written = pd.read_json(saved["data"]["train"], lines=True)  # the DataFrame, as the run read it
    assert saved["data"]["train"].startswith(str(tmp_path / "cache" / "data"))
    assert written["text"].tolist() == train["text"].tolist() and written["label"].tolist() == train["label"].tolist()

    environment = json.loads((out / "environment.json").read_text(encoding="utf-8"))
    assert environment["versions"]["torch"] == torch.__version__ and environment["versions"]["ragtune"] == ragtune.__version__
    assert environment["device"] == "cpu" and environment["world_size"] == 1 and environment["cpu"]["cores"] >= 1

    predictor = ragtune.load(out)
    predictions = predictor.predict([r["text"] for r in test_rows])
    accuracy = sum(p["label"] == r["label"] for p, r in zip(predictions, test_rows)) / len(test_rows)
    assert accuracy == pytest.approx(result.metrics["test"]["accuracy"])  # the predictor the run evaluated with
    assert [p["label"] for p in predictor.predict(["今天 比赛 goal 银行"])][0] in {"sport", "money"}


def test_the_same_data_is_written_once_and_other_data_to_another_file(tmp_path):
    from ragtune.data.inline import materialise

    df = make_rows(20, 0, WORDS, FILLER, signal=0.6, length=4)
    first = materialise(df, "data.train", "classification")
    assert materialise(df.copy(), "data.train", "classification") == first
    assert materialise(df.head(10), "data.train", "classification") != first
    assert materialise(df.to_dict(orient="records"), "data.train", "classification") == first  # same rows, same file


def test_a_path_config_with_mapping_overrides_and_a_config_object(tmp_path):
    train = make_rows(60, 0, WORDS, FILLER, signal=0.6, length=6)
    path = tmp_path / "c.yaml"
    train.to_csv(tmp_path / "train.csv", index=False)
    path.write_text(yaml.safe_dump(_config("train.csv", None)), encoding="utf-8")  # relative to the config's folder
    cfg = ragtune.load_config(path, {"train.epochs": 1, "model.layers": 2, "data.test": train.head(20)})
    assert cfg.train.epochs == 1 and cfg.model.layers == 2
    assert cfg.data.train == str(tmp_path / "train.csv")
    assert pd.read_json(cfg.data.test, lines=True)["text"].tolist() == train.head(20)["text"].tolist()
    again = ragtune.load_config(cfg, ["train.lr=0.01"])  # a config object, overridden again
    assert again.train.lr == 0.01 and again.model.layers == 2 and again.data.test == cfg.data.test


def test_bad_configs_and_data_are_one_error_naming_the_key(tmp_path):
    with pytest.raises(RagtuneError, match=r"data.train: required"):
        ragtune.load_config({"task": "classification"})
    with pytest.raises(RagtuneError, match=r"train.epochs"):
        ragtune.load_config({"task": "classification", "data": {"demo": True}}, {"train.epochs": "many"})
    with pytest.raises(RagtuneError, match=r"only data.train, data.validation, data.test take data"):
        ragtune.load_config({"task": "classification", "data": {"demo": True}},
                            {"tokenizer.path": pd.DataFrame({"a": [1]})})
    with pytest.raises(RagtuneError, match="give a list of 'key=value' strings or a mapping"):
        ragtune.load_config(None, "train.epochs=3")
    with pytest.raises(RagtuneError, match=r"config: give a YAML path, a mapping or a config object \(got int\)"):
        ragtune.load_config(3)
    with pytest.raises(RagtuneError, match=r"data.train: the DataFrame has no rows"):
        ragtune.load_config({"task": "classification", "data": {"train": pd.DataFrame({"text": [], "label": []})}})


def test_an_existing_run_directory_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    cfg = {**_config(make_rows(40, 0, WORDS, FILLER, length=4), None), "train": {"epochs": 1, "batch_size": 16}}
    with pytest.raises(RagtuneError, match="exists and is not empty"):
        ragtune.run(cfg, out=out, progress=False)
    with pytest.raises(RagtuneError, match="not a ragtune run directory"):
        ragtune.run(cfg, out=out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"  # nothing of it was touched


def test_squad_rows_in_the_hf_layout_become_a_squad_document():
    rows = [{"id": "q1", "title": "北京", "context": "北京是中国的首都。", "question": "中国的首都是哪里？",
             "answers": {"text": ["北京"], "answer_start": [0]}},
            {"title": "北京", "context": "北京是中国的首都。", "question": "北京是哪国的首都？", "answers": "中国"},
            {"context": "Paris is in France.", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]}]
    doc = squad_document(rows)
    records = parse_squad(doc)
    assert [r.id for r in records] == ["q1", "row-2", "row-3"]
    assert [r.answers for r in records] == [("北京",), ("中国",), ("France",)]
    assert records[1].answer_starts == (3,)  # found in its context
    assert len(doc["data"]) == 2 and len(doc["data"][0]["paragraphs"]) == 1  # one article, one paragraph, two questions
    with pytest.raises(RagtuneError, match=r"row 1 has no 'answers'"):
        squad_document([{"context": "x", "question": "y"}], "data.train")
    with pytest.raises(RagtuneError, match=r"row 1: the answer 'Rome' does not occur in its context"):
        squad_document([{"context": "Paris.", "question": "y", "answers": "Rome"}], "data.train")


def test_index_and_retrieve(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The reactor cools with heavy water.", encoding="utf-8")
    (corpus / "b.txt").write_text("长城在中国北方。", encoding="utf-8")
    (corpus / "c.txt").write_text("Bees make honey from nectar.", encoding="utf-8")
    idx = ragtune.index(corpus, out=tmp_path / "index", progress=False)
    hits = ragtune.retrieve(idx, ["what do bees make", "长城在哪里"], k=2)
    assert [h[0]["source"].endswith(name) for h, name in zip(hits, ("c.txt", "b.txt"))] == [True, True]
    assert ragtune.retrieve(tmp_path / "index", "heavy water reactor", k=1)[0][0]["text"].startswith("The reactor")
    with pytest.raises(RagtuneError, match="k must be at least 1"):
        ragtune.retrieve(idx, "x", k=0)


def test_tune_through_the_api(tmp_path):
    cfg = {"task": "classification", "name": "tiny", "data": {"demo": True},
           "tokenizer": {"vocab_size": 300, "min_frequency": 1}, "model": TINY,
           "train": {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "batch_size": 32, "steps_per_epoch": 3, "seed": 0},
           "tune": {"trials": 2, "sampler": "random", "seed": 1, "space": {"train.lr": {"choice": [0.003, 0.001]}}}}
    result = ragtune.tune(cfg, out=tmp_path / "study", progress=False)
    assert result.counts["complete"] == 2 and (tmp_path / "study" / "best.yaml").is_file()
    assert result.best_params["train.lr"] in {0.003, 0.001}


def test_import_ragtune_is_light():
    code = "import sys, ragtune; print(ragtune.__version__, 'torch' in sys.modules, callable(ragtune.run))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [ragtune.__version__, "False", "True"]


def test_ragtune_env_prints_the_versions_and_the_git_commit(tmp_path, capsys):
    from ragtune.cli import main

    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["numpy"]
    assert info["git"] is None or len(info["git"]["commit"]) == 40
    assert main(["env"]) == 0
    table = capsys.readouterr().out
    assert f"ragtune{' ' * 16}{ragtune.__version__}" in table and "world_size" in table
    from ragtune.environment import git_commit

    assert git_commit(tmp_path) is None  # a folder outside any repository


def test_hub_datasets_are_read_through_datasets_into_the_run(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    folder = tmp_path / "news_ds"  # a dataset the test writes: a folder of data files, as on the Hub
    folder.mkdir()
    train = make_rows(80, 0, WORDS, FILLER, signal=0.6, length=6)
    train.to_json(folder / "train.jsonl", orient="records", lines=True, force_ascii=False)
    train.head(20).to_json(folder / "test.jsonl", orient="records", lines=True, force_ascii=False)
    cfg = ragtune.load_config({**_config(f"hf://{folder}@train", f"hf://{folder}@test")})
    assert pd.read_json(cfg.data.train, lines=True)["text"].tolist() == train["text"].tolist()
    assert len(pd.read_json(cfg.data.test, lines=True)) == 20
    with pytest.raises(RagtuneError, match=r"data.test: cannot load the dataset hf://.*@nosuchsplit"):
        ragtune.load_config(_config(f"hf://{folder}@train", f"hf://{folder}@nosuchsplit"))
    with pytest.raises(RagtuneError, match="names no dataset"):
        ragtune.load_config(_config("hf://", None))
    # a question-answering dataset in the Hub's squad layout becomes SQuAD JSON
    squad = tmp_path / "squad_ds"
    squad.mkdir()
    pd.DataFrame([{"id": "1", "title": "t", "context": "Bees make honey.", "question": "What do bees make?",
                   "answers": {"text": ["honey"], "answer_start": [10]}}]).to_json(squad / "train.jsonl", orient="records", lines=True)
    from ragtune.data.hub import resolve

    written = resolve(f"hf://{squad}", "data.train", "qa")
    assert parse_squad(json.loads(open(written, encoding="utf-8").read()))[0].answers == ("honey",)


def test_validate_accepts_a_hub_id_without_downloading(tmp_path, capsys):
    from ragtune.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config("hf://SetFit/bbc-news@train", None)), encoding="utf-8")
    assert main(["validate", str(path), "--show"]) == 0
    assert "train: hf://SetFit/bbc-news@train" in capsys.readouterr().out


def test_validate_refuses_a_malformed_hub_id_naming_the_key_and_the_syntax(tmp_path, capsys):
    from ragtune.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config("hf://a b/c", "hf://x/y@tr ain")), encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 missing inputs" in err
    assert "data.train: 'hf://a b/c': 'a b/c' is neither a Hub id" in err
    assert "data.test: 'hf://x/y@tr ain': 'tr ain' is not a split" in err and "hf://owner/name[:config][@split]" in err
    assert "example config" not in err  # the packaged-data hint is for missing ../shared/data files only
    path.write_text(yaml.safe_dump(_config("hf://rajpurkar/squad:plain_text@train[:10%]", None)), encoding="utf-8")
    assert main(["validate", str(path)]) == 0  # a config and a sliced split


def test_a_packaged_example_without_its_data_says_where_the_data_comes_from(tmp_path, capsys, monkeypatch):
    from ragtune.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["validate", "seed_news", f"data.train={tmp_path / 'absent.csv'}"]) == 2
    assert "seed_news is an example config" not in capsys.readouterr().err  # the missing file is the user's
    from ragtune.api import packaged_configs

    if (packaged_configs()["seed_news"].parent.parent.parent / "shared" / "data").exists():
        pytest.skip("../shared/data is here: seed_news finds its data")
    assert main(["validate", "seed_news"]) == 2
    assert "seed_news is an example config that reads its data from ../shared/data" in capsys.readouterr().err
