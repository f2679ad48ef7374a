"""Experiment tracking: TensorBoard, MLflow and Weights & Biases, fed from what a run already writes.

``train.report_to: [tensorboard, mlflow, wandb]`` (transformers' name for it). While a run trains, the
training loop hands each step-log line (``train_log.jsonl``: loss, learning rate, tokens/s) and each
epoch's entry (``history.json``: train loss, validation metrics) to :func:`log_step` and
:func:`log_epoch`; they go to the trackers of the run in progress, and do nothing when there is none.
The run in progress is set by :func:`tracked`, which ``ragtune.tasks.run`` opens around the task's
recipe: at the start it logs the config (flattened, ``train.lr``...) as parameters; at the end the
final metrics (``test/accuracy``...) and the run directory's pictures and ``report.md`` as artifacts.

==============  =======================================================================================
tracker         where it writes
==============  =======================================================================================
``tensorboard`` ``RUN_DIR/tensorboard/`` (``tensorboard --logdir runs/``): scalars ``train/loss``,
                ``train/lr``, ``train/tokens_per_s``, ``validation/<metric>`` (each epoch),
                ``best_validation/<metric>`` and ``test/<metric>`` (the end);
                the config as text; the pictures as images
``mlflow``      ``MLFLOW_TRACKING_URI`` (else MLflow's default, ``sqlite:///mlflow.db`` in the current
                folder); experiment = the config's ``name`` (else ``ragtune``), run = the run directory's name
``wandb``       project = the config's ``name``; ``WANDB_MODE=offline`` writes ``RUN_DIR/wandb/`` offline
==============  =======================================================================================

A tuning study's trials are runs of one experiment (the study's config name), one run per trial. A
resumed run continues its MLflow and W&B runs (their ids are kept in ``RUN_DIR/tracking.json``), and
its TensorBoard events are appended. A tracker whose package is missing stops the run before it
trains, with the ``pip install`` line; a tracker that fails while the run trains (a tracking server
gone) is logged once and dropped, never the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ragtune.errors import RagtuneError

log = logging.getLogger("ragtune")
TRACKERS = ("tensorboard", "mlflow", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
IDS_FILE = "tracking.json"
PICTURES = ("*.png", "report.md")
_current: contextvars.ContextVar[list | None] = contextvars.ContextVar("ragtune_trackers", default=None)


def check_available(report_to: list[str]) -> None:
    """Each tracker's package is installed (else one RagtuneError with the pip command)."""
    import importlib.util

    missing = [name for name in report_to if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise RagtuneError(f"train.report_to: {', '.join(missing)} needs the package(s) "
                           f"{', '.join(PACKAGES[m] for m in missing)}: pip install 'ragtune[tracking]' "
                           f"(or pip install {' '.join(PACKAGES[m] for m in missing)}), or leave it out of train.report_to")


def run_name(run_dir: Path) -> str:
    """The run's name in the trackers: its folder's (also while ``--overwrite`` writes it beside, as ``.NAME.tmp-PID``)."""
    match = re.fullmatch(r"\.(.+)\.tmp-\d+", run_dir.name)
    return match.group(1) if match else run_dir.name


@contextlib.contextmanager
def tracked(report_to: list[str], run_dir: Path, params: dict, experiment: str, resume: bool) -> Iterator[list]:
    """The trackers of ``report_to`` for the run in ``run_dir`` while the block runs (see the module docs)."""
    if not report_to:
        yield []
        return
    check_available(report_to)
    ids_path = run_dir / IDS_FILE
    ids = json.loads(ids_path.read_text(encoding="utf-8")) if resume and ids_path.exists() else {}
    name = run_name(run_dir)
    trackers = [_OPEN[kind](run_dir, name, experiment, params, ids.get(kind)) for kind in report_to]
    ids_path.write_text(json.dumps({t.kind: t.run_id for t in trackers if t.run_id}, indent=1), encoding="utf-8")
    token = _current.set(trackers)
    failed = True
    try:
        yield trackers
        failed = False
    finally:
        _current.reset(token)
        for tracker in trackers:
            _safely(tracker, "close", failed)


def log_step(record: dict) -> None:
    """One step-log line (``step``, ``loss``, ``lr``, ``tokens_per_s``) to the run's trackers."""
    values = {f"train/{k}": record[k] for k in ("loss", "lr", "tokens_per_s") if isinstance(record.get(k), (int, float))}
    _each("scalars", values, record["step"])


def log_epoch(entry: dict) -> None:
    """One ``history.json`` entry: ``train/epoch_loss`` and ``validation/<metric>`` at its step."""
    values = {"train/epoch_loss": entry.get("train_loss"), "train/epoch": entry.get("epoch")}
    values.update({f"validation/{k.removeprefix('validation_')}": v for k, v in entry.items() if k.startswith("validation_")})
    _each("scalars", {k: v for k, v in values.items() if isinstance(v, (int, float))}, entry["step"])


def log_final(metrics: dict, run_dir: Path, step: int) -> None:
    """The run's final metrics (``{split: {metric: value}}``) and its pictures and report as artifacts."""
    # the final validation metrics are the kept (best) epoch's: best_validation/, beside the per-epoch curve
    values = {f"{'best_validation' if split == 'validation' else split}/{k}": v for split, m in metrics.items()
              if isinstance(m, dict) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    _each("scalars", values, step)
    files = sorted({p for pattern in PICTURES for p in run_dir.glob(pattern) if p.is_file()})
    _each("artifacts", files, step)


def _each(method: str, payload, step: int) -> None:
    for tracker in _current.get() or []:
        _safely(tracker, method, payload, step)


def _safely(tracker, method: str, *args) -> None:
    if tracker.broken:
        return
    try:
        getattr(tracker, method)(*args)
    except Exception as exc:  # a tracker never stops the run: say so once, then leave it out
        tracker.broken = True
        log.warning("train.report_to: %s failed (%s: %s); the run goes on without it", tracker.kind,
                    type(exc).__name__, exc)


class _TensorBoard:
    kind, run_id, broken = "tensorboard", None, False

    def __init__(self, run_dir: Path, name: str, experiment: str, params: dict, run_id: str | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def scalars(self, values: dict, step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def artifacts(self, files: list[Path], step: int) -> None:
        import matplotlib.image

        for path in files:
            if path.suffix == ".png":
                image = matplotlib.image.imread(path)  # (H, W, C) floats in 0-1
                self.writer.add_image(f"pictures/{path.stem}", image[..., :3], step, dataformats="HWC")
            else:
                self.writer.add_text(path.name, path.read_text(encoding="utf-8"), step)

    def close(self, failed: bool) -> None:
        self.writer.close()


class _MLflow:
    kind, broken = "mlflow", False

    def __init__(self, run_dir: Path, name: str, experiment: str, params: dict, run_id: str | None):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=name)
        self.run_id = run.info.run_id
        if not run_id:
            items = list(params.items())
            for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per call
                mlflow.log_params({k: str(v)[:500] for k, v in items[i:i + 100]})
            mlflow.set_tag("ragtune.run_dir", str(run_dir.parent / name))

    def scalars(self, values: dict, step: int) -> None:
        self.mlflow.log_metrics({k.replace("@", "_at_"): float(v) for k, v in values.items()}, step=step)

    def artifacts(self, files: list[Path], step: int) -> None:
        for path in files:
            self.mlflow.log_artifact(str(path))

    def close(self, failed: bool) -> None:
        self.mlflow.end_run(status="FAILED" if failed else "FINISHED")


class _WandB:
    kind, broken = "wandb", False

    def __init__(self, run_dir: Path, name: str, experiment: str, params: dict, run_id: str | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=experiment, name=name, dir=str(run_dir), config=params, id=run_id,
                              resume="allow" if run_id else None, mode=os.environ.get("WANDB_MODE"))
        self.run_id = self.run.id

    def scalars(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def artifacts(self, files: list[Path], step: int) -> None:
        self.run.log({f"pictures/{p.stem}": self.wandb.Image(str(p)) for p in files if p.suffix == ".png"}, step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


_OPEN = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}
