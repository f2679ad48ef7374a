"""Read SQuAD-v1.1-format question answering files into flat records, and split them by article.

The format
----------
SQuAD v1.1 (and CMRC 2018, DRCD and other files built the same way) is one JSON object::

    {"version": "1.1",
     "data": [                                   # articles
       {"title": "Super_Bowl_50",                # optional here; "" when absent
        "paragraphs": [
          {"context": "Super Bowl 50 was ... The Denver Broncos defeated ...",
           "qas": [
             {"id": "56be4db0acb8001400a502ec",
              "question": "Which NFL team represented the AFC at Super Bowl 50?",
              "answers": [{"text": "Denver Broncos", "answer_start": 177}, ...]}]}]}]}

``answer_start`` is the character offset of the answer in ``context`` (Python ``str`` indices, so
one CJK character counts as one), and ``context[answer_start:answer_start + len(text)] == text``.

:func:`read_squad` turns such a file into one :class:`QARecord` per question::

    records = read_squad("dev-v1.1.json")
    records[0].question, records[0].answers, records[0].answer_starts
    # ('Which NFL team represented the AFC at Super Bowl 50?', ('Denver Broncos', ...), (177, ...))
    train, test = split_by_article(records, test_fraction=0.2, seed=0)
    references = answers_by_id(test)          # {id: [gold answer, ...]} for ragtune.evaluate.qa_metrics

What is checked
---------------
Every problem is a :class:`~ragtune.errors.RagtuneError` that names the file and the place inside
the JSON, e.g. ``dev.json: data[3].paragraphs[2].qas[0] (id '56be...'): missing key 'question'``:

* a missing file, a file that is not UTF-8 (a byte-order mark is accepted) or not valid JSON (with
  the line and column);
* a missing key or a value of the wrong type (``data``, ``paragraphs``, ``context``, ``qas``, ``id``,
  ``question``, ``answers``, ``text``, ``answer_start``); ``title`` may be absent;
* an empty context, question or answer text, and a question id used twice;
* an answer whose ``answer_start`` does not point at its text. If the text is found within
  ``max_start_shift`` characters of the given start (some files are off by a character or two, which
  the Hugging Face example scripts fix the same way), the start is moved there and a warning counts
  the fixes; otherwise it is an error that quotes what the context holds at that offset;
* a question without answers (SQuAD v2's unanswerable questions), unless ``require_answers=False``;
* a file with no questions at all.

:func:`iter_squad` (corpus files, retrieval questions, generation examples) checks the same up to
each paragraph's ``context``: a missing ``qas`` is ``[]``, a missing title ``article{index}``.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.errors import RagtuneError, check_regular_file

__all__ = ["QARecord", "answers_by_id", "iter_squad", "parse_squad", "read_squad", "split_by_article"]

log = logging.getLogger("ragtune")


@dataclass(frozen=True)
class QARecord:
    """One question of a SQuAD-format file.

    Attributes:
        id: the question id (``qas[k].id``; an integer id becomes its string).
        question: the question text.
        context: the paragraph the answer is taken from.
        title: the article title (``""`` when the file has none).
        article: index of the article in ``data`` (0-based); records of one article share it.
        paragraph: index of the paragraph within its article (0-based).
        answers: the gold answer texts, in file order (duplicates kept, as in the file).
        answer_starts: the character offset of each answer in ``context``, after any fix-up, so
            ``context[answer_starts[i]:answer_starts[i] + len(answers[i])] == answers[i]``.
    """

    id: str
    question: str
    context: str
    title: str
    article: int
    paragraph: int
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


def read_squad(path: str | Path, *, require_answers: bool = True, max_start_shift: int = 5) -> list[QARecord]:
    """Read a SQuAD-v1.1-format JSON file into one :class:`QARecord` per question, in file order.

    Args:
        path: the JSON file (UTF-8; a byte-order mark is accepted).
        require_answers: when true (the default), a question with an empty ``answers`` list is an
            error; when false it is kept with ``answers == ()`` (e.g. questions to answer, not to train on).
        max_start_shift: how far (in characters) an ``answer_start`` may be off and still be fixed
            by finding the answer text nearby; 0 turns the fix-up off.

    Raises:
        RagtuneError: see the module docstring for every case; the message names the file and the
            place in the JSON.
    """
    path = Path(path).expanduser()
    return parse_squad(_load(path), source=str(path), require_answers=require_answers, max_start_shift=max_start_shift)


def iter_squad(path: str | Path) -> Iterator[tuple[str, int, str, list]]:
    """``(title, paragraph index, context, qas)`` of every paragraph of a SQuAD-format JSON file, its
    structure checked as by :func:`read_squad`, its questions (the raw ``qas`` list) not."""
    path = Path(path)
    for where, _article, title, p, paragraph_obj, context in _paragraphs(_load(path), str(path), any_title=True):
        qas = _get(paragraph_obj, "qas", list, where, "the paragraph's questions") if paragraph_obj.get("qas") else []
        yield title, p, context, qas


def _load(path: Path) -> Any:
    """The JSON object of a SQuAD file: it must exist and be UTF-8 (a byte-order mark is accepted) JSON."""
    check_regular_file(path, "SQuAD file")
    if not path.is_file():
        hint = " (it is a folder)" if path.is_dir() else ""
        raise RagtuneError(f"SQuAD file not found: {path}{hint}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RagtuneError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RagtuneError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise RagtuneError(f"{path}: nested too deeply to read (lists or objects inside each other beyond Python's "
                           "recursion limit); a SQuAD file is data > paragraphs > qas > answers") from None


_TYPE_NAMES = {str: "string", int: "integer", list: "list", dict: "object"}


def _get(obj: dict, key: str, kind: type | tuple[type, ...], where: str, what: str, note: str = "") -> Any:
    """``obj[key]``, checked to be of type ``kind``.

    ``where`` is the JSON path of ``obj`` (``file: data[3].paragraphs[2].qas[0]``) and ``note`` an
    optional remark placed after it (the question id), both used in error messages.
    """
    if key not in obj:
        present = ", ".join(repr(k) for k in list(obj)[:8]) or "none"
        raise RagtuneError(f"{where}{note}: missing key {key!r} ({what}); keys present: {present}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        article = "an" if names[0] in "aeiou" else "a"
        raise RagtuneError(
            f"{where}.{key}{note}: must be {article} {names} ({what}), got {type(value).__name__} {_short(value)}"
        )
    return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise RagtuneError(f"{where}: must be a JSON object, got {type(value).__name__} {_short(value)}")
    return value


def _find_start(context: str, text: str, start: int, max_shift: int) -> int | None:
    """The occurrence of ``text`` in ``context`` nearest to ``start`` (at most ``max_shift`` away), or None.

    Offsets are tried in the order 0, -1, +1, -2, +2, ... so a tie goes to the earlier position.
    """
    for distance in range(max_shift + 1):
        for candidate in ((start,) if distance == 0 else (start - distance, start + distance)):
            if 0 <= candidate <= len(context) - len(text) and context.startswith(text, candidate):
                return candidate
    return None


_SHAPE = 'a SQuAD format file is {"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [...]}]}]}'


def _paragraphs(obj: Any, source: str, any_title: bool = False) -> Iterator[tuple[str, int, str, int, dict, str]]:
    """``(where, article index, title, paragraph index, paragraph, context)`` of every paragraph, the structure
    checked; with ``any_title`` a title is not checked but made a string (``article{index}`` when empty)."""
    try:
        root = _as_object(obj, f"{source}: the top level")
        articles = _get(root, "data", list, f"{source}: the top level", "the list of articles")
    except RagtuneError as exc:
        raise RagtuneError(f"{exc}; {_SHAPE}") from None
    for a, article_obj in enumerate(articles):
        where_a = f"{source}: data[{a}]"
        article_obj = _as_object(article_obj, where_a)
        title = article_obj.get("title", "")
        if any_title:
            title = str(title or f"article{a}")
        elif not isinstance(title, str):
            raise RagtuneError(f"{where_a}.title: must be a string, got {type(title).__name__} {_short(title)}")
        paragraphs = _get(article_obj, "paragraphs", list, where_a, "the article's paragraphs")
        for p, paragraph_obj in enumerate(paragraphs):
            where_p = f"{where_a}.paragraphs[{p}]"
            paragraph_obj = _as_object(paragraph_obj, where_p)
            yield where_p, a, title, p, paragraph_obj, _get(paragraph_obj, "context", str, where_p, "the passage text")


def parse_squad(obj: Any, source: str = "<SQuAD data>", *, require_answers: bool = True,
                max_start_shift: int = 5) -> list[QARecord]:
    """The records of an already-loaded SQuAD-format JSON object (what :func:`read_squad` does after reading).

    ``source`` names the data in error messages (the file path for :func:`read_squad`). The other
    arguments are those of :func:`read_squad`.
    """
    if isinstance(max_start_shift, bool) or not isinstance(max_start_shift, int) or max_start_shift < 0:
        raise RagtuneError(f"max_start_shift must be an integer >= 0, got {max_start_shift!r}")
    records: list[QARecord] = []
    seen: dict[str, str] = {}
    fixes: list[str] = []
    n_paragraphs = 0
    for where_p, a, title, p, paragraph_obj, context in _paragraphs(obj, source):
        n_paragraphs += 1
        if not context.strip():
            raise RagtuneError(f"{where_p}.context: is empty; every paragraph needs a passage")
        qas = _get(paragraph_obj, "qas", list, where_p, "the paragraph's questions")
        for q, qa_obj in enumerate(qas):
            where_q = f"{where_p}.qas[{q}]"
            qa_obj = _as_object(qa_obj, where_q)
            qid = str(_get(qa_obj, "id", (str, int), where_q, "the question id"))
            note = f" (id {qid!r})"
            question = _get(qa_obj, "question", str, where_q, "the question text", note)
            if not question.strip():
                raise RagtuneError(f"{where_q}.question{note}: is empty")
            if qid in seen:
                raise RagtuneError(
                    f"{where_q}{note}: question id {qid!r} is already used at {seen[qid]}; ids must be unique"
                )
            seen[qid] = where_q.removeprefix(f"{source}: ")
            answers = _get(qa_obj, "answers", list, where_q, "the list of gold answers", note)
            if not answers and require_answers:
                raise RagtuneError(
                    f"{where_q}.answers{note}: is empty; every question needs at least one answer "
                    "(SQuAD v2 unanswerable questions are not supported for training; pass "
                    "require_answers=False to keep such questions for answering only)"
                )
            texts: list[str] = []
            starts: list[int] = []
            for k, answer_obj in enumerate(answers):
                where_k = f"{where_q}.answers[{k}]"
                answer_obj = _as_object(answer_obj, f"{where_k}{note}")
                answer = _get(answer_obj, "text", str, where_k, "the answer text", note)
                start = _get(answer_obj, "answer_start", int, where_k,
                             "the answer's character offset in the context", note)
                if not answer:
                    raise RagtuneError(f"{where_k}.text{note}: is empty")
                if start < 0 or start >= len(context):
                    raise RagtuneError(
                        f"{where_k}.answer_start{note}: {start} is outside the context, which has "
                        f"{len(context)} characters (answer {answer!r})"
                    )
                fixed = _find_start(context, answer, start, max_start_shift)
                if fixed is None:
                    elsewhere = [i for i in range(len(context)) if context.startswith(answer, i)][:3]
                    hint = (f"; the text occurs at character(s) {elsewhere}" if elsewhere
                            else "; the text does not occur in the context at all")
                    raise RagtuneError(
                        f"{where_k}{note}: answer {answer!r} does not start at answer_start {start}: the "
                        f"context there reads {context[start:start + len(answer)]!r}, and the answer is not "
                        f"within {max_start_shift} characters of it either{hint}"
                    )
                if fixed != start:
                    fixes.append(f"{where_k}{note}: {start} -> {fixed}")
                texts.append(answer)
                starts.append(fixed)
            records.append(QARecord(id=qid, question=question, context=context, title=title, article=a,
                                    paragraph=p, answers=tuple(texts), answer_starts=tuple(starts)))
    if not records:
        raise RagtuneError(
            f"{source}: holds no questions ({len(obj['data'])} articles, {n_paragraphs} paragraphs, "
            "every qas list empty); a SQuAD file needs data[].paragraphs[].qas[] entries"
        )
    if fixes:
        log.warning("%s: moved %d answer_start value(s) to where the answer text is (first: %s)",
                    source, len(fixes), fixes[0])
    return records


def split_by_article(records: Sequence[QARecord], test_fraction: float,
                     seed: int) -> tuple[list[QARecord], list[QARecord]]:
    """Split records into ``(train, test)`` by whole articles, so no paragraph (nor article) is in both.

    Questions on one passage share most of their context, so a split by question would put the
    same paragraph on both sides and overstate test scores. Here the articles (``record.article``)
    are shuffled with ``random.Random(seed)`` and the first ``round(test_fraction * n_articles)``
    of them (at least one, and at least one left for train) become the test set. The fraction is
    of articles, not of questions: articles differ in size, so the share of questions differs a
    little. Both lists keep the input order. The same records, fraction and seed always give the
    same split.

    ``record.article`` is the index of the article in one file, so pass the records of one file
    (split each file on its own if you combine several).

    Raises:
        RagtuneError: ``test_fraction`` outside (0, 1), or fewer than two articles.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise RagtuneError(f"test_fraction must be a number between 0 and 1 (exclusive), got {test_fraction!r}")
    articles = sorted({r.article for r in records})
    if len(articles) < 2:
        raise RagtuneError(
            f"split_by_article needs records from at least 2 articles, got {len(articles)} "
            f"({len(records)} questions); a split by article cannot leave both sides non-empty"
        )
    n_test = min(max(1, round(test_fraction * len(articles))), len(articles) - 1)
    shuffled = list(articles)
    random.Random(seed).shuffle(shuffled)
    test_articles = set(shuffled[:n_test])
    train = [r for r in records if r.article not in test_articles]
    test = [r for r in records if r.article in test_articles]
    return train, test


def answers_by_id(records: Sequence[QARecord]) -> dict[str, list[str]]:
    """``{record.id: list(record.answers)}``, the ``references`` argument of
    ``ragtune.evaluate.qa_metrics.qa_metrics``."""
    return {r.id: list(r.answers) for r in records}
