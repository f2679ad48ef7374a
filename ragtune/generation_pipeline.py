"""The ``task: generation`` pipeline: prompt → response (or texts to continue) with a decoder-only model.

::

    data.train / validation / test ──▶ 1. examples (prompt/response columns, a text column or a .txt file
                                          to continue, or SQuAD JSON: question → answer); validation/test
                                          carved from train by a seeded split when absent
    retrieval.index / corpus       ──▶ 2. retriever (off when retrieval.top_k is 0): each prompt is read
                                          with its top_k passages, `prompt <p> passage 1 <p> ...`
                                       3. tokenizer: byte-fallback BPE on prompts (+ passages) and responses
                                       4. model: TransformerForCausalLM (ragtune/models/decoder.py)
                                       5. training: train_model with teacher forcing, the loss on response
                                          tokens only (train.label_smoothing); each epoch validation loss,
                                          perplexity and ROUGE/BLEU of greedy decoding on <= eval.max_decode_rows
                                       6. evaluation: rougeL, rouge1, rouge2, bleu, loss, perplexity per split
                                       7. RUN_DIR: model.json, tokenizer.json, model.safetensors, index/ (when
                                          built here), metrics.json, history.json, checkpoints/, report.md

``ragtune run CONFIG`` calls :func:`run_generation` for a ``task: generation`` config (through
:func:`ragtune.pipeline.run`); inference goes through
:class:`ragtune.generation_predictor.GenerationPredictor`, shared with ``ragtune predict``, ``ragtune eval``
and ``POST /v1/generate``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ragtune.data.seq2seq import read_generation
from ragtune.data.seq2seq_tokenizer import train_seq2seq_tokenizer
from ragtune.errors import RagtuneError
from ragtune.evaluate import plots
from ragtune.generation_predictor import PASSAGE_SEPARATOR, GenerationPredictor, add_passages
from ragtune.models.decoder import DecoderConfig, build_decoder
from ragtune.models.seq2seq import seq2seq_loss
from ragtune.seq2seq_pipeline import (
    PairData,
    bpe_tokenizer,
    final_metrics,
    log_done,
    save_text_model,
    split_examples,
    text_model_meta,
    train_text_model,
)
from ragtune.seq2seq_predictor import TOKENIZER_FILE
from ragtune.train.batches import BatchStream
from ragtune.train.loop import TrainResult

if TYPE_CHECKING:
    from ragtune.tasks.generation.config import GenerationConfig as RunConfig

log = logging.getLogger("ragtune")

METRIC_KEYS = ("rougeL", "rouge1", "rouge2", "bleu", "loss", "perplexity")


def read_examples(cfg: RunConfig, spec) -> pd.DataFrame:
    """One generation file of ``cfg`` as a DataFrame with ``prompt`` and ``response``."""
    d = cfg.data
    if d.prompt_column is None:
        return read_generation(spec, text_column=d.text_column, fmt=d.format, max_rows=d.max_rows)
    return read_generation(spec, d.prompt_column, d.response_column, fmt=d.format, max_rows=d.max_rows)


def prepare_examples(cfg: RunConfig) -> PairData:
    """The three splits (``prompt``, ``response``); missing ones carved from train by a seeded split."""
    return split_examples(cfg, lambda spec: read_examples(cfg, spec), str, ("prompt", "response"))


def run_generation(
    cfg: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], bool] | None = None,
    evaluate_test: bool = True,
) -> tuple[dict, TrainResult]:
    """Run the generation stages for ``cfg`` into ``run_dir`` (set up by ``ragtune.pipeline.run``).
    Returns ``(metrics, train_result)``."""
    started = time.perf_counter()

    # 1. data
    data = prepare_examples(cfg)
    (run_dir / "data_report.json").write_text(json.dumps(data.info, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("data: %s", ", ".join(f"{k} {v['pairs']} examples" for k, v in data.info["splits"].items()))
    prompts = cfg.generation_prompts

    # 2. retriever
    r = cfg.retrieval
    retriever, retrieval_meta = None, None
    if r.top_k:
        from ragtune.retrieval.augment import ContextRetriever, open_run_index

        index, index_ref = open_run_index(r, run_dir, progress)
        retriever = ContextRetriever(index, r.top_k, PASSAGE_SEPARATOR)
        retrieval_meta = {"index": index_ref, "top_k": r.top_k, "separator": PASSAGE_SEPARATOR}
        log.info("retrieval: top %d passages of %d (%s index)", r.top_k, len(index), index.kind)

    # 3. tokenizer (a resumed run keeps its own: BPE training is not reproducible to the token)
    m = cfg.model
    tok_path = run_dir / TOKENIZER_FILE
    hf_model = None
    if m.backbone == "hf":  # a pretrained causal model brings its tokenizer (ragtune/models/hf_text.py)
        from ragtune.models.hf_text import load_hf_text_model

        tokenizer, hf_model, _ = load_hf_text_model(m.name_or_path, "generation", m.max_length)
    else:
        t = cfg.tokenizer
        given = data.train.prompt.tolist() if prompts else []
        tokenizer = bpe_tokenizer(cfg, tok_path, resume, lambda: train_seq2seq_tokenizer(
            add_passages(given, retriever) + data.train.response.tolist(), vocab_size=t.vocab_size,
            min_frequency=t.min_frequency))
    if not tokenizer.joint:
        raise RagtuneError(f"tokenizer.path: {cfg.tokenizer.path} has one vocabulary per side; task generation needs a joint one")
    if hf_model is None:
        tokenizer.save(tok_path)

    # 4. model
    torch.manual_seed(cfg.train.seed)
    model_cfg = {"max_length": m.max_length} if hf_model is not None else dict(vocab_size=tokenizer.source_vocab_size, max_length=m.max_length, d_model=m.d_model, heads=m.heads,
                     head_dim=m.head_dim, layers=m.layers, ffn_dim=m.ffn_dim, dropout=m.dropout, pad_id=tokenizer.pad_id,
                     bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, tie_output=m.tie_output, activation=m.activation)
    model = hf_model if hf_model is not None else build_decoder(DecoderConfig(**model_cfg))
    meta = text_model_meta(cfg, "generation", model_cfg, tokenizer, "causal" if hf_model is not None else None)
    meta.update(prompts=prompts, retrieval=retrieval_meta)
    predictor = GenerationPredictor(model, tokenizer, meta, batch_size=cfg.eval.batch_size, retriever=retriever)
    log.info("model: %s, %.2fM parameters", m.name_or_path if hf_model is not None else "TransformerForCausalLM",
             model.num_parameters(non_embedding=False) / 1e6)

    # 5. training: teacher forcing, loss on the response tokens
    examples = predictor.training_examples(data.train.prompt.tolist(), data.train.response.tolist())
    stream = BatchStream([ids for ids, _ in examples], torch.zeros(len(examples)), cfg.train.batch_size, cfg.train.seed,
                         pad_id=tokenizer.pad_id, group_by_length=cfg.train.group_by_length)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")

    def batch_loss(k: int) -> tuple[torch.Tensor, int]:
        batch = [examples[i] for i in stream.indices(k).tolist()]
        with autocast:
            logits, labels = predictor.batch_logits(batch)  # (B, T-1, V), (B, T-1)
        loss = seq2seq_loss(logits, labels, tokenizer.pad_id, cfg.train.label_smoothing)
        return loss, sum(len(ids) for ids, _ in batch)

    val = data.validation
    result = train_text_model(cfg, "generation", model, stream, batch_loss,
                              lambda **kw: predictor.evaluate(val.prompt.tolist(), val.response.tolist(), **kw),
                              run_dir, resume=resume, on_epoch_end=on_epoch_end, progress=progress)
    save_text_model(model, tokenizer, meta, run_dir, hf=hf_model is not None)

    # 6. evaluation with the configured decoding, and the report
    metrics, shown = final_metrics(cfg, data, lambda df: predictor.evaluate(df.prompt.tolist(), df.response.tolist(),
                                                                            progress=progress), result, evaluate_test)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    _report(cfg, run_dir, data, metrics, shown, result, model, time.perf_counter() - started)
    log_done(metrics, METRIC_KEYS)
    return metrics, result


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _report(cfg: RunConfig, run_dir: Path, data: PairData, metrics: dict, shown: dict, result: TrainResult,
            model, wall: float) -> None:
    splits = [s for s in ("validation", "test") if s in metrics]
    m, r = cfg.model, cfg.retrieval
    retrieval = f"top {r.top_k} passages from `{r.index or 'index'}`" if r.top_k else "off"
    lines = [f"# ragtune run report{': ' + cfg.name if cfg.name else ''}", "",
             "task **generation** · " + (f"pretrained `{m.name_or_path}`, " if m.backbone == "hf" else
                                         f"decoder-only Transformer, {m.layers} layers, d_model {m.d_model}, {m.heads} "
                                         f"heads x {m.head_dim}, ffn {m.ffn_dim}, ")
             + f"{model.num_parameters(non_embedding=False) / 1e6:.2f}M parameters · "
             f"decoding: {cfg.decode.strategy} · retrieval: {retrieval}", "", "## Results", "",
             "ROUGE (Chinese-aware, 0-100) and BLEU of the generated responses"
             + ("" if cfg.generation_prompts else " (each text's second half, written after its first half)")
             + "; loss is the mean cross-entropy per response token, perplexity its exp.", "",
             "| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for key in (*METRIC_KEYS, "n"):
        lines.append(f"| {key} | " + " | ".join(_fmt(metrics[s].get(key)) for s in splits) + " |")
    lines += ["", "## Data", "", "| split | examples | source | mean prompt chars | mean response chars |", "|---|---|---|---|---|"]
    for name, info in data.info["splits"].items():
        lines.append(f"| {name} | {info['pairs']} | {_cell(info['source'])} | {info['prompt_chars_mean']} | "
                     f"{info['response_chars_mean']} |")
    training = metrics["training"]
    lines += ["", "## Training", "", f"{training['optimizer_steps']} optimizer steps in {training['seconds']:.0f} s; "
              f"best epoch {training['best_epoch']} (by validation {cfg.selection_metric}); wall time {wall:.0f} s.", ""]
    if result.history:
        keys = [k for k in ("rougeL", "perplexity") if any(e.get(f"validation_{k}") is not None for e in result.history)]
        name = plots.plot_curves(result.history, run_dir / "curves.png", metrics=keys or None).name
        lines += [f"![learning curves]({name})", ""]
    split = "test" if "test" in shown else "validation"
    if shown.get(split):
        lines += [f"## Examples ({split})", "", "| prompt | reference | output |", "|---|---|---|"]
        for ex in shown[split]:
            lines.append(f"| {_cell(ex['prompt'])} | {_cell(ex['reference'])} | {_cell(ex['output'])} |")
        lines.append("")
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
