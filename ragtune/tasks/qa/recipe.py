"""The ``task: qa`` recipe: question answering over a document corpus, as a stage diagram.

::

    SQuAD-format files ──▶ 1. data (train / validation / test questions, split by article)
    corpus or index    ──▶ 2. retriever (BM25 / dense / hybrid index; off when retrieval.top_k is 0)
    model.name_or_path ──▶ 3. reader (a pretrained encoder with a span head)
                           4. training: each question's gold paragraph + retrieved distractors
                           5. evaluation: retrieve top_k ──▶ read each passage ──▶ best answer
                              (exact match / F1, retrieval recall, the reader on the gold paragraph)
                           6. RUN_DIR: reader/, index/ (when built here), model.json, metrics.json, report.md

``ragtune run CONFIG`` calls :func:`run` for a ``task: qa`` config; inference goes through
:class:`ragtune.tasks.qa.predictor.QAPredictor`, the one path shared with ``ragtune predict`` and ``ragtune eval``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ragtune.version import __version__
from ragtune import runs
from ragtune.tasks.qa.data import QAData, prepare_qa_data
from ragtune.errors import RagtuneError
from ragtune.retrieval.augment import INDEX_DIR, open_run_index
from ragtune.tasks.qa.predictor import MODEL_META, PASSAGE_EMBEDDINGS, QUERY_ENCODER_DIR, READER_DIR, QAPredictor
from ragtune.train.batches import BatchStream
from ragtune.train import distributed
from ragtune.train.loop import TrainResult, train_model, training_device
from ragtune.train.optim import optimizer_and_scheduler
from ragtune.train.qa import make_reader_batch_loss, reader_inputs

if TYPE_CHECKING:
    from ragtune.tasks.qa.config import QAConfig as RunConfig

log = logging.getLogger("ragtune")

QA_KEYS = ("exact_match", "f1", "reader_exact_match", "reader_f1", "recall@1", "recall@5", "recall@10",
           "recall@20", "mrr@10", "ndcg@10", "n")


def run(cfg: RunConfig, run_dir: Path, opts: runs.RunOptions) -> tuple[dict, TrainResult]:
    """Run the QA stages for ``cfg`` into ``run_dir`` (set up by :func:`ragtune.tasks.run`). Returns
    ``(metrics, train_result)``; ``report.md`` is written whatever ``opts.reports`` says."""
    from ragtune.models.hf import apply_lora, enable_gradient_checkpointing, merge_lora, save_lora_adapter, use_fast_cpu_kernels
    from ragtune.models.reader import load_reader

    if reader_kind(cfg) == "generative":  # a causal LM writes the answer: its own recipe
        from ragtune.tasks.qa import generative

        return generative.run(cfg, run_dir, opts)
    started = time.perf_counter()
    r = cfg.retrieval
    runs.write_inputs(cfg, run_dir, opts.config_path)

    # 1. data
    data = prepare_qa_data(cfg)
    runs.write_json(run_dir / "data_report.json", data.info)
    log.info("data: %s", ", ".join(f"{k} {v['questions']} questions" for k, v in data.info["splits"].items()))

    # 2. retriever
    device = training_device(cfg.train)
    index, index_ref = open_run_index(r, run_dir, opts.progress, device=device) if r.top_k else (None, None)
    if index is not None and r.top_k > len(index):
        raise RagtuneError(f"retrieval.top_k: {r.top_k} is larger than the {len(index)} passages of the index {index.path}")

    # 3. reader
    torch.manual_seed(cfg.train.seed)
    reader, tokenizer = load_reader(cfg.model.name_or_path)
    if reader.max_positions is not None and cfg.model.max_length > reader.max_positions:
        raise RagtuneError(f"model.max_length: {cfg.model.max_length} is longer than the {reader.max_positions} "
                           f"positions that {cfg.model.name_or_path} supports; set model.max_length={reader.max_positions} or less")
    if cfg.model.fast_cpu_kernels and device.type == "cpu":  # CPU kernels; CUDA keeps sdpa's flash/efficient ones
        use_fast_cpu_kernels(reader.model)
    lora = cfg.model.lora
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(reader.model)
    if lora.enabled:  # adapters on the encoder; the span head trains whole
        reader.model = apply_lora(reader.model, lora.r, lora.alpha, lora.dropout, lora.target_modules, task="qa",
                                  modules_to_save=["qa_outputs"])
        log.info("lora: r=%d, alpha=%d, %d of %d parameters train (adapters and span head)", lora.r, lora.alpha,
                 sum(p.numel() for p in reader.parameters() if p.requires_grad), sum(p.numel() for p in reader.parameters()))
    reader.to(device)
    meta = {
        "ragtune_version": __version__, "task": "qa", "name_or_path": cfg.model.name_or_path,
        "max_length": cfg.model.max_length, "doc_stride": cfg.model.doc_stride,
        "max_answer_length": cfg.model.max_answer_length, "top_k": r.top_k, "index": index_ref,
        "lora": lora.model_dump(mode="json") if lora.enabled else None,  # save adapter: reader/ holds the adapters
    }
    predictor = QAPredictor(reader, tokenizer, meta, index, batch_size=cfg.eval.batch_size)

    # 4. training: the reader on gold paragraphs + retrieved distractors, or RAG (reader and query encoder)
    if r.train_query_encoder:
        from ragtune.train.rag import reader_and_encoder_scales

        model, batch_loss, before_epoch, stream = _rag_training(cfg, data, index, reader, tokenizer, predictor,
                                                                device, meta, opts.resume)
        scales = reader_and_encoder_scales(model, cfg.train.lr, r.query_encoder_lr)
    else:
        model, before_epoch, scales = reader, None, None
        distractor_passages = None
        if index is not None and r.distractors:
            depth = min(len(index), r.distractors + 5)
            # torchrun: retrieved on rank 0, the same passages on every rank
            distractor_passages = distributed.from_main(lambda: [
                [h.text for h in per_question] for per_question in index.search_batch([q.question for q in data.train], k=depth)])
        inputs = reader_inputs(data.train, distractor_passages, r.distractors)
        log.info("reader training inputs: %d (%d questions, %d distractor passages)", len(inputs), len(data.train),
                 len(inputs) - len(data.train))
        stream = BatchStream([[0]] * len(inputs), torch.zeros(len(inputs)), cfg.train.batch_size, cfg.train.seed)
        batch_loss = make_reader_batch_loss(reader, tokenizer, inputs, stream.indices, cfg.model.max_length,
                                            cfg.model.doc_stride)
    result = train_model(
        model, stream, batch_loss, *optimizer_and_scheduler(model, cfg.train, stream.batches_per_pass,
                                                            param_scales=scales),
        cfg=cfg.train, selection_metric=cfg.selection_metric, out_dir=run_dir, resume=opts.resume,
        evaluate=lambda: predictor.evaluate(data.validation, with_gold=False),
        on_epoch_end=opts.on_epoch_end, before_epoch=before_epoch, progress=opts.progress,
        max_length=cfg.model.max_length,
    )
    if not distributed.info().is_main:  # torchrun: rank 0 saves, evaluates and reports
        return {}, result
    runs.restore_best(model, cfg.train, result, run_dir)
    if r.train_query_encoder and r.refresh_every_epochs:  # the passage side of the weights kept, not of the last refresh
        from ragtune.train.rag import encode_passages

        predictor.passage_embeddings = encode_passages(predictor.query_encoder, [p["text"] for p in index.passages],
                                                       cfg.eval.batch_size)
    if lora.enabled and lora.save == "merged":  # what is evaluated next is what is saved
        reader.model = merge_lora(reader.model)
    if lora.enabled and lora.save == "adapter":
        save_lora_adapter(reader.model, run_dir / READER_DIR)
        tokenizer.save_pretrained(run_dir / READER_DIR)
    else:
        reader.save_pretrained(run_dir / READER_DIR, tokenizer)
    if r.train_query_encoder:
        predictor.query_encoder.save(str(run_dir / QUERY_ENCODER_DIR))
        np.save(run_dir / PASSAGE_EMBEDDINGS, predictor.passage_embeddings.cpu().numpy().astype(np.float32))
    runs.write_json(run_dir / MODEL_META, meta)

    # 5. evaluation and report
    metrics = {"validation": predictor.evaluate(data.validation)}
    if opts.evaluate_test:
        metrics["test"] = predictor.evaluate(data.test)
    metrics["training"] = runs.training_summary(result)
    runs.write_json(run_dir / "metrics.json", metrics)
    _report(cfg, run_dir, data, metrics, result, time.perf_counter() - started)
    runs.log_done(metrics, ("exact_match", "f1", "recall@5"))
    return metrics, result


def reader_kind(cfg: RunConfig) -> str:
    """``model.reader`` with ``auto`` resolved (:func:`ragtune.models.hf.is_causal_lm`). A generative-only
    setting (``qa.*``, ``decode.*``, QLoRA) on a model that turns out extractive is a RagtuneError."""
    from ragtune.models.hf import is_causal_lm

    kind = cfg.model.reader
    if kind == "auto":
        kind = "generative" if is_causal_lm(cfg.model.name_or_path) else "extractive"
        if kind == "extractive":
            from ragtune.config import DecodeConfig

            wrong = [f"qa.{k}" for k, _ in cfg.qa.non_default(*type(cfg.qa).model_fields)]
            wrong += [f"decode.{k}" for k, _ in cfg.decode.non_default(*DecodeConfig.model_fields)]
            wrong += [f"eval.{k}" for k, _ in cfg.eval.non_default("max_decode_rows", "max_questions")]
            wrong += ["model.lora.load_in_4bit"] * cfg.model.lora.load_in_4bit
            if wrong:
                raise RagtuneError(f"{', '.join(wrong)}: only for a generative reader, and {cfg.model.name_or_path!r} is "
                                   "not a causal language model (model.reader: auto found no ...ForCausalLM architecture); "
                                   "remove them, or name a causal LM")
    return kind


def evaluate_test_split(cfg: RunConfig, run_dir: Path) -> dict:
    """The finished run on the test questions of ``cfg`` (see :func:`ragtune.tasks.evaluate_test_split`)."""
    from ragtune.tasks.qa.data import sample_questions

    test = sample_questions(prepare_qa_data(cfg).test, cfg.eval.max_questions, cfg.train.seed)
    return QAPredictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size).evaluate(test)


def evaluate_file(cfg: RunConfig, run_dir: Path, path: str, target: str | None = None, device=None) -> dict:
    """``ragtune eval RUN --data FILE``: a SQuAD-format file, end-to-end and retrieval metrics."""
    from ragtune.data.squad import read_squad

    if target:
        raise RagtuneError(f"--target is for translation runs; {run_dir} is a task: qa run")
    return QAPredictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size, device=device).evaluate(read_squad(path))


def train_tokenizer_for(cfg: RunConfig, path: Path, demo_dir=None) -> Path:
    raise RagtuneError("task qa reads with its pretrained reader's tokenizer; there is no tokenizer to train")


class RagModel(torch.nn.Module):
    """What RAG training updates: the reader and the query encoder (one module for the optimizer and checkpoints)."""

    def __init__(self, reader: torch.nn.Module, query_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.reader = reader
        self.query_encoder = query_encoder


def _rag_training(cfg: RunConfig, data: QAData, index, reader, tokenizer, predictor: QAPredictor, device: torch.device,
                  meta: dict, resume: bool):
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
    if cfg.model.fast_cpu_kernels and device.type == "cpu" and hasattr(encoder[0], "auto_model"):
        use_fast_cpu_kernels(encoder[0].auto_model)
    encoder.to(device)
    predictor.use_rag(encoder, torch.from_numpy(np.array(load_embeddings(index.path / EMBEDDINGS))).float().to(device),
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
            # torchrun: rank 0 encodes, every rank gets its embeddings (the same retrieval everywhere)
            fresh = distributed.from_main(lambda: encode_passages(encoder, texts, cfg.eval.batch_size).cpu())
            predictor.passage_embeddings = fresh.to(device)

    batch_loss = make_rag_batch_loss(reader, tokenizer, encoder, lambda: predictor.passage_embeddings, index.passages,
                                     data.train, gold_rows, stream.indices, r.top_k, r.temperature, r.gold_passage,
                                     cfg.model.max_length, cfg.model.doc_stride)
    return RagModel(reader, encoder), batch_loss, before_epoch, stream


def _report(cfg: RunConfig, run_dir: Path, data: QAData, metrics: dict, result: TrainResult, wall: float) -> None:
    keys = [k for k in QA_KEYS if any(k in m for s, m in metrics.items() if s in ("validation", "test"))]
    lines = [runs.report_title(cfg), "",
             f"task **qa** · reader `{cfg.model.name_or_path}` · retrieval "
             + (f"top {cfg.retrieval.top_k} from `{cfg.retrieval.index or INDEX_DIR}`" if cfg.retrieval.top_k else "off (gold paragraph)"),
             "", "## Results", "", "exact match and F1 are SQuAD's (0-100); recall/MRR/nDCG are of the gold paragraph "
             "among the retrieved passages; `reader_*`: the reader given the gold paragraph.", "",
             *runs.metrics_table(metrics, keys), "", "## Data", "",
             *runs.table(["split", "questions", "articles", "paragraphs", "source"], (
                 [name, i["questions"], i["articles"], i["paragraphs"], i["source"]] for name, i in data.info["splits"].items())),
             *runs.training_section(metrics, result, run_dir, cfg.selection_metric, wall, ("f1", "exact_match"))]
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
