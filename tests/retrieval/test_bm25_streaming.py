"""The streaming BM25 builder writes the index bm25s itself would build: same scores for every query."""

import json

import numpy as np
import pytest

from ragtune.errors import RagtuneError
from ragtune.retrieval import bm25 as bm25_module
from ragtune.retrieval.bm25 import build_bm25, load_bm25, save_bm25, search_bm25, tokenize, write_bm25_streaming

TEXTS = [
    "The cat sat on the mat. The cat was happy.",
    "Dogs chase cats; cats chase mice; mice chase cheese and cheese and cheese.",
    "北京大学是中国的一所大学,位于北京。",
    "the of and",  # stopwords only: a passage with no token
    "Central banks raised interest rates to fight inflation in the economy.",
    "The election results surprised the pollsters and the politicians.",
    "上海的经济增长很快,股票市场上涨。",
    "Interest in the film grew after the festival; the actor won an award.",
    "Cheese, wine and bread: a French economy of taste.",
    "rates rates rates rates rates",
    "Peking University 北京大学 students study economics.",
]
QUERIES = ["cat", "cheese chase", "北京大学", "interest rates economy", "zebra unknown words", "", "the",
           "经济 market", "rates"]


def _blocks(texts, size):
    return [texts[i:i + size] for i in range(0, len(texts), size)]


@pytest.mark.parametrize("block,score_block", [(3, 4), (100, 2), (1, 50_000)])
def test_streaming_index_scores_equal_bm25s_own_index(tmp_path, monkeypatch, block, score_block):
    monkeypatch.setattr(bm25_module, "SCORE_BLOCK", score_block)
    save_bm25(build_bm25(TEXTS), tmp_path / "bm25s")
    work = tmp_path / "work"
    work.mkdir()
    assert write_bm25_streaming(_blocks(TEXTS, block), tmp_path / "stream", work) == len(TEXTS)
    assert list(work.iterdir()) == []  # scratch files removed
    ours, theirs = load_bm25(tmp_path / "stream"), load_bm25(tmp_path / "bm25s")
    assert ours.scores["num_docs"] == theirs.scores["num_docs"] == len(TEXTS)
    assert set(ours.vocab_dict) == set(theirs.vocab_dict)  # ids differ: bm25s numbers a set, we number first seen
    assert len(ours.scores["data"]) == len(theirs.scores["data"])
    for query in QUERIES:
        tokens = [t for t in tokenize(query) if t in ours.vocab_dict]
        if tokens:
            a, b = ours.get_scores(tokens), theirs.get_scores(tokens)
            assert np.array_equal(a, b), query  # bit for bit: same formulas, same float32/float64 steps
        assert search_bm25(ours, [query], k=5) == search_bm25(theirs, [query], k=5)
    assert any(s > 0 for s in ours.get_scores(tokenize("北京大学")))
    params = json.loads((tmp_path / "stream" / "params.index.json").read_text())
    assert params == json.loads((tmp_path / "bm25s" / "params.index.json").read_text())


def test_each_column_lists_its_passages_in_order(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    write_bm25_streaming(_blocks(TEXTS, 2), tmp_path / "s", work)
    r = load_bm25(tmp_path / "s")
    indptr, indices = r.scores["indptr"], r.scores["indices"]
    for t in range(len(indptr) - 1):
        column = indices[indptr[t]:indptr[t + 1]]
        assert np.all(np.diff(column) > 0)  # sorted, no passage twice
    cat = r.vocab_dict["cat"]
    assert indices[indptr[cat]:indptr[cat + 1]].tolist() == [0, 1]  # "cats" stems to "cat" as well


def test_streaming_with_no_texts_is_an_error(tmp_path):
    with pytest.raises(RagtuneError, match="without passages"):
        write_bm25_streaming([], tmp_path / "s", tmp_path)


def test_disk_table_behaves_as_the_set_and_dicts_it_replaces(tmp_path):
    from ragtune.retrieval.corpus import Document, PassageMaker
    from ragtune.retrieval.diskset import SeenStore

    docs = [Document(id="a", text="one two three", source="f", origin="f line 1", explicit_id=True),
            Document(id="a", text="one two three", source="f", origin="f line 2", explicit_id=True),  # duplicate doc
            Document(id="f", text="one two three", source="f", origin="f line 3"),  # duplicate text
            Document(id="f", text="four five", source="f", origin="f line 4"),
            Document(id="f", text="six", source="f", origin="f line 5")]
    in_memory = PassageMaker(2, 0)
    with SeenStore(tmp_path / "seen.sqlite") as store:
        on_disk = PassageMaker(2, 0, seen_texts=store.texts, taken_ids=store.ids, explicit_sha=store.explicit)
        for doc in docs:
            assert on_disk.passages(doc) == in_memory.passages(doc)
        assert len(store.ids) == 3 and store.ids["f~2"] == "f line 5" and store.ids.get("zzz") is None
        with pytest.raises(RagtuneError, match="used twice"):
            on_disk.passages(Document(id="a", text="other text", source="g", origin="g line 1", explicit_id=True))
    counts = ("documents", "duplicates_removed", "empty_documents", "duplicate_documents")
    assert [getattr(on_disk, c) for c in counts] == [getattr(in_memory, c) for c in counts] == [3, 2, 0, 1]
