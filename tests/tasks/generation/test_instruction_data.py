"""Instruction data for generation runs: `messages` conversations, prompt templates, system prompts, the
tokenizer's chat template with the loss on the assistant's turn only (labels -100 elsewhere), packing, and
the data report's count of truncated examples; with a tiny random Llama that has a ChatML template."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from tiny_llm import WORDS, reversal_rows, save_tiny_chat_llama, save_tiny_llama

from ragtune.cli import main
from ragtune.data.seq2seq import read_messages, read_templated
from ragtune.errors import RagtuneError
from ragtune.models.hf_text import load_hf_text_model
from ragtune.tasks import load_config
from ragtune.tasks.generation.predictor import IGNORE_INDEX, GenerationPredictor, pack_examples


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory):
    return save_tiny_chat_llama(tmp_path_factory.mktemp("chat_llama") / "m")


@pytest.fixture(scope="module")
def chat_predictor(chat_llama):
    tok, model, _ = load_hf_text_model(str(chat_llama), "causal", 64)
    meta = {"prompts": True, "chat": {"template": True, "system_prompt": "Reverse the words."},
            "decode": {"strategy": "greedy", "max_new_tokens": 6}}
    return GenerationPredictor(model.eval(), tok, meta, batch_size=4)


def test_chat_template_example_and_labels(chat_predictor):
    p = chat_predictor
    hf = p.tokenizer.hf
    (ids, prompt_len), = p.training_examples(["alpha beta"], ["beta alpha"])
    messages = [{"role": "system", "content": "Reverse the words."}, {"role": "user", "content": "alpha beta"}]
    full = hf.apply_chat_template(messages + [{"role": "assistant", "content": "beta alpha"}], tokenize=False)
    assert hf.decode(ids) == full.rstrip()  # the template's own text, no extra <s> or </s>
    opened = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert hf.decode(ids[:prompt_len]) == opened
    _, _, labels = p.batch_labels([(ids, prompt_len), (ids[:prompt_len + 2], prompt_len)])
    assert (labels[0, :prompt_len - 1] == IGNORE_INDEX).all()  # the prompt (system, user, assistant header)
    learned = labels[0][labels[0] != IGNORE_INDEX].tolist()
    assert hf.decode(learned) == "beta alpha<|im_end|>"  # the reply and its end of turn
    assert (labels[1, prompt_len + 1:] == IGNORE_INDEX).all()  # padding of the shorter row
    # inference reads the same prompt: the template with the assistant's turn opened
    assert p._decoder_inputs(["alpha beta"], 6)[0] == ids[:prompt_len]
    # a conversation with its own system message keeps it
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "alpha"}]
    assert "Be brief." in p.prompt_texts([conv])[0] and "Reverse" not in p.prompt_texts([conv])[0]


def test_pack_examples_keeps_every_response_token():
    examples = [([1, 2, 3, 4], 2), ([5, 6, 7], 1), ([8, 9], 1), ([10, 11, 12, 13, 14], 3)]
    rows = pack_examples(examples, max_length=8)
    assert [ids for ids, _ in rows] == [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14]]
    assert rows[0][1] == [False, False, True, True, False, True, True]
    learned = sum(sum(flags) for _, flags in rows)
    assert learned == sum(len(ids) - n for ids, n in examples)


def test_read_messages_and_templates(tmp_path):
    convs = [[{"role": "user", "content": "alpha beta"}, {"role": "assistant", "content": "beta alpha"}],
             [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
              {"role": "user", "content": "gamma"}, {"role": "assistant", "content": "ammag"}]]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    pd.DataFrame({"messages": [json.dumps(c) for c in convs]}).to_csv(tmp_path / "c.csv", index=False)
    for name in ("c.jsonl", "c.csv"):
        df = read_messages(tmp_path / name)
        assert df.response.tolist() == ["beta alpha", "ammag"]
        assert df.prompt[1] == convs[1][:-1]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"messages": convs[0]}) + "\n" +
                                        json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(RagtuneError, match=r"bad.jsonl: row 2 .*column 'messages': the last message must be the assistant"):
        read_messages(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(RagtuneError, match=r"row 1 .*message 0 needs role \(system, user, assistant\)"):
        read_messages(tmp_path / "bad2.jsonl")
    pd.DataFrame({"q": ["who?", "what?"], "ctx": ["bob is here", "a car"], "a": ["bob", "car"]}).to_csv(
        tmp_path / "t.csv", index=False)
    df = read_templated(tmp_path / "t.csv", "{ctx}\nQuestion: {q} {{x}}", "a")
    assert df.prompt.tolist() == ["bob is here\nQuestion: who? {x}", "a car\nQuestion: what? {x}"]
    with pytest.raises(RagtuneError, match=r"t.csv.*'question'.*\['q', 'ctx', 'a'\]|t.csv.*question"):
        read_templated(tmp_path / "t.csv", "{question}", "a")


def write(folder, tree, name="c.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return str(path)


def chat_tree(model: str, **data) -> dict:
    return {"task": "generation",
            "data": {"train": "train.jsonl", "validation_fraction": 0.2, "test_fraction": 0.1, **data},
            "model": {"backbone": "hf", "name_or_path": model, "max_length": 40,
                      "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "save": "adapter"}},
            "train": {"epochs": 1, "batch_size": 8, "lr": 3e-3, "optimizer": "adamw", "seed": 0},
            "eval": {"max_decode_rows": 4}, "decode": {"strategy": "greedy", "max_new_tokens": 6}}


def test_messages_run_with_chat_template_packing_and_truncation(tmp_path, chat_llama, capsys):
    rows = reversal_rows(60, 0, WORDS, longest=4)
    long = " ".join(WORDS * 3)  # longer than model.max_length: cut
    convs = [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}] for r in rows]
    convs.append([{"role": "user", "content": long}, {"role": "assistant", "content": "alpha"}])
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    tree = chat_tree(str(chat_llama), messages_column="messages", packing=True)
    tree["model"]["max_length"] = 64  # two short conversations fit in a row
    run = tmp_path / "run"
    assert main(["run", write(tmp_path, tree), "--out", str(run), "--quiet"]) == 0
    info = json.loads((run / "data_report.json").read_text())
    assert info["chat_template"] is True and info["truncated_prompts"] >= 1 and info["truncated_responses"] == 0
    assert info["packed_rows"] < info["splits"]["train"]["pairs"]
    report = (run / "report.md").read_text()
    assert "chat template" in report and "Packing:" in report
    meta = json.loads((run / "model.json").read_text())
    assert meta["chat"] == {"template": True, "system_prompt": None}
    predictor = GenerationPredictor.from_run_dir(run)
    out = predictor.chat([[{"role": "user", "content": "alpha beta"}]])[0]
    assert out["output"] == predictor.complete(["alpha beta"])[0]  # a text prompt is one user message
    assert out["prompt_tokens"] == len(predictor._decoder_inputs(["alpha beta"], 6)[0])


def test_chat_template_errors(tmp_path, capsys):
    plain = save_tiny_llama(tmp_path / "plain")  # a tokenizer without a chat template
    rows = reversal_rows(20, 0, WORDS, longest=3)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]}) + "\n" for r in rows))
    config = write(tmp_path, chat_tree(str(plain), messages_column="messages"))
    assert main(["run", config, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.chat_template: auto needs a chat template" in err and "data.chat_template: none" in err
    assert "Traceback" not in err and not (tmp_path / "r" / "model.json").exists()
    # none: the turns as plain text, and the run works
    assert main(["run", write(tmp_path, chat_tree(str(plain), messages_column="messages", chat_template="none"), "n.yaml"),
                 "--out", str(tmp_path / "n"), "--quiet"]) == 0
    assert json.loads((tmp_path / "n" / "model.json").read_text())["chat"]["template"] is False
    bad = chat_tree(str(plain), messages_column="messages", prompt_template="{q", system_prompt=" ")
    with pytest.raises(RagtuneError) as exc:
        load_config(write(tmp_path, bad, "bad.yaml"))
    msg = str(exc.value)
    assert "data.prompt_template: not used with data.messages_column" in msg and "data.system_prompt: empty" in msg
    assert "data.prompt_template: expected '}' before end of string (write {{ and }} for literal braces)" in msg


def test_prompt_template_run_with_the_plain_format(tmp_path):
    rows = reversal_rows(40, 0, WORDS, longest=3)
    pd.DataFrame({"words": [r["prompt"] for r in rows], "answer": [r["response"] for r in rows]}).to_csv(
        tmp_path / "train.csv", index=False)
    tree = {"task": "generation", "data": {"train": "train.csv", "prompt_template": "Reverse: {words}",
                                           "response_column": "answer", "validation_fraction": 0.2, "test_fraction": 0.1},
            "tokenizer": {"vocab_size": 300, "min_frequency": 1},
            "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 32},
            "train": {"epochs": 1, "batch_size": 8, "seed": 0}, "decode": {"strategy": "greedy"}}
    run = tmp_path / "run"
    assert main(["run", write(tmp_path, tree), "--out", str(run), "--quiet"]) == 0
    examples = json.loads((run / "metrics.json").read_text())
    assert examples["validation"]["n"] == 8
    predictor = GenerationPredictor.from_run_dir(run)
    assert predictor.chat_settings == {"template": False, "system_prompt": None}
    (ids, n), = predictor.training_examples(["Reverse: alpha"], ["alpha"])
    assert torch.tensor(ids).tolist()[0] == predictor.model.config.bos_id  # the plain format: <s> prompt </s> response </s>
