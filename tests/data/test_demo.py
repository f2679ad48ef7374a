"""The built-in demo data set: deterministic, sized as documented, mixed-language, learnable but not trivial."""

import re

import pandas as pd

import ragtune.data.demo as demo
from ragtune.data.demo import DEMO_LABELS, write_demo_dataset
from ragtune.data.io import read_table

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_written_deterministically(tmp_path):
    first = write_demo_dataset(tmp_path / "a")
    second = write_demo_dataset(tmp_path / "b")
    assert set(first) == {"train", "validation", "test"}
    for split in first:
        assert first[split].name == f"{split}.csv"
        assert first[split].read_bytes() == second[split].read_bytes()
    other = write_demo_dataset(tmp_path / "c", seed=1)
    assert other["train"].read_bytes() != first["train"].read_bytes()


def test_sizes_labels_languages_no_repeats(tmp_path):
    paths = write_demo_dataset(tmp_path)
    frames = {split: read_table(path) for split, path in paths.items()}
    assert {s: len(f) for s, f in frames.items()} == {"train": 600, "validation": 150, "test": 150}
    texts = pd.concat(frames.values())["text"].str.strip()
    assert texts.is_unique  # no leakage between splits, no duplicates within
    train = frames["train"]
    assert list(train.columns) == ["text", "label"]
    assert set(train["label"]) == set(DEMO_LABELS)
    chinese = train["text"].map(lambda t: bool(CJK.search(t)))
    assert 0.05 < chinese.mean() < 0.3  # mostly English, some Chinese
    assert set(train.loc[chinese, "label"]) == set(DEMO_LABELS)  # Chinese rows in every class
    assert min(train["label"].value_counts()) > 150  # no tiny class


def test_docstring_says_demo_not_benchmark():
    assert "a demo, not a benchmark" in demo.__doc__.lower()


def test_learnable_but_not_trivial(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    paths = write_demo_dataset(tmp_path)
    train, test = read_table(paths["train"]), read_table(paths["test"])
    # words, and single Chinese characters (the default pattern would make a whole Chinese clause one token)
    vectorizer = TfidfVectorizer(token_pattern=r"[\u4e00-\u9fff]|\b\w\w+\b", ngram_range=(1, 2))
    model = LogisticRegression(max_iter=2000, C=10).fit(vectorizer.fit_transform(train["text"]), train["label"])
    accuracy = (model.predict(vectorizer.transform(test["text"])) == test["label"]).mean()
    chance = test["label"].value_counts(normalize=True).max()
    assert chance < 0.45
    assert 0.75 <= accuracy < 0.99, accuracy
