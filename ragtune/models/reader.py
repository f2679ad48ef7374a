"""An extractive reader: a SQuAD-style span head on a pretrained Hugging Face encoder.

Given a question and a passage, the reader scores every token of the passage as the start and as
the end of the answer. The answer is the passage text between the best start and end tokens::

    reader, tokenizer = load_reader("minilm")          # or a save_pretrained folder, or a hub id
    answer(reader, tokenizer, ["Who won Super Bowl 50?"], ["The Denver Broncos won Super Bowl 50."])
    # [{"answer": "The Denver Broncos", "score": 7.3, "start": 0, "end": 18}]   (a trained reader)

The model is ``AutoModelForQuestionAnswering``: the encoder gives a vector ``h_t`` per token and a
linear layer ``qa_outputs`` turns it into two logits, ``start_t`` and ``end_t``. A checkpoint
without that layer (a plain BERT such as all-MiniLM-L6-v2, the alias ``minilm``) gets a fresh,
random one, so it must be fine-tuned before its answers mean anything.

The pieces, in the order the Hugging Face example ``run_qa.py`` uses them:

* :func:`prepare_features` tokenizes ``(question, context)`` pairs. A context too long for
  ``max_length`` is cut into overlapping windows (``doc_stride`` tokens shared between neighbours);
  each window is one *feature* and remembers its example. For training it also finds the answer's
  start and end token in each window.
* :class:`ExtractiveReader` runs the model: ``(input_ids, attention_mask, token_type_ids) ->
  (start_logits, end_logits)``, each ``(B, T)``.
* :func:`span_log_likelihood` / :func:`span_loss` score a gold span (training, and RAG's
  ``p(y | x, z)``).
* :func:`best_spans` turns the logits of all windows of each example back into one answer string.
* :func:`answer` does all of it for inference.

Chinese works as long as the tokenizer gives character offsets (every fast tokenizer does); BERT's
WordPiece splits CJK text into one token per character, so any span of characters can be an answer.

This module knows nothing about configs or run directories: it loads the path or id it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ragtune.errors import RagtuneError
from ragtune.models.hf import _offline_error, check_source, check_tokenizer_fits, load_hf_tokenizer, model_type

__all__ = [
    "ExtractiveReader",
    "QAFeatures",
    "answer",
    "best_spans",
    "feature_batch",
    "load_reader",
    "prepare_features",
    "span_log_likelihood",
    "span_loss",
]


# ---------------------------------------------------------------------------------------------
# loading


def _reader_source(name_or_path: str) -> str:
    """The alias resolved and a local folder checked (a RagtuneError when it does not exist)."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise RagtuneError(f"reader model: name_or_path must be a hub id or a folder, got {name_or_path!r}")
    source = check_source(name_or_path, key="reader model")
    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise RagtuneError(f"reader model: {source} has no config.json, so it is not a folder written by save_pretrained")
    return source


def _load_qa_model(source: str) -> nn.Module:
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    try:
        config = AutoConfig.from_pretrained(source)
        if config.num_labels != 2:
            # one start and one end logit per token, even when the checkpoint was saved as a classifier
            # with another number of labels (its head is not used; qa_outputs is new)
            config.num_labels = 2
        return AutoModelForQuestionAnswering.from_pretrained(source, config=config, dtype=torch.float32)
    except OSError as exc:
        if Path(source).is_dir():
            raise RagtuneError(f"reader model: cannot load a model from {source}: {exc}") from None
        raise _offline_error(source, "", exc, "reader model", "AutoModelForQuestionAnswering",
                             "pass that local folder") from None
    except ValueError as exc:
        raise RagtuneError(
            f"reader model: {source!r} is a {model_type(source)!r} model, which has no question-answering "
            f"support in transformers (AutoModelForQuestionAnswering: {str(exc).splitlines()[0]}); use an "
            "encoder such as BERT, RoBERTa, ELECTRA or MiniLM"
        ) from None


def load_reader(name_or_path: str) -> tuple["ExtractiveReader", object]:
    """Load ``(reader, tokenizer)`` from an alias (``minilm``), a ``save_pretrained`` folder or a hub id.

    The model is ``AutoModelForQuestionAnswering.from_pretrained(name_or_path)`` in float32; a
    checkpoint without a question-answering head gets a fresh random ``qa_outputs`` layer (the load
    report of transformers lists it as MISSING). The tokenizer is the checkpoint's fast tokenizer.

    Raises:
        RagtuneError: a missing folder, a folder without ``config.json``, a hub id that cannot be
            downloaded (offline), a model type without a question-answering head in transformers,
            a tokenizer that is not a fast one or that does not fit the model.
    """
    source = _reader_source(name_or_path)
    model = _load_qa_model(source)
    tokenizer = load_hf_tokenizer(source)
    check_tokenizer_fits(tokenizer, model, source, source)
    return ExtractiveReader(model), tokenizer


