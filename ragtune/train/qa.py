"""Training the extractive reader of ``task: qa``: what it reads, and the loss of one batch.

**What the reader reads in training** (:func:`reader_inputs`). Every training question gives the
reader its gold paragraph with the answer, and, when a retriever is on, up to ``distractors``
retrieved passages that do not hold the answer, each labelled "no answer" (the [CLS] position,
as ``run_qa.py`` labels a window without the answer). Training on gold + retrieved distractors is
the RAFT recipe (Zhang et al., 2024): the reader learns to find the answer *and* to give a low
score to a passage without it, which is what picks the answer among the ``top_k`` passages at
inference (``score - null_score``, see :func:`ragtune.models.reader.best_spans`).

**The loss** (:func:`reader_batch_loss`): the inputs of a batch are tokenized into windows
(:func:`ragtune.models.reader.prepare_features`), and the loss is the mean cross-entropy of the
start and end positions (:func:`ragtune.models.reader.span_loss`), computed over real tokens only.

This module knows no config or run directory: the pipeline passes plain values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ragtune.data.squad import QARecord
from ragtune.devices import to_device
from ragtune.models.reader import ExtractiveReader, feature_batch, prepare_features, span_loss
from ragtune.train import distributed


@dataclass(frozen=True)
class ReaderInput:
    """One (question, passage) pair the reader trains on; ``answer`` is ``(text, char_start)`` or None."""

    question: str
    passage: str
    answer: tuple[str, int] | None


def _normalise_space(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def holds_answer(passage: str, answers: Sequence[str]) -> bool:
    """Whether ``passage`` contains one of ``answers`` (case and runs of whitespace ignored)."""
    haystack = _normalise_space(passage)
    return any(_normalise_space(a) and _normalise_space(a) in haystack for a in answers)


def reader_inputs(records: Sequence[QARecord], distractor_passages: Sequence[Sequence[str]] | None = None,
                  distractors: int = 0) -> list[ReaderInput]:
    """The reader's training pairs: each question with its gold paragraph (first answer), then up to
    ``distractors`` of its ``distractor_passages`` (retrieved, best first) that hold no answer."""
    pairs = []
    for i, record in enumerate(records):
        pairs.append(ReaderInput(record.question, record.context, (record.answers[0], record.answer_starts[0])))
        if distractor_passages is None or not distractors:
            continue
        taken = 0
        for passage in distractor_passages[i]:
            if taken == distractors:
                break
            if passage in record.context or holds_answer(passage, record.answers):
                continue  # a piece of the gold paragraph, or another passage with the answer: not a negative
            pairs.append(ReaderInput(record.question, passage, None))
            taken += 1
    return pairs


def reader_batch_loss(reader: ExtractiveReader, tokenizer, inputs: Sequence[ReaderInput], max_length: int,
                      doc_stride: int, counted: bool = True) -> tuple[torch.Tensor, int]:
    """``(loss, tokens)`` of one batch of reader inputs: span cross-entropy over all their windows, on the
    reader's device. Under torchrun the mean is over the windows of the whole global batch
    (:func:`ragtune.train.distributed.global_mean`); ``counted=False`` marks a rank's stand-in row."""
    features = prepare_features(tokenizer, [x.question for x in inputs], [x.passage for x in inputs],
                                max_length=max_length, doc_stride=doc_stride, answers=[x.answer for x in inputs])
    device = next(reader.parameters()).device
    batch = to_device(feature_batch(features, range(len(features)), tokenizer.pad_token_id), device)
    start_logits, end_logits = reader(batch["input_ids"], batch["attention_mask"],
                                      batch.get("token_type_ids"))  # (F, T), (F, T)
    loss = span_loss(start_logits, end_logits, batch["start_positions"], batch["end_positions"],
                     mask=batch["attention_mask"])
    return distributed.global_mean(loss, len(features) if counted else 0), int(batch["attention_mask"].sum())


def make_reader_batch_loss(reader: ExtractiveReader, tokenizer, inputs: Sequence[ReaderInput],
                           batch_indices: Callable[[int], torch.Tensor], max_length: int,
                           doc_stride: int) -> Callable[[int], tuple[torch.Tensor, int]]:
    """The ``batch_loss(k)`` of :func:`ragtune.train.loop.train_model` for the reader: batch ``k`` holds
    the inputs ``batch_indices(k)`` (a seeded, resumable order such as ``BatchStream.indices``); under
    torchrun this rank reads its share of them (:func:`ragtune.train.distributed.share`)."""

    def batch_loss(k: int) -> tuple[torch.Tensor, int]:
        rows, count = distributed.share(batch_indices(k))
        return reader_batch_loss(reader, tokenizer, [inputs[i] for i in rows], max_length, doc_stride, counted=count > 0)

    return batch_loss
