"""Exact match and F1 for extractive question answering (SQuAD v1.1 for English, CMRC 2018 for Chinese).

A predicted answer is a string; each question has one or more gold answers. Both metrics compare
the prediction with every gold answer and keep the best score (annotators phrase one answer in
different ways), then average over questions and report percentages (0-100)::

    qa_metrics({"q1": "the Denver Broncos", "q2": "北京"},
               {"q1": ["Denver Broncos", "Broncos"], "q2": ["北京市"]})
    # {"exact_match": 50.0, "f1": 90.0, "n": 2}   (q1: EM 1, F1 1; q2: EM 0, F1 0.8)

Which scheme scores an answer
-----------------------------
For each (prediction, gold answer) pair: if either holds a CJK character (the CJK Unified
Ideographs blocks, as BERT's tokenizer defines them), the Chinese scheme is used, otherwise the
English one. So an English question in a Chinese data set, and the reverse, are each scored by the
scheme that fits them.

English: SQuAD v1.1 (the official ``evaluate-v1.1.py``)
-------------------------------------------------------
``normalize_answer`` lowercases, deletes ASCII punctuation (``string.punctuation``), deletes the
words ``a``, ``an`` and ``the``, and collapses whitespace. Tokens are the normalised text split on
whitespace.

* **EM** = 1 if the normalised prediction equals the normalised gold answer, else 0.
  ``"The Denver Broncos"`` vs ``"Denver Broncos"``: both normalise to ``"denver broncos"``, EM = 1.
* **F1** over the *bag* of tokens: ``common`` = size of the multiset intersection of prediction and
  gold tokens, ``P = common / len(prediction tokens)``, ``R = common / len(gold tokens)``,
  ``F1 = 2PR / (P + R)`` (0 when ``common`` is 0). ``"Denver Broncos won"`` vs ``"Denver Broncos"``:
  common 2, P = 2/3, R = 1, F1 = 0.8.

Chinese: CMRC 2018 (the official ``cmrc2018_evaluate.py``)
----------------------------------------------------------
``mixed_segmentation`` lowercases, deletes punctuation and symbols (every Unicode category ``P*``
and ``S*``: ``，。、《》“”（）`` as well as ``.,-:`` ...), then makes every CJK character one token
and every run of other characters between whitespace, CJK characters and the ends one token
(``"iPhone 6发布"`` -> ``["iphone", "6", "发", "布"]``).

* **EM** = 1 if the two token sequences are equal, else 0 (``"北京。"`` vs ``"北京"``: EM = 1).
* **F1** from the *longest common substring* (contiguous run of tokens) ``lcs`` of the two token
  sequences: ``P = lcs / len(prediction tokens)``, ``R = lcs / len(gold tokens)``,
  ``F1 = 2PR / (P + R)`` (0 when ``lcs`` is 0). ``"北京市"`` vs ``"北京"``: lcs 2, P = 2/3, R = 1,
  F1 = 0.8. ``"京北"`` vs ``"北京"``: lcs 1, F1 = 0.5 (the English bag-of-tokens F1 would be 1).

Two differences from the CMRC script, both small: its punctuation list is a fixed set of 32
characters while here every Unicode punctuation or symbol goes, and its EM compares strings, so
``"北 京"`` and ``"北京"`` differ there but are equal here (same tokens). Latin runs stay one token
where the script calls ``nltk.word_tokenize`` (this needs no nltk).

Empty answers follow both scripts: an empty prediction and an empty gold answer give EM 1 and F1 0.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

from ragtune.errors import RagtuneError

__all__ = [
    "answer_exact_match",
    "answer_f1",
    "exact_match_score",
    "f1_score",
    "has_cjk",
    "mixed_segmentation",
    "normalize_answer",
    "qa_metrics",
]

# The CJK Unified Ideographs blocks (and compatibility ideographs), as BERT's BasicTokenizer._is_chinese_char
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds at least one CJK ideograph (then the Chinese scheme scores it)."""
    return any(_is_cjk(c) for c in text)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop ASCII punctuation, drop a/an/the, collapse whitespace.

    ``normalize_answer("The  Denver Broncos!") == "denver broncos"``.
    """
    text = text.lower()
    text = "".join(c for c in text if c not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def mixed_segmentation(text: str) -> list[str]:
    """CMRC 2018 tokens: lowercase, punctuation/symbols deleted, one token per CJK character,
    latin/digit runs kept whole.

    ``mixed_segmentation("《红楼梦》的作者") == ["红", "楼", "梦", "的", "作", "者"]``;
    ``mixed_segmentation("iPhone 6发布") == ["iphone", "6", "发", "布"]``.
    """
    tokens: list[str] = []
    run: list[str] = []
    for char in text.lower():
        if unicodedata.category(char)[0] in "PS":
            continue  # deleted, not a separator: "1,000" -> "1000", as in the CMRC script
        if _is_cjk(char) or char.isspace():
            if run:
                tokens.append("".join(run))
                run = []
            if not char.isspace():
                tokens.append(char)
        else:
            run.append(char)
    if run:
        tokens.append("".join(run))
    return tokens


def _longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of tokens shared by ``a`` and ``b`` (dynamic programming)."""
    best = 0
    previous = [0] * (len(b) + 1)
    for i in range(len(a)):
        current = [0] * (len(b) + 1)
        for j in range(len(b)):
            if a[i] == b[j]:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def _f1(common: int, n_prediction: int, n_gold: int) -> float:
    if common == 0:
        return 0.0
    precision = common / n_prediction
    recall = common / n_gold
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 if ``prediction`` matches one ``gold`` answer after normalisation, else 0.0.

    The scheme (SQuAD or CMRC, see the module docstring) is chosen by :func:`has_cjk` on the pair.
    """
    if has_cjk(prediction) or has_cjk(gold):
        return float(mixed_segmentation(prediction) == mixed_segmentation(gold))
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 (0-1) of ``prediction`` against one ``gold`` answer: SQuAD bag-of-tokens F1, or
    CMRC longest-common-substring F1 when the pair holds CJK characters (see the module docstring)."""
    if has_cjk(prediction) or has_cjk(gold):
        p, g = mixed_segmentation(prediction), mixed_segmentation(gold)
        return _f1(_longest_common_substring(p, g), len(p), len(g))
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    return _f1(common, len(p), len(g))


