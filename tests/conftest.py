"""Shared pytest set-up: one torch thread per test, slow tests opt-in with --runslow, data tests skip without ../shared/data."""

from pathlib import Path

import pytest
import torch
import yaml
from qa_fixtures import people_squad, qa_bert, qa_tokenizer, tiny_reader_folder  # noqa: F401  (the QA fixtures)
from tiny_hf import make_rows

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    """The real data sets beside the project; tests that need them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test computes on one thread (the 2-core CI machine; and the same numbers on any machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_MODEL = {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 32}


BILINGUAL_WORDS = {
    "politics": ["parliament", "minister", "election", "vote", "选举", "政府"],
    "economy": ["market", "shares", "bank", "inflation", "股市", "银行"],
    "entertainment": ["film", "actor", "music", "award", "电影", "明星"],
}
BILINGUAL_FILLER = ["the", "a", "today", "report", "said", "new", "week", "今天"]


def _news_rows(n, seed=0):
    return make_rows(n, seed, BILINGUAL_WORDS, BILINGUAL_FILLER, signal=0.5, length=8)


@pytest.fixture
def tiny_config(tmp_path):
    """A classification config (tiny scratch Transformer, 120 train / 30 test rows of three bilingual classes)."""
    data = tmp_path / "data"
    data.mkdir()
    _news_rows(120).to_csv(data / "train.csv", index=False)
    _news_rows(30, seed=1).to_csv(data / "test.csv", index=False)
    cfg = {
        "task": "classification",
        "data": {"train": "data/train.csv", "test": "data/test.csv"},
        "tokenizer": {"vocab_size": 200, "min_frequency": 1},
        "model": TINY_MODEL,
        "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 16, "seed": 0},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path
