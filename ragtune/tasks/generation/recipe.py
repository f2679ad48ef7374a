"""The ``task: generation`` recipe: prompt → response (or texts to continue) with a decoder-only model.

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

``ragtune run CONFIG`` calls :func:`run` for a ``task: generation`` config (through
:func:`ragtune.tasks.run`); inference goes through
:class:`ragtune.tasks.generation.predictor.GenerationPredictor`, shared with ``ragtune predict``, ``ragtune eval``
and ``POST /v1/generate``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ragtune import runs
from ragtune.data.seq2seq import PairData, read_generation, read_messages, read_templated, split_examples
from ragtune.data.seq2seq_tokenizer import bpe_tokenizer, train_seq2seq_tokenizer
from ragtune.errors import RagtuneError
from ragtune.tasks.generation.predictor import (IGNORE_INDEX, PASSAGE_SEPARATOR, GenerationPredictor, add_passages,
                                                pack_examples)
from ragtune.models.decoder import DecoderConfig, build_decoder
from ragtune.models.seq2seq import seq2seq_loss
from ragtune.runs import TOKENIZER_FILE
from ragtune.train.batches import BatchStream
from ragtune.train import distributed
from ragtune.train.loop import TrainResult, training_device

if TYPE_CHECKING:
    from ragtune.tasks.generation.config import GenerationConfig as RunConfig

log = logging.getLogger("ragtune")

METRIC_KEYS = ("rougeL", "rouge1", "rouge2", "bleu", "loss", "perplexity")


def read_examples(cfg: RunConfig, spec) -> pd.DataFrame:
    """One generation file of ``cfg`` as a DataFrame with ``prompt`` and ``response``."""
    d = cfg.data
    if d.messages_column:
        return read_messages(spec, d.messages_column, fmt=d.format, max_rows=d.max_rows)
    if d.prompt_template:
        return read_templated(spec, d.prompt_template, d.response_column, fmt=d.format, max_rows=d.max_rows)
    if d.prompt_column is None:
        return read_generation(spec, text_column=d.text_column, fmt=d.format, max_rows=d.max_rows)
    return read_generation(spec, d.prompt_column, d.response_column, fmt=d.format, max_rows=d.max_rows)


def prepare_examples(cfg: RunConfig) -> PairData:
    """The three splits (``prompt``, ``response``); missing ones carved from train by a seeded split."""
    return split_examples(cfg, lambda spec: read_examples(cfg, spec), str, ("prompt", "response"))


def chat_settings(cfg: RunConfig, tokenizer) -> dict:
    """``{"template", "system_prompt"}`` of a run (its ``model.json`` ``chat``): whether prompts go through
    the tokenizer's chat template (``data.chat_template: auto``, a pretrained model whose tokenizer has one,
    a run with prompts). Conversations (``data.messages_column``) with ``auto`` and no template are a
    RagtuneError: the turns would be joined as plain text without saying so."""
    d, hf = cfg.data, getattr(tokenizer, "hf", None)
    has_template = hf is not None and bool(getattr(hf, "chat_template", None))
    if d.messages_column and d.chat_template == "auto" and not has_template:
        whose = f"the tokenizer of {cfg.model.name_or_path!r} has none" if hf is not None else "ragtune's own models have none"
        raise RagtuneError(f"data.chat_template: auto needs a chat template for the conversations of data.messages_column "
                           f"({d.messages_column!r}), and {whose}; set data.chat_template: none to join the turns as "
                           "`role: content` lines")
    use = has_template and d.chat_template == "auto" and cfg.generation_prompts
    return {"template": use, "system_prompt": d.system_prompt}


def run(cfg: RunConfig, run_dir: Path, opts: runs.RunOptions) -> tuple[dict, TrainResult]:
    """Run the generation stages for ``cfg`` into ``run_dir`` (set up by :func:`ragtune.tasks.run`).
    Returns ``(metrics, train_result)``; ``report.md`` is written whatever ``opts.reports`` says."""
    started = time.perf_counter()
    runs.write_inputs(cfg, run_dir, opts.config_path)

    # 1. data
    data = prepare_examples(cfg)
    runs.write_json(run_dir / "data_report.json", data.info)
    log.info("data: %s", ", ".join(f"{k} {v['pairs']} examples" for k, v in data.info["splits"].items()))
    prompts = cfg.generation_prompts

    # 2. retriever
    r = cfg.retrieval
    retriever, retrieval_meta = None, None
    if r.top_k:
        from ragtune.retrieval.augment import ContextRetriever, open_run_index

        index, index_ref = open_run_index(r, run_dir, opts.progress, device=training_device(cfg.train))
        retriever = ContextRetriever(index, r.top_k, PASSAGE_SEPARATOR)
        retrieval_meta = {"index": index_ref, "top_k": r.top_k, "separator": PASSAGE_SEPARATOR}
        log.info("retrieval: top %d passages of %d (%s index)", r.top_k, len(index), index.kind)

    # 3. tokenizer (a resumed run keeps its own: BPE training is not reproducible to the token)
    m = cfg.model
    tok_path = run_dir / TOKENIZER_FILE
    hf_model = None
    if m.backbone == "hf":  # a pretrained causal model brings its tokenizer (ragtune/models/hf_text.py)
        tokenizer, hf_model, _ = runs.load_hf_text_backbone(cfg, "causal")
    else:
        t = cfg.tokenizer
        given = _prompt_texts(cfg, data.train.prompt.tolist()) if prompts else []
        tokenizer = bpe_tokenizer(cfg, tok_path, opts.resume, lambda: train_seq2seq_tokenizer(
            add_passages(given, retriever) + data.train.response.tolist(), vocab_size=t.vocab_size,
            min_frequency=t.min_frequency))
    tokenizer = distributed.same_on_every_rank(tokenizer)  # torchrun: rank 0's BPE everywhere
    if not tokenizer.joint:
        raise RagtuneError(f"tokenizer.path: {cfg.tokenizer.path} has one vocabulary per side; task generation needs a joint one")
    if hf_model is None:
        tokenizer.save(tok_path)
    chat = chat_settings(cfg, tokenizer)

    # 4. model
    device = training_device(cfg.train)
    torch.manual_seed(cfg.train.seed)
    model_cfg = {"max_length": m.max_length} if hf_model is not None else dict(vocab_size=tokenizer.source_vocab_size, max_length=m.max_length, d_model=m.d_model, heads=m.heads,
                     head_dim=m.head_dim, layers=m.layers, ffn_dim=m.ffn_dim, dropout=m.dropout, pad_id=tokenizer.pad_id,
                     bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, tie_output=m.tie_output, activation=m.activation)
    model = hf_model if hf_model is not None else build_decoder(DecoderConfig(**model_cfg))
    if not (m.backbone == "hf" and m.lora.load_in_4bit):  # a 4-bit base is placed on its device as it loads
        model = model.to(device)
    meta = runs.text_model_meta(cfg, "generation", model_cfg, tokenizer, "causal" if hf_model is not None else None)
    meta.update(prompts=prompts, retrieval=retrieval_meta, chat=chat)
    predictor = GenerationPredictor(model, tokenizer, meta, batch_size=cfg.eval.batch_size, retriever=retriever)
    log.info("model: %s, %.2fM parameters", m.name_or_path if hf_model is not None else "TransformerForCausalLM",
             model.num_parameters(non_embedding=False) / 1e6)

    # 5. training: teacher forcing, loss on the response tokens
    counts: dict = {}
    examples = predictor.training_examples(data.train.prompt.tolist(), data.train.response.tolist(), counts)
    data.info.update(counts, chat_template=chat["template"], max_length=m.max_length)
    if counts["truncated_prompts"] or counts["truncated_responses"]:
        log.warning("data: %d of %d training prompts and %d responses cut to model.max_length %d",
                    counts["truncated_prompts"], len(examples), counts["truncated_responses"], m.max_length)
    if cfg.data.packing:
        packed = pack_examples(examples, m.max_length)
        data.info["packed_rows"] = len(packed)
        log.info("packing: %d examples in %d rows of up to %d tokens", len(examples), len(packed), m.max_length)
        examples = packed
    runs.write_json(run_dir / "data_report.json", data.info)
    stream = BatchStream([ids for ids, _ in examples], torch.zeros(len(examples)), cfg.train.batch_size, cfg.train.seed,
                         pad_id=tokenizer.pad_id, group_by_length=cfg.train.group_by_length)

    def batch_loss(k: int) -> tuple[torch.Tensor, int]:
        rows, counted = distributed.share(stream.indices(k))  # torchrun: this rank's share of the batch
        batch = [examples[i] for i in rows]
        logits, labels = predictor.batch_logits(batch)  # (B, T-1, V), (B, T-1), on the model's device
        targets = int((labels != IGNORE_INDEX).sum())
        loss = distributed.global_mean(seq2seq_loss(logits, labels, IGNORE_INDEX, cfg.train.label_smoothing),
                                       targets if counted else 0)  # mean over the global batch's response tokens
        return loss, sum(len(ids) for ids, _ in batch)

    val = data.validation
    result = runs.train_text_model(cfg, model, stream, batch_loss,
                              lambda **kw: predictor.evaluate(val.prompt.tolist(), val.response.tolist(), **kw),
                              run_dir, resume=opts.resume, on_epoch_end=opts.on_epoch_end, progress=opts.progress)
    if not distributed.info().is_main:  # torchrun: rank 0 saves, evaluates and reports
        return {}, result
    runs.save_text_model(model, tokenizer, meta, run_dir, hf=hf_model is not None)

    # 6. evaluation with the configured decoding, and the report
    metrics, shown = runs.final_metrics(cfg, data, lambda df: predictor.evaluate(df.prompt.tolist(), df.response.tolist(),
                                                                            progress=opts.progress), result, opts.evaluate_test)
    runs.write_json(run_dir / "metrics.json", metrics)
    _report(cfg, run_dir, data, metrics, shown, result, model, time.perf_counter() - started)
    runs.log_done(metrics, METRIC_KEYS)
    return metrics, result


def evaluate_test_split(cfg: RunConfig, run_dir: Path) -> dict:
    """The finished run on the test examples of ``cfg`` (see :func:`ragtune.tasks.evaluate_test_split`)."""
    return _score(cfg, run_dir, prepare_examples(cfg).test)


def evaluate_file(cfg: RunConfig, run_dir: Path, path: str, target: str | None = None, device=None) -> dict:
    """``ragtune eval RUN --data FILE``: a file read like the run's training data (prompt/response columns, ...)."""
    if target:
        raise RagtuneError(f"--target is for translation runs; {run_dir} is a task: generation run")
    return _score(cfg, run_dir, read_examples(cfg, path), device)


