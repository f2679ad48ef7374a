"""What the board shows of a folder of runs: which run directories and tuning studies it holds, the state of
each, and the files of one — read from what the runs write, so a run started from a terminal shows too.

A **run** is a folder with ``config.yaml`` (and ``inputs.json``), a **study** a folder with ``study.db`` or
``trials.csv``; the scan goes down at most :data:`MAX_DEPTH` folders and does not enter a run (a study's trials
are listed on the study's page). The status of a run:

==========  ==============================================================================================
running     ``RUN.lock`` (ragtune/locks.py) names a live process of this host
finished    ``metrics.json`` is there
killed      neither, and ``checkpoints/last`` is: ``ragtune run CONFIG --resume RUN`` continues it
failed      neither: it stopped before its first checkpoint (``run.log`` holds why)
==========  ==============================================================================================

Every path a request names goes through :func:`inside`: it must stay under the board's folder (no ``..``, no
absolute path, no symbolic link out of it), else :class:`OutsideError`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ragtune.locks import holder

MAX_DEPTH = 4
SKIP = {"checkpoints", "hf_model", "index", "query_encoder", "tensorboard", "wandb", "mlruns", "trials", "reader"}
# the metric a task's list shows when the run's eval.metric is not set (metrics.json's test split, else validation)
MAIN_METRIC = {"classification": "accuracy", "regression": "rmse", "qa": "exact_match", "translation": "bleu",
               "generation": "rougeL"}
PICTURES = (".png", ".svg", ".jpg")


class OutsideError(ValueError):
    """A request named a path outside the board's folder (answered 404, never read)."""


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, resolved, when it stays inside ``root`` (symbolic links followed); else
    :class:`OutsideError`."""
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")) or ":" in relative.split("/")[0]:
        raise OutsideError(relative)
    base = root.resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise OutsideError(relative)
    return path


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def read_yaml(path: Path) -> dict:
    import yaml

    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return tree if isinstance(tree, dict) else {}


def is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file() and ((folder / "inputs.json").is_file() or (folder / "run.log").is_file())


def is_study(folder: Path) -> bool:
    return (folder / "study.db").is_file() or (folder / "trials.csv").is_file()


def run_status(folder: Path) -> str:
    if holder(folder) is not None:
        return "running"
    if (folder / "metrics.json").is_file() or (folder / "summary.json").is_file():
        return "finished"
    if (folder / "checkpoints" / "last").is_dir():
        return "killed"
    return "failed"


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def summary(root: Path, folder: Path) -> dict:
    """One line of the list: ``id`` (the folder relative to the board's), kind, task, name, status, the main
    metric, when it started and last changed, the device."""
    kind = "study" if is_study(folder) else "run"  # a study keeps its base config.yaml too
    config = read_yaml(folder / "config.yaml")
    task = config.get("task") or (read_json(folder / "summary.json", {}) or {}).get("task")
    metrics = read_json(folder / "metrics.json", {}) or {}
    split = "test" if isinstance(metrics.get("test"), dict) else "validation"
    chosen = (config.get("eval") or {}).get("metric") if isinstance(config.get("eval"), dict) else None
    metric = chosen if chosen in (metrics.get(split) or {}) else MAIN_METRIC.get(task or "", "")  # eval.metric first
    value = _finite((metrics.get(split) or {}).get(metric)) if metric else None
    if kind == "study":
        study = read_json(folder / "summary.json", {}) or {}
        metric, value, split = study.get("metric"), _finite((study.get("best") or {}).get("validation")), "validation"
    environment = read_json(folder / "environment.json", {}) or {}
    times = [p.stat().st_mtime for p in (folder / name for name in ("config.yaml", "train_log.jsonl", "metrics.json",
                                                                      "history.json", "trials.csv")) if p.exists()]
    return {
        "id": folder.resolve().relative_to(root.resolve()).as_posix(), "kind": kind, "task": task,
        "name": (config.get("name") if kind == "run" else None) or folder.name, "status": run_status(folder) if kind == "run" else _study_status(folder),
        "metric": metric or None, "split": split if value is not None else None, "value": value,
        "started": min(times) if times else None, "updated": max(times) if times else None,
        "device": environment.get("device"),
    }


def _study_status(folder: Path) -> str:
    """running (its lock is held), finished (``best.yaml``), killed (stopped between trials: ``ragtune tune
    OUT/config.yaml --out OUT`` goes on), failed (stopped before it wrote its base config)."""
    if holder(folder) is not None:
        return "running"
    if (folder / "best.yaml").is_file():
        return "finished"
    return "killed" if (folder / "config.yaml").is_file() else "failed"


def scan(root: Path) -> list[dict]:
    """Every run and study under ``root``, newest change first."""
    found: list[dict] = []

    def walk(folder: Path, depth: int) -> None:
        if is_run(folder) or is_study(folder):
            found.append(summary(root, folder))
            return
        if depth >= MAX_DEPTH:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                              and p.name not in SKIP)
        except OSError:
            return
        for child in children:
            walk(child, depth + 1)

    if root.is_dir():
        walk(root, 0)
    return sorted(found, key=lambda r: -(r["updated"] or 0))


def read_lines(path: Path, start: int = 0) -> tuple[list[dict], int]:
    """The JSON lines of ``path`` from byte ``start`` (whole lines only) and the offset after them: what a
    live view reads again and again as a run appends to ``train_log.jsonl``."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return [], start
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows, start + end


def detail(root: Path, folder: Path) -> dict:
    """A run's page: its summary, config, metrics, history, step log, report, data report and pictures; a
    study's: its summary, trials and best config."""
    out = summary(root, folder)
    pictures = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICTURES)
    out["pictures"] = pictures
    if out["kind"] == "study":
        study = read_json(folder / "summary.json", {}) or {}
        rows, direction = trials(folder, out["status"])
        out["trials"] = [{**row, "run_id": _inside_id(root, row.get("user_attrs_run_dir"))} for row in rows]
        out["direction"] = study.get("direction") or direction
        out["best_trial"] = (study.get("best") or {}).get("trial", _best_of(out["trials"], out["direction"]))
        out["best"] = _text(folder / "best.yaml")
        out["report"] = _text(folder / "report.md")
        return out
    out.update(config=_text(folder / "config.yaml"), metrics=read_json(folder / "metrics.json"),
               history=read_json(folder / "history.json", []) or [], steps=read_lines(folder / "train_log.jsonl")[0],
               report=_text(folder / "report.md"), data_report=_text(folder / "data_report.md"),
               log=_tail(folder / "run.log"))
    return out


