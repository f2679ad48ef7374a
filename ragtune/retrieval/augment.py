"""Retrieval-augmented classification: the passages an input is read with.

With ``retrieval.top_k`` > 0 a classifier reads each text together with the ``top_k`` passages an
index returns for it, the way a retrieval-augmented model conditions on retrieved evidence. The text
is the first segment and the passages, best first and joined by the tokenizer's separator, the
second (``[CLS] text [SEP] passage 1 [SEP] passage 2 ...``); when the pair is longer than
``model.max_length`` the longer segment is cut first (the tokenizers library's ``longest_first``).

Where the passages come from (``retrieval.source``):

* ``corpus``: any index (``ragtune index``) or corpus files, e.g. background articles.
* ``train``: the labelled training texts themselves (:func:`write_neighbour_corpus`). Each neighbour
  is shown as ``label: text`` (``retrieval.with_labels``), so the model learns how far to trust its
  nearest labelled neighbours. A training text never retrieves itself (its own document is skipped
  and one more passage taken instead); validation, test and new texts are not in the index.

The neighbours of the training texts are retrieved once, before training; validation and test texts
are retrieved when they are evaluated (:class:`ContextRetriever` keeps what it found, so each text is
searched once per run). The same object serves ``ragtune predict`` and the server through the
:class:`~ragtune.tasks.classification.predictor.Predictor`, so training and inference read the same kind of input.

Example::

    from ragtune.retrieval.augment import ContextRetriever
    from ragtune.retrieval.index import load_index

    retriever = ContextRetriever(load_index("runs/news/index"), top_k=3, separator="[SEP]",
                                 labels={"train-0": "sport", ...})
    retriever.contexts(["Arsenal win the cup"])   # ['sport: Chelsea lose the final [SEP] ...']
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ragtune.errors import RagtuneError

NEIGHBOUR_PREFIX = "train-"  # document id of training row i: "train-{i}"
NEIGHBOUR_CORPUS = "neighbours.jsonl"  # in the run directory: the training texts as a corpus (source: train)
NEIGHBOUR_LABELS = "neighbour_labels.json"  # in the run directory: {doc id: label}
INDEX_DIR = "index"  # the run's own index, when it builds one


def open_run_index(r, run_dir: Path, progress: bool, corpus: Sequence[str | Path] | None = None, device="auto"):
    """The index a run reads, and how ``model.json`` refers to it.

    ``r`` is the run's ``retrieval`` section. With ``r.index`` that folder is loaded (referred to by
    its absolute path); otherwise the files ``corpus`` (default ``r.corpus``) are indexed into
    ``run_dir/index`` once (a resumed run reuses it), referred to as ``index``. A dense or hybrid
    index's encoder runs on ``device`` (the run's ``train.device``).
    """
    from ragtune.retrieval.index import build_index, load_index

    if r.index:
        # an encoder set in the config must be the index's own (queries are encoded with it)
        expected = r.encoder if "encoder" in r.model_fields_set else None
        return (load_index(r.index, expected_encoder=expected, progress=progress, device=device),
                str(Path(r.index).resolve()))
    folder = Path(run_dir) / INDEX_DIR
    if not (folder / "manifest.json").exists():
        build_index(list(corpus if corpus is not None else r.corpus), folder, kind=r.kind, encoder=r.encoder,
                    chunk_tokens=r.chunk_tokens, chunk_overlap=r.chunk_overlap, progress=progress, overwrite=True,
                    device=device)
    return load_index(folder, progress=progress, device=device), INDEX_DIR


def index_folder(run_dir: Path, ref: str) -> Path:
    """The index folder that ``model.json``'s ``ref`` (:func:`open_run_index`) names."""
    return Path(run_dir) / ref if ref == INDEX_DIR else Path(ref)


def separator_token(tokenizer) -> str:
    """The string that separates passages: the vocabulary's ``[SEP]`` or ``</s>``, else a newline."""
    for token in ("[SEP]", "</s>"):
        if tokenizer.token_to_id(token) is not None:
            return token
    return "\n"


def neighbour_vote(retriever: ContextRetriever, texts: Sequence[str], labels: Sequence) -> dict:
    """How well the labelled neighbours alone classify ``texts``: the baseline the model should beat.

    Each text gets the label most of its ``top_k`` neighbours carry (a tie goes to the label of the
    best-ranked of the tied neighbours). Returns ``{"neighbour_vote_accuracy", "top1_accuracy"}``
    (the latter: the label of the single nearest neighbour).
    """
    if retriever.labels is None:
        raise RagtuneError("neighbour_vote needs labelled neighbours (retrieval.source: train, with_labels: true)")
    vote_hits = top1_hits = 0
    for rows, gold in zip(retriever.rows(texts), labels):
        got = [label for label in (retriever.label_of(r) for r, _ in rows) if label is not None]
        if not got:
            continue
        counts = Counter(got)
        best = max(counts.values())
        vote = next(g for g in got if counts[g] == best)
        vote_hits += vote == str(gold)
        top1_hits += got[0] == str(gold)
    n = max(1, len(labels))
    return {"neighbour_vote_accuracy": round(vote_hits / n, 4), "top1_accuracy": round(top1_hits / n, 4)}


def neighbour_id(row: int) -> str:
    """The document id that training row ``row`` has in a ``source: train`` index."""
    return f"{NEIGHBOUR_PREFIX}{row}"


def write_neighbour_corpus(texts: Sequence[str], labels: Sequence, corpus_path: Path, labels_path: Path) -> dict[str, str]:
    """Write the training texts as a JSONL corpus (ids ``train-{row}``) and their labels by id.

    ``corpus_path`` is what :func:`~ragtune.retrieval.index.build_index` reads; ``labels_path`` a
    JSON object ``{doc id: label}`` that :class:`ContextRetriever` shows next to each neighbour.
    Returns that mapping.
    """
    if len(texts) != len(labels):
        raise ValueError(f"texts and labels differ in length: {len(texts)} vs {len(labels)}")
    corpus_path.parent.mkdir(parents=True, exist_ok=True)
    with corpus_path.open("w", encoding="utf-8") as f:
        for row, text in enumerate(texts):
            f.write(json.dumps({"id": neighbour_id(row), "text": str(text)}, ensure_ascii=False) + "\n")
    mapping = {neighbour_id(row): str(label) for row, label in enumerate(labels)}
    labels_path.write_text(json.dumps(mapping, ensure_ascii=False), encoding="utf-8")
    return mapping


def read_neighbour_labels(path: Path) -> dict[str, str]:
    """The ``{doc id: label}`` map written by :func:`write_neighbour_corpus`."""
    if not path.exists():
        raise RagtuneError(f"{path}: missing; it holds the labels of the training neighbours (rerun the training)")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RagtuneError(f"{path}: not valid JSON ({exc.msg}); rerun the training") from None
    if not isinstance(mapping, dict):
        raise RagtuneError(f"{path}: expected a JSON object {{doc id: label}}, found a {type(mapping).__name__}")
    return mapping


class ContextRetriever:
    """The passages each input text is read with.

    Arguments:
        index: a loaded :class:`~ragtune.retrieval.index.Index`.
        top_k: passages per text (at most the size of the index).
        separator: the string between passages (the tokenizer's separator token, e.g. ``[SEP]``).
        labels: ``{doc id: label}`` for labelled neighbours (``source: train``); each passage whose
            document has a label is shown as ``label: text``. None: passages as they are.
    """

    def __init__(self, index, top_k: int, separator: str, labels: dict[str, str] | None = None):
        if top_k < 1:
            raise RagtuneError(f"retrieval.top_k: must be at least 1 to retrieve (got {top_k})")
        if top_k > len(index):
            raise RagtuneError(f"retrieval.top_k: {top_k} is larger than the {len(index)} passages of the index {index.path}")
        self.index = index
        self.top_k = top_k
        self.separator = separator
        self.labels = labels
        self._found: dict[str, list[tuple[int, float]]] = {}  # what each (text, excluded doc) got
        self._chunks: int | None = None

    def rows(self, texts: Sequence[str], exclude: Sequence[str | None] | None = None) -> list[list[tuple[int, float]]]:
        """``(passage row, score)`` of the ``top_k`` passages of each text, best first.

        ``exclude[i]``: a document id whose passages text ``i`` must not get (its own, for a training
        text in a ``source: train`` index); more passages are searched so that ``top_k`` remain.
        """
        texts = [str(t) for t in texts]
        exclude = list(exclude) if exclude is not None else [None] * len(texts)
        if len(exclude) != len(texts):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(texts)} texts")
        # a training text's own document can hold several passages (chunks): search deep enough
        depth = min(len(self.index), self.top_k + (self._max_chunks() if any(exclude) else 0))
        missing = [i for i, (t, x) in enumerate(zip(texts, exclude)) if self._key(t, x) not in self._found]
        if missing:
            found = self.index.search_rows([texts[i] for i in missing], k=depth)
            for i, hits in zip(missing, found):
                own = exclude[i]
                kept = [(r, s) for r, s in hits if own is None or self.index.passages[r]["doc_id"] != own]
                self._found[self._key(texts[i], own)] = kept[: self.top_k]
        return [self._found[self._key(t, x)] for t, x in zip(texts, exclude)]

    def contexts(self, texts: Sequence[str], exclude: Sequence[str | None] | None = None) -> list[str]:
        """The second segment of each text: its passages joined by the separator."""
        sep = f" {self.separator} "
        return [sep.join(self.passage_text(r) for r, _ in rows) for rows in self.rows(texts, exclude)]

    def passage_text(self, row: int) -> str:
        """Passage ``row`` as the model reads it: ``label: text`` for a labelled neighbour."""
        label = self.label_of(row)
        text = self.index.passages[row]["text"]
        return text if label is None else f"{label}: {text}"

    def label_of(self, row: int) -> str | None:
        """The label of passage ``row``'s document (labelled neighbours), else None."""
        if self.labels is None:
            return None
        return self.labels.get(self.index.passages[row]["doc_id"])

    def hits(self, texts: Sequence[str]) -> list[list[dict]]:
        """For reports and ``ragtune predict``: each text's passages as ``{id, doc_id, score[, label]}``."""
        out = []
        for rows in self.rows(texts):
            items = []
            for r, score in rows:
                p = self.index.passages[r]
                item = {"id": p["id"], "doc_id": p["doc_id"], "score": round(float(score), 4)}
                label = self.label_of(r)
                if label is not None:
                    item["label"] = label
                items.append(item)
            out.append(items)
        return out

    @staticmethod
    def _key(text: str, exclude: str | None) -> str:
        return text if exclude is None else f"{exclude}\x00{text}"

    def _max_chunks(self) -> int:
        """The most passages any one document has in the index."""
        if self._chunks is None:
            self._chunks = max(Counter(p["doc_id"] for p in self.index.passages).values(), default=1)
        return self._chunks
