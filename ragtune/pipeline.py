"""The seven-step pipeline for one run, as a stage diagram.

::

    config ──► 1 prepare data ──► tokenizer ──► 2 build model ──► 3 train ──► 4 evaluate ──► report
                  (data report)                                   (checkpoints,        (metrics.json,
                                                                   step log)            pictures)

Steps 5 and 6 (tuning, repeated train/evaluate) call :func:`run` once per trial; step 7 (serving)
loads the finished run directory through :class:`ragtune.predictor.Predictor`.

Run directory layout (``docs/design.md``)::

    RUN_DIR/
      config.yaml           the resolved config          inputs.json      sha256 of every input file
      data_report.md/.json  data quality                 data_*.png       class balance, lengths
      tokenizer.json        model.json                   model.safetensors (selected weights)
      hf_model/             model.backbone: hf only — the selected weights and tokenizer in Hugging Face
                            format, instead of model.safetensors
      checkpoints/last/     resumable state              checkpoints/best/ best validation weights
      train_log.jsonl       one line per logged step     history.json     one entry per epoch
      metrics.json          {"validation": {...}, "test": {...}}
      index/, neighbours.jsonl, neighbour_labels.json   retrieval.top_k > 0: the run's own index (and, with
                            retrieval.source: train, the training texts it indexes and their labels)
      confusion_matrix_*.png, curves.png, step_loss.png, run.log, report.md
"""

from __future__ import annotations

import json
import logging
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import yaml

import ragtune
from ragtune.config import flatten, path_keys, path_list_keys, to_yaml
from ragtune.data.prepare import PreparedData, prepare_data
from ragtune.data.report import data_report, data_report_markdown
from ragtune.data.tokenizer import encode, encode_pairs, load_tokenizer, save_tokenizer, token_lengths, train_tokenizer
from ragtune.errors import RagtuneError
from ragtune.evaluate import plots
from ragtune.models.transformer import TransformerConfig, build_transformer
from ragtune.predictor import HF_MODEL_DIR, MODEL_META, TOKENIZER_FILE, WEIGHTS_FILE, Predictor, pad_id
from ragtune.report import write_report
from ragtune.retrieval.augment import neighbour_vote
from ragtune.train import distributed
from ragtune.train.batches import BatchStream
from ragtune.train.checkpoint import checkpoint_exists, load_weights, save_weights, sha256_file
from ragtune.train.loop import TrainResult, train_model

if TYPE_CHECKING:
    from ragtune.tasks import RunConfig

log = logging.getLogger("ragtune")

# model.backbone: hf — warn when more than this share of the training tokens are unknown to the
# pretrained tokenizer (e.g. an English-only model on Chinese text).
HF_UNK_WARN_RATE = 0.10

# Keys a resumed run may change (everything else must match the run's saved config).
RESUMABLE_CHANGES = {"train.epochs", "train.early_stopping_patience", "train.threads", "train.log_every_steps", "train.checkpoint_every_steps", "name"}


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    train: TrainResult


# -------------------------------------------------------------------------------------------------
# the stages
# -------------------------------------------------------------------------------------------------


