"""LoRA with ``backbone: hf`` for generation (a tiny random Llama), translation (BERT2BERT from a tiny BERT)
and qa (a tiny BERT reader): only the adapters (and what must train whole) change, the run saves the adapter
alone or merged, reloads to exactly the trained model, resumes, and bad LoRA settings are clear errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tiny_hf import FILLER, make_bert, make_tokenizer
from tiny_llm import WORDS, reversal_rows, save_tiny_llama

from ragtune.cli import main
from ragtune.tasks import load_config


def write_config(folder, tree: dict, name: str = "c.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama") / "m")


def generation_tree(folder, llama, **lora) -> dict:
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(96, 0, WORDS, longest=4)))
    return {"task": "generation", "data": {"train": "train.jsonl", "validation_fraction": 0.2, "test_fraction": 0.1},
            "model": {"backbone": "hf", "name_or_path": str(llama), "max_length": 48,
                      "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, **lora}},
            "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "optimizer": "adamw", "seed": 0},
            "eval": {"max_decode_rows": 8}, "decode": {"strategy": "greedy", "max_new_tokens": 8}}


@pytest.mark.parametrize("save", ["adapter", "merged"])
def test_generation_lora_trains_adapters_only_and_reloads_exactly(tmp_path, llama, save):
    from ragtune.tasks.generation.predictor import GenerationPredictor
    from transformers import AutoModelForCausalLM

    config = write_config(tmp_path, generation_tree(tmp_path, llama, save=save,
                                                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    run = tmp_path / "run"
    assert main(["run", config, "--out", str(run), "--quiet"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    meta = json.loads((run / "model.json").read_text())
    assert meta["hf"]["lora"]["save"] == save and meta["hf"]["lora"]["r"] == 4
    folder = run / "hf_model"
    base = AutoModelForCausalLM.from_pretrained(llama).state_dict()
    if save == "adapter":
        weights = load_file(folder / "adapter_model.safetensors")
        assert not (folder / "model.safetensors").exists()
        assert weights and all("lora_" in k for k in weights)  # nothing but the adapters
        assert {k.split(".")[-3] for k in weights} >= {"q_proj", "k_proj", "v_proj", "o_proj"}
    else:
        merged = AutoModelForCausalLM.from_pretrained(folder).state_dict()
        changed = {k for k in base if "embed_tokens" not in k and "lm_head" not in k and not torch.equal(base[k], merged[k])}
        assert changed and all(k.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj") for k in changed)
    # the reloaded run writes what the run's own evaluation saw
    predictor = GenerationPredictor.from_run_dir(run)
    prompts = [r["prompt"] for r in reversal_rows(6, 5, WORDS, longest=4)]
    assert predictor.complete(prompts) == GenerationPredictor.from_run_dir(run).complete(prompts)
    metrics = json.loads((run / "metrics.json").read_text())
    from ragtune.tasks.generation.recipe import evaluate_test_split

    again = evaluate_test_split(load_config(config), run)
    assert again["rougeL"] == pytest.approx(metrics["test"]["rougeL"])
    assert again["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)


def test_generation_lora_resumes_and_gradient_checkpointing_gives_the_same_step(tmp_path, llama):
    tree = generation_tree(tmp_path, llama)
    tree["train"]["epochs"] = 2
    config = write_config(tmp_path, tree)
    full = tmp_path / "full"
    assert main(["run", config, "--out", str(full), "--quiet"]) == 0
    tree["train"]["epochs"] = 1
    half = tmp_path / "half"
    assert main(["run", write_config(tmp_path, tree, "one.yaml"), "--out", str(half), "--quiet"]) == 0
    assert main(["run", config, "--resume", str(half), "--quiet"]) == 0
    a = json.loads((full / "history.json").read_text())
    b = json.loads((half / "history.json").read_text())
    assert [round(e["train_loss"], 5) for e in a] == [round(e["train_loss"], 5) for e in b]
    tree["train"]["epochs"] = 1
    tree["model"]["gradient_checkpointing"] = True
    gc = tmp_path / "gc"
    assert main(["run", write_config(tmp_path, tree, "gc.yaml"), "--out", str(gc), "--quiet"]) == 0
    c = json.loads((gc / "history.json").read_text())
    assert c[0]["train_loss"] == pytest.approx(a[0]["train_loss"], rel=1e-4)  # recomputation, same math


def test_translation_bert2bert_lora(tmp_path):
    bert = tmp_path / "bert"
    make_bert().bert.save_pretrained(bert)
    make_tokenizer().save_pretrained(bert)
    rows = reversal_rows(80, 0, FILLER, longest=4)
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"source": r["prompt"], "target": r["response"]}) + "\n"
                                                  for r in rows))
    tree = {"task": "translation", "data": {"train": "pairs.jsonl", "validation_fraction": 0.2, "test_fraction": 0.1},
            "model": {"backbone": "hf", "name_or_path": str(bert), "max_length": 16,
                      "lora": {"enabled": True, "r": 4, "alpha": 8, "save": "adapter"}},
            "train": {"epochs": 1, "batch_size": 8, "lr": 3e-3, "optimizer": "adamw", "seed": 0},
            "eval": {"max_decode_rows": 4}, "decode": {"strategy": "greedy"}}
    run = tmp_path / "run"
    assert main(["run", write_config(tmp_path, tree), "--out", str(run), "--quiet"]) == 0
    weights = load_file(run / "hf_model" / "adapter_model.safetensors")
    assert any("lora_" in k for k in weights)
    assert any("crossattention" in k and "lora_" not in k for k in weights)  # the new cross-attention trains whole
    from ragtune.tasks.translation.predictor import Seq2SeqPredictor

    a = Seq2SeqPredictor.from_run_dir(run).translate(["the a today"])
    assert a == Seq2SeqPredictor.from_run_dir(run).translate(["the a today"])


def test_qa_reader_lora_adapter(tmp_path, tiny_reader_folder, people_squad, capsys):
    (tmp_path / "squad.json").write_text(json.dumps(people_squad), encoding="utf-8")
    tree = {"task": "qa", "data": {"train": "squad.json", "validation_fraction": 0.2, "test_fraction": 0.2},
            "model": {"backbone": "hf", "name_or_path": str(tiny_reader_folder), "max_length": 48, "doc_stride": 8,
                      "lora": {"enabled": True, "r": 4, "alpha": 8, "save": "adapter", "target_modules": ["query", "value"]}},
            "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 8, "seed": 0}}
    run = tmp_path / "run"
    config = write_config(tmp_path, tree)
    assert main(["run", config, "--out", str(run), "--quiet"]) == 0
    weights = load_file(run / "reader" / "adapter_model.safetensors")
    assert any("lora_" in k for k in weights) and any("qa_outputs" in k for k in weights)
    assert not (run / "reader" / "model.safetensors").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    from ragtune.tasks.qa.recipe import evaluate_test_split

    scored = evaluate_test_split(load_config(config), run)  # the adapter reloaded onto the pretrained reader
    assert scored["f1"] == pytest.approx(metrics["test"]["f1"])
    assert scored["exact_match"] == pytest.approx(metrics["test"]["exact_match"])


def test_lora_errors(tmp_path, llama, capsys):
    config = write_config(tmp_path, generation_tree(tmp_path, llama, target_modules=["query", "q_proj"]))
    assert main(["run", config, "--out", str(tmp_path / "r1"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.lora.target_modules: ['query'] matches no linear layer" in err and "q_proj" in err and "down_proj" in err
    assert "Traceback" not in err and not (tmp_path / "r1" / "hf_model").exists()
    config = write_config(tmp_path, generation_tree(tmp_path, llama, load_in_4bit=True), "q.yaml")
    assert main(["run", config, "--out", str(tmp_path / "r2"), "--quiet"]) == 2  # the CPU: no QLoRA
    err = capsys.readouterr().err
    assert "model.lora.load_in_4bit" in err and "CUDA" in err and "Traceback" not in err
    bad = generation_tree(tmp_path, llama, load_in_4bit=True)
    bad["model"]["lora"]["enabled"] = False
    with pytest.raises(Exception, match="load_in_4bit: QLoRA trains LoRA adapters"):
        load_config(write_config(tmp_path, bad, "b.yaml"))


def test_tune_a_lora_generation_run(tmp_path, llama):
    """``ragtune tune`` over LoRA keys of a tiny Llama generation run: every trial trains, best.yaml holds the best."""
    import csv

    tree = generation_tree(tmp_path, llama)
    tree["train"]["epochs"] = 1
    tree["tune"] = {"trials": 2, "sampler": "random", "seed": 0,
                    "space": {"model.lora.r": {"choice": [2, 8]}, "train.lr": {"choice": [1e-2, 3e-3]}}}
    out = tmp_path / "study"
    assert main(["tune", write_config(tmp_path, tree), "--out", str(out), "--quiet"]) == 0
    with open(out / "trials.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["state"] == "COMPLETE" for r in rows)
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["lora"]["r"] in (2, 8) and best["model"]["lora"]["enabled"] is True
