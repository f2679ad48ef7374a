"""What a study leaves in its folder and the one look at the test split; also the study's objective,
its trial counts and :class:`TuneResult` (``study.py`` imports them from here, never the reverse).

``OUT/`` after ``ragtune tune``:

* ``best.yaml``: the full config of the best trial (``ragtune run OUT/best.yaml`` retrains it; with
  the same seed it reproduces the trial's validation metric);
* ``trials.csv``: one row per trial (number, state, value, duration, parameters, run folder);
* ``history.png`` (objective per trial and best so far), ``importance.png`` (fANOVA parameter
  importances, from 2 completed trials on) and ``intermediate.png`` (each trial's validation
  curve: where pruning stopped it);
* ``best_test.json``: the best trial's model on the test split. The test split is read once, after
  selection; a resumed study evaluates again only when the best trial changed;
* ``summary.json`` and ``report.md``.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.config import to_yaml
from ragtune.errors import RagtuneError
from ragtune.evaluate.metrics import metric_direction
from ragtune.tasks import RunConfig, config_from_dict
from ragtune.tuning.space import Param

log = logging.getLogger("ragtune.tune")

PICTURES = {"history.png": "plot_optimization_history", "importance.png": "plot_param_importances",
            "intermediate.png": "plot_intermediate_values"}
#: Trials up to which intermediate.png keeps its legend (one entry per trial).
MAX_LEGEND = 12


@dataclass
class TuneResult:
    out_dir: Path
    study_name: str
    metric: str
    direction: str
    counts: dict[str, int]
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    test_metrics: dict = field(default_factory=dict)
    wall_seconds: float = 0.0


def objective_of(cfg: RunConfig) -> tuple[str, str]:
    """``(metric, "maximize"|"minimize")`` the study optimises (``tune.metric``/``tune.direction`` or the run's own)."""
    metric = cfg.tune.metric or cfg.selection_metric
    direction = cfg.tune.direction or ("maximize" if metric_direction(metric) == "max" else "minimize")
    return metric, direction


def counts_of(study) -> dict[str, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {name: states.count(state) for name, state in (
        ("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED), ("failed", TrialState.FAIL),
        ("running", TrialState.RUNNING), ("waiting", TrialState.WAITING))}


def _pictures(study, out_dir: Path) -> dict[str, str]:
    """Optuna's matplotlib plots; a picture Optuna cannot draw yet (e.g. importances of one trial) is skipped with the reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    made: dict[str, str] = {}
    for name, fn in PICTURES.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of optuna's matplotlib backend
                ax = getattr(ovm, fn)(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            made[name] = f"not drawn: {exc}"
            continue
        first = ax if hasattr(ax, "figure") else ax.flat[0]
        fig = first.figure
        if name == "intermediate.png":
            first.set_xlabel("epoch")
            legend = first.get_legend()
            if legend is not None and len(legend.get_texts()) > MAX_LEGEND:  # one entry per trial: unreadable
                legend.remove()
        fig.set_size_inches(8, 4.5)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110, bbox_inches="tight")  # "tight": a legend beside the axes is kept whole
        plt.close(fig)
        made[name] = "ok"
    return made


def _trials_csv(study, out_dir: Path) -> None:
    df = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params", "user_attrs"))
    df = df.drop(columns=["user_attrs_config"], errors="ignore")
    if "duration" in df:
        df["duration"] = df["duration"].dt.total_seconds().round(1)
        df = df.rename(columns={"duration": "seconds"})
    df.to_csv(out_dir / "trials.csv", index=False)


def _test_metrics(best, out_dir: Path) -> dict:
    """The best trial's model on the test split, once per best trial (cached in ``best_test.json``)."""
    from ragtune.tasks import evaluate_test_split

    path = out_dir / "best_test.json"
    if path.exists():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("trial") == best.number:
            return cached["metrics"]
    cfg = config_from_dict(best.user_attrs["config"], f"trial {best.number}", saved=True)
    metrics = evaluate_test_split(cfg, best.user_attrs["run_dir"])
    path.write_text(json.dumps({"trial": best.number, "metrics": metrics}, indent=2, ensure_ascii=False), encoding="utf-8")
    return metrics


def _study_seconds(trials) -> float:
    """Wall time of the study: first trial start to last trial end (resumes and idle gaps included)."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if (value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4)) else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def write_results(study, cfg: RunConfig, params: list[Param], out_dir: Path, wall_seconds: float):
    """Write ``best.yaml``, ``trials.csv``, pictures, ``best_test.json``, ``summary.json`` and ``report.md``."""
    from optuna.trial import TrialState

    metric, direction = objective_of(cfg)
    counts = counts_of(study)
    trials = study.get_trials(deepcopy=False)
    _trials_csv(study, out_dir)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if not completed:
        errors = [t.user_attrs["error"] for t in trials if t.user_attrs.get("error")]
        hint = f"; the last error:\n{errors[-1]}" if errors else "; see the trials' run.log files"
        raise RagtuneError(f"no trial of the study completed ({counts}){hint}")
    best = study.best_trial
    best_cfg = config_from_dict(best.user_attrs["config"], f"trial {best.number}", saved=True)
    header = (f"# The best trial ({best.number}) of the ragtune study {study.study_name!r}: validation {metric} "
              f"{best.value:.4f}.\n# Retrain it with: ragtune run best.yaml (the same seed gives the same validation result)\n")
    tree = best_cfg.model_dump(mode="json")
    tree.pop("tune", None)
    # a study whose space changes the tokenized texts shares no tokenizer: best.yaml then points at the best
    # trial's own, so that it reproduces the trial (a tokenizer trained again breaks ties differently)
    own = Path(best.user_attrs["run_dir"]) / "tokenizer.json"
    if tree.get("model", {}).get("backbone", "scratch") == "scratch" and isinstance(tree.get("tokenizer"), dict) \
            and not tree["tokenizer"].get("path") and own.is_file():
        tree["tokenizer"]["path"] = str(own.resolve())
    (out_dir / "best.yaml").write_text(header + to_yaml(config_from_dict(tree, "best.yaml")), encoding="utf-8")
    test = _test_metrics(best, out_dir)
    pictures = _pictures(study, out_dir)
    seconds = _study_seconds(trials)
    result = TuneResult(out_dir=out_dir, study_name=study.study_name, metric=metric, direction=direction, counts=counts,
                        best_trial=best.number, best_value=float(best.value), best_params=dict(best.params),
                        test_metrics=test, wall_seconds=seconds)
    start = next((t for t in trials if t.user_attrs.get("start") and t.state == TrialState.COMPLETE), None)
    summary = {
        "study": study.study_name, "metric": metric, "direction": direction, "counts": counts,
        "best": {"trial": best.number, "validation": best.value, "params": best.params, "run_dir": best.user_attrs["run_dir"],
                 "test": test},
        "start_trial": {"trial": start.number, "validation": start.value, "params": start.params} if start else None,
        "study_seconds": round(seconds, 1), "this_process_seconds": round(wall_seconds, 1),
        "sampler": cfg.tune.sampler, "pruner": cfg.tune.pruner, "trials_asked": cfg.tune.trials,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    _report(out_dir, cfg, summary, trials, params, pictures)
    return result


def _report(out_dir: Path, cfg: RunConfig, summary: dict, trials, params: list[Param], pictures: dict[str, str]) -> None:
    from optuna.trial import TrialState

    metric, best = summary["metric"], summary["best"]
    c = summary["counts"]
    lines = [
        f"# Tuning report: {summary['study']}", "",
        (f"Objective: validation **{metric}** ({summary['direction']}). Sampler `{summary['sampler']}`, pruner "
         f"`{summary['pruner']}`. Trials: {c['complete']} completed, {c['pruned']} pruned, {c['failed']} failed "
         f"(asked for {summary['trials_asked']} finished). Study wall time {summary['study_seconds'] / 60:.1f} min."), "",
        "## Best trial", "",
        f"Trial {best['trial']}: validation {metric} **{best['validation']:.4f}**; "
        f"test (evaluated once, after selection): " + ", ".join(
            f"{k} {v:.4f}" for k, v in best["test"].items() if isinstance(v, (int, float)) and k in (metric, "accuracy", "macro_f1", "f1", "exact_match", "mse", "loss")),
        "",
        "| key | value |", "|---|---|",
        *[f"| `{k}` | {_fmt(v)} |" for k, v in best["params"].items()], "",
        f"Its full config: `best.yaml` (`ragtune run {out_dir / 'best.yaml'}`); its run: `{best['run_dir']}`.", "",
    ]
    if summary["start_trial"]:
        s = summary["start_trial"]
        lines += [f"The study started from the config's own values (trial {s['trial']}): validation {metric} {s['validation']:.4f}.", ""]
    lines += ["## Space", "", "| key | searched |", "|---|---|"]
    for p in params:
        what = f"choice {list(p.choices)}" if p.kind == "choice" else f"{p.kind} [{_fmt(p.low)}, {_fmt(p.high)}]" + (f" step {p.step}" if p.step else "")
        lines.append(f"| `{p.key}` | {what} |")
    lines.append("")
    for name, status in pictures.items():
        lines.append(f"![{name}]({name})" if status == "ok" else f"_{name} {status}_")
    lines += ["", "## Trials (best first)", "", f"| trial | state | {metric} | epochs | seconds | " + " | ".join(f"`{p.key}`" for p in params) + " |",
              "|---|---|---|---|---|" + "---|" * len(params)]
    reverse = summary["direction"] == "maximize"

    def order(t):
        v = t.value if t.value is not None else (max(t.intermediate_values.values()) if reverse and t.intermediate_values else
                                                 min(t.intermediate_values.values()) if t.intermediate_values else None)
        return (t.state != TrialState.COMPLETE, -v if (v is not None and reverse) else (v if v is not None else math.inf))

    for t in sorted(trials, key=order):
        value = t.value
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        lines.append(f"| {t.number} | {t.state.name.lower()} | {'' if value is None else f'{value:.4f}'} | "
                     f"{len(t.intermediate_values)} | {'' if seconds is None else f'{seconds:.0f}'} | "
                     + " | ".join(_fmt(t.params.get(p.key, '')) for p in params) + " |")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

