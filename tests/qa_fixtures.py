"""Shared fixtures of the question-answering tests (registered by tests/conftest.py): a tiny random BERT reader
with a word-level WordPiece vocabulary (English words, a few ``##`` pieces, CJK characters)."""

import random

import pytest
import torch

ENGLISH = ("what who where when which is was did the a of in on at to and today city capital river team won "
           "game final play cat dog sat mat met bob alice carol dave eve paris rome london berlin tokyo "
           "lives works visited built bridge red blue green yellow color car owns has north south").split()
PIECES = ["##ing", "##s", "##ed"]
CJK = list("北京是中国的首都上海最大城市长江流经谁赢得了比赛哪里什么时候在年月日红楼梦作者曹雪芹")
PUNCTUATION = list("?.,!。，？：、")


def make_qa_tokenizer():
    """A WordPiece BERT tokenizer over :data:`ENGLISH`, :data:`PIECES` and :data:`CJK` (one token per character)."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *ENGLISH, *PIECES, *CJK, *PUNCTUATION]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def make_qa_bert(seed: int = 0, max_positions: int = 128):
    """A random 2-layer ``BertForQuestionAnswering`` (hidden 32) sized for :func:`make_qa_tokenizer`."""
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(make_qa_tokenizer()), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=max_positions,
                        initializer_range=0.1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForQuestionAnswering(config)


@pytest.fixture
def qa_tokenizer():
    """A fresh :func:`make_qa_tokenizer`."""
    return make_qa_tokenizer()


@pytest.fixture
def qa_bert():
    """:func:`make_qa_bert` itself (call it with a seed), for tests that build and train their own reader."""
    return make_qa_bert


@pytest.fixture(scope="session")
def tiny_reader_folder(tmp_path_factory):
    """A folder holding a random tiny ``BertForQuestionAnswering`` and its tokenizer (``save_pretrained``)."""
    folder = tmp_path_factory.mktemp("tiny_qa_bert")
    make_qa_bert().save_pretrained(folder)
    make_qa_tokenizer().save_pretrained(folder)
    return folder


NAMES = ["bob", "alice", "carol", "dave", "eve"]
CITIES = ["paris", "rome", "london", "berlin", "tokyo"]
COLORS = ["red", "blue", "green", "yellow"]


def make_people_squad(n_articles=8, seed=0):
    """A SQuAD-format file: each paragraph says who lives where and who owns which car."""
    rng = random.Random(seed)
    data = []
    for a in range(n_articles):
        paragraphs = []
        for p in range(2):
            who, other = rng.sample(NAMES, 2)
            city, color = rng.choice(CITIES), rng.choice(COLORS)
            context = f"{who} lives in {city} . {other} owns a {color} car ."
            qas = [
                {"id": f"{a}-{p}-0", "question": f"who lives in {city} ?",
                 "answers": [{"text": who, "answer_start": context.index(who)}]},
                {"id": f"{a}-{p}-1", "question": f"who owns a {color} car ?",
                 "answers": [{"text": other, "answer_start": context.index(f"{other} owns")}]},
            ]
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"article {a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


@pytest.fixture
def people_squad():
    """:func:`make_people_squad`: 8 articles x 2 paragraphs x 2 questions, in the tiny reader's vocabulary."""
    return make_people_squad()
