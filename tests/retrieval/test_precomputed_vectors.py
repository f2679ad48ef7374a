"""`ragtune index --vectors`: a dense index from embeddings computed elsewhere, one row per corpus record."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ragtune.errors import RagtuneError
from ragtune.retrieval import build_index, load_index
from ragtune.retrieval.dense import NpyRows, load_encoder

RECORDS = [
    {"id": "a", "text": "Cats sleep most of the day and purr when they are happy."},
    {"id": "b", "text": "   "},  # empty: gives no passage, its vector row is skipped
    {"id": "c", "text": "Knead the dough, let it rise, then bake the bread for an hour."},
    {"id": "d", "text": "Cats sleep most of the day and purr when they are happy."},  # duplicate text of a
    {"id": "e", "text": "绿茶起源于中国,已有数千年的历史。"},
    {"id": "f", "text": "Glaciers are slowly moving rivers of ice."},
]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    return path


@pytest.fixture
def vectors(tiny_encoder, tmp_path):
    """The tiny encoder's own document embeddings of RECORDS, scaled (not unit length), as float64."""
    model = load_encoder(str(tiny_encoder))
    texts = [r["text"] if r["text"].strip() else "placeholder" for r in RECORDS]
    v = model.encode_document(texts, convert_to_numpy=True).astype(np.float64) * 3.0
    path = tmp_path / "vectors.npy"
    np.save(path, v)
    return path


def test_precomputed_vectors_give_the_same_index_as_encoding(tiny_encoder, corpus, vectors, tmp_path):
    build_index([corpus], tmp_path / "enc", kind="dense", encoder=str(tiny_encoder), progress=False)
    build_index([corpus], tmp_path / "pre", kind="dense", encoder=str(tiny_encoder), progress=False, vectors=vectors)
    enc, pre = load_index(tmp_path / "enc"), load_index(tmp_path / "pre")
    assert [p["id"] for p in pre.passages] == [p["id"] for p in enc.passages] == ["a::0", "c::0", "e::0", "f::0"]
    e_enc = np.load(tmp_path / "enc" / "embeddings.npy")
    e_pre = np.load(tmp_path / "pre" / "embeddings.npy")
    assert e_pre.dtype == np.float32
    assert np.allclose(np.linalg.norm(e_pre, axis=1), 1.0, atol=1e-6)  # normalised as copied
    assert np.allclose(e_pre, e_enc, atol=1e-5)  # rows b (empty) and d (duplicate) were skipped
    for query in ["happy cats", "bread", "绿茶"]:
        assert [h.id for h in pre.search(query, k=4)] == [h.id for h in enc.search(query, k=4)]
    manifest = json.loads((tmp_path / "pre" / "manifest.json").read_text())
    assert manifest["vectors"]["rows"] == len(RECORDS) and manifest["vectors"]["path"] == str(vectors.resolve())
    assert json.loads((tmp_path / "enc" / "manifest.json").read_text())["vectors"] is None


def test_hybrid_index_with_vectors(tiny_encoder, corpus, vectors, tmp_path):
    build_index([corpus], tmp_path / "h", kind="hybrid", encoder=str(tiny_encoder), progress=False, vectors=vectors)
    index = load_index(tmp_path / "h")
    assert index.search("bread dough", k=1)[0].id == "c::0"


def _save(tmp_path, array, name="v.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


def test_bad_vectors_are_refused_and_nothing_is_written(tiny_encoder, corpus, tmp_path):
    def build(v, **kw):
        out = tmp_path / "idx"
        with pytest.raises(RagtuneError) as err:
            build_index([corpus], out, kind=kw.pop("kind", "dense"), encoder=str(tiny_encoder), progress=False,
                        vectors=v, **kw)
        assert not out.exists() and not list(tmp_path.glob(".idx.tmp-*"))
        return str(err.value)

    good = np.random.default_rng(0).normal(size=(len(RECORDS), 32))
    assert "holds 5 vectors but the corpus has 6 records" in build(_save(tmp_path, good[:5]))
    assert "vectors have 16 dimensions, the encoder gives 32" in build(_save(tmp_path, good[:, :16]))
    with_nan = good.copy()
    with_nan[4, 3] = np.nan
    assert "row 4 holds NaN or infinite values" in build(_save(tmp_path, with_nan))
    zeros = good.copy()
    zeros[2] = 0
    assert "row 2 holds only zeros" in build(_save(tmp_path, zeros))
    assert "expected a 2-D array" in build(_save(tmp_path, good.ravel()))
    (tmp_path / "text.npy").write_text("not numpy")
    assert "not a .npy file" in build(tmp_path / "text.npy")
    assert "does not exist" in build(tmp_path / "missing.npy")
    assert "use --kind dense or hybrid" in build(_save(tmp_path, good), kind="bm25")
    message = build(_save(tmp_path, good), chunk_tokens=4, chunk_overlap=1)
    assert "line 1: this record gives" in message and "row 0 of" in message and "--chunk-tokens" in message


def test_cli_index_with_vectors_and_add_refuses_it(tiny_encoder, corpus, vectors, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "ragtune", "index", str(corpus), "--out", str(out), "--kind", "dense", "--encoder",
           str(tiny_encoder), "--vectors", str(vectors), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "indexed 4 documents as 4 passages (1 duplicates removed)" in done.stdout
    again = subprocess.run([sys.executable, "-m", "ragtune", "index", str(corpus), "--out", str(out), "--add",
                            "--vectors", str(vectors)], capture_output=True, text=True)
    assert again.returncode == 2 and "leave out --vectors" in again.stderr and "Traceback" not in again.stderr


def test_npy_rows_reads_slices_and_gathers_without_a_memory_map(tmp_path):
    a = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    rows = NpyRows(_save(tmp_path, a))
    assert rows.shape == (70, 3) and len(rows) == 70
    assert np.array_equal(rows[5:9], a[5:9]) and np.array_equal(rows[68:100], a[68:])
    pick = np.array([0, 3, 69])
    assert np.array_equal(rows[pick], a[pick])
