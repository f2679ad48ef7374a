"""The ``task: translation`` recipe: source text → target text with an encoder-decoder, as a stage diagram.

::

    data.train / validation / test ──▶ 1. pairs (a table's source/target columns, or two line-aligned
                                          files; validation/test carved from train by a seeded split when absent)
                                       2. tokenizer: byte-fallback BPE, joint or one per side (tokenizer.json)
                                       3. model: TransformerForSeq2Seq (ragtune/models/seq2seq.py)
                                       4. training: train_model with teacher forcing, padding-aware
                                          cross-entropy with train.label_smoothing; each epoch validation
                                          loss + BLEU/chrF of greedy decoding on <= eval.max_decode_rows pairs
                                       5. evaluation: bleu, chrf (decode: section), loss, perplexity per split
                                       6. RUN_DIR: model.json, tokenizer.json, model.safetensors, metrics.json,
                                          history.json, checkpoints/, data_report.json, report.md

``ragtune run CONFIG`` calls :func:`run` for a ``task: translation`` config (through
:func:`ragtune.tasks.run`, which writes config.yaml, inputs.json and run.log first); inference goes
through :class:`ragtune.tasks.translation.predictor.Seq2SeqPredictor`, shared with ``ragtune predict`` and ``ragtune eval``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ragtune import runs
from ragtune.data.seq2seq import PairData, read_pairs, split_examples
from ragtune.data.seq2seq_tokenizer import bpe_tokenizer, train_seq2seq_tokenizer
from ragtune.errors import RagtuneError
from ragtune.models.seq2seq import Seq2SeqConfig, build_seq2seq, pad_batch, seq2seq_loss
from ragtune.runs import TOKENIZER_FILE
from ragtune.tasks.translation.predictor import Seq2SeqPredictor
from ragtune.train.batches import BatchStream
from ragtune.train import distributed
from ragtune.train.loop import TrainResult, training_device

if TYPE_CHECKING:
    from ragtune.tasks.translation.config import TranslationConfig as RunConfig

log = logging.getLogger("ragtune")

SPLITS = ("train", "validation", "test")
METRIC_KEYS = ("bleu", "chrf", "loss", "perplexity")


def _describe(spec) -> str:
    return f"{spec['source']} + {spec['target']}" if isinstance(spec, dict) else str(spec)


def _read(cfg: RunConfig, spec) -> pd.DataFrame:
    d = cfg.data
    return read_pairs(spec, d.source_column, d.target_column, fmt=d.format, max_rows=d.max_rows)


def prepare_pairs(cfg: RunConfig) -> PairData:
    """The three splits as DataFrames with ``source`` and ``target``; missing validation/test splits
    are carved from train by a seeded random permutation (``train.seed``)."""
    return split_examples(cfg, lambda spec: _read(cfg, spec), _describe, ("source", "target"))


MEMORY_FILE = "memory.jsonl"  # retrieval.top_k > 0: the training pairs of the translation memory


def run(cfg: RunConfig, run_dir: Path, opts: runs.RunOptions) -> tuple[dict, TrainResult]:
    """Run the translation stages for ``cfg`` into ``run_dir`` (set up by :func:`ragtune.tasks.run`).
    Returns ``(metrics, train_result)``; ``report.md`` is written whatever ``opts.reports`` says."""
    started = time.perf_counter()
    runs.write_inputs(cfg, run_dir, opts.config_path)

    # 1. data
    data = prepare_pairs(cfg)
    runs.write_json(run_dir / "data_report.json", data.info)
    log.info("data: %s", ", ".join(f"{k} {v['pairs']} pairs" for k, v in data.info["splits"].items()))

    # 2. tokenizer (a resumed run keeps its own: BPE training is not reproducible to the token)
    m = cfg.model
    tok_path = run_dir / TOKENIZER_FILE
    hf_model = None
    if m.backbone == "hf":  # a pretrained model brings its tokenizer (ragtune/models/hf_text.py)
        from ragtune.models.hf_text import check_target_vocabulary

        tokenizer, hf_model, hf_kind = runs.load_hf_text_backbone(cfg, "seq2seq")
        check_target_vocabulary(tokenizer, data.train.target.tolist(), m.name_or_path)
    else:
        t = cfg.tokenizer
        tokenizer = bpe_tokenizer(cfg, tok_path, opts.resume, lambda: train_seq2seq_tokenizer(
            data.train.source.tolist(), data.train.target.tolist(), vocab_size=t.vocab_size,
            min_frequency=t.min_frequency, joint=t.joint))
    tokenizer = distributed.same_on_every_rank(tokenizer)  # torchrun: rank 0's BPE everywhere
    if hf_model is None and m.share_embeddings and not tokenizer.joint:
        raise RagtuneError("model.share_embeddings: the tokenizer has one vocabulary per side; "
                           "set model.share_embeddings: false or use a joint tokenizer")
    if hf_model is None:
        tokenizer.save(tok_path)
        log.info("tokenizer: BPE, %s, %d source / %d target tokens", "joint" if tokenizer.joint else "separate",
                 tokenizer.source_vocab_size, tokenizer.target_vocab_size)

    # 3. model
    device = training_device(cfg.train)
    torch.manual_seed(cfg.train.seed)
    model_cfg = {"max_length": m.max_length} if hf_model is not None else dict(
        src_vocab_size=tokenizer.source_vocab_size,
        tgt_vocab_size=None if tokenizer.joint else tokenizer.target_vocab_size,
        max_length=m.max_length, d_model=m.d_model, heads=m.heads, head_dim=m.head_dim, encoder_layers=m.layers,
        decoder_layers=m.layers, ffn_dim=m.ffn_dim, dropout=m.dropout, pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, share_embeddings=m.share_embeddings,
        tie_output=m.tie_output, activation=m.activation,
    )
    model = hf_model if hf_model is not None else build_seq2seq(Seq2SeqConfig(**model_cfg))
    if not (m.backbone == "hf" and m.lora.load_in_4bit):  # a 4-bit base is placed on its device as it loads
        model = model.to(device)
    meta = runs.text_model_meta(cfg, "translation", model_cfg, tokenizer, hf_kind if hf_model is not None else None)
    meta["joint_tokenizer"] = tokenizer.joint
    predictor = Seq2SeqPredictor(model, tokenizer, meta, batch_size=cfg.eval.batch_size)
    train_sources = data.train.source.tolist()
    if cfg.retrieval.top_k:  # a translation memory of the training pairs (ragtune/retrieval/memory.py)
        from ragtune.retrieval.memory import SEPARATOR, TranslationMemory

        memory = TranslationMemory(train_sources, data.train.target.tolist(), progress=opts.progress)
        with open(run_dir / MEMORY_FILE, "w", encoding="utf-8") as f:
            for source, target in zip(memory.sources, memory.targets):
                f.write(json.dumps({"source": source, "target": target}, ensure_ascii=False) + "\n")
        meta["memory"] = {"file": MEMORY_FILE, "top_k": cfg.retrieval.top_k, "separator": SEPARATOR}
        predictor.use_memory(memory, cfg.retrieval.top_k)  # validation and test sources read their hits too
        # never a sentence's own translation; torchrun: retrieved on rank 0, the same on every rank
        train_sources = distributed.from_main(lambda: memory.augment_training(cfg.retrieval.top_k))
        log.info("translation memory: %d pairs, top %d per source", len(memory), cfg.retrieval.top_k)
    log.info("model: %s, %.2fM parameters", f"{m.name_or_path} ({hf_kind})" if hf_model is not None else "TransformerForSeq2Seq",
             model.num_parameters(non_embedding=False) / 1e6)

    # 4. training: teacher forcing on (source, <s> y) -> y </s>
    src_ids = tokenizer.encode_source_batch(train_sources, m.max_length)
    tgt_ids = tokenizer.encode_target_batch(data.train.target.tolist(), m.max_length)
    stream = BatchStream(src_ids, torch.zeros(len(src_ids)), cfg.train.batch_size, cfg.train.seed,
                         pad_id=tokenizer.pad_id, group_by_length=cfg.train.group_by_length)
    pad = tokenizer.pad_id

    def batch_loss(k: int) -> tuple[torch.Tensor, int]:
        rows, counted = distributed.share(stream.indices(k))  # torchrun: this rank's share of the batch
        ids, mask = pad_batch([src_ids[i] for i in rows], pad, device=device)  # (B, S)
        tgt_in, _ = pad_batch([tgt_ids[i][:-1] for i in rows], pad, device=device)  # <s> y1 .. yn  (B, T)
        labels, _ = pad_batch([tgt_ids[i][1:] for i in rows], pad, device=device)  # y1 .. yn </s>  (B, T)
        logits = model(ids, mask, tgt_in)  # (B, T, V)
        targets = int((labels != pad).sum())
        loss = distributed.global_mean(seq2seq_loss(logits, labels, pad, cfg.train.label_smoothing),
                                       targets if counted else 0)  # mean over the global batch's target tokens
        return loss, int(mask.sum()) + targets

    val = data.validation
    result = runs.train_text_model(cfg, model, stream, batch_loss,
                              lambda **kw: predictor.evaluate(val.source.tolist(), val.target.tolist(), **kw),
                              run_dir, resume=opts.resume, on_epoch_end=opts.on_epoch_end, progress=opts.progress)
    if not distributed.info().is_main:  # torchrun: rank 0 saves, evaluates and reports
        return {}, result
    runs.save_text_model(model, tokenizer, meta, run_dir, hf=hf_model is not None)

    # 5. evaluation with the configured decoding, and the report
    metrics, examples = runs.final_metrics(cfg, data, lambda df: predictor.evaluate(df.source.tolist(), df.target.tolist(),
                                                                               progress=opts.progress), result, opts.evaluate_test)
    runs.write_json(run_dir / "metrics.json", metrics)
    _report(cfg, run_dir, data, metrics, examples, result, model, time.perf_counter() - started)
    runs.log_done(metrics, METRIC_KEYS)
    return metrics, result


def evaluate_test_split(cfg: RunConfig, run_dir: Path) -> dict:
    """The finished run on the test pairs of ``cfg`` (see :func:`ragtune.tasks.evaluate_test_split`)."""
    return _score(cfg, run_dir, prepare_pairs(cfg).test)


def evaluate_file(cfg: RunConfig, run_dir: Path, path: str, target: str | None = None, device=None) -> dict:
    """``ragtune eval RUN --data FILE [--target FILE]``: a table with the run's source/target columns, or
    two line-aligned files."""
    spec = {"source": path, "target": target} if target else path
    return _score(cfg, run_dir, read_pairs(spec, cfg.data.source_column, cfg.data.target_column, fmt=cfg.data.format), device)


def _score(cfg: RunConfig, run_dir: Path, df: pd.DataFrame, device=None) -> dict:
    """The finished run's metrics on the pairs of ``df`` (without the decoded examples)."""
    predictor = Seq2SeqPredictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size, device=device)
    return {k: v for k, v in predictor.evaluate(df.source.tolist(), df.target.tolist()).items() if k != "examples"}


