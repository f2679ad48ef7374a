"""The prompts and answers of a generative QA reader (ragtune/tasks/qa/prompts.py): what the model reads,
what it learns to write, and how its output is read back."""

import random

import pytest

from ragtune.tasks.qa.prompts import (PassageCutter, default_system_prompt, evidence_sentence, is_abstention,
                                      parse_output, target_text, training_passages, user_message)

SETTINGS = {"no_answer": "unanswerable", "cite": False, "quote_evidence": False}


def test_user_message_numbers_the_passages_before_the_question():
    assert user_message("Who won?", ["A won.", "B lost."]) == "[1] A won.\n\n[2] B lost.\n\nQuestion: Who won?"
    assert user_message("Who won?", []) == "Question: Who won?"


def test_the_default_instruction_says_what_the_model_was_taught():
    plain = default_system_prompt("unanswerable", abstain=False, cite=False, quote_evidence=False)
    assert "unanswerable" not in plain and "[2]" not in plain
    taught = default_system_prompt("无法回答", abstain=True, cite=True, quote_evidence=True)
    assert '"无法回答"' in taught and "[2]" in taught and "Evidence:" in taught


def test_targets_and_their_parsing_round_trip():
    cite = {**SETTINGS, "cite": True}
    assert target_text("Denver Broncos", 2, cite) == "Denver Broncos [2]"
    assert parse_output("Denver Broncos [2]", cite) == ("Denver Broncos", [2])
    assert parse_output("Denver Broncos [ 2 ] [1] [2]", cite) == ("Denver Broncos", [2, 1])
    assert target_text(None, None, cite) == "unanswerable"  # no passage to cite
    quote = {**SETTINGS, "quote_evidence": True}
    text = target_text("1879", 1, quote, evidence="Tesla was born in 1879.")
    assert text == 'Evidence: "Tesla was born in 1879."\nAnswer: 1879'
    assert parse_output(text, quote) == ("1879", [])
    assert parse_output("  Paris ", SETTINGS) == ("Paris", [])


def test_abstention_is_read_after_squad_normalisation():
    assert is_abstention("Unanswerable.", SETTINGS)
    assert not is_abstention("Paris", SETTINGS)
    assert is_abstention("无 法 回 答", {"no_answer": "无法回答"})


def test_evidence_sentence_finds_the_sentence_with_the_answer():
    passage = "Tesla was born in Smiljan. He moved to Paris in 1882. He died in 1943."
    assert evidence_sentence(passage, "paris") == "He moved to Paris in 1882."
    assert evidence_sentence("北京是首都。上海最大。", "上海") == "上海最大。"
    assert evidence_sentence(passage, "London") == passage


def test_raft_mixes_gold_and_distractors_and_sometimes_leaves_the_gold_out():
    rng = random.Random(0)
    seen_without, positions = 0, set()
    for _ in range(400):
        passages, at = training_passages("raft", "GOLD", ["d1", "d2", "d3", "d4"], k=3, p_no_gold=0.25, rng=rng)
        assert len(passages) == 3
        if at is None:
            seen_without += 1
            assert "GOLD" not in passages and set(passages) == {"d1", "d2", "d3"}
        else:
            assert passages[at - 1] == "GOLD" and set(passages) - {"GOLD"} == {"d1", "d2"}
            positions.add(at)
    assert 60 < seen_without < 140  # about a quarter of 400
    assert positions == {1, 2, 3}  # the gold moves around
    assert training_passages("gold", "GOLD", ["d1"], 3, 0.5, rng) == (["GOLD"], 1)
    assert training_passages("retrieved", "GOLD", ["r1", "r2", "r3", "r4"], 3, 0.5, rng, 2) == (["r1", "r2", "r3"], 2)
    with pytest.raises(ValueError, match="none, gold, retrieved or raft"):
        training_passages("both", "GOLD", [], 3, 0.5, rng)


def test_the_cutter_keeps_the_answer_of_a_long_passage():
    from transformers import BertTokenizerFast

    words = [f"w{i}" for i in range(200)]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])})
    text = " ".join(words)
    cutter = PassageCutter(tokenizer, 20)
    start = text.index("w150")
    head, around = cutter.cut([text, text], [None, (start, start + 4)])
    assert head.split() == words[:20]
    assert "w150" in around.split() and len(around.split()) == 20
    assert cutter.cut(["w1 w2"]) == ["w1 w2"]  # short passages stay whole