def _score(cfg: RunConfig, run_dir: Path, df: pd.DataFrame, device=None) -> dict:
    """The finished run's metrics on the examples of ``df`` (without the decoded examples)."""
    predictor = GenerationPredictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size, device=device)
    return {k: v for k, v in predictor.evaluate(df.prompt.tolist(), df.response.tolist()).items() if k != "examples"}


def _prompt_texts(cfg: RunConfig, prompts: list) -> list[str]:
    """The text of each prompt (a conversation: its contents) and the system prompt, for BPE training."""
    texts = [p if isinstance(p, str) else "\n".join(m["content"] for m in p) for p in prompts]
    return texts + ([cfg.data.system_prompt] if cfg.data.system_prompt else [])


def train_tokenizer_for(cfg: RunConfig, path: Path, demo_dir=None) -> Path:
    """The byte-fallback BPE a run of ``cfg`` would train, saved to ``path``: without passages, so a tuned
    trial's prompts read with them use the same pieces."""
    train = prepare_examples(cfg).train
    t = cfg.tokenizer
    given = _prompt_texts(cfg, train.prompt.tolist()) if cfg.generation_prompts else []
    train_seq2seq_tokenizer(given + train.response.tolist(), vocab_size=t.vocab_size,
                            min_frequency=t.min_frequency).save(path)
    return path


