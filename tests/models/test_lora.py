"""model.lora (peft) on a tiny random BERT written by the test, and the tokenizer/model size check."""

import json
import sys

import pytest
import torch
import yaml
from tiny_hf import WORDS, make_bert, make_rows, make_tokenizer

from ragtune.cli import main
from ragtune.tasks import load_config
from ragtune.errors import RagtuneError

pytest.importorskip("peft")
pytest.importorskip("transformers")

def _config(tmp_path, tiny_bert, lora, **train):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    make_rows(90).to_csv(data / "train.csv", index=False)
    make_rows(30, seed=1).to_csv(data / "test.csv", index=False)
    cfg = {
        "data": {"train": "data/train.csv", "test": "data/test.csv"},
        "model": {"backbone": "hf", "name_or_path": str(tiny_bert), "max_length": 16, "lora": lora},
        "train": {"optimizer": "adamw", "lr": 2e-2, "epochs": 4, "batch_size": 16, "seed": 0, **train},
    }
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_lora_trains_only_adapters_and_head():
    from ragtune.config import TrainConfig
    from ragtune.data.tokenizer import encode
    from ragtune.models.hf import HFSequenceModel, apply_lora
    from ragtune.tasks.classification.recipe import sequence_batch_loss
    from ragtune.train.batches import BatchStream
    from ragtune.train.loop import train_model
    from ragtune.train.optim import optimizer_and_scheduler

    model = HFSequenceModel(apply_lora(make_bert(), r=4, alpha=8, dropout=0.0, target_modules=None))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    # query and value of 2 layers: A (4x32) + B (32x4) each; the head (32x3 + 3) as peft's modules_to_save copy
    assert sum(trainable.values()) == 2 * 2 * (4 * 32 + 32 * 4) + 32 * 3 + 3 == model.num_trainable_parameters()
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert sum(".query.lora_A" in n for n in trainable) == 2 and sum(".value.lora_B" in n for n in trainable) == 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    rows = make_rows(32)
    ids = encode(make_tokenizer().backend_tokenizer, rows.text.tolist(), 16)
    targets = torch.tensor([list(WORDS).index(label) for label in rows.label])
    stream, cfg = BatchStream(ids, targets, 8, seed=0), TrainConfig(epochs=1, batch_size=8, lr=1e-2, steps_per_epoch=3)
    train_model(model, stream, sequence_batch_loss(model, stream, "classification", cfg),
                *optimizer_and_scheduler(model, cfg, stream.batches_per_pass), cfg=cfg,
                evaluate=lambda: {"accuracy": 0.0}, selection_metric="accuracy", progress=False)
    for name, p in model.named_parameters():
        if name not in trainable:
            assert torch.equal(p, before[name]), name  # every pretrained weight unchanged
    changed = {n for n in trainable if not torch.equal(dict(model.named_parameters())[n], before[n])}
    assert any("lora_B" in n for n in changed) and any("modules_to_save" in n and "classifier" in n for n in changed)


def test_lora_merged_run_loads_in_transformers(tiny_bert, tmp_path, capsys):
    from transformers import pipeline as hf_pipeline

    from ragtune.tasks.classification.predictor import Predictor

    out = tmp_path / "run"
    path = _config(tmp_path, tiny_bert, {"enabled": True, "r": 4, "alpha": 8})
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    losses = [h["train_loss"] for h in json.loads((out / "history.json").read_text())]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert "lora: r=4, alpha=8" in (out / "run.log").read_text()
    folder = out / "hf_model"
    assert (folder / "model.safetensors").exists() and not (folder / "adapter_config.json").exists()
    from safetensors.torch import load_file

    assert not any("lora" in k or "modules_to_save" in k for k in load_file(str(folder / "model.safetensors")))
    meta = json.loads((out / "model.json").read_text())
    assert meta["lora"]["save"] == "merged" and meta["lora"]["r"] == 4

    texts = make_rows(6, seed=2).text.tolist()
    ours = Predictor.from_run_dir(out).predict(texts)
    theirs = hf_pipeline("text-classification", model=str(folder), device=-1)(texts, top_k=None)
    for answer, mine in zip(theirs, ours):
        assert {d["label"]: d["score"] for d in answer} == pytest.approx(mine["scores"], abs=1e-5)
    # the final evaluation scored the merged model that was saved
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(tmp_path / "data" / "test.csv")]) == 0
    loss = json.loads(capsys.readouterr().out)["loss"]
    assert loss == pytest.approx(json.loads((out / "metrics.json").read_text())["test"]["loss"], abs=1e-5)
    assert main(["predict", str(out), "parliament minister vote"]) == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == set(WORDS)