def train_tokenizer_for(cfg: RunConfig, path: Path, demo_dir=None) -> Path:
    """The byte-fallback BPE a run of ``cfg`` would train, saved to ``path`` (``ragtune tune``'s shared tokenizer)."""
    train = prepare_pairs(cfg).train
    t = cfg.tokenizer
    train_seq2seq_tokenizer(train.source.tolist(), train.target.tolist(), vocab_size=t.vocab_size,
                            min_frequency=t.min_frequency, joint=t.joint).save(path)
    return path


def _report(cfg: RunConfig, run_dir: Path, data: PairData, metrics: dict, examples: dict, result: TrainResult,
            model, wall: float) -> None:
    m, dec = cfg.model, cfg.decode
    decoding = {"greedy": "greedy", "beam": f"beam search (beam {dec.beam_size}, length penalty {dec.length_penalty})",
                "sample": f"sampling (top_k {dec.top_k}, top_p {dec.top_p}, temperature {dec.temperature}, seed {dec.seed})"}
    lines = [runs.report_title(cfg), "",
             "task **translation** · " + (f"pretrained `{m.name_or_path}`, " if m.backbone == "hf" else
                                          f"encoder-decoder Transformer {m.layers}+{m.layers} layers, d_model {m.d_model}, "
                                          f"{m.heads} heads x {m.head_dim}, ffn {m.ffn_dim}, ")
             + f"{model.num_parameters(non_embedding=False) / 1e6:.2f}M parameters · decoding: {decoding[dec.strategy]}",
             "", "## Results", "",
             "BLEU and chrF (sacrebleu, 0-100) of the decoded outputs; loss is the mean cross-entropy per target "
             "token (no label smoothing), perplexity its exp.", "", *runs.metrics_table(metrics, (*METRIC_KEYS, "n", "bleu_tokenize")),
             "", "## Data", "", *runs.table(["split", "pairs", "source", "mean source chars", "mean target chars"], (
                 [name, i["pairs"], i["source"], i["source_chars_mean"], i["target_chars_mean"]]
                 for name, i in data.info["splits"].items())),
             *runs.training_section(metrics, result, run_dir, f"{cfg.selection_metric}, greedy decoding of at most "
                                    f"{cfg.eval.max_decode_rows} pairs", wall, ("bleu", "chrf")),
             *runs.examples_section("Example translations", examples, ("source", "reference", "output"))]
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
