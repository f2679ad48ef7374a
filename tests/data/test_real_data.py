"""The example configs on the real data sets in ../shared/data (skipped when that folder is absent)."""

from pathlib import Path

from ragtune.tasks import load_config
from ragtune.tasks.classification.data import prepare_data
from ragtune.tasks.classification.data_report import data_report

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_seed_config_reads_the_three_bbc_classes(shared_data):
    cfg = load_config(CONFIGS / "seed_news.yaml")
    data = prepare_data(cfg)
    assert data.labels == ["business", "entertainment", "politics"]
    # README of the data: the three classes are 1,019 train rows and 256 test rows
    assert len(data.train) + len(data.validation) == 1019
    assert len(data.test) == 256
    assert data.info["validation"]["carved"] and not data.info["test"]["carved"]
    assert sum(data.info["train"]["dropped_by_keep_labels_per_label"].values()) == 1699 - 1019
    report = data_report(data)
    assert report["leakage"]["train/test"]["rows"] == 0  # the data set was de-duplicated before its split


def test_chinese_titles_config(shared_data):
    cfg = load_config(CONFIGS / "thucnews_zh.yaml")
    data = prepare_data(cfg)
    assert data.labels == sorted(["finance", "realty", "stocks", "education", "science", "society", "politics",
                                  "sports", "game", "entertainment"])
    assert any("\u4e00" <= ch <= "\u9fff" for ch in data.train.text.iloc[0])  # Chinese text survives reading
    assert len(data.train) + len(data.validation) + len(data.test) == 10_000
