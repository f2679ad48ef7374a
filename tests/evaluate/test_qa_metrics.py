"""Exact match and F1 of extractive QA (ragtune.evaluate.qa_metrics), against hand-computed values."""

import pytest

from ragtune.errors import RagtuneError
from ragtune.evaluate.qa_metrics import (
    answer_exact_match,
    answer_f1,
    exact_match_score,
    f1_score,
    has_cjk,
    mixed_segmentation,
    normalize_answer,
    qa_metrics,
)


@pytest.mark.parametrize("text, normalised", [
    ("The Denver Broncos", "denver broncos"),
    ("  the  Denver   Broncos!! ", "denver broncos"),
    ("an apple a day", "apple day"),
    ("Theatre of the Absurd", "theatre of absurd"),  # 'the' only as a whole word
    ("U.S. Navy's ship", "us navys ship"),
    ("A", ""),
    ("", ""),
    ("café-crème", "cafécrème"),  # only ASCII punctuation goes, as in the official script
])
def test_normalize_answer_is_the_squad_v11_one(text, normalised):
    assert normalize_answer(text) == normalised


def test_squad_exact_match_and_f1_known_cases():
    # the official script's classic: the article does not count
    assert exact_match_score("The Denver Broncos", "Denver Broncos") == 1.0
    assert f1_score("The Denver Broncos", "Denver Broncos") == 1.0
    # one extra word: common 2, P = 2/3, R = 1, F1 = 2 * (2/3) / (5/3) = 0.8
    assert exact_match_score("Denver Broncos won", "Denver Broncos") == 0.0
    assert f1_score("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    # one word short: P = 1, R = 1/2, F1 = 2/3
    assert f1_score("Broncos", "Denver Broncos") == pytest.approx(2 / 3)
    # bag of tokens: order does not matter, repeats count once each
    assert f1_score("Broncos Denver", "Denver Broncos") == 1.0
    assert f1_score("cat cat", "cat") == pytest.approx(2 / 3)  # common 1, P 1/2, R 1
    assert f1_score("Carolina Panthers", "Denver Broncos") == 0.0
    # empty answers: EM compares strings, F1 is 0 with no common token
    assert exact_match_score("", "") == 1.0 and f1_score("", "") == 0.0
    assert exact_match_score("the", "") == 1.0  # 'the' normalises to ''
    assert exact_match_score("", "Denver") == 0.0 and f1_score("", "Denver") == 0.0


def test_max_over_gold_answers():
    golds = ["Denver Broncos", "Broncos", "the Broncos of Denver"]
    assert answer_exact_match("Broncos", golds) == 1.0
    assert answer_f1("Broncos", golds) == 1.0
    # best F1 is against 'Denver Broncos': 0.8 (vs 'Broncos': P 1/3 R 1 -> 0.5; vs 'broncos of denver': P 2/3 R 2/3)
    assert answer_f1("Denver Broncos won", golds) == pytest.approx(0.8)


@pytest.mark.parametrize("text, tokens", [
    ("北京", ["北", "京"]),
    ("《红楼梦》的作者是曹雪芹。", ["红", "楼", "梦", "的", "作", "者", "是", "曹", "雪", "芹"]),
    ("iPhone 6发布", ["iphone", "6", "发", "布"]),
    ("2018年3月", ["2018", "年", "3", "月"]),
    ("约1,000人", ["约", "1000", "人"]),  # punctuation is deleted, not a separator
    ("“北京”、上海", ["北", "京", "上", "海"]),
    ("北 京", ["北", "京"]),
    ("NBA总决赛MVP", ["nba", "总", "决", "赛", "mvp"]),
])
def test_mixed_segmentation_cmrc_style(text, tokens):
    assert mixed_segmentation(text) == tokens


def test_cmrc_exact_match_and_f1_known_cases():
    # punctuation does not count
    assert exact_match_score("北京。", "北京") == 1.0
    assert exact_match_score("《红楼梦》", "红楼梦") == 1.0
    # one extra character: lcs 2, P 2/3, R 1, F1 0.8
    assert exact_match_score("北京市", "北京") == 0.0
    assert f1_score("北京市", "北京") == pytest.approx(0.8)
    # longest common *substring*: '京北' vs '北京' share runs of 1 only: P 1/2, R 1/2, F1 0.5
    assert f1_score("京北", "北京") == pytest.approx(0.5)
    # '曹雪芹是作者' vs '曹雪芹': lcs 3, P 3/6, R 1, F1 2/3
    assert f1_score("曹雪芹是作者", "曹雪芹") == pytest.approx(2 / 3)
    # mixed: ['2018', '年', '3', '月'] vs ['2018', '年']: lcs 2, P 1/2, R 1, F1 2/3
    assert f1_score("2018年3月", "2018年") == pytest.approx(2 / 3)
    assert f1_score("上海", "北京") == 0.0


def test_scheme_is_chosen_per_answer_pair():
    assert has_cjk("北京") and has_cjk("The 北京 team") and not has_cjk("Beijing") and not has_cjk("ＡＢＣ，")
    # CJK in the gold only: CMRC scheme, and nothing matches
    assert f1_score("Beijing", "北京") == 0.0
    # CJK in the prediction only: CMRC scheme, where 'the' is a token like any other
    # ['the', '北', '京'] vs ['北', '京']: lcs 2, P 2/3, R 1 -> 0.8; no EM
    assert exact_match_score("The 北京", "北京") == 0.0
    assert f1_score("The 北京", "北京") == pytest.approx(0.8)
    # without CJK the same words follow SQuAD ('the' dropped)
    assert exact_match_score("The Beijing", "Beijing") == 1.0
    # one question with an English and a Chinese gold answer: each pair scored by its own scheme
    assert answer_exact_match("Beijing", ["北京", "beijing"]) == 1.0


def test_qa_metrics_worked_example():
    result = qa_metrics(
        {"a": "The Denver Broncos", "b": "Denver Broncos won", "c": "Carolina", "extra": "ignored"},
        {"a": ["Denver Broncos"], "b": ["Denver Broncos"], "c": ["Panthers"]},
    )
    # a: EM 1, F1 1; b: EM 0, F1 0.8; c: EM 0, F1 0 -> EM 100/3, F1 60
    assert result == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(60.0), "n": 3}
    # the module docstring's example, one English and one Chinese question
    mixed = qa_metrics({"q1": "the Denver Broncos", "q2": "北京"}, {"q1": ["Denver Broncos", "Broncos"], "q2": ["北京市"]})
    assert mixed == {"exact_match": 50.0, "f1": pytest.approx(90.0), "n": 2}
    perfect = qa_metrics({"x": "曹雪芹"}, {"x": ("曹雪芹", "清代曹雪芹")})
    assert perfect == {"exact_match": 100.0, "f1": 100.0, "n": 1}


