"""Metrics for generated text (translation, generation): BLEU, chrF, ROUGE and perplexity.

Every function takes plain lists and returns a flat, JSON-ready ``dict`` (perplexity: a float).
``hyps`` are the model's outputs, one string per example; ``refs`` are the references: one string
per example, or a list of strings per example (several reference translations; every example must
then have the same number). Scores are corpus-level and, like :mod:`ragtune.evaluate.qa_metrics`,
on a 0-100 scale (higher is better); perplexity is lower-is-better and at least 1.

BLEU (``bleu``)
---------------
The geometric mean of the modified n-gram precisions p1..p4 over the whole corpus (n-gram counts
summed over all sentences, each hypothesis n-gram counted at most as often as it occurs in a
reference), times a brevity penalty ``BP = exp(1 - r/c)`` when the total hypothesis length ``c`` is
shorter than the total reference length ``r`` (else 1)::

    BLEU = 100 * BP * exp((ln p1 + ln p2 + ln p3 + ln p4) / 4)

Computed by sacrebleu (``corpus_bleu``, its default exponential smoothing), so scores are
comparable with published ones. BLEU depends on how text is split into words; the tokenizer is
chosen from the target language:

* ``zh`` (every Chinese character is a word; other text as ``13a``) when ``target_lang`` is Chinese
  (``zh``, ``zh-cn``, ``zh_TW``, ``zh-Hans``, ``cmn``, ``chinese`` ...), or, when ``target_lang`` is not
  given, when any reference contains a CJK character. Without it a Chinese sentence, written
  without spaces, would be one "word" and BLEU would be near 0.
* ``13a`` otherwise (the WMT standard: splits punctuation off words, keeps case).
* ``tokenize=`` overrides the choice: one of ``none``, ``zh``, ``13a``, ``intl``, ``char`` (sacrebleu's
  names; ``ja-mecab`` / ``ko-mecab`` / ``spm`` / ``flores*`` need extra packages).

The result also holds the four precisions, the brevity penalty, the lengths and sacrebleu's
signature (which records the tokenizer), for reporting.

chrF (``chrf``)
---------------
The character n-gram F-score (n = 1..6, spaces removed; recall weighted twice as much as
precision, beta = 2), from n-gram counts over the whole corpus. It needs no tokenizer, works for
Chinese as it is, and rewards partly right words (``Männern`` vs ``Männer``), so it is fairer than
BLEU on small data and for morphologically rich languages. ``word_order=2`` gives chrF++ (adds word
uni- and bigrams).

ROUGE (``rouge``)
-----------------
ROUGE-1 / ROUGE-2: F1 of the overlap of unigrams / bigrams between hypothesis and reference
(clipped counts: ``P = overlap / hyp n-grams``, ``R = overlap / ref n-grams``, ``F1 = 2PR/(P+R)``).
ROUGE-L: F1 from the longest common subsequence of tokens (in order, not necessarily contiguous).
Computed per example by ``rouge-score`` (with several references: the best one), then averaged.
Tokens: lowercased; every CJK character is a token; other tokens are runs of letters and digits
(any script, so ``Männer`` stays one word), punctuation dropped. ``rouge-score``'s own tokenizer
keeps only ``a-z0-9`` and so gives 0 for any Chinese text; that is why ragtune passes its own.

Perplexity (``perplexity``)
---------------------------
``exp(mean negative log-likelihood per token)``, the loss in nats: how many tokens the model is,
on average, choosing between. 1 is perfect; a uniform guess over a vocabulary of V tokens gives V.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ragtune.errors import RagtuneError

__all__ = [
    "CHINESE_LANGS",
    "TEXT_METRIC_DIRECTIONS",
    "bleu",
    "bleu_tokenizer",
    "chrf",
    "perplexity",
    "rouge",
    "rouge_tokenize",
]

#: ``target_lang`` values (lowercased, ``_`` read as ``-``) for which BLEU uses the ``zh`` tokenizer.
CHINESE_LANGS = frozenset(
    {"zh", "zh-cn", "zh-tw", "zh-hk", "zh-sg", "zh-mo", "zh-hans", "zh-hant", "zh-hans-cn", "zh-hant-tw",
     "cmn", "chinese", "zho", "chi"}
)
#: For each metric name here: ``"max"`` if bigger is better, ``"min"`` if smaller is.
TEXT_METRIC_DIRECTIONS: dict[str, str] = {
    "bleu": "max", "chrf": "max", "rouge1": "max", "rouge2": "max", "rougeL": "max", "perplexity": "min",
}

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ebef\U0002f800-\U0002fa1f"
_CJK_RE = re.compile(f"[{_CJK}]")
# one CJK character, or a run of letters/digits that are not CJK
_ROUGE_TOKEN_RE = re.compile(f"[{_CJK}]|(?:(?![{_CJK}])[^\\W_])+")
_BLEU_TOKENIZERS = ("none", "zh", "13a", "intl", "char", "ja-mecab", "ko-mecab", "spm", "flores101", "flores200")


def _check(hyps: Sequence[str], refs: Sequence) -> tuple[list[str], list[list[str]]]:
    """Return hyps as strings and refs as one list of references per example (same count for all)."""
    if isinstance(hyps, str) or isinstance(refs, str):
        raise RagtuneError("hyps and refs must be lists of strings, one per example (got a single string)")
    hyps = ["" if h is None else str(h) for h in hyps]
    refs = list(refs)
    if len(hyps) != len(refs):
        raise RagtuneError(f"hyps and refs differ in length: {len(hyps)} hypotheses vs {len(refs)} references")
    if not hyps:
        raise RagtuneError("cannot score: there are no hypotheses")
    per_example = [[r] if isinstance(r, str) else [("" if x is None else str(x)) for x in r] for r in refs]
    counts = {len(r) for r in per_example}
    if len(counts) != 1 or 0 in counts:
        raise RagtuneError(
            "every example needs the same number (at least 1) of references; "
            f"got between {min(counts)} and {max(counts)}"
        )
    return hyps, per_example


def _streams(per_example: list[list[str]]) -> list[list[str]]:
    """sacrebleu's layout: one list per reference set, each holding one reference per example."""
    return [list(s) for s in zip(*per_example)]


