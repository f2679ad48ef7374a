"""How a generative QA reader reads its passages and writes its answer (``model.reader: generative``).

The recipe (:mod:`ragtune.tasks.qa.generative`) and the predictor (:class:`ragtune.tasks.qa.predictor.QAPredictor`)
build every prompt and read every answer through this module, so training and inference agree::

    system:     Answer the question with a short phrase copied from the passages. If the passages do
                not contain the answer, answer "unanswerable".             (qa.system_prompt; see below)
    user:       [1] first passage ...

                [2] second passage ...

                Question: Which team won Super Bowl 50?
    assistant:  Denver Broncos                                             (the learned answer)
                Denver Broncos [2]                                          (qa.cite: true)
                Evidence: "The Denver Broncos defeated ..."\\nAnswer: Denver Broncos   (qa.quote_evidence: true)

The three turns go through the tokenizer's chat template when it has one (``qa.chat_template: auto``),
else through ragtune's plain format (the system prompt, a blank line, the user turn). Each passage is
cut to ``qa.passage_tokens`` tokens of the model: a retrieved passage from its beginning, the gold
passage of a training question around its answer (so the answer is never cut away).

**Training passages** (``qa.train_passages``, :func:`training_passages`): ``none`` reads the question
alone (closed-book, in training and inference); ``gold`` reads the gold
passage alone; ``retrieved`` the top-k passages of the retriever (the gold may be absent); ``raft``
the gold passage and k-1 retrieved distractors from other paragraphs, shuffled, the gold left out
with probability ``p_no_gold`` and the target then ``qa.no_answer`` (RAFT, Zhang et al. 2024). The
draws are seeded by (seed, epoch, question), so a resumed run reads what an uninterrupted one read.

The settings travel as a plain dict (the ``qa`` entry of a run's ``model.json``): ``no_answer``,
``cite``, ``quote_evidence``, ``passage_tokens``, ``abstain`` (whether the model was taught to
abstain) and ``system_prompt`` (resolved: the config's, or :func:`default_system_prompt`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from ragtune.evaluate.qa_metrics import normalize_answer

INSTRUCTION = "Answer the question with a short phrase copied from the passages."
EVIDENCE_PREFIX = "Evidence: "
ANSWER_PREFIX = "Answer:"
DISTRACTOR_DEPTH = 10  # raft and the abstention test: passages retrieved past top_k to draw others from
_CITATION = re.compile(r"\s*\[\s*(\d{1,3})\s*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def default_system_prompt(no_answer: str, abstain: bool, cite: bool, quote_evidence: bool) -> str:
    """ragtune's instruction for the settings: answer briefly from the passages, and what else the
    model was taught (abstain with ``no_answer``, cite ``[n]``, quote the evidence first)."""
    parts = [INSTRUCTION]
    if abstain:
        parts.append(f'If the passages do not contain the answer, answer "{no_answer}".')
    if quote_evidence:
        parts.append(f'First quote the sentence that holds the answer as {EVIDENCE_PREFIX}"...", then write '
                     f"{ANSWER_PREFIX} and the answer.")
    if cite:
        parts.append("After the answer, give the number of the passage it comes from in brackets, e.g. [2].")
    return " ".join(parts)


def user_message(question: str, passages: Sequence[str]) -> str:
    """The user turn: the numbered passages (``[1] ...``), then ``Question: ...``."""
    blocks = [f"[{i}] {p}" for i, p in enumerate(passages, 1)]
    return "\n\n".join([*blocks, f"Question: {question}"])


def evidence_sentence(passage: str, answer: str) -> str:
    """The sentence of ``passage`` that holds ``answer`` (case ignored); the passage itself when none does."""
    for sentence in _SENTENCE_END.split(passage):
        if answer and answer.lower() in sentence.lower():
            return sentence.strip()
    return passage.strip()


def target_text(answer: str | None, position: int | None, settings: dict, evidence: str | None = None) -> str:
    """What the model learns to write: ``answer`` (None: ``no_answer``), then ``[position]`` (1-based)
    with ``cite``; with ``quote_evidence`` the quoted ``evidence`` sentence first."""
    if answer is None:
        return settings["no_answer"]
    text = f"{answer} [{position}]" if settings.get("cite") and position else answer
    if settings.get("quote_evidence"):
        return f'{EVIDENCE_PREFIX}"{evidence or answer}"\n{ANSWER_PREFIX} {text}'
    return text


def parse_output(text: str, settings: dict) -> tuple[str, list[int]]:
    """``(answer, cited passage numbers)`` of a generated output: the part after ``Answer:`` (with
    ``quote_evidence``), without its ``[n]`` citations (numbers in order, repeats dropped)."""
    if settings.get("quote_evidence") and ANSWER_PREFIX in text:
        text = text.rsplit(ANSWER_PREFIX, 1)[1]
    text = text.strip()
    cited = []
    for n in (int(m) for m in _CITATION.findall(text)):
        if n not in cited:
            cited.append(n)
    answer = _CITATION.sub("", text).strip() if settings.get("cite") or cited else text
    return answer, cited


def is_abstention(answer: str, settings: dict) -> bool:
    """Whether ``answer`` is the run's "no answer" text (after SQuAD normalisation, spaces ignored: a
    tokenizer may decode ``无法回答`` as ``无 法 回 答``)."""
    return "".join(normalize_answer(answer).split()) == "".join(normalize_answer(settings["no_answer"]).split())


class PassageCutter:
    """Cuts passages to ``tokens`` tokens of the model's tokenizer (a fast Hugging Face tokenizer,
    through its offset mapping): from the beginning, or around an answer at a character offset."""

    def __init__(self, hf_tokenizer, tokens: int):
        self.hf = hf_tokenizer
        self.tokens = tokens

    def cut(self, texts: Sequence[str], answer_spans: Sequence[tuple[int, int] | None] | None = None) -> list[str]:
        """Each text cut to at most ``tokens`` tokens: the window that holds its ``(start, end)``
        character span when one is given (centred on it), else the beginning."""
        texts = [str(t) for t in texts]
        if not texts:
            return []
        spans = list(answer_spans) if answer_spans is not None else [None] * len(texts)
        encoded = self.hf(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        out = []
        for text, offsets, span in zip(texts, encoded, spans):
            if len(offsets) <= self.tokens:
                out.append(text)
                continue
            first = 0
            if span is not None:
                inside = [i for i, (a, b) in enumerate(offsets) if b > span[0] and a < span[1]] or [0]
                middle = (inside[0] + inside[-1]) // 2
                first = min(max(0, middle - self.tokens // 2), len(offsets) - self.tokens)
            last = first + self.tokens - 1
            out.append(text[offsets[first][0]:offsets[last][1]].strip())
        return out


def training_passages(mode: str, gold: str, candidates: Sequence[str], k: int, p_no_gold: float,
                      rng: random.Random, gold_position: int | None = None) -> tuple[list[str], int | None]:
    """``(passages, 1-based position of the gold passage or None)`` for one training question.

    Args:
        mode: ``none``, ``gold``, ``retrieved`` or ``raft`` (see the module docstring).
        gold: the question's gold passage (already cut around its answer).
        candidates: ``retrieved``: the top-k passages as retrieved, best first; ``raft``: retrieved
            passages of *other* paragraphs, best first (at least ``k`` of them).
        k: passages per prompt.
        p_no_gold: ``raft``: probability of leaving the gold out.
        rng: this question's seeded generator.
        gold_position: ``retrieved``: the 1-based position of the first candidate that holds the answer
            (None: none does); returned as it is.
    """
    if mode == "none":
        return [], None
    if mode == "gold":
        return [gold], 1
    if mode == "retrieved":
        return list(candidates[:k]), gold_position
    if mode != "raft":
        raise ValueError(f"mode must be none, gold, retrieved or raft (got {mode!r})")
    with_gold = rng.random() >= p_no_gold
    distractors = list(candidates[:k - 1 if with_gold else k])
    passages = distractors + ([gold] if with_gold else [])
    rng.shuffle(passages)
    return passages, (passages.index(gold) + 1 if with_gold else None)


def gold_passages(records, index, cutter: PassageCutter) -> list[str]:
    """Each question's gold passage: the passage of the index from its gold paragraph that holds the
    answer (without an index, or when none holds it whole: the paragraph), cut around the answer."""
    from ragtune.retrieval.corpus import text_sha1
    from ragtune.train.rag import answer_rows, find_answer

    rows = answer_rows(records, index.passages, text_sha1) if index is not None else [[] for _ in records]
    texts, spans = [], []
    for record, found in zip(records, rows):
        text = index.passages[found[0]]["text"] if found else record.context
        hit = find_answer(text, record.answers)
        texts.append(text)
        spans.append((hit[1], hit[1] + len(hit[0])) if hit else None)
    return cutter.cut(texts, spans)