def run(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], bool] | None = None,
    evaluate_test: bool = True,
    config_path: str | Path | None = None,
    reports: bool = True,
) -> RunResult:
    """Run the pipeline for ``cfg`` into ``run_dir`` (which the caller has checked is usable).

    ``evaluate_test=False`` leaves the test split alone (a tuning trial evaluates on validation only).
    ``reports=False`` skips the data report, the plots and ``report.md`` of a classification or
    regression run (a tuning trial: the study writes its own report); the model, ``model.json``,
    ``metrics.json``, ``history.json`` and the checkpoints are written as always.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resumable(cfg, run_dir)
    _set_up(cfg, run_dir, config_path)
    started = time.perf_counter()
    if cfg.task == "qa":  # question answering has its own stages: ragtune/qa_pipeline.py
        from ragtune.qa_pipeline import run_qa

        _write_inputs(cfg, None, run_dir, config_path)
        metrics, train_result = run_qa(cfg, run_dir, resume=resume, progress=progress, on_epoch_end=on_epoch_end,
                                       evaluate_test=evaluate_test)
        return RunResult(run_dir=run_dir, metrics=metrics, train=train_result)
    if cfg.task == "translation":  # an encoder-decoder: ragtune/seq2seq_pipeline.py
        from ragtune.seq2seq_pipeline import run_translation

        _write_inputs(cfg, None, run_dir, config_path)
        metrics, train_result = run_translation(cfg, run_dir, resume=resume, progress=progress,
                                                on_epoch_end=on_epoch_end, evaluate_test=evaluate_test)
        return RunResult(run_dir=run_dir, metrics=metrics, train=train_result)
    if cfg.task == "generation":  # a decoder-only language model: ragtune/generation_pipeline.py
        from ragtune.generation_pipeline import run_generation

        _write_inputs(cfg, None, run_dir, config_path)
        metrics, train_result = run_generation(cfg, run_dir, resume=resume, progress=progress,
                                               on_epoch_end=on_epoch_end, evaluate_test=evaluate_test)
        return RunResult(run_dir=run_dir, metrics=metrics, train=train_result)

    # 1. data preparation
    data = prepare_data(cfg, demo_dir=run_dir / "demo_data" if cfg.data.demo else None)
    _write_inputs(cfg, data, run_dir, config_path)
    added_tokens = _added_tokens(cfg, data)
    tokenizer = _tokenizer(cfg, data, run_dir, resume, added_tokens)
    if distributed.info().world_size > 1:  # torchrun: every rank uses rank 0's tokenizer
        tokenizer = distributed.same_on_every_rank(tokenizer)
        save_tokenizer(tokenizer, run_dir / TOKENIZER_FILE)
    report = _data_report(cfg, data, tokenizer, run_dir) if reports else None

    retriever, meta_retrieval = _context_retriever(cfg, data, tokenizer, run_dir, progress)

    # 2. model building
    torch.manual_seed(cfg.train.seed)
    meta = _model_meta(cfg, data, tokenizer, added_tokens)
    meta["retrieval"] = meta_retrieval
    model = _build_model(cfg, meta)
    predictor = Predictor(model, tokenizer, meta, batch_size=cfg.eval.batch_size, retriever=retriever)
    log.info("model: %s, %.2fM parameters (%.2fM non-embedding)", type(model).__name__,
             model.num_parameters(non_embedding=False) / 1e6, model.num_parameters(non_embedding=True) / 1e6)

    # 3. training
    train_ids = _train_ids(cfg, data, tokenizer, retriever)
    stream = BatchStream(train_ids, _targets(cfg, data.train, meta), cfg.train.batch_size, cfg.train.seed,
                         pad_id=pad_id(meta), group_by_length=cfg.train.group_by_length)
    validation = (data.validation.text.tolist(), data.validation.label.tolist())
    train_result = train_model(
        model, stream, task=cfg.task, cfg=cfg.train, selection_metric=cfg.selection_metric,
        evaluate=lambda: predictor.evaluate(*validation), out_dir=run_dir, resume=resume,
        on_epoch_end=on_epoch_end, progress=progress, layer_groups=_layer_groups(cfg, model),
    )
    if cfg.train.restore_best and train_result.best_epoch is not None:
        load_weights(model, run_dir / "checkpoints" / "best" / "model.safetensors")
    if cfg.model.backbone == "hf":
        _save_hf(model, cfg, meta, run_dir / meta["hf_model"])
    else:
        save_weights(model, run_dir / WEIGHTS_FILE)
    (run_dir / MODEL_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")

    # 4. evaluation and report
    # the restored best epoch was evaluated on validation during training: the same weights, the same numbers
    restored = cfg.train.restore_best and train_result.best_epoch is not None and train_result.best_metrics is not None
    metrics = {"validation": train_result.best_metrics if restored else predictor.evaluate(*validation)}
    if evaluate_test:
        metrics["test"] = predictor.evaluate(data.test.text.tolist(), data.test.label.tolist())
    if retriever is not None and cfg.retrieval.source == "train":
        metrics["retrieval"] = {split: neighbour_vote(retriever, df.text.tolist(), df.label.tolist())
                                for split, df in (("validation", data.validation), ("test", data.test))
                                if split == "validation" or evaluate_test}
    metrics["training"] = {
        "seconds": round(train_result.seconds, 2),
        "optimizer_steps": train_result.optimizer_steps,
        "tokens": train_result.tokens,
        "tokens_per_s": round(train_result.tokens / train_result.seconds, 1) if train_result.seconds else None,
        "best_epoch": train_result.best_epoch,
        "stopped_early": train_result.stopped_early,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    if reports:
        pictures = _pictures(cfg, metrics, train_result, run_dir, data.labels)
        write_report(run_dir, cfg, metrics, train_result, report, pictures, model_summary=_model_summary(model),
                     wall_seconds=time.perf_counter() - started)
    log.info("done: %s", json.dumps({s: _headline(cfg, m) for s, m in metrics.items() if s != "training"}))
    return RunResult(run_dir=run_dir, metrics=metrics, train=train_result)


def evaluate_test_split(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Metrics of the finished run in ``run_dir`` on the test split of ``cfg`` (the run's config).

    For a run trained with ``evaluate_test=False`` (a tuning trial): the split is prepared as the run
    prepared it (same files, fractions and seed), and the saved model is evaluated through the same
    predictor ``ragtune predict`` uses.
    """
    run_dir = Path(run_dir)
    if cfg.task == "qa":
        from ragtune.data.qa import prepare_qa_data
        from ragtune.qa_predictor import QAPredictor

        return QAPredictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size).evaluate(prepare_qa_data(cfg).test)
    if cfg.task == "translation":
        from ragtune.seq2seq_pipeline import prepare_pairs
        from ragtune.seq2seq_predictor import Seq2SeqPredictor

        test = prepare_pairs(cfg).test
        metrics = Seq2SeqPredictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size).evaluate(
            test.source.tolist(), test.target.tolist())
        metrics.pop("examples", None)
        return metrics
    if cfg.task == "generation":
        from ragtune.generation_pipeline import prepare_examples
        from ragtune.generation_predictor import GenerationPredictor

        test = prepare_examples(cfg).test
        metrics = GenerationPredictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size).evaluate(
            test.prompt.tolist(), test.response.tolist())
        metrics.pop("examples", None)
        return metrics
    data = prepare_data(cfg, demo_dir=run_dir / "demo_data" if cfg.data.demo else None)
    if not len(data.test):
        raise RagtuneError(f"{run_dir}: the config leaves no test split (data.test or data.test_fraction)")
    predictor = Predictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size)
    return predictor.evaluate(data.test.text.tolist(), data.test.label.tolist())


