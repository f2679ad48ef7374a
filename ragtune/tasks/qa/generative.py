"""The ``task: qa`` recipe with a generative reader (``model.reader: generative``): a causal language model
reads each question with its passages and writes the answer, retrieval in the training loop.

::

    SQuAD-format files ──▶ 1. data (train / validation / test questions, split by article)
    corpus or index    ──▶ 2. retriever (BM25 / dense / hybrid; off when retrieval.top_k is 0)
    model.name_or_path ──▶ 3. language model (SmolLM2, Gemma 3, any causal LM; LoRA, chat template)
                           4. training (qa.train_passages): each question read with
                              gold       its gold passage alone
                              retrieved  the top_k passages the retriever returns
                              raft       gold + top_k-1 retrieved distractors, shuffled, the gold left out
                                         with probability qa.p_no_gold (target: qa.no_answer)
                              the loss on the answer tokens only; with retrieval.train_query_encoder the
                              query encoder also learns from the LM (REPLUG LSR: KL between the retriever's
                              distribution over its top_k and the LM's likelihood of the answer given each)
                           5. evaluation: retrieve top_k ──▶ write the answer (SQuAD / CMRC EM and F1, the
                              retrieval metrics, the answer given the gold passage, abstention on
                              questions whose gold paragraph is taken out of the index, citation precision)
                           6. RUN_DIR: hf_model/, index/ (when built here), query_encoder/, model.json,
                              metrics.json, report.md

Prompts and answers: :mod:`ragtune.tasks.qa.prompts`. Inference: :class:`ragtune.tasks.qa.predictor.QAPredictor`
(``ragtune predict``, ``ragtune eval``, ``/v1/answer`` and the OpenAI chat endpoint of a qa run).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ragtune.version import __version__
from ragtune import runs
from ragtune.data.squad import QARecord
from ragtune.errors import RagtuneError
from ragtune.models.hf_text import HF_DIR
from ragtune.models.seq2seq import seq2seq_loss
from ragtune.retrieval.augment import INDEX_DIR, open_run_index
from ragtune.retrieval.corpus import text_sha1
from ragtune.tasks.generation.predictor import IGNORE_INDEX, GenerationPredictor
from ragtune.tasks.qa.data import QAData, prepare_qa_data, sample_questions
from ragtune.tasks.qa.predictor import PASSAGE_EMBEDDINGS, QUERY_ENCODER_DIR, QAPredictor
from ragtune.tasks.qa.prompts import DISTRACTOR_DEPTH
from ragtune.tasks.qa.prompts import (PassageCutter, default_system_prompt, evidence_sentence, gold_passages,
                                      target_text, training_passages, user_message)
from ragtune.train import distributed
from ragtune.train.batches import BatchStream
from ragtune.train.loop import TrainResult, train_model, training_device
from ragtune.train.optim import optimizer_and_scheduler

if TYPE_CHECKING:
    from ragtune.tasks.qa.config import QAConfig as RunConfig

log = logging.getLogger("ragtune")

QA_KEYS = ("exact_match", "f1", "reader_exact_match", "reader_f1", "abstention", "abstained", "citation_precision",
           "recall@1", "recall@5", "recall@10", "mrr@10", "n")


def qa_settings(cfg: RunConfig) -> dict:
    """The ``qa`` entry of ``model.json``: how prompts are built and answers read (:mod:`ragtune.tasks.qa.prompts`)."""
    q = cfg.qa
    mode = cfg.train_passages
    abstain = mode == "raft" and q.p_no_gold > 0
    return {"train_passages": mode, "no_answer": q.no_answer, "abstain": abstain, "cite": q.cite,
            "quote_evidence": q.quote_evidence, "passage_tokens": q.passage_tokens, "p_no_gold": q.p_no_gold,
            "system_prompt": q.system_prompt or default_system_prompt(q.no_answer, abstain, q.cite, q.quote_evidence)}


def generative_predictor(cfg: RunConfig, tokenizer, model, index=None, index_ref: str | None = None) -> QAPredictor:
    """The :class:`QAPredictor` of a generative run of ``cfg`` around ``model`` (a causal LM wrapper from
    :func:`ragtune.models.hf_text.load_hf_text_model`) and ``tokenizer``, reading ``index``: the ``model.json``
    entries (prompt settings, chat template, decoding, files) the run saves. Also what scores an untrained
    model the same way (``benchmarks/squad_rag_llm.py``'s zero-shot row)."""
    m, r = cfg.model, cfg.retrieval
    settings = qa_settings(cfg)
    has_template = bool(getattr(tokenizer.hf, "chat_template", None))
    meta = {
        "ragtune_version": __version__, "task": "qa", "reader": "generative", "model": {"max_length": m.max_length},
        "tokenizer": HF_DIR, "weights": HF_DIR, "name_or_path": m.name_or_path,
        "special_ids": {"pad": tokenizer.pad_id, "unk": tokenizer.unk_id, "bos": tokenizer.bos_id, "eos": tokenizer.eos_id},
        "hf": {"dir": HF_DIR, "kind": "causal", "name_or_path": m.name_or_path,
               "lora": m.lora.model_dump(mode="json") if m.lora.enabled else None},
        "decode": cfg.decode.model_dump(mode="json"), "prompts": True, "qa": settings,
        "chat": {"template": has_template and cfg.qa.chat_template == "auto", "system_prompt": settings["system_prompt"]},
        "top_k": r.top_k if index is not None else 0, "index": index_ref,
    }
    lm = GenerationPredictor(model, tokenizer, meta, batch_size=cfg.eval.batch_size)
    return QAPredictor(lm, tokenizer, meta, index, batch_size=cfg.eval.batch_size)


def run(cfg: RunConfig, run_dir: Path, opts: runs.RunOptions) -> tuple[dict, TrainResult]:
    """Run the generative QA stages for ``cfg`` into ``run_dir`` (called by :func:`ragtune.tasks.qa.recipe.run`)."""
    started = time.perf_counter()
    r, m = cfg.retrieval, cfg.model
    runs.write_inputs(cfg, run_dir, opts.config_path)

    # 1. data
    data = prepare_qa_data(cfg)
    runs.write_json(run_dir / "data_report.json", data.info)
    log.info("data: %s", ", ".join(f"{k} {v['questions']} questions" for k, v in data.info["splits"].items()))

    # 2. retriever
    device = training_device(cfg.train)
    index, index_ref = open_run_index(r, run_dir, opts.progress, device=device) if r.top_k else (None, None)
    mode = cfg.train_passages
    if index is not None and r.top_k + (1 if mode == "raft" else 0) > len(index):
        raise RagtuneError(f"retrieval.top_k: {r.top_k} is too many for the {len(index)} passages of the index {index.path}"
                           + (" (raft reads the gold passage and top_k - 1 distractors from other paragraphs)"
                              if mode == "raft" else ""))

    # 3. language model (LoRA, gradient checkpointing, chat template)
    tokenizer, model, _ = runs.load_hf_text_backbone(cfg, "causal")
    if not (m.lora.enabled and m.lora.load_in_4bit):
        model = model.to(device)
    predictor = generative_predictor(cfg, tokenizer, model, index, index_ref)
    lm, meta, settings = predictor.reader, predictor.meta, predictor.settings
    cutter = PassageCutter(tokenizer.hf, settings["passage_tokens"])
    log.info("generative reader %s, %.2fM parameters; prompts %s; training passages: %s", m.name_or_path,
             model.num_parameters(non_embedding=False) / 1e6,
             "through the chat template" if meta["chat"]["template"] else "in the plain format", mode)

    # 4. training
    train = data.train
    gold = gold_passages(train, index, cutter)
    answers = [rec.answers[0] for rec in train]
    evidence = [evidence_sentence(g, a) for g, a in zip(gold, answers)]
    lsr = r.train_query_encoder
    encoder = None
    candidates: list[list[int]] = [[] for _ in train]
    gold_docs = [text_sha1(rec.context) for rec in train]
    if index is not None and not lsr:  # retrieved once, on rank 0 (torchrun: the same passages on every rank)
        depth = min(len(index), r.top_k + DISTRACTOR_DEPTH)
        candidates = distributed.from_main(lambda: [[row for row, _ in hits] for hits in
                                                    index.search_rows([rec.question for rec in train], k=depth)])
    gold_rows: list[list[int]] = [[] for _ in train]
    if lsr:
        from ragtune.train.rag import answer_rows, reader_and_encoder_scales

        encoder, before_epoch = _use_lm_trained_retriever(cfg, index, predictor, device, meta, opts.resume)
        gold_rows = answer_rows(train, index.passages, text_sha1)
        model_to_train = _RetrieverAndReader(model, encoder)
        scales = reader_and_encoder_scales(model_to_train, cfg.train.lr, r.query_encoder_lr)
    else:
        before_epoch, model_to_train, scales = None, model, None
    passage_texts = [p["text"] for p in index.passages] if index is not None else []
    cut_cache: dict[int, str] = {}

    def cut_rows(rows: list[int]) -> list[str]:
        todo = [row for row in dict.fromkeys(rows) if row not in cut_cache]
        for row, text in zip(todo, cutter.cut([passage_texts[row] for row in todo])):
            cut_cache[row] = text
        return [cut_cache[row] for row in rows]

    def prompt_of(i: int, rows: list[int], epoch: int) -> tuple[str, str]:
        """(user message, target) of training question ``i`` with retrieved ``rows``, best first."""
        rng = random.Random(f"{cfg.train.seed}:{epoch}:{i}")
        rec = train[i]
        if mode == "raft":
            rows = [row for row in rows if index.passages[row]["doc_sha1"] != gold_docs[i]]
        position = None
        if mode == "retrieved":
            holds = [j for j, row in enumerate(rows[:r.top_k], 1)
                     if index.passages[row]["doc_sha1"] == gold_docs[i] and _holds(passage_texts[row], rec.answers)]
            position = holds[0] if holds else None
        passages, gold_at = training_passages(mode, gold[i], cut_rows(rows[:r.top_k]) if rows else [], r.top_k,
                                              settings["p_no_gold"], rng, position)
        answer = answers[i] if (gold_at is not None or mode in ("retrieved", "none")) else None
        return user_message(rec.question, passages), target_text(answer, gold_at, settings, evidence[i])

    stream = BatchStream([[0]] * len(train), torch.zeros(len(train)), cfg.train.batch_size, cfg.train.seed)

    def batch_loss(k: int) -> tuple[torch.Tensor, int]:
        rows, counted = distributed.share(stream.indices(k))  # torchrun: this rank's share of the batch
        epoch = k // stream.batches_per_pass
        similarities = None
        if lsr:  # retrieve with the query encoder being trained: the top_k of each question, with the graph
            from ragtune.train.rag import encode_queries_with_grad

            q = encode_queries_with_grad(encoder, [train[i].question for i in rows])  # (B, d)
            sims = q @ predictor.passage_embeddings.T  # (B, N)
            depth = min(len(index), r.top_k + (DISTRACTOR_DEPTH if mode == "raft" else 0))
            retrieved = sims.detach().topk(depth, dim=-1).indices.tolist()  # (B, depth)
            if r.gold_passage:  # the gold passage in the top_k when the retriever missed it (as RAG training does)
                for got, i in zip(retrieved, rows):
                    if gold_rows[i] and not set(got[:r.top_k]) & set(gold_rows[i]):
                        got.insert(r.top_k - 1, gold_rows[i][0])
            top = torch.tensor([got[:r.top_k] for got in retrieved], device=sims.device)  # (B, k)
            similarities = sims.gather(1, top)  # (B, k), with the graph
        else:
            retrieved = [candidates[i] for i in rows]
        pairs = [prompt_of(i, got, epoch) for i, got in zip(rows, retrieved)]
        examples = lm.training_examples([p for p, _ in pairs], [t for _, t in pairs])
        logits, labels = lm.batch_logits(examples)  # (B, T', V), (B, T')
        targets = int((labels != IGNORE_INDEX).sum())
        loss = seq2seq_loss(logits, labels, IGNORE_INDEX, 0.0)
        if lsr:
            loss = loss + _lsr_loss(lm, [train[i] for i in rows], [got[:r.top_k] for got in retrieved], similarities,
                                    cut_rows, r.temperature, r.lm_temperature, settings)
        loss = distributed.global_mean(loss, targets if counted else 0)
        return loss, sum(len(ids) for ids, _ in examples)

    val = data.validation
    sample = random.Random(cfg.train.seed).sample(val, min(len(val), cfg.eval.max_decode_rows))

    def evaluate() -> dict:
        return predictor.evaluate(sample, with_gold=False, abstention=False)

    result = train_model(
        model_to_train, stream, batch_loss, *optimizer_and_scheduler(model_to_train, cfg.train, stream.batches_per_pass,
                                                                     param_scales=scales),
        cfg=cfg.train, selection_metric=cfg.selection_metric, out_dir=run_dir, resume=opts.resume, evaluate=evaluate,
        on_epoch_end=opts.on_epoch_end, before_epoch=before_epoch, progress=opts.progress, max_length=m.max_length,
    )
    if not distributed.info().is_main:  # torchrun: rank 0 saves, evaluates and reports
        return {}, result
    runs.restore_best(model_to_train, cfg.train, result, run_dir)
    model_to_train.eval()
    if lsr and r.refresh_every_epochs:  # the passage side of the kept weights
        from ragtune.train.rag import encode_passages

        predictor.passage_embeddings = encode_passages(encoder, passage_texts, cfg.eval.batch_size)
    runs.save_text_model(model, tokenizer, meta, run_dir, hf=True)
    if lsr:
        encoder.save(str(run_dir / QUERY_ENCODER_DIR))
        np.save(run_dir / PASSAGE_EMBEDDINGS, predictor.passage_embeddings.cpu().numpy().astype(np.float32))

    # 5. evaluation and report
    # validation: end to end only (its answers chose the checkpoint); the test split also gets the gold-passage
    # and abstention passes, which decode every question twice more
    metrics = {"validation": predictor.evaluate(sample_questions(val, cfg.eval.max_questions, cfg.train.seed),
                                                with_gold=False, abstention=False)}
    if opts.evaluate_test:
        metrics["test"] = predictor.evaluate(sample_questions(data.test, cfg.eval.max_questions, cfg.train.seed))
    metrics["training"] = runs.training_summary(result)
    runs.write_json(run_dir / "metrics.json", metrics)
    _report(cfg, run_dir, data, metrics, result, time.perf_counter() - started, settings)
    runs.log_done(metrics, ("exact_match", "f1", "recall@5"))
    return metrics, result


def _holds(text: str, answers: list[str]) -> bool:
    low = text.lower()
    return any(a.strip() and a.lower() in low for a in answers)


class _RetrieverAndReader(torch.nn.Module):
    """What LM-supervised retrieval training updates: the language model and the query encoder (one
    module for the optimizer and the checkpoints)."""

    def __init__(self, reader: torch.nn.Module, query_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.reader = reader
        self.query_encoder = query_encoder


def _use_lm_trained_retriever(cfg: RunConfig, index, predictor: QAPredictor, device: torch.device, meta: dict,
                              resume: bool):
    """The query encoder (the dense index's own model, now trained) and the epoch hook that re-encodes the
    passages every ``retrieval.refresh_every_epochs`` (as the extractive RAG training does)."""
    from ragtune.retrieval.dense import load_embeddings
    from ragtune.retrieval.index import EMBEDDINGS
    from ragtune.train.rag import encode_passages

    r = cfg.retrieval
    if index.kind != "dense":
        raise RagtuneError(f"retrieval.train_query_encoder: the index {index.path} is a {index.kind!r} index; training "
                           "the retriever needs a dense one (ragtune index --kind dense, or retrieval.kind: dense)")
    encoder = index.encoder
    encoder.to(device)
    predictor.use_rag(encoder, torch.from_numpy(np.array(load_embeddings(index.path / EMBEDDINGS))).float().to(device),
                      r.temperature)
    meta.update(retriever="lm_trained", temperature=r.temperature, query_encoder=QUERY_ENCODER_DIR,
                passage_embeddings=PASSAGE_EMBEDDINGS)
    log.info("retriever trained by the LM: top %d, temperature %g, LM temperature %g, learning rate %g, passage side %s",
             r.top_k, r.temperature, r.lm_temperature, r.query_encoder_lr or cfg.train.lr,
             f"refreshed every {r.refresh_every_epochs} epochs" if r.refresh_every_epochs else "frozen")
    texts = [p["text"] for p in index.passages]
    resumed = {"pending": resume}

    def before_epoch(epoch: int) -> None:
        due = epoch > 0 and (epoch % r.refresh_every_epochs == 0 or resumed["pending"]) if r.refresh_every_epochs else False
        resumed["pending"] = False
        if due:
            log.info("re-encoding %d passages with the trained query encoder (epoch %d)", len(texts), epoch + 1)
            fresh = distributed.from_main(lambda: encode_passages(encoder, texts, cfg.eval.batch_size).cpu())
            predictor.passage_embeddings = fresh.to(device)

    return encoder, before_epoch


def _lsr_loss(lm: GenerationPredictor, records: list[QARecord], rows: list[list[int]], similarities: torch.Tensor,
              cut_rows, temperature: float, lm_temperature: float, settings: dict) -> torch.Tensor:
    """REPLUG's LM-supervised retrieval loss for a batch: the LM scores the gold answer after each of the
    top-k passages read alone (no gradient, dropout off), and the retriever's distribution over those k
    learns to match (:func:`ragtune.train.rag.lm_supervised_retrieval_loss`)."""
    from ragtune.train.rag import lm_supervised_retrieval_loss

    prompts, targets = [], []
    for rec, got in zip(records, rows):
        for text in cut_rows(got):
            prompts.append(user_message(rec.question, [text]))
            targets.append(target_text(rec.answers[0], 1, {**settings, "quote_evidence": False}))
    was_training = lm.model.training
    lm.model.eval()
    with torch.no_grad():
        scores = lm.example_log_likelihoods(lm.training_examples(prompts, targets)).view(len(records), -1)  # (B, k)
    lm.model.train(was_training)
    return lm_supervised_retrieval_loss(similarities, scores.to(similarities.device), temperature, lm_temperature)


def _report(cfg: RunConfig, run_dir: Path, data: QAData, metrics: dict, result: TrainResult, wall: float,
            settings: dict) -> None:
    keys = [k for k in QA_KEYS if any(k in m for s, m in metrics.items() if s in ("validation", "test"))]
    r = cfg.retrieval
    lines = [runs.report_title(cfg), "",
             f"task **qa** · generative reader `{cfg.model.name_or_path}` · training passages "
             f"**{settings['train_passages']}**" + (f" (p_no_gold {settings['p_no_gold']})" if settings["train_passages"] == "raft" else "")
             + " · retrieval " + (f"top {r.top_k} from `{r.index or INDEX_DIR}`" if r.top_k else "off (gold passage)")
             + (" · query encoder trained by the LM" if r.train_query_encoder else ""),
             "", "## Results", "",
             "exact match and F1 are SQuAD's (CMRC 2018's for Chinese; 0-100), citations left out; `reader_*`: the "
             "answer given the gold passage alone; `abstention`: the share of questions read without their gold "
             f"paragraph (taken out of the retrieved passages) answered \"{settings['no_answer']}\"; `abstained`: the "
             "share of end-to-end answers that are; `citation_precision`: the share of cited passages from the gold "
             "paragraph; recall/MRR: of the gold paragraph among the retrieved passages.", "",
             *runs.metrics_table(metrics, keys), "", "## Data", "",
             *runs.table(["split", "questions", "articles", "paragraphs", "source"], (
                 [name, i["questions"], i["articles"], i["paragraphs"], i["source"]] for name, i in data.info["splits"].items())),
             *runs.training_section(metrics, result, run_dir, cfg.selection_metric, wall, ("f1", "exact_match"))]
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
