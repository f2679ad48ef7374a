"""Tests for ragtune.evaluate.text_metrics (BLEU, chrF, ROUGE, perplexity), against values worked out by hand."""

from __future__ import annotations

import json
import math

import pytest

from ragtune.errors import RagtuneError
from ragtune.evaluate.text_metrics import (
    TEXT_METRIC_DIRECTIONS,
    bleu,
    bleu_tokenizer,
    chrf,
    perplexity,
    rouge,
    rouge_tokenize,
)

SENTS = [
    "Two young, White males are outside near many bushes.",
    "Zwei junge weiße Männer sind im Freien.",
    "两个年轻的白人男子在户外的灌木丛附近。",
]


def test_identical_texts_score_100():
    for hyps in (SENTS[:2], SENTS[2:]):
        assert bleu(hyps, hyps)["bleu"] == pytest.approx(100.0)
        assert chrf(hyps, hyps)["chrf"] == pytest.approx(100.0)
        r = rouge(hyps, hyps)
        assert (r["rouge1"], r["rouge2"], r["rougeL"]) == pytest.approx((100.0, 100.0, 100.0))


def test_bleu_hand_computed():
    # 13a tokens: hyp "the cat sat on the mat" (6), ref "the cat sat on a mat" (6), so BP = 1.
    # Clipped n-gram matches (BLEU definition, Papineni et al. 2002):
    #   1-grams: the(1 of 2: the ref has one "the"), cat, sat, on, mat  -> 5/6
    #   2-grams: "the cat", "cat sat", "sat on" of 5                    -> 3/5
    #   3-grams: "the cat sat", "cat sat on" of 4                       -> 2/4
    #   4-grams: "the cat sat on" of 3                                  -> 1/3
    # BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 100 * (1/12) ** 0.25 = 53.728...
    m = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert m["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert m["precisions"] == pytest.approx([500 / 6, 60.0, 50.0, 100 / 3])
    assert m["brevity_penalty"] == 1.0 and m["tokenize"] == "13a"
    assert (m["hyp_len"], m["ref_len"], m["n"]) == (6, 6, 1)
    json.dumps(m)  # JSON-ready


def test_bleu_brevity_penalty_hand_computed():
    # hyp has 5 tokens, all of its 1..4-grams occur in the 6-token ref: every precision is 1,
    # c = 5 < r = 6, so BLEU = 100 * exp(1 - 6/5) = 100 * exp(-0.2) = 81.873...
    m = bleu(["the cat sat on the"], ["the cat sat on the mat"])
    assert m["brevity_penalty"] == pytest.approx(math.exp(-0.2))
    assert m["bleu"] == pytest.approx(100 * math.exp(-0.2))


def test_bleu_corpus_level_and_multiple_references():
    # corpus level: counts are summed before dividing, so this is not the mean of sentence scores
    hyps = ["the cat sat on the mat", "the cat sat on the"]
    refs = ["the cat sat on a mat", "the cat sat on the mat"]
    # 1-grams 10/11, 2-grams 7/9, 3-grams 5/7, 4-grams 3/5; c = 11 < r = 12
    expected = 100 * math.exp(1 - 12 / 11) * (10 / 11 * 7 / 9 * 5 / 7 * 3 / 5) ** 0.25
    assert bleu(hyps, refs)["bleu"] == pytest.approx(expected)
    # a second reference that matches exactly makes the first sentence perfect
    two = bleu(["the cat sat on the mat"], [["the cat sat on a mat", "the cat sat on the mat"]])
    assert two["bleu"] == pytest.approx(100.0)


def test_chinese_bleu_auto_selects_zh():
    # zh tokenizer: one token per character. hyp 我爱北京 (4), ref 我爱北京天安门 (7): all 1..4-gram
    # precisions are 1, BP = exp(1 - 7/4), BLEU = 100 * exp(-0.75) = 47.24
    hyps, refs = ["我爱北京"], ["我爱北京天安门"]
    auto = bleu(hyps, refs)
    assert auto["tokenize"] == "zh" and "tok:zh" in auto["signature"]
    assert auto["bleu"] == pytest.approx(100 * math.exp(-0.75))
    assert bleu(hyps, refs, target_lang="zh-CN")["bleu"] == pytest.approx(auto["bleu"])
    # 13a sees one "word" per sentence that does not match: 0
    plain = bleu(hyps, refs, tokenize="13a")
    assert plain["tokenize"] == "13a" and plain["bleu"] == 0.0 != auto["bleu"]
    # target_lang decides over detection
    assert bleu(hyps, refs, target_lang="de")["tokenize"] == "13a"


def test_bleu_tokenizer_rule():
    assert bleu_tokenizer(["Hallo Welt"]) == "13a"
    assert bleu_tokenizer(["Hallo", "世界"]) == "zh"
    assert bleu_tokenizer([["Hallo", "世界"]]) == "zh"
    for lang in ("zh", "zh-cn", "zh_TW", "zh-Hans", "cmn", "Chinese"):
        assert bleu_tokenizer(["Hallo"], target_lang=lang) == "zh"
    assert bleu_tokenizer(["世界"], target_lang="en") == "13a"


def test_chrf_partial_credit_and_chinese():
    # Männern vs Männer: BLEU sees two different words, chrF shares most character n-grams
    hyp, ref = ["Zwei Männern"], ["Zwei Männer"]
    assert 0 < chrf(hyp, ref)["chrf"] < 100
    assert chrf(hyp, ref)["chrf"] > bleu(hyp, ref)["bleu"]
    assert 0 < chrf(["我爱北京"], ["我爱北京天安门"])["chrf"] < 100
    assert "nw:2" in chrf(hyp, ref, word_order=2)["signature"]


def test_rouge_chinese_matches_hand_count():
    # characters: hyp 北京欢迎你 (5), ref 欢迎你来北京 (6)
    #   ROUGE-1: overlap 5 (北 京 欢 迎 你) -> P = 5/5, R = 5/6, F1 = 2PR/(P+R) = 10/11
    #   ROUGE-2: hyp bigrams 北京 京欢 欢迎 迎你, ref 欢迎 迎你 你来 来北 北京: overlap 3 -> P = 3/4, R = 3/5, F1 = 2/3
    #   ROUGE-L: longest common subsequence 欢迎你 (3) -> P = 3/5, R = 3/6, F1 = 6/11
    r = rouge(["北京欢迎你"], ["欢迎你来北京"])
    assert r["rouge1"] == pytest.approx(100 * 10 / 11)
    assert r["rouge2"] == pytest.approx(100 * 2 / 3)
    assert r["rougeL"] == pytest.approx(100 * 6 / 11)


def test_plain_rouge_score_gives_zero_on_chinese():
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rouge1"]).score("欢迎你来北京", "北京欢迎你")
    assert plain["rouge1"].fmeasure == 0.0  # its tokenizer keeps only a-z0-9
    assert rouge(["北京欢迎你"], ["欢迎你来北京"])["rouge1"] > 0


def test_rouge_english_mean_over_examples_and_tokens():
    assert rouge_tokenize("The MÄNNER, 我爱 it's!") == ["the", "männer", "我", "爱", "it", "s"]
    # example 1 identical (100); example 2: hyp "a cat" vs ref "the cat": R1 overlap 1 of 2 -> F1 0.5,
    # R2 0, RL LCS 1 -> 0.5
    r = rouge(["The cat sat.", "a cat"], ["the cat sat", "the cat"])
    assert r["rouge1"] == pytest.approx((100 + 50) / 2)
    assert r["rouge2"] == pytest.approx((100 + 0) / 2)
    assert r["rougeL"] == pytest.approx((100 + 50) / 2)
    # several references: the best one counts
    assert rouge(["a cat"], [["the dog", "a cat"]])["rouge1"] == pytest.approx(100.0)


def test_perplexity():
    assert perplexity(math.log(2)) == pytest.approx(2.0)
    assert perplexity(0.0) == 1.0
    assert perplexity(1e6) == math.inf  # math.exp would raise OverflowError
    assert math.isnan(perplexity(float("nan")))
    assert TEXT_METRIC_DIRECTIONS["perplexity"] == "min" and TEXT_METRIC_DIRECTIONS["bleu"] == "max"


def test_input_errors():
    with pytest.raises(RagtuneError, match="differ in length: 2 hypotheses vs 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(RagtuneError, match="no hypotheses"):
        chrf([], [])
    with pytest.raises(RagtuneError, match="single string"):
        rouge("abc", "abc")
    with pytest.raises(RagtuneError, match="same number"):
        bleu(["a", "b"], [["a"], ["b", "c"]])
    with pytest.raises(RagtuneError, match="unknown BLEU tokenizer 'spaces'; choose one of none, zh, 13a"):
        bleu(["a"], ["a"], tokenize="spaces")