# -------------------------------------------------------------------------------------------------
# helpers of the stages
# -------------------------------------------------------------------------------------------------


def _set_up(cfg: RunConfig, run_dir: Path, config_path) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % (2**32))
    torch.manual_seed(cfg.train.seed)
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("ragtune")
    for old in [h for h in root.handlers if getattr(h, "_ragtune_run", False)]:
        root.removeHandler(old)
        old.close()
    handler._ragtune_run = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    log.info("ragtune %s, torch %s, python %s, %d threads", ragtune.__version__, torch.__version__,
             platform.python_version(), torch.get_num_threads())


def check_resumable(cfg: RunConfig, run_dir: Path) -> None:
    """A resumed run must use the same config as the run it continues, up to RESUMABLE_CHANGES."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists() or not checkpoint_exists(run_dir / "checkpoints" / "last"):
        raise RagtuneError(f"cannot resume {run_dir}: it holds no config.yaml and checkpoint of an earlier run")
    from ragtune.tasks import config_from_dict

    saved = config_from_dict(yaml.safe_load(saved_path.read_text(encoding="utf-8")), str(saved_path), saved=True)
    old, new = flatten(saved.model_dump(mode="json")), flatten(cfg.model_dump(mode="json"))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise RagtuneError(
            f"cannot resume {run_dir} with a different config ({details}); "
            f"only {sorted(RESUMABLE_CHANGES)} may change"
        )


def _input_record(key: str, path: str) -> dict:
    """``{"path", "sha256"}`` of an input file; a folder (an index, a corpus folder) gets the sha256 of
    its ``manifest.json`` when it has one (an index: the manifest holds every file's checksum)."""
    folder = Path(path)
    if not folder.exists():
        raise RagtuneError(f"{key}: file not found: {path}")
    if folder.is_dir():
        manifest = folder / "manifest.json"
        return {"path": path, "manifest_sha256": sha256_file(manifest) if manifest.exists() else None}
    return {"path": path, "sha256": sha256_file(path)}


def _write_inputs(cfg: RunConfig, data: PreparedData | None, run_dir: Path, config_path) -> None:
    """sha256 of every input file, so a reader can tell which data produced the run."""
    files = {}
    flat = flatten(cfg.model_dump(mode="json"))
    for key in path_keys(type(cfg)):
        if flat.get(key):
            files[key] = _input_record(key, flat[key])
        for side in ("source", "target"):  # task translation: {source: a.en, target: a.de}
            if isinstance(flat.get(f"{key}.{side}"), str):
                files[f"{key}.{side}"] = _input_record(f"{key}.{side}", flat[f"{key}.{side}"])
    for key in path_list_keys(type(cfg)):
        for i, path in enumerate(flat.get(key) or []):
            files[f"{key}[{i}]"] = _input_record(f"{key}[{i}]", path)
    if data is not None and cfg.data.demo:  # classification and regression only
        for f in sorted((run_dir / "demo_data").glob("*")):
            files[f"demo:{f.name}"] = {"path": str(f), "sha256": sha256_file(f)}
    if config_path is not None:
        files["config"] = {"path": str(Path(config_path).resolve()), "sha256": sha256_file(config_path)}
    (run_dir / "inputs.json").write_text(json.dumps(files, indent=2, ensure_ascii=False), encoding="utf-8")


def _added_tokens(cfg: RunConfig, data: PreparedData) -> list[str]:
    """model.extend_vocab: the training texts' characters unknown to the pretrained tokenizer (else none)."""
    if cfg.model.backbone != "hf" or not cfg.model.extend_vocab:
        return []
    from ragtune.models.hf import load_hf_tokenizer, unknown_characters

    texts = data.train.text.tolist() + _neighbour_label_texts(cfg, data)
    added = unknown_characters(load_hf_tokenizer(cfg.model.name_or_path), texts, cfg.model.extend_vocab)
    log.info("extend_vocab: %d characters seen at least %d times in train are unknown to %s; added as new tokens",
             len(added), cfg.model.extend_vocab, cfg.model.name_or_path)
    return added


def _context_retriever(cfg: RunConfig, data: PreparedData, tokenizer, run_dir: Path, progress: bool):
    """retrieval.top_k > 0: the retriever of the passages each text is read with, and its model.json entry."""
    r = cfg.retrieval
    if not r.top_k:
        return None, None
    from ragtune.retrieval.augment import (NEIGHBOUR_CORPUS, NEIGHBOUR_LABELS, ContextRetriever, open_run_index,
                                           separator_token, write_neighbour_corpus)

    labels = None
    if r.source == "train":  # the labelled training texts are the corpus
        mapping = write_neighbour_corpus(data.train.text.tolist(), data.train.label.tolist(),
                                         run_dir / NEIGHBOUR_CORPUS, run_dir / NEIGHBOUR_LABELS)
        index, ref = open_run_index(r, run_dir, progress, corpus=[run_dir / NEIGHBOUR_CORPUS])
        labels = mapping if r.with_labels else None
    else:
        index, ref = open_run_index(r, run_dir, progress)
    separator = separator_token(tokenizer)
    log.info("retrieval: %d passages per text from %s (%s index of %d passages)%s", r.top_k, index.path, index.kind,
             len(index), ", shown with their labels" if labels else "")
    meta = {"source": r.source, "top_k": r.top_k, "index": ref, "separator": separator,
            "labels": NEIGHBOUR_LABELS if labels is not None else None}
    return ContextRetriever(index, r.top_k, separator, labels), meta


def _train_ids(cfg: RunConfig, data: PreparedData, tokenizer, retriever) -> list[list[int]]:
    """Token ids of the training texts, with their retrieved passages when retrieval is on."""
    texts = data.train.text.tolist()
    if retriever is None:
        return encode(tokenizer, texts, cfg.model.max_length, cfg.model.truncation, cfg.model.head_tokens)
    from ragtune.retrieval.augment import neighbour_id

    own = [neighbour_id(i) for i in range(len(texts))] if cfg.retrieval.source == "train" else None
    return encode_pairs(tokenizer, texts, retriever.contexts(texts, exclude=own), cfg.model.max_length)


def _neighbour_label_texts(cfg: RunConfig, data: PreparedData) -> list[str]:
    """Labelled neighbours are read as "label: text": the label of every training row, for the vocabulary."""
    r = cfg.retrieval
    if r.top_k and r.source == "train" and r.with_labels:
        return [str(label) for label in data.train.label.tolist()]
    return []


def _tokenizer(cfg: RunConfig, data: PreparedData, run_dir: Path, resume: bool, added_tokens: list[str]):
    path = run_dir / TOKENIZER_FILE
    if cfg.model.backbone == "hf":  # the pretrained model's own tokenizer; tokenizer.json is a copy for reading
        from ragtune.models.hf import extended_tokenizer

        tokenizer = extended_tokenizer(cfg.model.name_or_path, added_tokens).backend_tokenizer
        save_tokenizer(tokenizer, path)
        log.info("tokenizer: pretrained, from %s, %d tokens in the vocabulary (%d added)", cfg.model.name_or_path,
                 tokenizer.get_vocab_size(), len(added_tokens))
        return tokenizer
    if resume and path.exists():
        return load_tokenizer(path)
    if cfg.tokenizer.path:
        try:
            tokenizer = load_tokenizer(cfg.tokenizer.path)
        except RagtuneError as exc:
            raise RagtuneError(f"tokenizer.path: {exc}") from None
        save_tokenizer(tokenizer, path)
        log.info("tokenizer: %s, %d tokens in the vocabulary", cfg.tokenizer.path, tokenizer.get_vocab_size())
        return tokenizer
    tokenizer = _train_tokenizer(cfg, data)
    save_tokenizer(tokenizer, path)
    log.info("tokenizer: %s, %d tokens in the vocabulary", cfg.tokenizer.kind, tokenizer.get_vocab_size())
    return tokenizer


def _train_tokenizer(cfg: RunConfig, data: PreparedData):
    t = cfg.tokenizer
    texts = data.train.text.tolist() + _neighbour_label_texts(cfg, data)
    return train_tokenizer(texts, kind=t.kind, vocab_size=t.vocab_size, min_frequency=t.min_frequency,
                           lowercase=t.lowercase)


def train_tokenizer_for(cfg: RunConfig, path: str | Path, demo_dir: str | Path | None = None) -> Path:
    """Train the tokenizer a run of ``cfg`` would train and save it to ``path`` (for ``tokenizer.path``).

    ``ragtune tune`` trains it once per study, so all trials (and ``best.yaml``) share one vocabulary.
    """
    path = Path(path)
    if cfg.task == "translation":  # the byte-fallback BPE of ragtune/data/seq2seq_tokenizer.py
        from ragtune.data.seq2seq_tokenizer import train_seq2seq_tokenizer
        from ragtune.seq2seq_pipeline import prepare_pairs

        train = prepare_pairs(cfg).train
        t = cfg.tokenizer
        train_seq2seq_tokenizer(train.source.tolist(), train.target.tolist(), vocab_size=t.vocab_size,
                                min_frequency=t.min_frequency, joint=t.joint).save(path)
        return path
    if cfg.task == "generation":  # without passages: a tuned trial's prompts read with them use the same pieces
        from ragtune.data.seq2seq_tokenizer import train_seq2seq_tokenizer
        from ragtune.generation_pipeline import prepare_examples

        train = prepare_examples(cfg).train
        t = cfg.tokenizer
        given = train.prompt.tolist() if cfg.generation_prompts else []
        train_seq2seq_tokenizer(given + train.response.tolist(), vocab_size=t.vocab_size,
                                min_frequency=t.min_frequency).save(path)
        return path
    data = prepare_data(cfg, demo_dir=demo_dir if cfg.data.demo else None)
    save_tokenizer(_train_tokenizer(cfg, data), path)
    return path


def _data_report(cfg: RunConfig, data: PreparedData, tokenizer, run_dir: Path) -> dict:
    report = data_report(data, tokenizer=tokenizer, max_length=cfg.model.max_length)
    train_unk = ((report["splits"].get("train") or {}).get("tokens") or {}).get("unk_rate", 0.0)
    if cfg.model.backbone == "hf" and train_unk > HF_UNK_WARN_RATE:
        report["warnings"].append(
            f"train: {train_unk:.1%} of the tokens are unknown to the pretrained tokenizer of {cfg.model.name_or_path} "
            "(its vocabulary does not cover these texts, e.g. another language or script); "
            "a model whose vocabulary covers them will do better"
        )
    (run_dir / "data_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    (run_dir / "data_report.md").write_text(data_report_markdown(report), encoding="utf-8")
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    if cfg.task == "classification":
        counts = {name: df.label.value_counts().reindex(data.labels, fill_value=0).astype(int).to_dict() for name, df in splits.items()}
        plots.plot_class_balance(counts, run_dir / "data_class_balance.png")
    lengths = {name: token_lengths(tokenizer, df.text.tolist()) for name, df in splits.items()}
    plots.plot_length_histogram(lengths, run_dir / "data_lengths.png")
    for warning in report.get("warnings", []):
        log.warning("data: %s", warning)
    return report


def _model_meta(cfg: RunConfig, data: PreparedData, tokenizer, added_tokens: list[str]) -> dict:
    """What ``model.json`` records: everything the Predictor needs to rebuild and use the model."""
    m = cfg.model
    num_outputs = len(data.labels) if cfg.task == "classification" else 1
    meta = {
        "ragtune_version": ragtune.__version__,
        "task": cfg.task,
        "labels": data.labels,
        "max_length": m.max_length,
        "truncation": m.truncation,
        "head_tokens": m.head_tokens,
    }
    if m.backbone == "hf":
        from ragtune.models.hf import load_hf_tokenizer

        meta.update({
            "backbone": "hf",
            "name_or_path": m.name_or_path,
            "hf_model": HF_MODEL_DIR,  # relative to the run directory
            "num_outputs": num_outputs,
            "pad_id": int(load_hf_tokenizer(m.name_or_path).pad_token_id),
            "added_tokens": added_tokens,  # model.extend_vocab: appended to the pretrained vocabulary, in order
            "vocab_size": tokenizer.get_vocab_size(),
            # LoRA: with save "adapter", hf_model/ holds only the adapter, loaded onto name_or_path
            "lora": m.lora.model_dump(mode="json") if m.lora.enabled else None,
        })
    else:
        meta["model_config"] = {
            "vocab_size": tokenizer.get_vocab_size(), "max_length": m.max_length, "d_model": m.d_model,
            "heads": m.heads, "head_dim": m.head_dim, "layers": m.layers, "ffn_dim": m.ffn_dim,
            "dropout": m.dropout, "num_outputs": num_outputs,
            "pad_id": tokenizer.token_to_id("[PAD]") or 0, "activation": m.activation, "pooling": m.pooling,
        }
    if cfg.task == "regression":  # the model learns standardised targets
        y = data.train.label.astype(float).to_numpy()
        meta["target_mean"] = float(y.mean())
        meta["target_std"] = float(y.std()) or 1.0
    return meta


def _build_model(cfg: RunConfig, meta: dict) -> torch.nn.Module:
    """The scratch Transformer, or the pretrained HF model wrapped to the same call signature."""
    if cfg.model.backbone == "hf":
        from ragtune.models.hf import (
            HFSequenceModel,
            apply_lora,
            check_tokenizer_fits,
            enable_gradient_checkpointing,
            extended_tokenizer,
            freeze,
            grow_input_embeddings,
            load_hf_classifier,
            use_fast_cpu_kernels,
        )

        hf_model, hf_tokenizer = load_hf_classifier(cfg.model.name_or_path, meta["num_outputs"], meta["labels"], cfg.task)
        check_tokenizer_fits(hf_tokenizer, hf_model, cfg.model.name_or_path, cfg.model.name_or_path)
        if meta["added_tokens"]:
            grow_input_embeddings(hf_model, len(extended_tokenizer(cfg.model.name_or_path, meta["added_tokens"])))
        positions = getattr(hf_model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and cfg.model.max_length > positions:
            raise RagtuneError(
                f"model.max_length: {cfg.model.max_length} is longer than the {positions} positions that "
                f"{cfg.model.name_or_path} supports; set model.max_length={positions} or less"
            )
        freeze(hf_model, cfg.model.freeze_embeddings, cfg.model.freeze_layers)
        if cfg.model.fast_cpu_kernels:  # ragtune trains on the CPU
            use_fast_cpu_kernels(hf_model)
        if cfg.model.gradient_checkpointing:
            enable_gradient_checkpointing(hf_model)
        lora = cfg.model.lora
        if lora.enabled:
            hf_model = apply_lora(hf_model, cfg.task, lora.r, lora.alpha, lora.dropout, lora.target_modules)
        model = HFSequenceModel(hf_model, cfg.task)
        if lora.enabled:
            log.info("lora: r=%d, alpha=%d, %d of %d parameters train (adapters and head)", lora.r, lora.alpha,
                     model.num_trainable_parameters(), model.num_parameters(non_embedding=False))
        return model
    return build_transformer(TransformerConfig(**meta["model_config"]), cfg.task)


def _layer_groups(cfg: RunConfig, model: torch.nn.Module) -> list[list[torch.nn.Parameter]] | None:
    """The hf model's parameters from the bottom up, for train.layer_lr_decay (None when it is off)."""
    if cfg.train.layer_lr_decay is None:
        return None
    from ragtune.models.hf import layer_ordered_parameters

    hf_model = model.model
    if cfg.model.lora.enabled:  # the transformers model inside the peft wrapper (its layers hold the adapters)
        hf_model = hf_model.get_base_model()
    return layer_ordered_parameters(hf_model)


def _save_hf(model: torch.nn.Module, cfg: RunConfig, meta: dict, folder: Path) -> None:
    """The fine-tuned model and its tokenizer in Hugging Face format (safetensors), loadable by transformers.

    With LoRA, ``model.lora.save: merged`` merges the adapters into the weights first and replaces
    ``model.model`` by the merged plain model (so the final evaluation scores what is saved);
    ``adapter`` saves only the adapters and the head (``adapter_config.json``, ``adapter_model.safetensors``).
    """
    from ragtune.models.hf import extended_tokenizer, merge_lora

    if cfg.model.lora.enabled and cfg.model.lora.save == "merged":
        model.model = merge_lora(model.model)
    model.model.save_pretrained(folder)
    extended_tokenizer(cfg.model.name_or_path, meta["added_tokens"]).save_pretrained(folder)


def _targets(cfg: RunConfig, df, meta: dict) -> torch.Tensor:
    if cfg.task == "classification":
        index = {label: i for i, label in enumerate(meta["labels"])}
        return torch.tensor([index[label] for label in df.label], dtype=torch.long)
    y = df.label.astype(float).to_numpy()
    return torch.tensor((y - meta["target_mean"]) / meta["target_std"], dtype=torch.float32)


def _model_summary(model: torch.nn.Module) -> dict:
    return {
        "class": type(model).__name__,
        "parameters": model.num_parameters(non_embedding=False),
        "non_embedding_parameters": model.num_parameters(non_embedding=True),
    }


def _pictures(cfg: RunConfig, metrics: dict, result: TrainResult, run_dir: Path, labels: list[str]) -> dict[str, str]:
    pictures = {}
    if result.history:
        shown = [m for m in (("accuracy", "macro_f1") if cfg.task == "classification" else ("r2", "pearson"))
                 if any(entry.get(f"validation_{m}") is not None for entry in result.history)]
        pictures["curves"] = plots.plot_curves(result.history, run_dir / "curves.png", metrics=shown or None).name
    steps, losses = [], []
    log_path = run_dir / "train_log.jsonl"
    if log_path.exists():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            steps.append(entry["step"])
            losses.append(entry["loss"])
    if steps:
        pictures["step_loss"] = plots.plot_step_loss(steps, losses, run_dir / "step_loss.png").name
    if cfg.task == "classification":
        for split in ("validation", "test"):
            if split in metrics:
                pictures[f"confusion_{split}"] = plots.plot_confusion_matrix(
                    metrics[split]["confusion_matrix"], labels, run_dir / f"confusion_matrix_{split}.png",
                    title=f"Confusion matrix ({split})").name
    return pictures


def _headline(cfg: RunConfig, m: dict) -> dict:
    keys = ("accuracy", "macro_f1") if cfg.task == "classification" else ("mse", "r2")
    return {k: round(m[k], 4) for k in keys if m.get(k) is not None}
