"""The ``task: translation`` pipeline: source text → target text with an encoder-decoder, as a stage diagram.

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

``ragtune run CONFIG`` calls :func:`run_translation` for a ``task: translation`` config (through
:func:`ragtune.pipeline.run`, which writes config.yaml, inputs.json and run.log first); inference goes
through :class:`ragtune.seq2seq_predictor.Seq2SeqPredictor`, shared with ``ragtune predict`` and ``ragtune eval``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

import ragtune
from ragtune.data.seq2seq import read_pairs
from ragtune.data.seq2seq_tokenizer import (
    load_seq2seq_tokenizer,
    train_seq2seq_tokenizer,
)
from ragtune.errors import RagtuneError
from ragtune.evaluate import plots
from ragtune.models.hf_text import HF_DIR, save_hf_text_model
from ragtune.models.seq2seq import Seq2SeqConfig, build_seq2seq, pad_batch, seq2seq_loss
from ragtune.seq2seq_predictor import (
    MODEL_META,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    Seq2SeqPredictor,
)
from ragtune.train.batches import BatchStream
from ragtune.train.checkpoint import load_weights, save_weights
from ragtune.train.loop import TrainResult, train_model

if TYPE_CHECKING:
    from ragtune.tasks import RunConfig

log = logging.getLogger("ragtune")

SPLITS = ("train", "validation", "test")
METRIC_KEYS = ("bleu", "chrf", "loss", "perplexity")


@dataclass
class PairData:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    info: dict


def _describe(spec) -> str:
    return f"{spec['source']} + {spec['target']}" if isinstance(spec, dict) else str(spec)


def _read(cfg: RunConfig, spec) -> pd.DataFrame:
    d = cfg.data
    return read_pairs(spec, d.source_column, d.target_column, fmt=d.format, max_rows=d.max_rows)


def prepare_pairs(cfg: RunConfig) -> PairData:
    """The three splits as DataFrames with ``source`` and ``target``; missing validation/test splits
    are carved from train by a seeded random permutation (``train.seed``)."""
    return split_examples(cfg, lambda spec: _read(cfg, spec), _describe, ("source", "target"))


def split_examples(cfg: RunConfig, read: Callable, describe: Callable, columns: tuple[str, str]) -> PairData:
    """Read ``data.train`` / ``validation`` / ``test`` with ``read(spec)`` into DataFrames of the two
    ``columns``; a missing validation or test split is carved from train by a seeded random
    permutation (``train.seed``, ``data.validation_fraction`` / ``data.test_fraction``)."""
    d = cfg.data
    train = read(d.train)
    frames = {"validation": read(d.validation) if d.validation else None,
              "test": read(d.test) if d.test else None}
    sources = {"train": describe(d.train), "validation": describe(d.validation) if d.validation else None,
               "test": describe(d.test) if d.test else None}
    carve = {name: frac for name, frac in (("validation", d.validation_fraction), ("test", d.test_fraction))
             if frames[name] is None}
    if carve:
        order = np.random.default_rng(cfg.train.seed).permutation(len(train))
        start = 0
        for name, frac in carve.items():
            n = max(1, round(frac * len(train)))
            frames[name] = train.iloc[np.sort(order[start:start + n])].reset_index(drop=True)
            sources[name] = f"{frac:.0%} of train (seeded split)"
            start += n
        train = train.iloc[np.sort(order[start:])].reset_index(drop=True)
        if len(train) < 1:
            raise RagtuneError(f"data.train: {describe(d.train)} has too few examples to carve validation/test splits from")
    splits = {"train": train, **frames}
    a, b = columns
    info = {"splits": {name: {"pairs": len(df), "source": sources[name],
                              f"{a}_chars_mean": round(float(df[a].str.len().mean()), 1) if len(df) else 0,
                              f"{b}_chars_mean": round(float(df[b].str.len().mean()), 1) if len(df) else 0}
                       for name, df in splits.items()}}
    return PairData(splits["train"], splits["validation"], splits["test"], info)


MEMORY_FILE = "memory.jsonl"  # retrieval.top_k > 0: the training pairs of the translation memory


def run_translation(
    cfg: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], bool] | None = None,
    evaluate_test: bool = True,
) -> tuple[dict, TrainResult]:
    """Run the translation stages for ``cfg`` into ``run_dir`` (set up by ``ragtune.pipeline.run``).
    Returns ``(metrics, train_result)``."""
    started = time.perf_counter()

    # 1. data
    data = prepare_pairs(cfg)
    (run_dir / "data_report.json").write_text(json.dumps(data.info, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("data: %s", ", ".join(f"{k} {v['pairs']} pairs" for k, v in data.info["splits"].items()))

    # 2. tokenizer (a resumed run keeps its own: BPE training is not reproducible to the token)
    m = cfg.model
    tok_path = run_dir / TOKENIZER_FILE
    hf_model = None
    if m.backbone == "hf":  # a pretrained model brings its tokenizer (ragtune/models/hf_text.py)
        from ragtune.models.hf_text import check_target_vocabulary, load_hf_text_model

        tokenizer, hf_model, hf_kind = load_hf_text_model(m.name_or_path, "translation", m.max_length)
        check_target_vocabulary(tokenizer, data.train.target.tolist(), m.name_or_path)
    else:
        t = cfg.tokenizer
        tokenizer = bpe_tokenizer(cfg, tok_path, resume, lambda: train_seq2seq_tokenizer(
            data.train.source.tolist(), data.train.target.tolist(), vocab_size=t.vocab_size,
            min_frequency=t.min_frequency, joint=t.joint))
    if hf_model is None and m.share_embeddings and not tokenizer.joint:
        raise RagtuneError("model.share_embeddings: the tokenizer has one vocabulary per side; "
                           "set model.share_embeddings: false or use a joint tokenizer")
    if hf_model is None:
        tokenizer.save(tok_path)
        log.info("tokenizer: BPE, %s, %d source / %d target tokens", "joint" if tokenizer.joint else "separate",
                 tokenizer.source_vocab_size, tokenizer.target_vocab_size)

    # 3. model
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
    meta = text_model_meta(cfg, "translation", model_cfg, tokenizer, hf_kind if hf_model is not None else None)
    meta["joint_tokenizer"] = tokenizer.joint
    predictor = Seq2SeqPredictor(model, tokenizer, meta, batch_size=cfg.eval.batch_size)
    train_sources = data.train.source.tolist()
    if cfg.retrieval.top_k:  # a translation memory of the training pairs (ragtune/retrieval/memory.py)
        from ragtune.retrieval.memory import SEPARATOR, TranslationMemory

        memory = TranslationMemory(train_sources, data.train.target.tolist(), progress=progress)
        with open(run_dir / MEMORY_FILE, "w", encoding="utf-8") as f:
            for source, target in zip(memory.sources, memory.targets):
                f.write(json.dumps({"source": source, "target": target}, ensure_ascii=False) + "\n")
        meta["memory"] = {"file": MEMORY_FILE, "top_k": cfg.retrieval.top_k, "separator": SEPARATOR}
        predictor.use_memory(memory, cfg.retrieval.top_k)  # validation and test sources read their hits too
        train_sources = memory.augment_training(cfg.retrieval.top_k)  # never a sentence's own translation
        log.info("translation memory: %d pairs, top %d per source", len(memory), cfg.retrieval.top_k)
    log.info("model: %s, %.2fM parameters", f"{m.name_or_path} ({hf_kind})" if hf_model is not None else "TransformerForSeq2Seq",
             model.num_parameters(non_embedding=False) / 1e6)

    # 4. training: teacher forcing on (source, <s> y) -> y </s>
    src_ids = tokenizer.encode_source_batch(train_sources, m.max_length)
    tgt_ids = tokenizer.encode_target_batch(data.train.target.tolist(), m.max_length)
    stream = BatchStream(src_ids, torch.zeros(len(src_ids)), cfg.train.batch_size, cfg.train.seed,
                         pad_id=tokenizer.pad_id, group_by_length=cfg.train.group_by_length)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
    pad = tokenizer.pad_id

    def batch_loss(k: int) -> tuple[torch.Tensor, int]:
        rows = stream.indices(k).tolist()
        ids, mask = pad_batch([src_ids[i] for i in rows], pad)  # (B, S)
        tgt_in, _ = pad_batch([tgt_ids[i][:-1] for i in rows], pad)  # <s> y1 .. yn  (B, T)
        labels, _ = pad_batch([tgt_ids[i][1:] for i in rows], pad)  # y1 .. yn </s>  (B, T)
        with autocast:
            logits = model(ids, mask, tgt_in)  # (B, T, V)
        loss = seq2seq_loss(logits, labels, pad, cfg.train.label_smoothing)
        return loss, int(mask.sum()) + int((labels != pad).sum())

    val = data.validation
    result = train_text_model(cfg, "translation", model, stream, batch_loss,
                              lambda **kw: predictor.evaluate(val.source.tolist(), val.target.tolist(), **kw),
                              run_dir, resume=resume, on_epoch_end=on_epoch_end, progress=progress)
    save_text_model(model, tokenizer, meta, run_dir, hf=hf_model is not None)

    # 5. evaluation with the configured decoding, and the report
    metrics, examples = final_metrics(cfg, data, lambda df: predictor.evaluate(df.source.tolist(), df.target.tolist(),
                                                                               progress=progress), result, evaluate_test)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    _report(cfg, run_dir, data, metrics, examples, result, model, time.perf_counter() - started)
    log_done(metrics, METRIC_KEYS)
    return metrics, result


def bpe_tokenizer(cfg: RunConfig, tok_path: Path, resume: bool, train: Callable):
    """The byte-fallback BPE of a text run: a resumed run's own ``tok_path`` (BPE training is not
    reproducible to the token), else ``tokenizer.path``, else ``train()``."""
    if resume and tok_path.exists():
        return load_seq2seq_tokenizer(tok_path)
    if cfg.tokenizer.path:
        return load_seq2seq_tokenizer(cfg.tokenizer.path)
    return train()


def train_text_model(cfg: RunConfig, task: str, model, stream: BatchStream, batch_loss, score_validation,
                     run_dir: Path, *, resume: bool, on_epoch_end, progress: bool) -> TrainResult:
    """The foundation's loop (:func:`ragtune.train.loop.train_model`) for a translation or generation
    model: each epoch ``score_validation(max_decode_rows=, seed=, strategy="greedy")``; the best
    epoch's weights are restored (``train.restore_best``) and the model is left in eval mode."""
    def evaluate() -> dict:
        metrics = score_validation(max_decode_rows=cfg.eval.max_decode_rows, seed=cfg.train.seed, strategy="greedy")
        metrics.pop("examples", None)
        return metrics

    result = train_model(
        model, stream, task=task, cfg=cfg.train, selection_metric=cfg.selection_metric, evaluate=evaluate,
        out_dir=run_dir, resume=resume, on_epoch_end=on_epoch_end, progress=progress, batch_loss=batch_loss,
    )
    if cfg.train.restore_best and result.best_epoch is not None:
        load_weights(model, run_dir / "checkpoints" / "best" / "model.safetensors")
    model.eval()
    return result