def trials(folder: Path, status: str = "finished") -> tuple[list[dict], str | None]:
    """A study's trials, one mapping each (number, state, value, seconds, params_*, user_attrs_*), and its
    direction when known: from Optuna's storage while the study runs (or before it wrote ``trials.csv``), else
    from ``trials.csv``."""
    csv_path = folder / "trials.csv"
    if (status == "running" or not csv_path.is_file()) and (folder / "study.db").is_file():
        live = _trials_from_storage(folder / "study.db")
        if live is not None:
            return live
    import csv

    try:
        with csv_path.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return [], None
    for row in rows:  # the same types as the storage's rows
        for key in ("number", "value", "seconds"):
            try:
                row[key] = (int if key == "number" else float)(row[key]) if row.get(key) not in (None, "") else None
            except ValueError:
                pass
    return rows, None


def _trials_from_storage(db: Path) -> tuple[list[dict], str | None] | None:
    """The trials in ``study.db`` as ``trials.csv`` lists them (None without Optuna or a readable study)."""
    try:
        import optuna
    except ImportError:
        return None
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = f"sqlite:///{db.resolve()}"
        names = optuna.get_all_study_names(storage=url)
        if not names:
            return [], None
        study = optuna.load_study(study_name=names[0], storage=url)
        direction = study.direction.name.lower()
        df = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params", "user_attrs"))
    except Exception:  # a database another process is writing: the next poll reads it again
        return None
    df = df.drop(columns=["user_attrs_config"], errors="ignore")
    if "duration" in df:  # NaT while a trial runs: a column of no times at all is not a timedelta one
        import pandas as pd

        df["seconds"] = pd.to_timedelta(df.pop("duration")).dt.total_seconds().round(1)
    return json.loads(df.to_json(orient="records", date_format="iso")), direction


def _inside_id(root: Path, path) -> str | None:
    """``path`` as a board id when it is a run under ``root``, else None."""
    if not path or not isinstance(path, str):
        return None
    try:
        folder = Path(path).resolve()
        return folder.relative_to(root.resolve()).as_posix() if is_run(folder) else None
    except (ValueError, OSError):
        return None


def _best_of(rows: list[dict], direction: str | None):
    done = [r for r in rows if r.get("state") == "COMPLETE" and r.get("value") not in (None, "")]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda r: float(r["value"]))["number"]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _tail(path: Path, lines: int = 200) -> str | None:
    text = _text(path)
    return None if text is None else "\n".join(text.splitlines()[-lines:])


def config_differences(configs: list[dict]) -> dict[str, list]:
    """``{dotted key: [value in run 1, value in run 2, ...]}`` for the keys where the configs differ."""
    flat = [_flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
