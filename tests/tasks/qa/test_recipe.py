"""task: qa end to end through the CLI: a tiny random reader, a BM25 index the run builds, train, answer."""

import json

import pytest
import yaml

from ragtune.cli import main
from ragtune.tasks import load_config
from ragtune.errors import RagtuneError

@pytest.fixture
def qa_config(tmp_path, tiny_reader_folder, people_squad):
    (tmp_path / "squad.json").write_text(json.dumps(people_squad), encoding="utf-8")
    cfg = {
        "task": "qa",
        "data": {"train": "squad.json", "validation_fraction": 0.2, "test_fraction": 0.2},
        "model": {"backbone": "hf", "name_or_path": str(tiny_reader_folder), "max_length": 48, "doc_stride": 8},
        "retrieval": {"corpus": ["squad.json"], "kind": "bm25", "top_k": 2, "distractors": 1,
                      "chunk_tokens": 16, "chunk_overlap": 4},
        "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 4, "batch_size": 8, "seed": 0},
        "eval": {"batch_size": 16},
    }
    path = tmp_path / "qa.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_qa_run_trains_answers_and_reloads(qa_config, tmp_path, capsys):
    from ragtune.data.squad import read_squad
    from ragtune.tasks.qa.predictor import QAPredictor

    out = tmp_path / "run"
    assert main(["run", str(qa_config), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert {"exact_match", "f1", "recall@1", "mrr@10", "reader_exact_match", "reader_f1"} <= set(metrics[split])
        assert 0 <= metrics[split]["f1"] <= 100 and 0 <= metrics[split]["recall@1"] <= 1
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # the reader learns
    assert "validation_f1" in history[0]
    assert (out / "index" / "manifest.json").exists() and (out / "reader" / "model.safetensors").exists()
    report = (out / "report.md").read_text()
    assert "exact_match" in report and "recall@1" in report

    # ragtune predict: answers with the passages read; the same as the predictor in memory
    capsys.readouterr()
    questions = ["who lives in paris ?", "who owns a red car ?"]
    assert main(["predict", str(out), *questions]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all(len(line["passages"]) == 2 for line in lines)
    assert all(line["answer"] in line["passage"]["text"] for line in lines)
    again = QAPredictor.from_run_dir(out).answer(questions)
    assert [r["answer"] for r in again] == [line["answer"] for line in lines]
    # a file of questions: answers written next to them
    import pandas as pd

    pd.DataFrame({"question": questions}).to_csv(tmp_path / "questions.csv", index=False)
    assert main(["predict", str(out), "--input", str(tmp_path / "questions.csv"), "--output",
                 str(tmp_path / "answers.csv")]) == 0
    answers = pd.read_csv(tmp_path / "answers.csv", keep_default_na=False)
    assert answers.answer.tolist() == [line["answer"] for line in lines]
    assert answers.answer_passage_id.tolist() == [line["passage"]["id"] for line in lines]

    # ragtune eval on a SQuAD file gives the same metrics as the run's own test evaluation would on it
    capsys.readouterr()
    squad = tmp_path / "squad.json"
    assert main(["eval", str(out), "--data", str(squad)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["n"] == len(read_squad(squad))


def test_qa_without_retrieval_reads_the_gold_paragraph(qa_config, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(qa_config), "retrieval.top_k=0", "retrieval.corpus=null", "train.epochs=1",
                 "--out", str(out), "--quiet"]) == 0
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert set(test) == {"exact_match", "f1", "n"}
    assert not (out / "index").exists()


def test_qa_config_rules(tmp_path):
    base = ["task=qa", "data.train=x.json", "model.backbone=hf", "model.name_or_path=some/reader"]
    with pytest.raises(RagtuneError) as err:
        load_config(None, ["task=qa", "data.train=x.json", "retrieval.top_k=3", "retrieval.train_query_encoder=true",
                           "eval.metric=accuracy"])
    message = str(err.value)
    assert "model.name_or_path: required with model.backbone: hf" in message  # task qa reads with a pretrained model
    assert "retrieval.top_k: 3 needs an index" in message
    assert "retrieval.train_query_encoder: needs a dense index" in message
    assert "eval.metric: 'accuracy' is not a qa metric" in message
    with pytest.raises(RagtuneError, match="retrieval in the loop is available for tasks classification and qa"):
        load_config(None, ["data.demo=true", "task=regression", "retrieval.top_k=2", "retrieval.index=idx"])
    with pytest.raises(RagtuneError, match=r"retrieval.source: unknown key \(only applies to task: classification, regression or translation\)"):
        load_config(None, [*base, "retrieval.top_k=2", "retrieval.source=train"])
    with pytest.raises(RagtuneError, match="retrieval.corpus: not used when retrieval.index is set"):
        load_config(None, [*base, "retrieval.index=idx", "retrieval.corpus=[a.txt]"])
    with pytest.raises(RagtuneError) as err:
        load_config(None, [*base, "train.group_by_length=true", "model.truncation=head_tail"])
    assert "train.group_by_length: not used by task qa" in str(err.value)
    assert "model.truncation: unknown key (only applies to task: classification or regression)" in str(err.value)
    cfg = load_config(None, [*base, "retrieval.corpus=[docs, more/file.txt]", "retrieval.top_k=2"])
    assert cfg.retrieval.corpus == [str(tmp_path.cwd() / "docs"), str(tmp_path.cwd() / "more" / "file.txt")]
    assert cfg.selection_metric == "f1"


def test_qa_missing_training_file_is_named(qa_config, tmp_path, capsys):
    assert main(["run", str(qa_config), "data.train=nowhere.json", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.train: file not found" in err and "nowhere.json" in err and "Traceback" not in err


def test_qa_top_k_larger_than_the_index_is_named(qa_config, tmp_path, capsys):
    assert main(["run", str(qa_config), "retrieval.top_k=500", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "retrieval.top_k: 500 is larger than the" in capsys.readouterr().err
