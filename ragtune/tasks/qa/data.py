"""Data preparation for ``task: qa``: SQuAD-format files into train / validation / test questions.

``data.train`` (and optionally ``data.validation`` / ``data.test``) are SQuAD-v1.1-format JSON files
(:mod:`ragtune.data.squad` reads and checks them). A split without its own file is carved from the
training file **by article** (:func:`ragtune.data.squad.split_by_article`, seeded with
``train.seed``): first ``test_fraction`` of the articles become the test set, then
``validation_fraction`` (of the whole file) the validation set, so no paragraph is in two splits.

::

    data = prepare_qa_data(cfg)
    data.train[0].question, data.train[0].answers
    data.info["splits"]["test"]   # {"questions": 1203, "articles": 10, "source": "carved from train ..."}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ragtune.data.squad import QARecord, read_squad, split_by_article

if TYPE_CHECKING:
    from ragtune.tasks.qa.config import QAConfig as RunConfig


@dataclass
class QAData:
    """The questions of each split, in file order, and where each split came from (``info``)."""

    train: list[QARecord]
    validation: list[QARecord]
    test: list[QARecord]
    info: dict = field(default_factory=dict)


def _summary(records: list[QARecord], source: str) -> dict:
    return {
        "questions": len(records),
        "articles": len({(r.title, r.article) for r in records}),
        "paragraphs": len({r.context for r in records}),
        "source": source,
    }


def prepare_qa_data(cfg: RunConfig) -> QAData:
    """Read and split the SQuAD-format files of ``cfg.data`` (see the module docstring)."""
    seed = cfg.train.seed
    records = read_squad(cfg.data.train)
    if cfg.data.max_rows:
        records = records[: cfg.data.max_rows]
    sources = {}
    if cfg.data.test:
        test = read_squad(cfg.data.test)
        sources["test"] = str(cfg.data.test)
    else:
        records, test = split_by_article(records, cfg.data.test_fraction, seed)
        sources["test"] = f"carved from train by article (seeded {cfg.data.test_fraction * 100:g}% of the articles)"
    if cfg.data.validation:
        validation = read_squad(cfg.data.validation)
        sources["validation"] = str(cfg.data.validation)
    else:
        share = cfg.data.validation_fraction / (1.0 - (0.0 if cfg.data.test else cfg.data.test_fraction))
        records, validation = split_by_article(records, min(share, 0.9), seed + 1)
        sources["validation"] = (
            f"carved from train by article (seeded {cfg.data.validation_fraction * 100:g}% of the articles)"
        )
    sources["train"] = str(cfg.data.train)
    data = QAData(train=records, validation=validation, test=test)
    data.info = {"splits": {name: _summary(getattr(data, name), sources[name]) for name in ("train", "validation", "test")},
                 "seed": seed}
    train_contexts = {r.context for r in data.train}
    leaked = {name: sum(r.context in train_contexts for r in getattr(data, name)) for name in ("validation", "test")}
    data.info["paragraphs_shared_with_train"] = leaked  # 0 when carved by article
    return data


def sample_questions(records: list[QARecord], most: int | None, seed: int) -> list[QARecord]:
    """A seeded sample of at most ``most`` questions, in file order (all of them when ``most`` is None):
    what ``eval.max_questions`` scores."""
    import random

    if most is None or len(records) <= most:
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), most))
    return [records[i] for i in keep]