def _format_lines(info: dict) -> list[str]:
    """What the data report says about the model's input: the chat template, truncation, packing."""
    if "max_length" not in info:
        return []
    how = "through the tokenizer's chat template" if info.get("chat_template") else "in the plain format"
    lines = [f"Prompts {how}; "
             f"training examples cut to model.max_length {info['max_length']}: {info.get('truncated_prompts', 0)} prompts, "
             f"{info.get('truncated_responses', 0)} responses."]
    if "packed_rows" in info:
        lines.append(f"Packing: {info['splits']['train']['pairs']} training examples in {info['packed_rows']} rows.")
    return lines


def _report(cfg: RunConfig, run_dir: Path, data: PairData, metrics: dict, shown: dict, result: TrainResult,
            model, wall: float) -> None:
    m, r = cfg.model, cfg.retrieval
    retrieval = f"top {r.top_k} passages from `{r.index or 'index'}`" if r.top_k else "off"
    lines = [runs.report_title(cfg), "",
             "task **generation** · " + (f"pretrained `{m.name_or_path}`, " if m.backbone == "hf" else
                                         f"decoder-only Transformer, {m.layers} layers, d_model {m.d_model}, {m.heads} "
                                         f"heads x {m.head_dim}, ffn {m.ffn_dim}, ")
             + f"{model.num_parameters(non_embedding=False) / 1e6:.2f}M parameters · "
             f"decoding: {cfg.decode.strategy} · retrieval: {retrieval}", "", "## Results", "",
             "ROUGE (Chinese-aware, 0-100) and BLEU of the generated responses"
             + ("" if cfg.generation_prompts else " (each text's second half, written after its first half)")
             + "; loss is the mean cross-entropy per response token, perplexity its exp.", "",
             *runs.metrics_table(metrics, (*METRIC_KEYS, "n")),
             "", "## Data", "", *runs.table(["split", "examples", "source", "mean prompt chars", "mean response chars"], (
                 [name, i["pairs"], i["source"], i["prompt_chars_mean"], i["response_chars_mean"]]
                 for name, i in data.info["splits"].items())), "",
             *_format_lines(data.info),
             *runs.training_section(metrics, result, run_dir, cfg.selection_metric, wall, ("rougeL", "perplexity")),
             *runs.examples_section("Examples", shown, ("prompt", "reference", "output"))]
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