def answer_exact_match(prediction: str, golds: Sequence[str]) -> float:
    """The best :func:`exact_match_score` of ``prediction`` over the gold answers ``golds`` (0.0 or 1.0)."""
    return max(exact_match_score(prediction, g) for g in golds)


def answer_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best :func:`f1_score` of ``prediction`` over the gold answers ``golds`` (0-1)."""
    return max(f1_score(prediction, g) for g in golds)


def qa_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict:
    """Score predicted answers against gold answers, as the SQuAD v1.1 / CMRC 2018 scripts do.

    Args:
        predictions: ``{question id: predicted answer text}``. Ids that are not in ``references``
            are ignored (as in the official script), so predictions for a whole file can be scored
            against a subset. Use ``""`` for a question left unanswered (it scores 0).
        references: ``{question id: [gold answer, ...]}`` with at least one gold answer per id
            (``ragtune.data.squad.answers_by_id(records)`` builds it).

    Returns:
        ``{"exact_match": 100 * mean EM, "f1": 100 * mean F1, "n": number of questions scored}``,
        where each question's EM and F1 are the maxima over its gold answers
        (:func:`answer_exact_match`, :func:`answer_f1`); both are percentages, higher is better.

    Example (worked by hand)::

        qa_metrics({"a": "The Denver Broncos", "b": "Denver Broncos won", "c": "Carolina"},
                   {"a": ["Denver Broncos"], "b": ["Denver Broncos"], "c": ["Panthers"]})
        # a: EM 1, F1 1;  b: EM 0, F1 0.8 (P 2/3, R 1);  c: EM 0, F1 0
        # {"exact_match": 33.33..., "f1": 60.0, "n": 3}

    Raises:
        RagtuneError: empty ``references``, a question without gold answers, a value that is not a
            string, or a reference id with no prediction (the message names them).
    """
    if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
        raise RagtuneError(
            "predictions and references must be dicts keyed by question id "
            f"(got {type(predictions).__name__} and {type(references).__name__})"
        )
    if not references:
        raise RagtuneError("no questions to score: references is empty")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        hint = ""
        if any(str(qid) in {str(k) for k in predictions} for qid in missing[:20]):
            hint = " (the ids differ only in type, e.g. int vs str; use the same type on both sides)"
        raise RagtuneError(
            f"predictions has no answer for {len(missing)} of the {len(references)} reference questions, "
            f"e.g. {missing[:5]}{hint}; give every question a prediction (\"\" if it was left unanswered)"
        )
    em_total = 0.0
    f1_total = 0.0
    for qid, golds in references.items():
        if isinstance(golds, str) or not isinstance(golds, Sequence):
            raise RagtuneError(f"references[{qid!r}] must be a list of gold answer strings, got {golds!r}")
        if not golds:
            raise RagtuneError(f"references[{qid!r}] has no gold answers; every question needs at least one")
        bad = [g for g in golds if not isinstance(g, str)]
        if bad:
            raise RagtuneError(f"references[{qid!r}] holds a gold answer that is not a string: {bad[0]!r}")
        prediction = predictions[qid]
        if not isinstance(prediction, str):
            raise RagtuneError(f"predictions[{qid!r}] must be a string (the answer text), got {prediction!r}")
        em_total += answer_exact_match(prediction, golds)
        f1_total += answer_f1(prediction, golds)
    n = len(references)
    return {"exact_match": 100.0 * em_total / n, "f1": 100.0 * f1_total / n, "n": n}
