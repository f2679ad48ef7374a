"""Shared fixtures of the retrieval tests: tiny random sentence-transformers, corpus files."""

import copy
import json

import pytest
from tiny_hf import save_tiny_encoder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """A folder loadable by ``SentenceTransformer(folder)``: a random tiny BERT + mean pooling (32 dims)."""
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"), seed=0)


@pytest.fixture(scope="session")
def other_encoder(tmp_path_factory):
    """Another tiny encoder (other random weights), for the encoder-mismatch checks."""
    return save_tiny_encoder(tmp_path_factory.mktemp("other_encoder"), seed=1)


SQUAD = {
    "version": "1.1",
    "data": [
        {"title": "Mount_Etna", "paragraphs": [
            {"context": "Mount Etna is an active volcano on the east coast of Sicily, Italy. It erupts often.",
             "qas": [{"id": "q1", "question": "Where is the volcano Etna?",
                      "answers": [{"text": "Sicily", "answer_start": 46}]}]},
            {"context": "The lava of Etna makes the soil fertile, so vineyards and orchards grow on its slopes.",
             "qas": [{"id": "q2", "question": "What grows on the fertile slopes?",
                      "answers": [{"text": "vineyards and orchards", "answer_start": 56}]}]},
        ]},
        {"title": "Great_Wall", "paragraphs": [
            {"context": "长城是中国古代的军事防御工程，修建于春秋战国时期。",
             "qas": [{"id": "q3", "question": "长城是什么工程？", "answers": [{"text": "军事防御工程", "answer_start": 6}]}]},
            {"context": "The Great Wall of China stretches across northern China for thousands of kilometres.",
             "qas": [{"id": "q4", "question": "Where does the Great Wall stretch?",
                      "answers": [{"text": "across northern China", "answer_start": 34}]},
                     {"id": "q5", "question": "Is there a tunnel?", "answers": [], "is_impossible": True}]},
        ]},
    ],
}


@pytest.fixture
def squad_data():
    """The SQuAD-format dict of ``squad_file`` (a fresh copy): 2 articles, 4 paragraphs (one Chinese),
    4 answerable questions and 1 unanswerable one."""
    return copy.deepcopy(SQUAD)


@pytest.fixture
def squad_file(tmp_path, squad_data):
    """``squad_data`` written to ``squad.json``."""
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad_data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def small_corpus(tmp_path):
    """A folder with one file of each plain format: txt, md, jsonl, csv, and knowledge-graph triples (tsv)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "cats.txt").write_text("Cats sleep most of the day and purr when they are happy.\n", encoding="utf-8")
    (folder / "guide.md").write_text("# Baking\n\nKnead the dough, let it rise, then bake the bread for an hour.\n",
                                     encoding="utf-8")
    (folder / "facts.jsonl").write_text(
        json.dumps({"id": "tea", "title": "Tea", "text": "绿茶起源于中国，已有数千年的历史。"}, ensure_ascii=False) + "\n"
        + json.dumps({"text": "Glaciers are slowly moving rivers of ice."}) + "\n", encoding="utf-8")
    (folder / "notes.csv").write_text("id,title,text\nn1,Rust,Iron rusts when exposed to water and oxygen.\n",
                                      encoding="utf-8")
    (folder / "kg.tsv").write_text("subject\trelation\tobject\nParis\tcapital_of\tFrance\nBerlin\tcapital_of\tGermany\n",
                                   encoding="utf-8")
    return folder
