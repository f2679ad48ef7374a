"""The ``task: classification`` / ``task: regression`` recipe: steps 1-4 of one run, as a stage diagram.

::

    config ──► 1 prepare data ──► tokenizer ──► 2 build model ──► 3 train ──► 4 evaluate ──► report
                  (data report)                                   (checkpoints,        (metrics.json,
                                                                   step log)            pictures)

Steps 5 and 6 (tuning, repeated train/evaluate) call :func:`ragtune.tasks.run` once per trial; step 7 (serving)
loads the finished run directory through :class:`ragtune.tasks.classification.predictor.Predictor`.

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
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ragtune.version import __version__
from ragtune import runs
from ragtune.config import TrainConfig
from ragtune.tasks.classification.data import PreparedData, prepare_data
from ragtune.tasks.classification.data_report import data_report, data_report_markdown
from ragtune.data.tokenizer import encode, encode_pairs, load_tokenizer, save_tokenizer, token_lengths, train_tokenizer
from ragtune.errors import RagtuneError
from ragtune.evaluate import plots
from ragtune.models.transformer import TransformerConfig
from ragtune.tasks.classification.report import write_report
from ragtune.retrieval.augment import neighbour_vote
from ragtune.tasks.classification.predictor import (HF_MODEL_DIR, MODEL_META, TOKENIZER_FILE, WEIGHTS_FILE, Predictor,
                                                    compute_loss, pad_id, scratch_model)
from ragtune.train import distributed
from ragtune.train.batches import BatchStream, pad_batch
from ragtune.train.checkpoint import save_weights
from ragtune.train.loop import TrainResult, train_model, training_device
from ragtune.train.optim import optimizer_and_scheduler

if TYPE_CHECKING:
    from ragtune.tasks.classification.config import ClassificationConfig as RunConfig

log = logging.getLogger("ragtune")

# model.backbone: hf — warn when more than this share of the training tokens are unknown to the
# pretrained tokenizer (e.g. an English-only model on Chinese text).
HF_UNK_WARN_RATE = 0.10


def run(cfg: RunConfig, run_dir: Path, opts: runs.RunOptions) -> tuple[dict, TrainResult]:
    """Steps 1-4 of a classification or regression run into ``run_dir`` (set up by :func:`ragtune.tasks.run`).
    Returns ``(metrics, train_result)``.

    ``opts.evaluate_test`` false leaves the test split alone (a tuning trial evaluates on validation only);
    ``opts.reports`` false skips the data report, the plots and ``report.md`` (a tuning trial: the study
    writes its own report); the model, ``model.json``, ``metrics.json``, ``history.json`` and the
    checkpoints are written as always.
    """
    started = time.perf_counter()

    # 1. data preparation
    demo_dir = run_dir / "demo_data" if cfg.data.demo else None  # data.demo: the generated data is written here
    data = prepare_data(cfg, demo_dir=demo_dir)
    runs.write_inputs(cfg, run_dir, opts.config_path, demo_dir=demo_dir)
    added_tokens = _added_tokens(cfg, data)
    tokenizer = _tokenizer(cfg, data, run_dir, opts.resume, added_tokens)
    if distributed.info().world_size > 1:  # torchrun: every rank uses rank 0's tokenizer
        tokenizer = distributed.same_on_every_rank(tokenizer)
        save_tokenizer(tokenizer, run_dir / TOKENIZER_FILE)
    report = _data_report(cfg, data, tokenizer, run_dir) if opts.reports else None

    device = training_device(cfg.train)
    retriever, meta_retrieval = _context_retriever(cfg, data, tokenizer, run_dir, opts.progress, device)

    # 2. model building
    torch.manual_seed(cfg.train.seed)
    meta = _model_meta(cfg, data, tokenizer, added_tokens)
    meta["retrieval"] = meta_retrieval
    model = _build_model(cfg, meta, device).to(device)
    predictor = Predictor(model, tokenizer, meta, batch_size=cfg.eval.batch_size, retriever=retriever)
    log.info("model: %s, %.2fM parameters (%.2fM non-embedding)", type(model).__name__,
             model.num_parameters(non_embedding=False) / 1e6, model.num_parameters(non_embedding=True) / 1e6)

    # 3. training
    train_ids = _train_ids(cfg, data, tokenizer, retriever)
    stream = BatchStream(train_ids, _targets(cfg, data.train, meta), cfg.train.batch_size, cfg.train.seed,
                         pad_id=pad_id(meta), group_by_length=cfg.train.group_by_length)
    validation = (data.validation.text.tolist(), data.validation.label.tolist())
    train_result = train_model(
        model, stream, sequence_batch_loss(model, stream, cfg.task, cfg.train),
        *optimizer_and_scheduler(model, cfg.train, stream.batches_per_pass, _layer_groups(cfg, model)),
        cfg=cfg.train, selection_metric=cfg.selection_metric, evaluate=lambda: predictor.evaluate(*validation),
        out_dir=run_dir, resume=opts.resume, on_epoch_end=opts.on_epoch_end, progress=opts.progress,
        max_length=cfg.model.max_length,
    )
    if not distributed.info().is_main:  # torchrun: rank 0 saves, evaluates and reports
        return {}, train_result
    runs.restore_best(model, cfg.train, train_result, run_dir)
    if cfg.model.backbone == "hf":
        _save_hf(model, cfg, meta, run_dir / meta["hf_model"])
    else:
        save_weights(model, run_dir / WEIGHTS_FILE)
    runs.write_json(run_dir / MODEL_META, meta)

    # 4. evaluation and report
    # the restored best epoch was evaluated on validation during training: the same weights, the same numbers
    restored = cfg.train.restore_best and train_result.best_epoch is not None and train_result.best_metrics is not None
    metrics = {"validation": train_result.best_metrics if restored else predictor.evaluate(*validation)}
    if opts.evaluate_test:
        metrics["test"] = predictor.evaluate(data.test.text.tolist(), data.test.label.tolist())
    if retriever is not None and cfg.retrieval.source == "train":
        metrics["retrieval"] = {split: neighbour_vote(retriever, df.text.tolist(), df.label.tolist())
                                for split, df in (("validation", data.validation), ("test", data.test))
                                if split == "validation" or opts.evaluate_test}
    metrics["training"] = runs.training_summary(train_result)
    runs.write_json(run_dir / "metrics.json", metrics)
    if opts.reports:
        pictures = _pictures(cfg, metrics, train_result, run_dir, data.labels)
        write_report(run_dir, cfg, metrics, train_result, report, pictures, model_summary=_model_summary(model),
                     wall_seconds=time.perf_counter() - started)
    runs.log_done(metrics, ("accuracy", "macro_f1") if cfg.task == "classification" else ("mse", "r2"), digits=4)
    return metrics, train_result


def evaluate_test_split(cfg: RunConfig, run_dir: Path) -> dict:
    """Metrics of the finished run in ``run_dir`` on the test split of ``cfg`` (see :func:`ragtune.tasks.evaluate_test_split`)."""
    data = prepare_data(cfg, demo_dir=run_dir / "demo_data" if cfg.data.demo else None)
    if not len(data.test):
        raise RagtuneError(f"{run_dir}: the config leaves no test split (data.test or data.test_fraction)")
    predictor = Predictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size)
    return predictor.evaluate(data.test.text.tolist(), data.test.label.tolist())


def evaluate_file(cfg: RunConfig, run_dir: Path, path: str, target: str | None = None, device=None) -> dict:
    """``ragtune eval RUN --data FILE``: a file with the run's text and label columns, read and filtered
    (``keep_labels``, empty texts) exactly as the run read its own splits."""
    from ragtune.tasks.classification.data import load_eval_file

    if target:
        raise RagtuneError(f"--target is for translation runs; {run_dir} is a task: {cfg.task} run")
    predictor = Predictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size, device=device)
    df = load_eval_file(path, cfg, predictor.labels)
    return predictor.evaluate(df.text.tolist(), df.label.tolist())


# -------------------------------------------------------------------------------------------------
# helpers of the stages
# -------------------------------------------------------------------------------------------------


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


def _context_retriever(cfg: RunConfig, data: PreparedData, tokenizer, run_dir: Path, progress: bool, device):
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
        index, ref = open_run_index(r, run_dir, progress, corpus=[run_dir / NEIGHBOUR_CORPUS], device=device)
        labels = mapping if r.with_labels else None
    else:
        index, ref = open_run_index(r, run_dir, progress, device=device)
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
    runs.write_json(run_dir / "data_report.json", report, default=str)
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
        "ragtune_version": __version__,
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


def _build_model(cfg: RunConfig, meta: dict, device: torch.device) -> torch.nn.Module:
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

        hf_model, hf_tokenizer = load_hf_classifier(cfg.model.name_or_path, meta["num_outputs"], meta["labels"], cfg.task == "regression")
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
        if cfg.model.fast_cpu_kernels and device.type == "cpu":  # CPU kernels; CUDA keeps sdpa's flash/efficient ones
            use_fast_cpu_kernels(hf_model)
        if cfg.model.gradient_checkpointing:
            enable_gradient_checkpointing(hf_model)
        lora = cfg.model.lora
        if lora.enabled:
            hf_model = apply_lora(hf_model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
        model = HFSequenceModel(hf_model, regression=cfg.task == "regression")
        if lora.enabled:
            log.info("lora: r=%d, alpha=%d, %d of %d parameters train (adapters and head)", lora.r, lora.alpha,
                     model.num_trainable_parameters(), model.num_parameters(non_embedding=False))
        return model
    return scratch_model(TransformerConfig(**meta["model_config"]), cfg.task)


def sequence_batch_loss(model: torch.nn.Module, stream: BatchStream, task: str, cfg: TrainConfig):
    """The loop's ``batch_loss(k)`` for ``task`` classification or regression: ``model(input_ids,
    attention_mask)`` on ``stream.batch(k)`` with :func:`compute_loss`, on the model's device. Under
    torchrun, this rank's rows ``rank, rank + W, ...`` of global batch ``k``, the loss weighted by their
    share of the batch (ragtune/train/distributed.py; the loop averages the gradients)."""
    world = distributed.info()
    device = next(model.parameters()).device

    def batch_loss(k: int) -> tuple[torch.Tensor, int]:
        count = None
        if world.world_size > 1:
            rows, count = distributed.share(stream.indices(k), world)
            input_ids, attention_mask = pad_batch([stream.sequences[i] for i in rows], stream.pad_id)
            targets = stream.targets[rows]
        else:
            input_ids, attention_mask, targets = stream.batch(k)
        tokens = int(attention_mask.sum())  # counted on the CPU: no wait for the device
        input_ids, attention_mask, targets = (t.to(device, non_blocking=True) for t in (input_ids, attention_mask, targets))
        loss = compute_loss(task, model(input_ids, attention_mask), targets, cfg.label_smoothing)
        if count is not None:
            loss = distributed.global_mean(loss, count, world)
        return loss, tokens

    return batch_loss


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
