"""The run directory's plumbing, shared by every task's recipe (``ragtune/tasks/<task>/recipe.py``).

A recipe reads top to bottom as its own stage diagram; what every recipe writes the same way lives
here, so no recipe types it again:

- :func:`set_up`: threads, seeds, ``run.log`` and the resolved ``config.yaml`` (before any stage);
- :func:`write_inputs`: ``inputs.json``, the sha256 of every input file and of the config file;
- :func:`restore_best`: the best epoch's weights back into the model (``train.restore_best``);
- :func:`training_summary`: the ``training`` entry of ``metrics.json``;
- :func:`write_json`: ``metrics.json``, ``data_report.json``, ``model.json`` (UTF-8, Chinese kept as is);
- :func:`log_done`: the last log line, the headline metrics of each split;
- :func:`fmt` and :func:`cell`: numbers and texts in the Markdown tables of ``report.md``, and the
  pieces of the qa and text tasks' reports (:func:`report_title`, :func:`metrics_table`,
  :func:`training_section`, :func:`examples_section`);
- for the text tasks (translation, generation): :func:`text_model_meta`, :func:`save_text_model`,
  :func:`read_run_meta` and :func:`load_run_model` (``model.json``, the weights or ``hf_model/``),
  :func:`train_text_model` (the loop with greedy validation decoding), :func:`decode_rows` and
  :func:`final_metrics`;
- for every predictor: :func:`inference_device` (the device ``from_run_dir(..., device=...)`` names)
  and :func:`model_device` (where a predictor puts its input tensors: its model's device).

The run directory's layout per task is in ``docs/design.md`` (§5 and §10).
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import random
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ragtune.version import __version__
from ragtune import environment
from ragtune.config import flatten, path_keys, path_list_keys, to_yaml
from ragtune.data.seq2seq import PairData
from ragtune.data.seq2seq_tokenizer import load_seq2seq_tokenizer
from ragtune.devices import resolve
from ragtune.errors import RagtuneError, bad_model_meta, read_model_meta
from ragtune.evaluate import plots
from ragtune.models.hf_text import HF_DIR, save_hf_text_model
from ragtune.train import distributed
from ragtune.train.batches import BatchStream
from ragtune.train.checkpoint import load_weights, save_weights, sha256_file
from ragtune.train.loop import TrainResult, train_model
from ragtune.train.optim import optimizer_and_scheduler

log = logging.getLogger("ragtune")

MODEL_META = "model.json"  # what a predictor needs to rebuild the model (every task)
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"

BEST_WEIGHTS = Path("checkpoints") / "best" / "model.safetensors"  # written by ragtune.train.loop

def inference_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device a predictor loads on: ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a
    ``torch.device``) resolved by :func:`ragtune.devices.resolve`, whose errors name ``--device``; None: ``auto``."""
    return resolve("auto" if device is None else device, key="--device")


def model_device(model) -> torch.device:
    """Where a predictor puts its input tensors: the device of ``model``'s parameters (also when the caller
    moved the model itself, as the training loop does); the CPU for a model without parameters (the
    ONNX engine)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@dataclass(frozen=True)
class RunOptions:
    """How a recipe's ``run(cfg, run_dir, opts)`` runs (what :func:`ragtune.tasks.run` was asked).

    ``resume``: continue from ``checkpoints/last/``; ``progress``: progress bars; ``on_epoch_end(epoch,
    validation_metrics) -> bool``: called after each epoch, True stops (tuning's pruning);
    ``evaluate_test`` false: leave the test split alone (a tuning trial); ``config_path``: the config
    file, whose sha256 goes into ``inputs.json``; ``reports`` false: no data report, plots or
    ``report.md`` of a classification run (the text and QA recipes always write theirs).
    """

    resume: bool = False
    progress: bool = True
    on_epoch_end: Callable[[int, dict], bool] | None = None
    evaluate_test: bool = True
    config_path: str | Path | None = None
    reports: bool = True


def set_up(cfg, run_dir: Path) -> None:
    """Threads and seeds from ``cfg.train``, a fresh ``run.log`` handler, and ``config.yaml``."""
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
    root.setLevel(logging.INFO if distributed.info().is_main else logging.ERROR)  # torchrun: rank 0 speaks
    (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    # what it runs on (ragtune/environment.py): versions, git commit, CPU/GPU, world size; a resumed run
    # records the session that finishes it
    write_json(run_dir / "environment.json", environment.describe(str(resolve(cfg.train.device))))
    log.info("ragtune %s, torch %s, python %s, %d threads", __version__, torch.__version__,
             platform.python_version(), torch.get_num_threads())


@contextlib.contextmanager
def other_rank_folder(run_dir: Path, resume: bool) -> Iterator[Path]:
    """A scratch run folder for a torchrun rank other than 0 (only rank 0 writes ``run_dir``): with a
    copy of ``run_dir``'s config, tokenizer and last checkpoints when resuming; removed at the end.
    The rank logs errors only, and Python warnings (the same as rank 0's) are not shown again."""
    logging.getLogger("ragtune").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging  # its "Loading weights" bars, and its warnings

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix=f"ragtune-rank{distributed.info().rank}-"))
    try:
        if resume:
            for name in ("config.yaml", TOKENIZER_FILE):
                if (run_dir / name).exists():
                    shutil.copy2(run_dir / name, work / name)
            for folder in (run_dir / "checkpoints").glob("last*"):
                shutil.copytree(folder, work / "checkpoints" / folder.name)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def input_record(key: str, path: str) -> dict:
    """``{"path", "sha256"}`` of an input file; a folder (an index, a corpus folder) gets the sha256 of
    its ``manifest.json`` when it has one (an index: the manifest holds every file's checksum)."""
    folder = Path(path)
    if not folder.exists():
        raise RagtuneError(f"{key}: file not found: {path}")
    if folder.is_dir():
        manifest = folder / "manifest.json"
        return {"path": path, "manifest_sha256": sha256_file(manifest) if manifest.exists() else None}
    return {"path": path, "sha256": sha256_file(path)}


def write_inputs(cfg, run_dir: Path, config_path, demo_dir: Path | None = None) -> None:
    """``inputs.json``: sha256 of every input file (and of the files in ``demo_dir``, the generated demo
    data), so a reader can tell which data produced the run."""
    files = {}
    flat = flatten(cfg.model_dump(mode="json"))
    for key in path_keys(type(cfg)):
        if flat.get(key):
            files[key] = input_record(key, flat[key])
        for side in ("source", "target"):  # task translation: {source: a.en, target: a.de}
            if isinstance(flat.get(f"{key}.{side}"), str):
                files[f"{key}.{side}"] = input_record(f"{key}.{side}", flat[f"{key}.{side}"])
    for key in path_list_keys(type(cfg)):
        for i, path in enumerate(flat.get(key) or []):
            files[f"{key}[{i}]"] = input_record(f"{key}[{i}]", path)
    for f in sorted(demo_dir.glob("*")) if demo_dir is not None else ():
        files[f"demo:{f.name}"] = {"path": str(f), "sha256": sha256_file(f)}
    if config_path is not None:
        files["config"] = {"path": str(Path(config_path).resolve()), "sha256": sha256_file(config_path)}
    write_json(run_dir / "inputs.json", files)


def restore_best(model: torch.nn.Module, train_cfg, result: TrainResult, run_dir: Path) -> bool:
    """Load the best epoch's weights into ``model`` when ``train.restore_best`` is on and an epoch was
    selected; returns whether it did (then the best epoch's validation metrics describe the model)."""
    if not (train_cfg.restore_best and result.best_epoch is not None):
        return False
    load_weights(model, run_dir / BEST_WEIGHTS)
    return True


def training_summary(result: TrainResult) -> dict:
    """The ``training`` entry of ``metrics.json``."""
    return {
        "seconds": round(result.seconds, 2),
        "optimizer_steps": result.optimizer_steps,
        "tokens": result.tokens,
        "tokens_per_s": round(result.tokens / result.seconds, 1) if result.seconds else None,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        **result.device,  # device, device_name, precision, peak_memory_gib, peak_memory_of
    }


def write_json(path: Path, value, default=None) -> None:
    """``value`` as indented UTF-8 JSON (Chinese text stays readable)."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, default=default), encoding="utf-8")


def log_done(metrics: dict, keys: tuple[str, ...], digits: int = 2) -> None:
    """The run's last log line: ``keys`` of each evaluated split, rounded to ``digits``."""
    log.info("done: %s", json.dumps({s: {k: round(v, digits) for k, v in m.items() if k in keys and v is not None}
                                     for s, m in metrics.items() if s != "training"}))


def fmt(value, digits: int = 2) -> str:
    """A metric in a report table: ``–`` for none, ``digits`` decimals for a float."""
    return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def cell(text: str) -> str:
    """A text in a Markdown table cell (pipes escaped, one line; none is empty)."""
    return ("" if text is None else str(text)).replace("|", "\\|").replace("\n", " ")


# report.md of the qa, translation and generation runs: the pieces each recipe's _report puts together


def report_title(cfg) -> str:
    return f"# ragtune run report{': ' + cfg.name if cfg.name else ''}"


def table(header: list[str], rows) -> list[str]:
    """A Markdown table: the header, its rule and one line per row (each value through :func:`cell`)."""
    return ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)]


def metrics_table(metrics: dict, keys) -> list[str]:
    """The ``keys`` of each evaluated split (validation, test) as one table."""
    splits = [s for s in ("validation", "test") if s in metrics]
    return table(["metric", *splits], ([k, *(fmt(metrics[s].get(k)) for s in splits)] for k in keys))


def device_line(training: dict) -> str:
    """``Trained on cuda:0 (NVIDIA H100 80GB HBM3) in bf16; peak memory 3.2 GiB (cuda tensors ...).`` for a report."""
    if not training.get("device"):
        return ""
    return (f"Trained on {training['device']} ({training['device_name']}) in {training['precision']}; peak memory "
            f"{training['peak_memory_gib']:.2f} GiB ({training['peak_memory_of']}).")


def training_section(metrics: dict, result: TrainResult, run_dir: Path, selection: str, wall: float,
                     curve_keys: tuple[str, ...]) -> list[str]:
    """``## Training``: steps, time, the best epoch (by ``selection``) and the learning curves of ``curve_keys``."""
    t = metrics["training"]
    lines = ["", "## Training", "", f"{t['optimizer_steps']} optimizer steps in {t['seconds']:.0f} s; best epoch "
             f"{t['best_epoch']} (by validation {selection}); wall time {wall:.0f} s. {device_line(t)}", ""]
    if result.history:
        shown = [k for k in curve_keys if any(e.get(f"validation_{k}") is not None for e in result.history)]
        lines += [f"![learning curves]({plots.plot_curves(result.history, run_dir / 'curves.png', metrics=shown or None).name})", ""]
    return lines


def examples_section(title: str, examples: dict, columns: tuple[str, ...]) -> list[str]:
    """``## title (split)``: the decoded examples of the test split (else validation) as a table."""
    split = "test" if "test" in examples else "validation"
    if not examples.get(split):
        return []
    return [f"## {title} ({split})", "", *table(list(columns), ([ex[c] for c in columns] for ex in examples[split])), ""]


# Translation and generation runs: the model's files, the training loop's set-up, the final metrics

def read_run_meta(run_dir: Path, task: str) -> dict:
    """``model.json`` of a finished ``task`` run (its weights present), else a RagtuneError naming what is missing."""
    meta_path = run_dir / MODEL_META
    meta = read_model_meta(meta_path) if meta_path.exists() else None
    weights = (meta or {}).get("weights") or WEIGHTS_FILE
    if not isinstance(weights, str) or Path(weights).name != weights:
        raise RagtuneError(f"{meta_path}: weights must name a file of the run folder, got {weights!r}")
    weights = run_dir / weights
    if meta is None or not weights.exists():
        raise RagtuneError(f"{run_dir} is not a finished ragtune {task} run: missing {MODEL_META} or {weights.name}")
    if meta.get("task") != task:
        raise RagtuneError(f"{run_dir} is a task: {meta.get('task')} run, not a {task} run")
    return meta


def load_run_model(run_dir: Path, meta: dict, build, device: torch.device | None = None):
    """``(tokenizer, model)`` of a run: its pretrained Hugging Face model (``meta["hf"]``), or ``build()``
    with the run's safetensors weights and byte-fallback BPE tokenizer. The model is in eval mode, on
    ``device`` (None: the CPU, where the weights are read).
    Keys of ``model.json`` that do not describe such a model are a RagtuneError naming the file."""
    try:
        tokenizer, model = _load_run_model(run_dir, meta, build)
        return tokenizer, model if device is None else model.to(device)
    except RagtuneError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise bad_model_meta(run_dir / MODEL_META, str(meta.get("task")), exc) from None


def _load_run_model(run_dir: Path, meta: dict, build):
    if meta.get("hf"):
        from ragtune.models.hf_text import load_hf_text_model

        family = "causal" if meta["hf"]["kind"] == "causal" else "seq2seq"  # seq2seq, bert2bert: encoder-decoders
        tokenizer, model, _ = load_hf_text_model(meta["hf"]["name_or_path"], family, meta["model"]["max_length"],
                                                 folder=run_dir / meta["hf"]["dir"],
                                                 adapter=(meta["hf"].get("lora") or {}).get("save") == "adapter")
    else:
        tokenizer = load_seq2seq_tokenizer(run_dir / meta.get("tokenizer", TOKENIZER_FILE))
        model = build()
        load_weights(model, run_dir / WEIGHTS_FILE)
    model.eval()
    return tokenizer, model


def decode_rows(n: int, max_rows: int | None, seed: int) -> list[int]:
    """The rows a text predictor's ``evaluate`` decodes: all ``n``, or a seeded random sample of ``max_rows``, in order."""
    if max_rows is None or n <= max_rows:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows].tolist())


def train_text_model(cfg, model, stream: BatchStream, batch_loss, score_validation,
                     run_dir: Path, *, resume: bool, on_epoch_end, progress: bool) -> TrainResult:
    """The foundation's loop (:func:`ragtune.train.loop.train_model`) for a translation or generation
    model: each epoch ``score_validation(max_decode_rows=, seed=, strategy="greedy")``; the best
    epoch's weights are restored (``train.restore_best``) and the model is left in eval mode."""
    def evaluate() -> dict:
        metrics = score_validation(max_decode_rows=cfg.eval.max_decode_rows, seed=cfg.train.seed, strategy="greedy")
        metrics.pop("examples", None)
        return metrics

    result = train_model(
        model, stream, batch_loss, *optimizer_and_scheduler(model, cfg.train, stream.batches_per_pass), cfg=cfg.train,
        selection_metric=cfg.selection_metric, evaluate=evaluate, out_dir=run_dir, resume=resume,
        on_epoch_end=on_epoch_end, progress=progress, max_length=cfg.model.max_length,
    )
    restore_best(model, cfg.train, result, run_dir)
    model.eval()
    return result


def text_model_meta(cfg, task: str, model_cfg: dict, tokenizer, hf_kind: str | None) -> dict:
    """The common part of a translation or generation run's ``model.json``: version, task, model
    settings, files, special token ids and decoding defaults; ``hf_kind`` (``"seq2seq"``,
    ``"causal"``, ...) for a pretrained Hugging Face model, whose tokenizer and weights live in ``hf_model/``."""
    meta = {
        "ragtune_version": __version__, "task": task, "model": model_cfg,
        "tokenizer": TOKENIZER_FILE, "weights": WEIGHTS_FILE,
        "special_ids": {"pad": tokenizer.pad_id, "unk": tokenizer.unk_id, "bos": tokenizer.bos_id, "eos": tokenizer.eos_id},
        "decode": cfg.decode.model_dump(mode="json"), "bleu_tokenize": cfg.eval.bleu_tokenize,
    }
    if hf_kind is not None:
        lora = cfg.model.lora.model_dump(mode="json") if cfg.model.lora.enabled else None
        meta.update(tokenizer=HF_DIR, weights=HF_DIR, hf={"dir": HF_DIR, "kind": hf_kind, "name_or_path": cfg.model.name_or_path,
                                                          "lora": lora})  # lora.save adapter: hf_model/ holds only the adapters
    return meta


def load_hf_text_backbone(cfg, family: str):
    """``(HFTokenizer, model wrapper, kind)`` of a translation (``family`` ``seq2seq``) or generation
    (``causal``) run with ``model.backbone: hf``: the pretrained model, with gradient checkpointing
    and LoRA when the config asks (:func:`ragtune.models.hf_text.tune_text_model`; the adapters drawn
    from ``train.seed``). QLoRA (``model.lora.load_in_4bit``) is refused before loading on a device
    that is not CUDA."""
    from ragtune.models.hf import check_qlora
    from ragtune.models.hf_text import load_hf_text_model, tune_text_model
    from ragtune.train.loop import training_device

    m = cfg.model
    device = training_device(cfg.train)
    check_qlora(m.lora.enabled and m.lora.load_in_4bit, device)
    tokenizer, model, kind = load_hf_text_model(m.name_or_path, family, m.max_length,
                                                load_in_4bit=m.lora.enabled and m.lora.load_in_4bit, device=device)
    torch.manual_seed(cfg.train.seed)
    tune_text_model(model, kind, m.gradient_checkpointing, m.lora)
    if m.lora.enabled:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("lora: r=%d, alpha=%d, %.2fM of %.2fM parameters train", m.lora.r, m.lora.alpha, trainable / 1e6,
                 sum(p.numel() for p in model.parameters()) / 1e6)
    return tokenizer, model, kind


def save_text_model(model, tokenizer, meta: dict, run_dir: Path, hf: bool) -> None:
    """The trained model in RUN_DIR: ``hf_model/`` (``save_pretrained``) for a pretrained Hugging Face
    model, else ``model.safetensors``; then ``model.json``."""
    if hf:
        save_hf_text_model(tokenizer, model, run_dir / HF_DIR, lora=meta["hf"].get("lora"))
    else:
        save_weights(model, run_dir / WEIGHTS_FILE)
    write_json(run_dir / MODEL_META, meta)


def final_metrics(cfg, data: PairData, score: Callable[[pd.DataFrame], dict], result: TrainResult,
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
    metrics["training"] = training_summary(result)
    return metrics, examples
