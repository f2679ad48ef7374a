"""`task: translation` end to end: `ragtune run`, `predict`, `eval` on a tiny word-for-word translation task."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import yaml

from ragtune.cli import main
from ragtune.tasks import load_config
from ragtune.errors import RagtuneError
from ragtune.tasks import run

SOURCE_WORDS = ["cat", "dog", "red", "big", "sun", "tree", "blue", "house", "runs", "sees", "small", "bird"]
TARGET_WORDS = ["katze", "hund", "rot", "gross", "sonne", "baum", "blau", "haus", "rennt", "sieht", "klein", "vogel"]
LEXICON = dict(zip(SOURCE_WORDS, TARGET_WORDS))


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Sentences of 2-5 words; the target translates each word (a fixed dictionary), same order."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(SOURCE_WORDS) for _ in range(rng.randint(2, 5))]
        pairs.append((" ".join(words), " ".join(LEXICON[w] for w in words)))
    return pairs


def write_files(folder, name: str, pairs) -> dict:
    (folder / f"{name}.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (folder / f"{name}.de").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return {"source": f"{name}.en", "target": f"{name}.de"}


def tiny_config(folder, train, validation=None, test=None, epochs: int = 10, **extra) -> str:
    tree = {
        "task": "translation",
        "name": "tiny_translation",
        "data": {"train": train, **({"validation": validation} if validation else {}), **({"test": test} if test else {})},
        "tokenizer": {"vocab_size": 400, "min_frequency": 1},
        "model": {"heads": 4, "head_dim": 16, "layers": 2, "d_model": 64, "ffn_dim": 128, "dropout": 0.0, "max_length": 32},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 0.003, "schedule": "linear", "warmup_steps": 20, "steps_per_epoch": 40,
                  "label_smoothing": 0.1, "threads": 2, "seed": 0},
        "eval": {"batch_size": 64},
        "decode": {"strategy": "greedy"},
    }
    for key, value in extra.items():
        section, leaf = key.split("__")
        tree.setdefault(section, {})[leaf] = value
    path = folder / "translation.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("translation")
    train = write_files(folder, "train", make_pairs(300, seed=1))
    test = write_files(folder, "test", make_pairs(40, seed=2))
    config = tiny_config(folder, train, test=test)
    run_dir = folder / "run"
    assert main(["run", config, "--out", str(run_dir), "--quiet"]) == 0
    return folder, run_dir


def test_run_learns_the_task_and_writes_the_run_dir(trained_run):
    _, run_dir = trained_run
    for name in ("config.yaml", "inputs.json", "model.json", "tokenizer.json", "model.safetensors", "metrics.json",
                 "history.json", "report.md", "data_report.json", "checkpoints/last", "checkpoints/best"):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("bleu", "chrf", "loss", "perplexity"):
            assert key in metrics[split], (split, key)
    assert metrics["test"]["bleu"] > 60, metrics["test"]  # chance is ~0
    assert metrics["test"]["n"] == 40 and metrics["validation"]["n"] == 30  # 10% of train carved as validation
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["task"] == "translation" and meta["special_ids"]["eos"] == 3 and meta["model"]["encoder_layers"] == 2
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 10 and "validation_bleu" in history[0]
    report = (run_dir / "report.md").read_text()
    assert "Example translations" in report and "bleu" in report
    inputs = json.loads((run_dir / "inputs.json").read_text())
    assert "data.train.source" in inputs and "data.test.target" in inputs


def test_predict_and_eval(trained_run, capsys, tmp_path):
    folder, run_dir = trained_run
    capsys.readouterr()
    assert main(["predict", str(run_dir), "cat sees dog", "big red house"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [set(x) for x in lines] == [{"output"}, {"output"}]
    assert lines[0]["output"] == "katze sieht hund"
    assert main(["predict", str(run_dir), "cat sees dog", "--strategy", "beam", "--beam-size", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == "katze sieht hund"
    assert main(["predict", str(run_dir), "cat", "--strategy", "sample", "--top-k", "2", "--seed", "1"]) == 0
    assert "output" in json.loads(capsys.readouterr().out)

    table = tmp_path / "in.csv"
    pd.DataFrame({"text": ["small bird runs", "blue tree"]}).to_csv(table, index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", str(run_dir), "--input", str(table), "--output", str(out)]) == 0
    assert pd.read_csv(out).output.tolist()[0] == "klein vogel rennt"

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data", str(folder / "test.en"), "--target", str(folder / "test.de")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["bleu"] > 60 and "chrf" in metrics

    pairs = make_pairs(20, seed=3)
    pairs_table = tmp_path / "pairs.jsonl"
    pd.DataFrame({"source": [s for s, _ in pairs], "target": [t for _, t in pairs]}).to_json(
        pairs_table, orient="records", lines=True)
    assert main(["eval", str(run_dir), "--data", str(pairs_table)]) == 0
    assert json.loads(capsys.readouterr().out)["bleu"] > 50


def test_table_input_and_resume(tmp_path, capsys):
    pairs = make_pairs(200, seed=4)
    table = tmp_path / "pairs.csv"
    pd.DataFrame({"en": [s for s, _ in pairs], "de": [t for _, t in pairs]}).to_csv(table, index=False)
    config = tiny_config(tmp_path, "pairs.csv", epochs=2, data__source_column="en", data__target_column="de",
                         eval__metric="chrf")
    cfg = load_config(config)
    assert cfg.data.train == str(table) and cfg.selection_metric == "chrf"
    run_dir = tmp_path / "run"

    def killed(epoch, metrics):  # dies at the end of epoch 2, before its checkpoint is written
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir, progress=False, on_epoch_end=killed, config_path=config)
    assert not (run_dir / "metrics.json").exists()
    assert main(["run", config, "--resume", str(run_dir), "--quiet"]) == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert [e["epoch"] for e in history] == [1, 2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == 20 and metrics["validation"]["n"] == 20
    assert metrics["training"]["optimizer_steps"] == 80


def test_bad_input_exits_2_naming_the_problem(tmp_path, capsys):
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    config = tiny_config(tmp_path, {"source": "a.en", "target": "a.de"}, epochs=1)
    assert main(["run", config, "--out", str(tmp_path / "r1"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "a.en" in err and "a.de" in err and "3 lines" in err and "2 lines" in err

    table = tmp_path / "t.csv"
    pd.DataFrame({"source": ["a b", "c d", "e f"], "target": ["x", "", "z"]}).to_csv(table, index=False)
    config = tiny_config(tmp_path, "t.csv", epochs=1)
    assert main(["run", config, "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "t.csv" in err and "row 2" in err and "target" in err

    config = tiny_config(tmp_path, "t.csv", epochs=1, data__target_column="german")
    assert main(["run", config, "--out", str(tmp_path / "r3"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "t.csv" in err and "german" in err


def test_config_errors_are_reported_at_once(tmp_path):
    bad = {"task": "translation", "data": {"train": {"source": "a.en"}},
           "tokenizer": {"joint": False}, "decode": {"top_p": 0.9, "max_new_tokens": 500}, "model": {"backbone": "hf", "name_or_path": "x", "lora": {"enabled": True, "rank": 4}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad), encoding="utf-8")
    with pytest.raises(RagtuneError) as exc:
        load_config(path)
    msg = str(exc.value)
    for key in ("data.train", "decode.top_p", "decode.max_new_tokens", "model.lora.rank: unknown key"):
        assert key in msg, key
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"data": {"train": "x.csv"}, "decode": {"beam_size": 2}, "eval": {"bleu_tokenize": "zh"}}))
    with pytest.raises(RagtuneError, match="decode: unknown key .only applies to task: qa, translation or generation"):
        load_config(other)
    # the two-file mapping resolves relative to the config file; overrides relative to the working directory
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"task": "translation", "data": {"train": {"source": "a.en", "target": "a.de"}}}))
    cfg = load_config(ok, ["data.test.source=b.en", "data.test.target=b.de"], cwd=tmp_path / "sub")
    assert cfg.data.train == {"source": str(tmp_path / "a.en"), "target": str(tmp_path / "a.de")}
    assert cfg.data.test == {"source": str(tmp_path / "sub" / "b.en"), "target": str(tmp_path / "sub" / "b.de")}
    assert cfg.selection_metric == "bleu"


def test_translation_memory_run(tmp_path, capsys):
    """retrieval.top_k with source: train reads each source with its most similar training pairs, in
    training (never its own pair) and at inference (rebuilt from the run's memory.jsonl)."""
    from ragtune.tasks.translation.predictor import Seq2SeqPredictor

    train = write_files(tmp_path, "train", make_pairs(200, seed=3))
    test = write_files(tmp_path, "test", make_pairs(20, seed=4))
    config = tiny_config(tmp_path, train, test=test, epochs=2, retrieval__top_k=1, retrieval__source="train")
    out = tmp_path / "run"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["memory"] == {"file": "memory.jsonl", "top_k": 1, "separator": "<tm>"}
    train_pairs = json.loads((out / "data_report.json").read_text())["splits"]["train"]["pairs"]  # 200 less validation
    assert len((out / "memory.jsonl").read_text(encoding="utf-8").splitlines()) == train_pairs < 200
    predictor = Seq2SeqPredictor.from_run_dir(out)
    assert predictor.memory is not None and predictor.memory_k == 1
    augmented = predictor._sources(["red cat runs"])[0]
    assert augmented.startswith("red cat runs <tm> ") and " = " in augmented
    capsys.readouterr()
    assert main(["predict", str(out), "red cat runs"]) == 0
    assert "output" in json.loads(capsys.readouterr().out.splitlines()[0])
    with pytest.raises(RagtuneError, match="set retrieval.source: train"):
        load_config(config, ["retrieval.source=corpus"])