def bleu_tokenizer(refs: Sequence, target_lang: str | None = None) -> str:
    """The sacrebleu tokenizer :func:`bleu` uses: ``zh`` for a Chinese ``target_lang``, or (without
    ``target_lang``) when a reference contains a CJK character; else ``13a``."""
    if target_lang is not None:
        lang = str(target_lang).strip().lower().replace("_", "-")
        return "zh" if lang in CHINESE_LANGS else "13a"
    for r in refs:
        for text in [r] if isinstance(r, str) else r:
            if text and _CJK_RE.search(str(text)):
                return "zh"
    return "13a"


def bleu(
    hyps: Sequence[str],
    refs: Sequence,
    tokenize: str | None = None,
    target_lang: str | None = None,
) -> dict:
    """Corpus BLEU (0-100) of ``hyps`` against ``refs`` with sacrebleu; see the module docstring.

    Returns ``{"bleu", "precisions" (p1..p4, 0-100), "brevity_penalty", "hyp_len", "ref_len",
    "tokenize", "signature", "n"}``.
    """
    from sacrebleu.metrics import BLEU

    hyps, per_example = _check(hyps, refs)
    if tokenize is None:
        tokenize = bleu_tokenizer(per_example, target_lang)
    elif tokenize not in _BLEU_TOKENIZERS:
        raise RagtuneError(f"unknown BLEU tokenizer {tokenize!r}; choose one of {', '.join(_BLEU_TOKENIZERS)}")
    metric = BLEU(tokenize=tokenize)
    score = metric.corpus_score(hyps, _streams(per_example))
    return {
        "bleu": float(score.score),
        "precisions": [float(p) for p in score.precisions],
        "brevity_penalty": float(score.bp),
        "hyp_len": int(score.sys_len),
        "ref_len": int(score.ref_len),
        "tokenize": tokenize,
        "signature": str(metric.get_signature()),
        "n": len(hyps),
    }


def chrf(hyps: Sequence[str], refs: Sequence, word_order: int = 0) -> dict:
    """Corpus chrF (0-100) with sacrebleu (``word_order=2``: chrF++); see the module docstring.

    Returns ``{"chrf", "signature", "n"}``.
    """
    from sacrebleu.metrics import CHRF

    hyps, per_example = _check(hyps, refs)
    if word_order not in (0, 1, 2):
        raise RagtuneError(f"chrf word_order must be 0 (chrF), 1 or 2 (chrF++) (got {word_order!r})")
    metric = CHRF(word_order=word_order)
    score = metric.corpus_score(hyps, _streams(per_example))
    return {"chrf": float(score.score), "signature": str(metric.get_signature()), "n": len(hyps)}


def rouge_tokenize(text: str) -> list[str]:
    """ROUGE's tokens of ``text``: lowercased; each CJK character one token; runs of other letters and
    digits one token; punctuation and whitespace dropped (``"Männer, 我爱!"`` -> ``["männer", "我", "爱"]``)."""
    return _ROUGE_TOKEN_RE.findall(("" if text is None else str(text)).lower())


class _RougeTokenizer:
    """The ``tokenize(text)`` object ``rouge_score.rouge_scorer.RougeScorer`` expects."""

    def tokenize(self, text: str) -> list[str]:
        return rouge_tokenize(text)


def rouge(hyps: Sequence[str], refs: Sequence) -> dict:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (0-100) over the examples; see the module docstring.

    Returns ``{"rouge1", "rouge2", "rougeL", "n"}``.
    """
    from rouge_score import rouge_scorer

    hyps, per_example = _check(hyps, refs)
    types = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(types), tokenizer=_RougeTokenizer())
    totals = dict.fromkeys(types, 0.0)
    for hyp, references in zip(hyps, per_example):
        scores = scorer.score_multi(references, hyp) if len(references) > 1 else scorer.score(references[0], hyp)
        for t in types:
            totals[t] += scores[t].fmeasure
    out: dict = {t: 100.0 * totals[t] / len(hyps) for t in types}
    out["n"] = len(hyps)
    return out


def perplexity(mean_nll: float) -> float:
    """``exp(mean_nll)``: perplexity from the mean negative log-likelihood per token in nats (the
    cross-entropy loss). A value too large for a float (above about 709.78) gives ``inf`` rather
    than an ``OverflowError``; NaN gives NaN; a tensor or numpy scalar is accepted."""
    value = float(mean_nll)
    if math.isnan(value):
        return math.nan
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf
