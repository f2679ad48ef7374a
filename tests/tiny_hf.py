"""Tiny Hugging Face models and news-like rows that tests write themselves (no downloads).

Imported by test modules as ``from tiny_hf import ...`` (``tests/`` is on pytest's ``pythonpath``);
``tests/models/conftest.py`` turns them into the ``tiny_bert`` fixture.
"""

import random

import pandas as pd
import torch

WORDS = {
    "politics": ["parliament", "minister", "election", "vote"],
    "economy": ["market", "shares", "bank", "inflation"],
    "entertainment": ["film", "actor", "music", "award"],
}
FILLER = ["the", "a", "today", "report", "said", "new", "week"]


def make_rows(n: int, seed: int = 0, words: dict | None = None, filler: list | None = None,
              signal: float = 0.6, length: int = 6) -> pd.DataFrame:
    """``n`` short news-like texts (columns text, label), the classes in turn.

    Each of the ``length`` words names the class (from ``words``, default :data:`WORDS`) with
    probability ``signal``, else it is filler (default :data:`FILLER`).
    """
    words, filler = words or WORDS, filler or FILLER
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(words)[i % len(words)]
        text = " ".join(rng.choice(words[label] if rng.random() < signal else filler) for _ in range(length))
        rows.append({"text": text, "label": label})
    return pd.DataFrame(rows)


def make_tokenizer():
    """A word-level BERT tokenizer over the words above (plus ``good`` for the regression test)."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, "good"]
    vocab += [w for words in WORDS.values() for w in words]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def make_bert(vocab_size: int | None = None, dropout: float = 0.0, seed: int = 0):
    """A random 2-layer BERT (hidden 32, 3 labels), weights large enough for the input to matter."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size or len(make_tokenizer()), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, num_labels=3,
                        initializer_range=0.2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(config)


def save_tiny_encoder(folder, seed: int = 0, tokenizer=None):
    """A random tiny BERT (hidden 32) with mean pooling, saved as a sentence-transformers folder.

    ``tokenizer`` (default :func:`make_tokenizer`) sets the vocabulary; returns the folder to load.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    tokenizer = tokenizer or make_tokenizer()
    bert_dir = folder / "bert"
    # the base BertModel, without the classification head
    make_bert(vocab_size=len(tokenizer), seed=seed).bert.save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = Transformer(str(bert_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")],
                                device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


def _small_rows(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    words = {"sport": ["match", "goal", "team"], "economy": ["bank", "market", "shares"], "culture": ["film", "music", "电影"]}
    filler = ["the", "a", "today", "new"]
    labels = list(words)
    rows = []
    for i in range(n):
        label = labels[i % 3]
        rows.append({"text": " ".join(rng.choice(words[label] if rng.random() < 0.5 else filler) for _ in range(8)),
                     "label": label})
    return pd.DataFrame(rows)


def small_run_config(folder, tokenizer: str | None = None):
    """cfg.yaml in ``folder``: a tiny classifier on 160 train / 40 test rows, 3 epochs, a checkpoint every
    2 steps, every step logged; ``tokenizer``: a tokenizer file to read instead of training one."""
    import yaml

    from conftest import TINY_MODEL

    _small_rows(160, 0).to_csv(folder / "train.csv", index=False)
    _small_rows(40, 1).to_csv(folder / "test.csv", index=False)
    tree = {"task": "classification", "data": {"train": "train.csv", "test": "test.csv"},
            "tokenizer": {"vocab_size": 200, "min_frequency": 1, **({"path": tokenizer} if tokenizer else {})},
            "model": dict(TINY_MODEL),
            "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 3, "batch_size": 8, "seed": 5, "threads": 1,
                      "checkpoint_every_steps": 2, "log_every_steps": 1}}
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return path
