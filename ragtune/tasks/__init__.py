"""The four tasks, one folder each, and :data:`TASKS`: the only place that switches on ``task``.

Each folder ``ragtune/tasks/<folder>/`` holds the task's ``config.py`` (its typed sections: the config
schema is a union of the tasks' schemas, picked by ``task``), ``recipe.py`` (one top-to-bottom run
function and the task's file readers), its ``predictor.py`` (the one inference path that ``ragtune
predict``, ``eval``, ``serve`` and the run's own evaluation share) and, where the task has its own,
``data.py``. Every recipe offers the same entry points, by name (no base class: they return what
their task needs)::

    run(cfg, run_dir, opts: runs.RunOptions) -> (metrics, train_result)
    evaluate_test_split(cfg, run_dir) -> metrics          # a finished run on its test split
    evaluate_file(cfg, run_dir, path, target, device) -> metrics  # `ragtune eval RUN --data FILE`
    train_tokenizer_for(cfg, path, demo_dir) -> path      # `ragtune tune`'s shared tokenizer

========================  ==============  ====================  ==================  ============
task                      folder          predictor             endpoint            engines
========================  ==============  ====================  ==================  ============
classification            classification  Predictor             ``/v1/predict``     torch, onnx
regression                classification  Predictor             ``/v1/predict``     torch, onnx
qa                        qa              QAPredictor           ``/v1/answer``      torch
translation               translation     Seq2SeqPredictor      ``/v1/translate``   torch
generation                generation      GenerationPredictor   ``/v1/generate``    torch
========================  ==============  ====================  ==================  ============

A task's modules are imported when the task is first used, so ``ragtune validate`` loads no torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import yaml

from ragtune import config as _config
from ragtune.config import flatten
from ragtune.errors import RagtuneError
from ragtune.tasks.classification.config import ClassificationConfig
from ragtune.tasks.generation.config import GenerationConfig
from ragtune.tasks.qa.config import QAConfig
from ragtune.tasks.translation.config import TranslationConfig

if TYPE_CHECKING:
    from ragtune.train.loop import TrainResult

# Keys a resumed run may change (everything else must match the run's saved config).
RESUMABLE_CHANGES = {"train.epochs", "train.early_stopping_patience", "train.threads", "train.log_every_steps",
                     "train.report_to",
                     "train.checkpoint_every_steps", "name",
                     # a run resumes on another device (a GPU run finished on a CPU, or the reverse)
                     "train.device", "train.precision", "train.tf32", "train.compile", "model.gradient_checkpointing"}


@dataclass(frozen=True)
class Task:
    """One task: where its code lives and what a finished run of it offers."""

    name: str
    folder: str  # ragtune/tasks/<folder>/: config.py, recipe.py, predictor.py
    config: type  # the task's config schema (its tasks/<folder>/config.py)
    predictor: str  # the predictor class in predictor.py
    endpoint: str  # what `ragtune serve` answers on for a run of this task
    engines: tuple[str, ...] = ("torch",)  # "onnx": `ragtune export` folders (and `ragtune explain`)

    def recipe(self) -> ModuleType:
        return importlib.import_module(f"ragtune.tasks.{self.folder}.recipe")

    def predictor_class(self) -> type:
        return getattr(importlib.import_module(f"ragtune.tasks.{self.folder}.predictor"), self.predictor)

    def load_predictor(self, run_dir: str | Path, batch_size: int, engine: str = "torch", device=None):
        """The task's predictor over a finished run (``engine="onnx"``: a ``ragtune export`` folder) on
        ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a ``torch.device``; None: ``auto``)."""
        if engine not in self.engines:
            raise RagtuneError(f"{run_dir} is a task: {self.name} run; --engine {engine} runs `ragtune export` folders of "
                               "classification and regression runs")
        if engine == "torch":
            return self.predictor_class().from_run_dir(run_dir, batch_size=batch_size, device=device)
        return self.predictor_class().from_run_dir(run_dir, batch_size=batch_size, engine=engine, device=device)


TASKS: dict[str, Task] = {
    "classification": Task("classification", "classification", ClassificationConfig, "Predictor", "/v1/predict",
                           ("torch", "onnx")),
    "regression": Task("regression", "classification", ClassificationConfig, "Predictor", "/v1/predict",
                       ("torch", "onnx")),
    "qa": Task("qa", "qa", QAConfig, "QAPredictor", "/v1/answer"),
    "translation": Task("translation", "translation", TranslationConfig, "Seq2SeqPredictor", "/v1/translate"),
    "generation": Task("generation", "generation", GenerationConfig, "GenerationPredictor", "/v1/generate"),
}

# A config of any task: `task` picks the schema (classification and regression share one).
RunConfig = _config.tagged_union("task", "classification", {name: task.config for name, task in TASKS.items()})


def config_from_dict(tree: dict, source: str = "<config>", saved: bool = False) -> _config.TaskConfig:
    """Validate a raw config tree, reporting every problem at once (``saved=True``: a run's own config.yaml)."""
    return _config.validate(RunConfig, tree, source, saved)


def load_config(path, overrides: list[str] | None = None, cwd=None, tree: dict | None = None) -> _config.TaskConfig:
    """Load ``path`` (or start from defaults when None; or the mapping ``tree``), apply overrides,
    resolve paths, validate."""
    return _config.load(RunConfig, path, overrides, cwd, tree)


def config_reference() -> str:
    """The Markdown reference of every task's keys (``ragtune validate --reference``, the README)."""
    return _config.reference(RunConfig)


def config_json_schema() -> dict:
    """The JSON Schema of a config of any task (``ragtune validate --json-schema``: editors complete and
    check keys with it). The cross-field rules (e.g. ``data.train`` required) are the validator's only."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(RunConfig).json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "ragtune config",
            "description": "A ragtune run or tuning config: `task` picks the keys (ragtune validate --reference).",
            **schema}


def valid_keys() -> list[str]:
    """Every dotted key a config of some task may set."""
    return _config.valid_keys(RunConfig)


def task_of(name: str) -> Task:
    """The task called ``name`` (a run's ``task`` key or ``model.json``'s ``task``)."""
    if name not in TASKS:
        raise RagtuneError(f"unknown task {name!r}; choose one of {list(TASKS)}")
    return TASKS[name]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    train: TrainResult


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
    """Run ``cfg`` into ``run_dir`` (which the caller has checked is usable): the set-up every task
    shares (``config.yaml``, ``run.log``, seeds; the resume check), then the task's recipe.

    ``on_epoch_end(epoch, validation_metrics)`` is called after each epoch (return True to stop: tuning's
    pruning); ``evaluate_test=False`` leaves the test split alone (a tuning trial); ``reports=False``
    skips a classification run's data report, plots and ``report.md``.
    """
    from ragtune import runs  # torch: imported when a run starts, not by `ragtune validate`
    from ragtune.train import distributed

    opts = runs.RunOptions(resume=resume, progress=progress, on_epoch_end=on_epoch_end, evaluate_test=evaluate_test,
                           config_path=config_path, reports=reports)
    if distributed.info().is_main:
        return _run(cfg, Path(run_dir), opts)
    # torchrun: only rank 0 writes run_dir; another rank trains the same steps in a scratch folder (with a
    # copy of the checkpoints when resuming), removed at the end, and prints nothing
    with runs.other_rank_folder(Path(run_dir), resume) as work:
        return _run(cfg, work, dataclasses.replace(opts, progress=False, reports=False))


def _run(cfg: RunConfig, run_dir: Path, opts) -> RunResult:
    from ragtune import runs

    run_dir.mkdir(parents=True, exist_ok=True)
    if opts.resume:
        check_resumable(cfg, run_dir)
    runs.set_up(cfg, run_dir)
    from ragtune.config import flatten
    from ragtune.train import distributed, tracking

    report_to = cfg.train.report_to if distributed.info().is_main else []  # torchrun: rank 0 reports
    params = flatten(cfg.model_dump(mode="json"))
    with tracking.tracked(report_to, run_dir, params, cfg.name or "ragtune", opts.resume):
        metrics, train_result = task_of(cfg.task).recipe().run(cfg, run_dir, opts)
        tracking.log_final(metrics, run_dir, getattr(train_result, "optimizer_steps", 0))
    return RunResult(run_dir=run_dir, metrics=metrics, train=train_result)


def evaluate_test_split(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Metrics of the finished run in ``run_dir`` on the test split of ``cfg`` (the run's config).

    For a run trained with ``evaluate_test=False`` (a tuning trial): the split is prepared as the run
    prepared it (same files, fractions and seed), and the saved model is evaluated through the same
    predictor ``ragtune predict`` uses.
    """
    return task_of(cfg.task).recipe().evaluate_test_split(cfg, Path(run_dir))


def train_tokenizer_for(cfg: RunConfig, path: str | Path, demo_dir: str | Path | None = None) -> Path:
    """Train the tokenizer a run of ``cfg`` would train and save it to ``path`` (for ``tokenizer.path``).

    ``ragtune tune`` trains it once per study, so all trials (and ``best.yaml``) share one vocabulary.
    """
    return task_of(cfg.task).recipe().train_tokenizer_for(cfg, Path(path), demo_dir)


def check_resumable(cfg: RunConfig, run_dir: Path) -> None:
    """A resumed run must use the same config as the run it continues, up to RESUMABLE_CHANGES."""
    from ragtune.train.checkpoint import checkpoint_exists

    saved_path = run_dir / "config.yaml"
    if not saved_path.exists() or not checkpoint_exists(run_dir / "checkpoints" / "last"):
        raise RagtuneError(f"cannot resume {run_dir}: it holds no config.yaml and checkpoint of an earlier run")
    saved = config_from_dict(yaml.safe_load(saved_path.read_text(encoding="utf-8")), str(saved_path), saved=True)
    old, new = flatten(saved.model_dump(mode="json")), flatten(cfg.model_dump(mode="json"))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise RagtuneError(
            f"cannot resume {run_dir} with a different config ({details}); "
            f"only {sorted(RESUMABLE_CHANGES)} may change"
        )
    _check_inputs_unchanged(run_dir)


def _check_inputs_unchanged(run_dir: Path) -> None:
    """A resumed run must read the same data as the run it continues: every input file recorded in
    ``inputs.json`` (not the config file, whose allowed changes :func:`check_resumable` checks) must
    still have its sha256. Refused, not warned about: the checkpoint's position in the deterministic
    batch order, its tokenizer and its label set all describe the old rows, so a resumed run over
    new rows would be neither the old run nor a new one, and ``inputs.json`` could describe only one."""
    import json

    from ragtune import runs

    path = run_dir / "inputs.json"
    if not path.is_file():  # a run stopped before it read its data: nothing to compare
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))
    changed = []
    for key, old in recorded.items():
        if key == "config" or key.startswith("demo:") or not isinstance(old, dict) or "path" not in old:
            continue
        if not Path(old["path"]).exists():
            changed.append(f"{key}: {old['path']} is gone")
            continue
        new = runs.input_record(key, old["path"])
        for field in ("sha256", "manifest_sha256"):
            if field in old and old[field] != new.get(field):
                changed.append(f"{key}: {old['path']} changed since the run started "
                               f"({field} {str(old[field])[:12]}... -> {str(new.get(field))[:12]}...)")
    if changed:
        lines = "\n".join(f"  - {c}" for c in changed)
        raise RagtuneError(f"cannot resume {run_dir}: its data changed, and a resumed run would continue the old "
                           f"run's batch order over different rows:\n{lines}\nrestore the files, or start a new "
                           "run (--out NEW_DIR)")
