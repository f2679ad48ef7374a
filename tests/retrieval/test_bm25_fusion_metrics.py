"""BM25 tokenization and search (English, Chinese), RRF fusion and the retrieval metrics, against hand-made values."""

import math

import pytest

from ragtune.errors import RagtuneError
from ragtune.evaluate.retrieval_metrics import mrr_at_k, ndcg_at_k, recall_at_k, retrieval_metrics
from ragtune.retrieval.bm25 import build_bm25, load_bm25, save_bm25, search_bm25, tokenize
from ragtune.retrieval.fusion import reciprocal_rank_fusion


def test_tokenize_english_and_chinese():
    assert tokenize("The Runners are RUNNING quickly") == ["runner", "run", "quick"]  # lowercase, stopwords, stems
    tokens = tokenize("北京大学的学生")
    assert {"北京", "大学", "北京大学", "学生"} <= set(tokens) and "的" not in tokens  # search mode, zh stopwords
    mixed = tokenize("清华大学 computer science")
    assert "清华大学" in mixed and "comput" in mixed and "scienc" in mixed
    assert tokenize("!!! ...") == []


def test_bm25_finds_the_right_passage_and_survives_save_load(tmp_path):
    texts = ["The cat sleeps on the warm sofa.", "Stock markets fell sharply on Monday.",
             "北京大学位于北京市海淀区。", "上海是中国最大的城市之一。", "Dogs love running in the park."]
    retriever = build_bm25(texts)
    save_bm25(retriever, tmp_path / "bm25")
    loaded = load_bm25(tmp_path / "bm25")
    for r in (retriever, loaded):
        results = search_bm25(r, ["a cat sleeping", "北京大学在哪里", "market falls", "上海", "zebra"], k=3)
        assert results[0][0][0] == 0 and results[1][0][0] == 2 and results[2][0][0] == 1 and results[3][0][0] == 3
        assert results[4] == []  # no shared token: no hit rather than arbitrary passages
        assert all(score > 0 for hits in results for _, score in hits)
        assert [row for row, _ in results[0]] == [0]  # only matching passages are returned


def test_rrf_orders_by_summed_reciprocal_ranks():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]], k=60)
    assert [item for item, _ in fused] == ["b", "c", "a", "d"]
    expected = {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63 + 1 / 62, "d": 1 / 63}
    for item, score in fused:
        assert score == pytest.approx(expected[item], rel=1e-12)
    # k sets how much a first rank weighs: "x" (rank 1 in one list) vs "y" (rank 4 in both lists)
    lists = [["x", "p", "q", "y"], ["r", "s", "t", "y"]]
    order60 = [item for item, _ in reciprocal_rank_fusion(lists, k=60)]
    assert order60.index("y") < order60.index("x")  # 2/64 > 1/61
    order1 = [item for item, _ in reciprocal_rank_fusion(lists, k=1)]
    assert order1.index("x") < order1.index("y")  # 1/2 > 2/5
    # an item repeated in one list counts once, at its first rank; ties keep first-seen order; top cuts
    assert reciprocal_rank_fusion([["x", "x", "y"]], top=1) == [("x", pytest.approx(1 / 61))]
    assert [item for item, _ in reciprocal_rank_fusion([["p"], ["q"]])] == ["p", "q"]
    with pytest.raises(RagtuneError, match="RRF constant k must be positive"):
        reciprocal_rank_fusion([["a"]], k=0)


def test_metrics_against_hand_computed_values():
    ranked = [["d3", "d1", "d7"], ["d2", "d9"], ["d5", "d4", "d6", "d8"]]
    gold = [{"d1"}, {"d5"}, {"d4", "d8"}]
    # recall@1: 0, 0, 0; recall@2: 1, 0, 1/2; recall@4: 1, 0, 1
    assert recall_at_k(ranked, gold, 1) == 0.0
    assert recall_at_k(ranked, gold, 2) == pytest.approx((1 + 0 + 0.5) / 3)
    assert recall_at_k(ranked, gold, 4) == pytest.approx(2 / 3)
    # MRR@10: 1/2, 0, 1/2; MRR@1: all 0
    assert mrr_at_k(ranked, gold, 10) == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert mrr_at_k(ranked, gold, 1) == 0.0
    # nDCG@10: q1 (1/log2 3) / 1; q2 0; q3 (1/log2 3 + 1/log2 5) / (1 + 1/log2 3)
    q1 = 1 / math.log2(3)
    q3 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, gold, 10) == pytest.approx((q1 + 0 + q3) / 3)
    # repeated ids count once, at their first rank
    assert ndcg_at_k([["a", "a", "b"]], [{"b"}], 2) == pytest.approx(1 / math.log2(3))
    assert recall_at_k([["a", "a", "b"]], [{"b"}], 2) == 1.0
    metrics = retrieval_metrics(ranked, gold, ks=(1, 2))
    assert set(metrics) == {"recall@1", "recall@2", "mrr@10", "ndcg@10"}


def test_metric_input_errors():
    with pytest.raises(RagtuneError, match="question 1 has no gold id"):
        recall_at_k([["a"], ["b"]], [{"a"}, set()], 1)
    with pytest.raises(RagtuneError, match="2 ranked lists but 1 gold sets"):
        mrr_at_k([["a"], ["b"]], [{"a"}], 1)
    with pytest.raises(RagtuneError, match="k must be a positive integer"):
        ndcg_at_k([["a"]], [{"a"}], 0)
