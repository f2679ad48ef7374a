"""Shared fixtures of the model tests: a tiny random BERT saved like a hub download."""

import pytest
from tiny_hf import make_bert, make_tokenizer


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A folder holding a random tiny BERT and its tokenizer, as ``save_pretrained`` writes them."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    make_bert().save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder
