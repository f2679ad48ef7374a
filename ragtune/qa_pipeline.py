"""The ``task: qa`` pipeline: question answering over a document corpus, as a stage diagram.

::

    SQuAD-format files ──▶ 1. data (train / validation / test questions, split by article)
    corpus or index    ──▶ 2. retriever (BM25 / dense / hybrid index; off when retrieval.top_k is 0)
    model.name_or_path ──▶ 3. reader (a pretrained encoder with a span head)
                           4. training: each question's gold paragraph + retrieved distractors
                           5. evaluation: retrieve top_k ──▶ read each passage ──▶ best answer
                              (exact match / F1, retrieval recall, the reader on the gold paragraph)
                           6. RUN_DIR: reader/, index/ (when built here), model.json, metrics.json, report.md

``ragtune run CONFIG`` calls :func:`run_qa` for a ``task: qa`` config; inference goes through
:class:`ragtune.qa_predictor.QAPredictor`, the one path shared with ``ragtune predict`` and ``ragtune eval``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import ragtune
from ragtune.data.qa import QAData, prepare_qa_data
from ragtune.errors import RagtuneError
from ragtune.evaluate import plots
from ragtune.retrieval.augment import INDEX_DIR, open_run_index
from ragtune.qa_predictor import MODEL_META, PASSAGE_EMBEDDINGS, QUERY_ENCODER_DIR, READER_DIR, QAPredictor
from ragtune.train.batches import BatchStream
from ragtune.train.checkpoint import load_weights
from ragtune.train.loop import TrainResult, train_model
from ragtune.train.qa import make_reader_batch_loss, reader_inputs

if TYPE_CHECKING:
    from ragtune.tasks.qa.config import QAConfig as RunConfig

log = logging.getLogger("ragtune")

QA_KEYS = ("exact_match", "f1", "reader_exact_match", "reader_f1", "recall@1", "recall@5", "recall@10",
           "recall@20", "mrr@10", "ndcg@10", "n")


def run_qa(
    cfg: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], bool] | None = None,
    evaluate_test: bool = True,
) -> tuple[dict, TrainResult]:
    """Run the QA stages for ``cfg`` into ``run_dir`` (set up by ``ragtune.pipeline.run``). Returns
    ``(metrics, train_result)``."""
    from ragtune.models.hf import use_fast_cpu_kernels
    from ragtune.models.reader import load_reader

    started = time.perf_counter()
    r = cfg.retrieval

    # 1. data
    data = prepare_qa_data(cfg)
    (run_dir / "data_report.json").write_text(json.dumps(data.info, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("data: %s", ", ".join(f"{k} {v['questions']} questions" for k, v in data.info["splits"].items()))

    # 2. retriever
    index, index_ref = open_run_index(r, run_dir, progress) if r.top_k else (None, None)
    if index is not None and r.top_k > len(index):
        raise RagtuneError(f"retrieval.top_k: {r.top_k} is larger than the {len(index)} passages of the index {index.path}")

    # 3. reader
    torch.manual_seed(cfg.train.seed)
    reader, tokenizer = load_reader(cfg.model.name_or_path)
    if reader.max_positions is not None and cfg.model.max_length > reader.max_positions:
        raise RagtuneError(f"model.max_length: {cfg.model.max_length} is longer than the {reader.max_positions} "
                           f"positions that {cfg.model.name_or_path} supports; set model.max_length={reader.max_positions} or less")
    if cfg.model.fast_cpu_kernels:
        use_fast_cpu_kernels(reader.model)
    meta = {
        "ragtune_version": ragtune.__version__, "task": "qa", "name_or_path": cfg.model.name_or_path,
        "max_length": cfg.model.max_length, "doc_stride": cfg.model.doc_stride,
        "max_answer_length": cfg.model.max_answer_length, "top_k": r.top_k, "index": index_ref,
    }
    predictor = QAPredictor(reader, tokenizer, meta, index, batch_size=cfg.eval.batch_size)

    # 4. training: the reader on gold paragraphs + retrieved distractors, or RAG (reader and query encoder)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
    if r.train_query_encoder:
        model, batch_loss, before_epoch, stream = _rag_training(cfg, data, index, reader, tokenizer, predictor,
                                                                autocast, meta, resume)
    else:
        model, before_epoch = reader, None
        distractor_passages = None
        if index is not None and r.distractors:
            depth = min(len(index), r.distractors + 5)
            hits = index.search_batch([q.question for q in data.train], k=depth)
            distractor_passages = [[h.text for h in per_question] for per_question in hits]
        inputs = reader_inputs(data.train, distractor_passages, r.distractors)
        log.info("reader training inputs: %d (%d questions, %d distractor passages)", len(inputs), len(data.train),
                 len(inputs) - len(data.train))
        stream = BatchStream([[0]] * len(inputs), torch.zeros(len(inputs)), cfg.train.batch_size, cfg.train.seed)
        batch_loss = make_reader_batch_loss(reader, tokenizer, inputs, stream.indices, cfg.model.max_length,
                                            cfg.model.doc_stride, autocast)
    result = train_model(
        model, stream, task="qa", cfg=cfg.train, selection_metric=cfg.selection_metric,
        evaluate=lambda: predictor.evaluate(data.validation, with_gold=False), out_dir=run_dir, resume=resume,
        on_epoch_end=on_epoch_end, before_epoch=before_epoch, progress=progress, batch_loss=batch_loss,
    )
    if cfg.train.restore_best and result.best_epoch is not None:
        load_weights(model, run_dir / "checkpoints" / "best" / "model.safetensors")
    if r.train_query_encoder and r.refresh_every_epochs:  # the passage side of the weights kept, not of the last refresh
        from ragtune.train.rag import encode_passages

        predictor.passage_embeddings = encode_passages(predictor.query_encoder, [p["text"] for p in index.passages],
                                                       cfg.eval.batch_size)
    reader.save_pretrained(run_dir / READER_DIR, tokenizer)
    if r.train_query_encoder:
        predictor.query_encoder.save(str(run_dir / QUERY_ENCODER_DIR))
        np.save(run_dir / PASSAGE_EMBEDDINGS, predictor.passage_embeddings.numpy().astype(np.float32))
    (run_dir / MODEL_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")

    # 5. evaluation and report
    metrics = {"validation": predictor.evaluate(data.validation)}
    if evaluate_test:
        metrics["test"] = predictor.evaluate(data.test)
    metrics["training"] = {
        "seconds": round(result.seconds, 2), "optimizer_steps": result.optimizer_steps, "tokens": result.tokens,
        "tokens_per_s": round(result.tokens / result.seconds, 1) if result.seconds else None,
        "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    _report(cfg, run_dir, data, metrics, result, time.perf_counter() - started)
    log.info("done: %s", json.dumps({s: {k: round(v, 2) for k, v in m.items() if k in ("exact_match", "f1", "recall@5")}
                                     for s, m in metrics.items() if s != "training"}))
    return metrics, result


class RagModel(torch.nn.Module):
    """What RAG training updates: the reader and the query encoder (one module for the optimizer and checkpoints)."""

    def __init__(self, reader: torch.nn.Module, query_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.reader = reader
        self.query_encoder = query_encoder


def _rag_training(cfg: RunConfig, data: QAData, index, reader, tokenizer, predictor: QAPredictor, autocast, meta: dict,
                  resume: bool):
    """Model, batch loss, index refresh and stream of RAG training (:mod:`ragtune.train.rag`)."""
    from ragtune.models.hf import use_fast_cpu_kernels
    from ragtune.retrieval.corpus import text_sha1
    from ragtune.retrieval.dense import load_embeddings
    from ragtune.retrieval.index import EMBEDDINGS
    from ragtune.train.rag import answer_rows, encode_passages, make_rag_batch_loss

    r = cfg.retrieval
    if index.kind != "dense":
        raise RagtuneError(f"retrieval.train_query_encoder: the index {index.path} is a {index.kind!r} index; RAG "
                           "training needs a dense one (ragtune index --kind dense, or retrieval.kind: dense)")
    encoder = index.encoder  # the index's own sentence-transformers model, now trained as the query encoder
    if cfg.model.fast_cpu_kernels and hasattr(encoder[0], "auto_model"):
        use_fast_cpu_kernels(encoder[0].auto_model)
    predictor.use_rag(encoder, torch.from_numpy(np.array(load_embeddings(index.path / EMBEDDINGS))).float(),
                      r.temperature)
    meta.update(answer_selection="rag", temperature=r.temperature, query_encoder=QUERY_ENCODER_DIR,
                passage_embeddings=PASSAGE_EMBEDDINGS)
    gold_rows = answer_rows(data.train, index.passages, text_sha1)
    missing = sum(not rows for rows in gold_rows)
    log.info("RAG training: %d questions (%d whose answer no passage of the gold paragraph holds whole), top %d, "
             "temperature %g, passage side %s", len(data.train), missing, r.top_k, r.temperature,
             f"refreshed every {r.refresh_every_epochs} epochs" if r.refresh_every_epochs else "frozen")
    stream = BatchStream([[0]] * len(data.train), torch.zeros(len(data.train)), cfg.train.batch_size, cfg.train.seed)
    texts = [p["text"] for p in index.passages]

    resumed = {"pending": resume}

    def before_epoch(epoch: int) -> None:
        # a resumed run re-encodes at once: the refreshed embeddings are not in the checkpoint
        due = epoch > 0 and (epoch % r.refresh_every_epochs == 0 or resumed["pending"]) if r.refresh_every_epochs else False
        resumed["pending"] = False
        if due:
            log.info("RAG training: re-encoding %d passages with the trained encoder (epoch %d)", len(texts), epoch + 1)
            predictor.passage_embeddings = encode_passages(encoder, texts, cfg.eval.batch_size)

    batch_loss = make_rag_batch_loss(reader, tokenizer, encoder, lambda: predictor.passage_embeddings, index.passages,
                                     data.train, gold_rows, stream.indices, r.top_k, r.temperature, r.gold_passage,
                                     cfg.model.max_length, cfg.model.doc_stride, autocast)
    return RagModel(reader, encoder), batch_loss, before_epoch, stream


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def _report(cfg: RunConfig, run_dir: Path, data: QAData, metrics: dict, result: TrainResult, wall: float) -> None:
    splits = [s for s in ("validation", "test") if s in metrics]
    keys = [k for k in QA_KEYS if any(k in metrics[s] for s in splits)]
    lines = [f"# ragtune run report{': ' + cfg.name if cfg.name else ''}", "",
             f"task **qa** · reader `{cfg.model.name_or_path}` · retrieval "
             + (f"top {cfg.retrieval.top_k} from `{cfg.retrieval.index or INDEX_DIR}`" if cfg.retrieval.top_k else "off (gold paragraph)"),
             "", "## Results", "", "exact match and F1 are SQuAD's (0-100); recall/MRR/nDCG are of the gold paragraph "
             "among the retrieved passages; `reader_*`: the reader given the gold paragraph.", "",
             "| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(metrics[s].get(key)) for s in splits) + " |")
    lines += ["", "## Data", "", "| split | questions | articles | paragraphs | source |", "|---|---|---|---|---|"]
    for name, info in data.info["splits"].items():
        lines.append(f"| {name} | {info['questions']} | {info['articles']} | {info['paragraphs']} | {info['source']} |")
    training = metrics["training"]
    lines += ["", "## Training", "", f"{training['optimizer_steps']} optimizer steps in {training['seconds']:.0f} s; "
              f"best epoch {training['best_epoch']} (by validation {cfg.selection_metric}); wall time {wall:.0f} s.", ""]
    if result.history:
        shown = [m for m in ("f1", "exact_match") if any(e.get(f"validation_{m}") is not None for e in result.history)]
        name = plots.plot_curves(result.history, run_dir / "curves.png", metrics=shown or None).name
        lines += [f"![learning curves]({name})", ""]
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