def text_model_meta(cfg: RunConfig, task: str, model_cfg: dict, tokenizer, hf_kind: str | None) -> dict:
    """The common part of a translation or generation run's ``model.json``: version, task, model
    settings, files, special token ids and decoding defaults; ``hf_kind`` (``"seq2seq"``,
    ``"causal"``, ...) for a pretrained Hugging Face model, whose tokenizer and weights live in ``hf_model/``."""
    meta = {
        "ragtune_version": ragtune.__version__, "task": task, "model": model_cfg,
        "tokenizer": TOKENIZER_FILE, "weights": WEIGHTS_FILE,
        "special_ids": {"pad": tokenizer.pad_id, "unk": tokenizer.unk_id, "bos": tokenizer.bos_id, "eos": tokenizer.eos_id},
        "decode": cfg.decode.model_dump(mode="json"), "bleu_tokenize": cfg.eval.bleu_tokenize,
    }
    if hf_kind is not None:
        meta.update(tokenizer=HF_DIR, weights=HF_DIR, hf={"dir": HF_DIR, "kind": hf_kind, "name_or_path": cfg.model.name_or_path})
    return meta


def save_text_model(model, tokenizer, meta: dict, run_dir: Path, hf: bool) -> None:
    """The trained model in RUN_DIR: ``hf_model/`` (``save_pretrained``) for a pretrained Hugging Face
    model, else ``model.safetensors``; then ``model.json``."""
    if hf:
        save_hf_text_model(tokenizer, model, run_dir / HF_DIR)
    else:
        save_weights(model, run_dir / WEIGHTS_FILE)
    (run_dir / MODEL_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


def final_metrics(cfg: RunConfig, data: PairData, score: Callable[[pd.DataFrame], dict], result: TrainResult,
                  evaluate_test: bool) -> tuple[dict, dict]:
    """``(metrics, examples)``: ``score(split frame)`` of validation (and test) with the configured
    decoding, its ``examples`` moved aside, and a ``training`` summary of ``result``. A test file that
    is the validation file is scored once."""
    metrics: dict = {}
    examples: dict = {}
    for split in ("validation", "test") if evaluate_test else ("validation",):
        if split == "test" and cfg.data.test and cfg.data.test == cfg.data.validation:
            metrics["test"], examples["test"] = dict(metrics["validation"]), examples["validation"]  # the same file
            continue
        df = getattr(data, split)
        log.info("evaluating %s: %d examples, %s decoding", split, len(df), cfg.decode.strategy)
        metrics[split] = score(df)
        examples[split] = metrics[split].pop("examples")
    metrics["training"] = {
        "seconds": round(result.seconds, 2), "optimizer_steps": result.optimizer_steps, "tokens": result.tokens,
        "tokens_per_s": round(result.tokens / result.seconds, 1) if result.seconds else None,
        "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
    }
    return metrics, examples


def log_done(metrics: dict, keys: tuple[str, ...]) -> None:
    log.info("done: %s", json.dumps({s: {k: round(v, 2) for k, v in mm.items() if k in keys and v is not None}
                                     for s, mm in metrics.items() if s != "training"}))


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _report(cfg: RunConfig, run_dir: Path, data: PairData, metrics: dict, examples: dict, result: TrainResult,
            model, wall: float) -> None:
    splits = [s for s in ("validation", "test") if s in metrics]
    m, dec = cfg.model, cfg.decode
    decoding = {"greedy": "greedy", "beam": f"beam search (beam {dec.beam_size}, length penalty {dec.length_penalty})",
                "sample": f"sampling (top_k {dec.top_k}, top_p {dec.top_p}, temperature {dec.temperature}, seed {dec.seed})"}
    lines = [f"# ragtune run report{': ' + cfg.name if cfg.name else ''}", "",
             "task **translation** · " + (f"pretrained `{m.name_or_path}`, " if m.backbone == "hf" else
                                          f"encoder-decoder Transformer {m.layers}+{m.layers} layers, d_model {m.d_model}, "
                                          f"{m.heads} heads x {m.head_dim}, ffn {m.ffn_dim}, ")
             + f"{model.num_parameters(non_embedding=False) / 1e6:.2f}M parameters · decoding: {decoding[dec.strategy]}",
             "", "## Results", "",
             "BLEU and chrF (sacrebleu, 0-100) of the decoded outputs; loss is the mean cross-entropy per target "
             "token (no label smoothing), perplexity its exp.", "",
             "| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for key in (*METRIC_KEYS, "n", "bleu_tokenize"):
        lines.append(f"| {key} | " + " | ".join(_fmt(metrics[s].get(key)) for s in splits) + " |")
    lines += ["", "## Data", "", "| split | pairs | source | mean source chars | mean target chars |", "|---|---|---|---|---|"]
    for name, info in data.info["splits"].items():
        lines.append(f"| {name} | {info['pairs']} | {_cell(info['source'])} | {info['source_chars_mean']} | "
                     f"{info['target_chars_mean']} |")
    training = metrics["training"]
    lines += ["", "## Training", "", f"{training['optimizer_steps']} optimizer steps in {training['seconds']:.0f} s; "
              f"best epoch {training['best_epoch']} (by validation {cfg.selection_metric}, greedy decoding of at most "
              f"{cfg.eval.max_decode_rows} pairs); wall time {wall:.0f} s.", ""]
    if result.history:
        shown = [k for k in ("bleu", "chrf") if any(e.get(f"validation_{k}") is not None for e in result.history)]
        name = plots.plot_curves(result.history, run_dir / "curves.png", metrics=shown or None).name
        lines += [f"![learning curves]({name})", ""]
    split = "test" if "test" in examples else "validation"
    if examples.get(split):
        lines += [f"## Example translations ({split})", "", "| source | reference | output |", "|---|---|---|"]
        for ex in examples[split]:
            lines.append(f"| {_cell(ex['source'])} | {_cell(ex['reference'])} | {_cell(ex['output'])} |")
        lines.append("")
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
