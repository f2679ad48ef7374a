"""Dense retrieval with a tiny random sentence-transformer the tests build themselves (no downloads)."""

import numpy as np
import pytest
from tiny_hf import make_rows

from ragtune.errors import RagtuneError
from ragtune.retrieval import build_index, load_index
from ragtune.retrieval.dense import (
    build_faiss,
    encode_queries,
    ivfpq_params,
    load_encoder,
    resolve_encoder,
    search_faiss,
    write_embeddings,
)


def _texts(n, seed=0):
    """``n`` distinct short texts over the tiny tokenizer's vocabulary."""
    rows = make_rows(n * 2, seed=seed, length=8)
    return list(dict.fromkeys(rows.text))[:n]


def test_embeddings_are_written_block_by_block_and_normalised(tiny_encoder, tmp_path):
    model = load_encoder(str(tiny_encoder))
    texts = _texts(40)
    path = tmp_path / "embeddings.npy"
    dim = write_embeddings(path, model, texts, batch_size=4)  # blocks of 32: two blocks
    embeddings = np.load(path, mmap_mode="r")
    assert isinstance(embeddings, np.memmap) and embeddings.dtype == np.float32
    assert embeddings.shape == (40, 32) == (len(texts), dim)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    direct = model.encode(texts[35:], normalize_embeddings=True)
    assert np.allclose(embeddings[35:], direct, atol=1e-5)  # row i is text i, also in the second block
    # appending keeps the previous rows in front
    more = tmp_path / "more.npy"
    write_embeddings(more, model, ["market bank shares"], batch_size=4, previous=embeddings)
    grown = np.load(more, mmap_mode="r")
    assert grown.shape == (41, 32) and np.array_equal(grown[:40], embeddings)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_faiss_kinds_find_a_passage_by_its_own_text(tiny_encoder, tmp_path, kind):
    model = load_encoder(str(tiny_encoder))
    texts = _texts(300)
    write_embeddings(tmp_path / "e.npy", model, texts, batch_size=64)
    embeddings = np.load(tmp_path / "e.npy", mmap_mode="r")
    index, params = build_faiss(embeddings, kind)
    assert index.ntotal == 300
    queries = list(range(0, 300, 15))
    results = search_faiss(index, encode_queries(model, [texts[i] for i in queries]), k=10)
    if kind == "ivfpq":
        assert params == {"nlist": 7, "m": 4, "nbits": 8, "nprobe": 7}
        found = sum(i in [row for row, _ in hits] for i, hits in zip(queries, results))
        assert found >= 0.8 * len(queries)  # approximate and compressed: most, not all
    else:
        assert [hits[0][0] for hits in results] == queries
        assert all(hits[0][1] == pytest.approx(1.0, abs=1e-4) for hits in results)


def test_ivfpq_parameters_and_minimum_size():
    assert ivfpq_params(10_000, 384) == {"nlist": 256, "m": 48, "nbits": 8, "nprobe": 16}
    assert ivfpq_params(256, 32)["nlist"] == 6
    with pytest.raises(RagtuneError, match="ivfpq needs at least 256 passages.*the corpus has 255"):
        ivfpq_params(255, 32)


def test_ivfpq_index_on_a_small_corpus_is_a_clear_error(tiny_encoder, tmp_path):
    (tmp_path / "docs.jsonl").write_text("\n".join(f'{{"text": "{t}"}}' for t in _texts(20)), encoding="utf-8")
    with pytest.raises(RagtuneError, match="ivfpq needs at least 256 passages.*has 20; use --faiss flat"):
        build_index([tmp_path / "docs.jsonl"], tmp_path / "index", kind="dense", encoder=str(tiny_encoder),
                     faiss_index="ivfpq", progress=False)
    assert not (tmp_path / "index").exists()  # nothing half-written is left behind
    assert not list(tmp_path.glob(".index*"))


def test_dense_index_end_to_end(tiny_encoder, tmp_path):
    texts = _texts(30)
    (tmp_path / "docs.jsonl").write_text("\n".join(f'{{"id": "d{i}", "text": "{t}"}}' for i, t in enumerate(texts)),
                                         encoding="utf-8")
    out = build_index([tmp_path / "docs.jsonl"], tmp_path / "index", kind="dense", encoder=str(tiny_encoder),
                      faiss_index="hnsw", progress=False)
    index = load_index(out, expected_encoder=str(tiny_encoder))
    assert index.manifest["embedding_dim"] == 32 and index.manifest["faiss_index"] == "hnsw"
    hits = index.search(texts[7], k=3)
    assert hits[0].id == "d7::0" and hits[0].doc_id == "d7" and hits[0].text == texts[7]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4) and hits[0].score >= hits[1].score >= hits[2].score
    batch = index.search_batch([texts[3], texts[12]], k=2)
    assert [h[0].doc_id for h in batch] == ["d3", "d12"]


def test_encoder_errors(tmp_path):
    with pytest.raises(RagtuneError, match="encoder folder not found"):
        resolve_encoder(str(tmp_path / "no_such_model"))
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(RagtuneError, match=r"encoder '.*empty_model': cannot load a sentence-transformers model"):
        load_encoder(str(empty))