def test_lora_adapter_run_resumes_and_reloads(tiny_bert, tmp_path, capsys):
    from ragtune.models.hf import HFSequenceModel, apply_lora, load_hf_classifier
    from ragtune.tasks.classification.predictor import Predictor
    from ragtune.train.checkpoint import load_weights

    out = tmp_path / "run"
    lora = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["query", "key", "value"], "save": "adapter"}
    path = _config(tmp_path, tiny_bert, lora, epochs=2)
    assert main(["run", str(path), "train.epochs=1", "--out", str(out), "--quiet"]) == 0
    assert main(["run", str(path), "--resume", str(out), "--quiet"]) == 0  # continues to epoch 2
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
    folder = out / "hf_model"
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    assert not (folder / "model.safetensors").exists()
    assert json.loads((folder / "adapter_config.json").read_text())["target_modules"]  # peft's own format

    meta = json.loads((out / "model.json").read_text())
    texts = make_rows(12, seed=2).text.tolist() + ["", "unknownword " * 40]
    reloaded = Predictor.from_run_dir(out)
    labels = meta["labels"]
    base, tokenizer = load_hf_classifier(str(tiny_bert), len(labels), labels)
    in_memory = HFSequenceModel(apply_lora(base, 4, 8, 0.05, ["query", "key", "value"]))
    load_weights(in_memory, out / "checkpoints" / "best" / "model.safetensors")
    expected = Predictor(in_memory, tokenizer.backend_tokenizer, meta).outputs(texts)
    assert torch.allclose(torch.from_numpy(reloaded.outputs(texts)), torch.from_numpy(expected), atol=1e-6)

    capsys.readouterr()
    assert main(["predict", str(out), "parliament minister vote"]) == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == set(WORDS)
    assert main(["eval", str(out), "--data", str(tmp_path / "data" / "test.csv")]) == 0
    loss = json.loads(capsys.readouterr().out)["loss"]
    assert loss == pytest.approx(json.loads((out / "metrics.json").read_text())["test"]["loss"], abs=1e-5)


def test_lora_config_and_user_errors(tiny_bert, monkeypatch):
    from ragtune.models.hf import apply_lora

    with pytest.raises(RagtuneError, match=r"model.lora: unknown key \(only applies to model.backbone: hf\)"):
        load_config(None, ["data.demo=true", "model.lora.enabled=true"])
    with pytest.raises(RagtuneError) as info:
        load_config(None, ["data.demo=true", "model.backbone=hf", f"model.name_or_path={tiny_bert}",
                           "model.lora.enabled=true", "model.freeze_layers=1", "model.lora.target_modules=[]",
                           "model.lora.save=full"])
    message = str(info.value)
    assert "model.lora.save: must be one of 'merged' or 'adapter' (got 'full')" in message
    with pytest.raises(RagtuneError) as info:
        load_config(None, ["data.demo=true", "model.backbone=hf", f"model.name_or_path={tiny_bert}",
                           "model.lora.enabled=true", "model.freeze_layers=1", "model.lora.target_modules=[]"])
    message = str(info.value)
    assert "model.freeze_layers: not used with model.lora.enabled: true" in message
    assert "model.lora.target_modules: needs at least one" in message

    with pytest.raises(RagtuneError, match=r"model.lora.target_modules: \['qkv'\] matches no linear layer.*'query'"):
        apply_lora(make_bert(), 4, 8, 0.0, ["qkv"])
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(RagtuneError, match="pip install peft"):
        apply_lora(make_bert(), 4, 8, 0.0, None)


def test_tokenizer_larger_than_model_vocabulary_is_named(tmp_path, capsys):
    folder = tmp_path / "small_vocab_bert"
    make_bert(vocab_size=10).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    path = _config(tmp_path, folder, {"enabled": False}, epochs=1)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    n = len(make_tokenizer())
    assert f"the tokenizer of {str(folder)!r} has {n} tokens but the model of {str(folder)!r} has only 10 input embedding rows" in err
    assert "Traceback" not in err
