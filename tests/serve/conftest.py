"""Shared fixtures of the server tests: one tiny classification run, trained once per session."""

import pytest
import yaml
from conftest import TINY_MODEL, _news_rows

from ragtune.tasks import load_config
from ragtune.tasks import run
from ragtune.serve.service import load_service


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A tiny classification run (three bilingual classes) whose ``serve:`` section sets small limits:
    4 texts per request, 200 characters per text, 4096-byte bodies."""
    root = tmp_path_factory.mktemp("served_run")
    (root / "data").mkdir()
    _news_rows(120).to_csv(root / "data" / "train.csv", index=False)
    _news_rows(30, seed=1).to_csv(root / "data" / "test.csv", index=False)
    cfg = {"task": "classification", "data": {"train": "data/train.csv", "test": "data/test.csv"},
           "tokenizer": {"vocab_size": 200, "min_frequency": 1}, "model": TINY_MODEL,
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 16, "seed": 0, "threads": 1},
           "serve": {"max_texts_per_request": 4, "max_chars_per_text": 200, "max_body_bytes": 4096}}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = root / "run"
    run(load_config(path), out, progress=False, reports=False)
    return out


@pytest.fixture(scope="session")
def service(run_dir):
    """:func:`run_dir` loaded as the server loads it."""
    return load_service(run_dir)