class ExtractiveReader(nn.Module):
    """A Hugging Face question-answering model with a plain call signature.

    ``forward(input_ids, attention_mask, token_type_ids=None) -> (start_logits, end_logits)``, each
    ``(B, T)``: the score of every token as the first and as the last token of the answer. Padding
    and question tokens get logits too (as in transformers); :func:`best_spans` ignores them and
    :func:`span_log_likelihood` can mask them. The wrapped model is ``self.model``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> "ExtractiveReader":
        """The reader of :func:`load_reader`, without the tokenizer."""
        return cls(_load_qa_model(_reader_source(name_or_path)))

    def save_pretrained(self, folder: str | Path, tokenizer=None) -> None:
        """Write the model (and ``tokenizer``, when given) in Hugging Face format, loadable by
        :func:`load_reader` and by ``transformers.pipeline("question-answering", model=folder)``."""
        self.model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    @property
    def max_positions(self) -> int | None:
        """The longest input the model's position embeddings allow (``config.max_position_embeddings``)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if token_type_ids is None:  # models such as DistilBERT take no token types
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.start_logits, out.end_logits  # (B, T), (B, T)


# ---------------------------------------------------------------------------------------------
# features


@dataclass
class QAFeatures:
    """Tokenized ``(question, context window)`` pairs; one feature per window, unpadded.

    Attributes:
        input_ids: ``[CLS] question [SEP] context window [SEP]`` token ids, one list per feature.
        attention_mask: 1 for every token (the features are not padded; :func:`feature_batch` pads).
        token_type_ids: 0 for the question part, 1 for the context part; None when the tokenizer
            gives no token types.
        offsets: per feature and token, the ``(start, end)`` character span of the token in its
            example's context, or None for a token that is not context (special tokens, question).
        example_index: the example (index into ``questions``/``contexts``) each feature comes from;
            a long context gives several consecutive features with the same index.
        start_positions, end_positions: only with ``answers``: the answer's first and last token in
            the feature, or the [CLS] index (0) when the answer is not wholly inside that window.
    """

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]] | None
    offsets: list[list[tuple[int, int] | None]]
    example_index: list[int]
    start_positions: list[int] | None = None
    end_positions: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def prepare_features(tokenizer, questions: Sequence[str], contexts: Sequence[str], max_length: int = 384,
                     doc_stride: int = 128, answers: Sequence[tuple[str, int] | None] | None = None) -> QAFeatures:
    """Tokenize ``(question, context)`` pairs into features, cutting long contexts into windows.

    This is ``prepare_train_features``/``prepare_validation_features`` of the Hugging Face example
    ``run_qa.py``: ``tokenizer(question, context, truncation="only_second", max_length=max_length,
    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)``, with the
    question's leading whitespace stripped. Only the context is cut: each window holds the whole
    question and as much context as fits in ``max_length`` tokens, and neighbouring windows share
    ``doc_stride`` context tokens, so an answer near a cut is whole in one of them.

    Args:
        tokenizer: a fast (``tokenizers``-backed) Hugging Face tokenizer.
        questions, contexts: one question and its passage per example.
        max_length: tokens per feature, special tokens included.
        doc_stride: context tokens shared by two neighbouring windows; must be less than the
            context room (``max_length`` minus the question and the special tokens).
        answers: for training, one ``(answer_text, answer_start)`` per example (the character
            offset in the context, as in SQuAD files), or None for an example without an answer.
            Each feature then gets ``start_positions``/``end_positions``: the first and last token
            of the answer when the window holds all of it, else the [CLS] index (0), which is how
            run_qa labels a window without the answer.

    Token positions of an answer at characters ``[a, b)`` in a window whose context tokens run from
    ``c0`` to ``c1``: the start is the last context token with ``offset.start <= a`` and the end the
    first context token with ``offset.end >= b`` (run_qa's two loops, kept inside ``[c0, c1]``, so an
    answer that is the last word of the context never points at [SEP]).

    Raises:
        RagtuneError: a slow tokenizer, lists of different lengths, an empty context, a question
            that leaves no room for context (or less than ``doc_stride``), a context that gives no
            tokens, an answer that is not at its offset in the context.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise RagtuneError(
            f"the reader needs a fast tokenizer (character offsets), got {type(tokenizer).__name__}; "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True) from a folder with tokenizer.json"
        )
    questions, contexts = list(questions), list(contexts)
    if len(questions) != len(contexts):
        raise RagtuneError(f"questions has {len(questions)} items but contexts has {len(contexts)}; they must match")
    if not questions:
        raise RagtuneError("no examples: questions and contexts are empty")
    for what, texts in (("questions", questions), ("contexts", contexts)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RagtuneError(f"{what}[{i}] must be a string, got {type(text).__name__} {text!r}")
    for i, context in enumerate(contexts):
        if not context.strip():
            raise RagtuneError(f"contexts[{i}] is empty; every question needs a passage to answer from")
    if answers is not None:
        answers = list(answers)
        if len(answers) != len(questions):
            raise RagtuneError(f"answers has {len(answers)} items but questions has {len(questions)}; they must match")
        for i, item in enumerate(answers):
            if item is None:
                continue
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], int) and not isinstance(item[1], bool)):
                raise RagtuneError(f"answers[{i}] must be (answer_text, answer_start) or None, got {item!r}")
            text, start = item
            if not text or start < 0 or contexts[i][start:start + len(text)] != text:
                raise RagtuneError(
                    f"answers[{i}]: {text!r} is not at character {start} of contexts[{i}] "
                    f"(which reads {contexts[i][max(start, 0):max(start, 0) + len(text)]!r} there)"
                )
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise RagtuneError(f"max_length must be an integer >= 1, got {max_length!r}")
    if isinstance(doc_stride, bool) or not isinstance(doc_stride, int) or doc_stride < 0:
        raise RagtuneError(f"doc_stride must be an integer >= 0, got {doc_stride!r}")
    questions = [q.lstrip() for q in questions]  # as run_qa: leading spaces would only waste room

    # the tokenizer panics (an uncatchable Rust error) when the question leaves too little room; check first
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    question_lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    for i, n in enumerate(question_lengths):
        room = max_length - n - specials
        if room <= doc_stride or room < 1:
            raise RagtuneError(
                f"questions[{i}] has {n} tokens, which with {specials} special tokens leaves {room} of the "
                f"max_length={max_length} tokens for the context; the context room must be more than "
                f"doc_stride={doc_stride}. Raise max_length, lower doc_stride, or shorten the question"
            )

    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    sample_mapping = list(enc["overflow_to_sample_mapping"])
    token_types = enc["token_type_ids"] if "token_type_ids" in enc else None
    offsets: list[list[tuple[int, int] | None]] = []
    starts: list[int] = []
    ends: list[int] = []
    for f, raw_offsets in enumerate(enc["offset_mapping"]):
        sequence_ids = enc.sequence_ids(f)
        context_tokens = [k for k, s in enumerate(sequence_ids) if s == 1]
        if not context_tokens:
            raise RagtuneError(f"contexts[{sample_mapping[f]}] gives no tokens with this tokenizer (only "
                               "characters it drops); it cannot hold an answer")
        offsets.append([tuple(o) if sequence_ids[k] == 1 else None for k, o in enumerate(raw_offsets)])
        if answers is None:
            continue
        input_ids = enc["input_ids"][f]
        if tokenizer.cls_token_id is not None and tokenizer.cls_token_id in input_ids:
            cls_index = input_ids.index(tokenizer.cls_token_id)
        elif tokenizer.bos_token_id is not None and tokenizer.bos_token_id in input_ids:
            cls_index = input_ids.index(tokenizer.bos_token_id)
        else:
            cls_index = 0
        item = answers[sample_mapping[f]]
        if item is None:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = item[1]
        end_char = start_char + len(item[0])
        c0, c1 = context_tokens[0], context_tokens[-1]
        if not (raw_offsets[c0][0] <= start_char and raw_offsets[c1][1] >= end_char):
            starts.append(cls_index)  # the answer is not (wholly) inside this window
            ends.append(cls_index)
            continue
        k = c0
        while k <= c1 and raw_offsets[k][0] <= start_char:
            k += 1
        starts.append(k - 1)
        k = c1
        while k >= c0 and raw_offsets[k][1] >= end_char:
            k -= 1
        ends.append(k + 1)
    return QAFeatures(
        input_ids=[list(ids) for ids in enc["input_ids"]],
        attention_mask=[list(m) for m in enc["attention_mask"]],
        token_type_ids=[list(t) for t in token_types] if token_types is not None else None,
        offsets=offsets,
        example_index=sample_mapping,
        start_positions=starts if answers is not None else None,
        end_positions=ends if answers is not None else None,
    )


def feature_batch(features: QAFeatures, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """The features ``indices`` as padded tensors (padding on the right, to the longest of them).

    Returns ``{"input_ids", "attention_mask"}`` (each ``(B, T)``, ``attention_mask`` 0 on padding),
    plus ``"token_type_ids"`` when the features have them and ``"start_positions"``/``"end_positions"``
    (each ``(B,)``) when they were prepared with answers.
    """
    indices = list(indices)
    if not indices:
        raise RagtuneError("feature_batch: no feature indices given")
    width = max(len(features.input_ids[i]) for i in indices)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([rows[i] + [value] * (width - len(rows[i])) for i in indices], dtype=torch.long)

    batch = {"input_ids": pad(features.input_ids, pad_id),  # (B, T)
             "attention_mask": pad(features.attention_mask, 0)}  # (B, T)
    if features.token_type_ids is not None:
        batch["token_type_ids"] = pad(features.token_type_ids, 0)  # (B, T)
    if features.start_positions is not None and features.end_positions is not None:
        batch["start_positions"] = torch.tensor([features.start_positions[i] for i in indices], dtype=torch.long)  # (B,)
        batch["end_positions"] = torch.tensor([features.end_positions[i] for i in indices], dtype=torch.long)  # (B,)
    return batch


# ---------------------------------------------------------------------------------------------
# scoring spans


def span_log_likelihood(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
                        end_positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per feature, ``log p(answer span | question, passage)``, shape ``(B,)``; differentiable.

    The span head treats start and end as independent given the passage, each a softmax over the
    ``T`` token positions::

        p(s, e | x, z) = softmax(start_logits)[s] * softmax(end_logits)[e]
        log p          = log_softmax(start_logits)[s] + log_softmax(end_logits)[e]

    It is the reader's term in retrieval-augmented answering, where the answer ``y`` is marginalised
    over the retrieved passages ``z``: ``p(y | x) = sum_z p(z | x) p(y | x, z)``, computed in log
    space as ``logsumexp_z(log p(z | x) + span_log_likelihood(...))`` with one feature per
    (question, passage) pair. Gradients flow into both logits (and through them into the reader).

    Args:
        start_logits, end_logits: ``(B, T)`` from :class:`ExtractiveReader`.
        start_positions, end_positions: ``(B,)`` token indices of the span (e.g. from
            :func:`prepare_features`; index 0, [CLS], means "not in this window").
        mask: optional ``(B, T)``, true (or 1) at the positions the softmax may choose from, e.g.
            ``attention_mask`` to leave padding out, so the result does not depend on how much
            padding a batch has. Without it every position counts, as in transformers' own loss. A
            span on a masked position gets ``-inf``.

    Raises:
        RagtuneError: shapes that do not match, or a position outside ``[0, T)``.
    """
    if start_logits.dim() != 2 or start_logits.shape != end_logits.shape:
        raise RagtuneError(
            f"start_logits and end_logits must both be (B, T), got {tuple(start_logits.shape)} "
            f"and {tuple(end_logits.shape)}"
        )
    batch, width = start_logits.shape
    for name, positions in (("start_positions", start_positions), ("end_positions", end_positions)):
        if positions.shape != (batch,):
            raise RagtuneError(f"{name} must have shape (B,) = ({batch},), got {tuple(positions.shape)}")
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= width):
            raise RagtuneError(f"{name} must be token indices in [0, {width}), got values from "
                               f"{int(positions.min())} to {int(positions.max())}")
    if mask is not None:
        if mask.shape != start_logits.shape:
            raise RagtuneError(f"mask must have the logits' shape {tuple(start_logits.shape)}, got {tuple(mask.shape)}")
        blocked = ~mask.bool()  # (B, T)
        start_logits = start_logits.masked_fill(blocked, float("-inf"))  # (B, T)
        end_logits = end_logits.masked_fill(blocked, float("-inf"))  # (B, T)
    log_p_start = torch.log_softmax(start_logits.float(), dim=-1)  # (B, T)
    log_p_end = torch.log_softmax(end_logits.float(), dim=-1)  # (B, T)
    start = log_p_start.gather(1, start_positions.long().unsqueeze(1)).squeeze(1)  # (B,)
    end = log_p_end.gather(1, end_positions.long().unsqueeze(1)).squeeze(1)  # (B,)
    return start + end  # (B,)


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
              end_positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of extractive QA: the mean cross-entropy of the start and of the end.

    ``loss = -mean_b(span_log_likelihood) / 2 = (CE(start) + CE(end)) / 2``, a scalar; without
    ``mask`` it equals the ``loss`` that transformers' ``*ForQuestionAnswering`` returns when given
    the positions.
    """
    return -span_log_likelihood(start_logits, end_logits, start_positions, end_positions, mask).mean() / 2


def _rows(logits, n: int, what: str) -> list[np.ndarray]:
    """``(F, T)`` tensor/array or a list of 1-D rows, as a list of float64 numpy rows."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    rows = [np.asarray(row, dtype=np.float64) for row in logits]
    if len(rows) != n:
        raise RagtuneError(f"{what} has {len(rows)} rows but there are {n} features; pass one row per feature")
    return rows


