"""Score an index on SQuAD-format questions: recall@k, MRR@10, nDCG@10.

::

    index = load_index("indexes/squad_dev")
    evaluate_retrieval(index, "data/squad/dev-v1.1.json")
    # {"recall@1": 0.41, "recall@5": 0.66, "recall@10": 0.74, "recall@20": 0.81,
    #  "mrr@10": 0.52, "ndcg@10": 0.57, "n_questions": 10570}

**Gold.** A question's gold is the paragraph it was asked about. The paragraph is found in the
index by content, not by id: its ``context`` string's sha1 is compared with the passages'
``doc_sha1``. So the questions file may be any SQuAD file whose paragraphs were indexed (also as
part of a larger corpus, or under other ids), and with chunking any passage of the paragraph is a
hit. Questions whose paragraph is not in the index are skipped and counted in a warning; if none
is in the index, it is an error.

**Ranks.** The retrieved passages are reduced to documents before ranking: a paragraph counts
once, at the rank of its best passage. (Documents are identified by their ``doc_sha1``, so two
documents with identical text also count once.) To fill ``max(max(ks), 10)`` document ranks, the
index is asked for that many passages times the largest number of passages of one document (at
most ×10, at most the whole index).

Unanswerable questions (SQuAD 2.0 ``is_impossible``, or no answers) are skipped: they have no gold
paragraph to retrieve. Metrics and formulas: :mod:`ragtune.evaluate.retrieval_metrics`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ragtune.data.squad import iter_squad
from ragtune.errors import RagtuneError
from ragtune.evaluate.retrieval_metrics import retrieval_metrics
from ragtune.retrieval.corpus import text_sha1
from ragtune.retrieval.index import Index

log = logging.getLogger("ragtune")

DEFAULT_KS = (1, 5, 10, 20)
#: Queries per search_rows call.
QUERY_BATCH = 256


def read_squad_questions(path: str | Path) -> tuple[list[str], list[str], int]:
    """``(questions, gold context sha1s, skipped unanswerable)`` of a SQuAD-format file.

    A file without any answerable question is a RagtuneError naming it.
    """
    questions, golds, unanswerable = [], [], 0
    for title, p_index, context, qas in iter_squad(path):
        sha = text_sha1(context)
        for q_index, qa in enumerate(qas):
            if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                raise RagtuneError(f"{path}: article '{title}' paragraph {p_index} question {q_index} has no "
                                   "'question' string")
            if qa.get("is_impossible") or not qa.get("answers"):
                unanswerable += 1
                continue
            questions.append(qa["question"])
            golds.append(sha)
    if not questions:
        raise RagtuneError(f"{path}: no answerable questions (no 'qas' with 'question' and 'answers'; "
                           f"{unanswerable} without answers); a questions file must be in SQuAD format")
    return questions, golds, unanswerable


def evaluate_retrieval(
    index: Index,
    questions_file: str | Path,
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = False,
) -> dict:
    """Retrieval metrics of ``index`` on the questions of ``questions_file`` (SQuAD format).

    Returns ``{"recall@k" for k in ks, "mrr@10", "ndcg@10", "n_questions"}`` (with the default
    ``ks``: recall@1, recall@5, recall@10, recall@20). ``n_questions`` counts the questions scored.
    """
    from tqdm.auto import tqdm

    ks = sorted(set(ks))
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise RagtuneError(f"ks must be positive integers (got {list(ks)!r})")
    questions, golds, unanswerable = read_squad_questions(questions_file)
    indexed = {p["doc_sha1"] for p in index.passages}
    keep = [i for i, sha in enumerate(golds) if sha in indexed]
    missing = len(golds) - len(keep)
    if not keep:
        raise RagtuneError(f"none of the {len(golds)} questions of {questions_file} has its paragraph in the index "
                           f"{index.path}; index the same SQuAD file (or a corpus containing its paragraphs)")
    if missing:
        log.warning("%s: %d of %d questions skipped: their paragraph is not in the index", questions_file, missing,
                    len(golds))
    if unanswerable:
        log.info("%s: %d unanswerable questions skipped", questions_file, unanswerable)
    depth = max(max(ks), 10)
    per_doc = max(Counter(p["doc_id"] for p in index.passages).values())
    fetch = min(len(index.passages), depth * min(per_doc, 10))
    ranked: list[list[str]] = []
    batches = range(0, len(keep), QUERY_BATCH)
    for start in tqdm(batches, desc="retrieve", unit="batch", disable=not progress):
        chunk = [questions[i] for i in keep[start:start + QUERY_BATCH]]
        for rows in index.search_rows(chunk, fetch):
            docs: list[str] = []
            for row, _score in rows:
                sha = index.passages[row]["doc_sha1"]
                if sha not in docs:
                    docs.append(sha)
                    if len(docs) == depth:
                        break
            ranked.append(docs)
    gold_sets = [{golds[i]} for i in keep]
    metrics = retrieval_metrics(ranked, gold_sets, ks=ks, mrr_k=10, ndcg_k=10)
    metrics["n_questions"] = len(keep)
    return metrics