def test_qa_metrics_errors():
    with pytest.raises(RagtuneError, match="references is empty"):
        qa_metrics({"a": "x"}, {})
    with pytest.raises(RagtuneError, match=r"predictions has no answer for 2 of the 3 reference questions, e.g. \['b', 'c'\]"):
        qa_metrics({"a": "x"}, {"a": ["x"], "b": ["y"], "c": ["z"]})
    with pytest.raises(RagtuneError, match="differ only in type"):
        qa_metrics({1: "x"}, {"1": ["x"]})
    with pytest.raises(RagtuneError, match=r"references\['a'\] has no gold answers"):
        qa_metrics({"a": "x"}, {"a": []})
    with pytest.raises(RagtuneError, match=r"references\['a'\] must be a list of gold answer strings"):
        qa_metrics({"a": "x"}, {"a": "x"})
    with pytest.raises(RagtuneError, match=r"references\['a'\] holds a gold answer that is not a string: 3"):
        qa_metrics({"a": "x"}, {"a": ["x", 3]})
    with pytest.raises(RagtuneError, match=r"predictions\['a'\] must be a string"):
        qa_metrics({"a": None}, {"a": ["x"]})
    with pytest.raises(RagtuneError, match="must be dicts keyed by question id"):
        qa_metrics(["x"], {"a": ["x"]})