def _best_pair(best, start_positions, end_positions, starts, ends, offsets, max_answer_length: int):
    """The better of ``best`` and every valid (start, end) pair of the given token positions of one feature."""
    for s in start_positions:
        for e in end_positions:
            if e < s or e - s + 1 > max_answer_length:
                continue
            score = float(starts[s] + ends[e])
            if best is None or score > best[0]:
                best = (score, offsets[s][0], offsets[e][1])
    return best


def best_spans(start_logits, end_logits, features: QAFeatures, contexts: Sequence[str], n_best: int = 20,
               max_answer_length: int = 30) -> list[dict]:
    """The best answer of every example, over all the windows (features) of its context.

    This is ``postprocess_qa_predictions`` of the Hugging Face example ``utils_qa.py`` (SQuAD v1.1,
    no null answer): in each feature, take the ``n_best`` highest start logits and the ``n_best``
    highest end logits, keep the pairs with both tokens in the context, ``end >= start`` and
    ``end - start + 1 <= max_answer_length`` tokens, score each by ``start_logit + end_logit``, and
    keep the best pair over all features of the example. Two small differences: the ``n_best``
    positions are chosen among context tokens only (question and special tokens cannot crowd them
    out), and when no pair qualifies every valid pair of the features is searched, so there is
    always an answer (run_qa returns the text ``"empty"`` there). Ties go to the earlier feature, then
    the higher-ranked start.

    Args:
        start_logits, end_logits: ``(F, T)`` (tensor or array; T may include padding) or a list of
            F 1-D rows of at least the feature's length; F = ``len(features)``.
        features: from :func:`prepare_features` (its ``offsets`` and ``example_index``).
        contexts: the contexts given to :func:`prepare_features`, in the same order.
        n_best: how many start and end candidates to pair per feature.
        max_answer_length: the longest answer, in tokens.

    Returns:
        One dict per example, in order: ``answer`` (the context text ``context[start:end]``),
        ``score`` (start logit + end logit, comparable across the windows of one example),
        ``start`` and ``end`` (character offsets in the context, ``end`` exclusive), and
        ``null_score`` ([CLS] start + end logit, the lowest over the example's windows: how strongly
        the reader says the passage holds no answer; ``score - null_score`` ranks answers across
        passages when the reader was trained with passages that hold none).
    """
    for name, value in (("n_best", n_best), ("max_answer_length", max_answer_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RagtuneError(f"{name} must be an integer >= 1, got {value!r}")
    n = len(features)
    starts = _rows(start_logits, n, "start_logits")
    ends = _rows(end_logits, n, "end_logits")
    per_example: list[list[int]] = [[] for _ in contexts]
    for f, example in enumerate(features.example_index):
        if example >= len(contexts):
            raise RagtuneError(
                f"feature {f} belongs to example {example}, but only {len(contexts)} contexts were given"
            )
        per_example[example].append(f)

    results: list[dict] = []
    for example, feature_ids in enumerate(per_example):
        if not feature_ids:
            raise RagtuneError(f"contexts[{example}] has no features; pass the contexts given to prepare_features")
        best: tuple[float, int, int] | None = None  # (score, start char, end char)
        for f in feature_ids:
            offsets = features.offsets[f]
            if len(starts[f]) < len(offsets) or len(ends[f]) < len(offsets):
                raise RagtuneError(f"the logits of feature {f} have {len(starts[f])} positions, fewer than its "
                                   f"{len(offsets)} tokens")
            context_positions = np.array([k for k, o in enumerate(offsets) if o is not None])
            # stable descending order: equal logits keep token order
            top_s = context_positions[np.argsort(-starts[f][context_positions], kind="stable")[:n_best]]
            top_e = context_positions[np.argsort(-ends[f][context_positions], kind="stable")[:n_best]]
            best = _best_pair(best, top_s, top_e, starts[f], ends[f], offsets, max_answer_length)
        if best is None:  # no top-n pair fits: search every valid pair
            for f in feature_ids:
                offsets = features.offsets[f]
                context_positions = [k for k, o in enumerate(offsets) if o is not None]
                best = _best_pair(best, context_positions, context_positions, starts[f], ends[f], offsets,
                                  max_answer_length)
        score, a, b = best
        # the "no answer in this passage" score: [CLS] as start and end, lowest over the windows (SQuAD 2.0 style)
        null = min(float(starts[f][0] + ends[f][0]) for f in feature_ids)
        results.append({"answer": contexts[example][a:b], "score": score, "start": int(a), "end": int(b),
                        "null_score": null})
    return results


# ---------------------------------------------------------------------------------------------
# inference


def answer(reader: ExtractiveReader, tokenizer, questions: Sequence[str], contexts: Sequence[str],
           max_length: int = 384, doc_stride: int = 128, batch_size: int = 16, n_best: int = 20,
           max_answer_length: int = 30, log_probs: bool = False) -> list[dict]:
    """Answer each question from its context: :func:`prepare_features`, the reader in batches under
    ``torch.no_grad`` (in eval mode; the previous mode is restored), then :func:`best_spans`.

    Returns one ``{"answer", "score", "start", "end", "null_score"}`` per question (see
    :func:`best_spans`). With ``log_probs`` each window's start and end logits are first turned into
    log-probabilities over its tokens, so ``score`` is ``log p(span | question, context)`` (the
    reader's term of RAG's ``p(y|x) = sum_z p(z|x) p(y|x,z)``). The reader runs on the device of its
    parameters.

    Raises:
        RagtuneError: ``max_length`` longer than the model's position embeddings, a bad
            ``batch_size``, a tokenizer without a padding token, and everything
            :func:`prepare_features` and :func:`best_spans` check.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RagtuneError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    limit = reader.max_positions
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise RagtuneError(f"max_length must be an integer >= 1, got {max_length!r}")
    if limit is not None and max_length > limit:
        raise RagtuneError(f"max_length={max_length} is longer than the {limit} positions the reader model has; "
                           f"choose max_length <= {limit}")
    if tokenizer.pad_token_id is None:
        raise RagtuneError("the tokenizer has no padding token; the reader batches features and needs one")
    features = prepare_features(tokenizer, questions, contexts, max_length=max_length, doc_stride=doc_stride)
    device = next(reader.parameters()).device
    start_rows: list[np.ndarray] = []
    end_rows: list[np.ndarray] = []
    was_training = reader.training
    reader.eval()
    try:
        with torch.no_grad():
            for first in range(0, len(features), batch_size):
                indices = list(range(first, min(first + batch_size, len(features))))
                batch = feature_batch(features, indices, tokenizer.pad_token_id)
                token_types = batch.get("token_type_ids")
                start_logits, end_logits = reader(
                    batch["input_ids"].to(device), batch["attention_mask"].to(device),
                    token_types.to(device) if token_types is not None else None,
                )  # (B, T), (B, T)
                start_logits = start_logits.float().cpu().numpy()
                end_logits = end_logits.float().cpu().numpy()
                for row, f in enumerate(indices):
                    length = len(features.input_ids[f])
                    starts, ends = start_logits[row, :length], end_logits[row, :length]
                    if log_probs:  # log_softmax over the window's real tokens
                        starts = starts - np.logaddexp.reduce(starts)
                        ends = ends - np.logaddexp.reduce(ends)
                    start_rows.append(starts)
                    end_rows.append(ends)
    finally:
        reader.train(was_training)
    return best_spans(start_rows, end_rows, features, list(contexts), n_best=n_best,
                      max_answer_length=max_answer_length)
