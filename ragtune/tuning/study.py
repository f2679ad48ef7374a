"""Steps 5 and 6: tune hyperparameters by repeated train/evaluate runs, as an Optuna study.

::

    cfg = load_config("configs/seed_tune.yaml")
    result = tune(cfg, "tunes/seed", config_path="configs/seed_tune.yaml")
    result.best_value, result.best_params, result.test_metrics

Each trial is a ragtune run (``ragtune.tasks.run``) in ``OUT/trials/trial_NNNN`` on the config with the
trial's values written in (:mod:`ragtune.tuning.space`); it trains, reports the validation ``metric``
to Optuna after every epoch (the pruner may stop it there) and never sees the test split. The
study lives in Optuna storage: ``sqlite:///OUT/study.db`` unless ``storage`` names another RDB URL
(e.g. ``postgresql://user:pw@host/db``), which lets processes on several machines share it. Running
the same command again resumes: finished trials are kept and the study runs on until ``tune.trials``
trials have finished (completed or pruned); ``OUT/config.yaml``, the base config as the study read it, is
what ``ragtune tune OUT/config.yaml --out OUT`` resumes with when the first config is gone. A trial left running by a killed process is marked
failed once its heartbeat is older than :data:`GRACE_PERIOD_S`, and its values are tried again.

After the study, :func:`ragtune.tuning.results.write_results` writes ``best.yaml``, ``trials.csv``,
the pictures and ``report.md``, and evaluates the best trial's model on the test split, once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

from ragtune.config import flatten, to_yaml
from ragtune.errors import RagtuneError
from ragtune.tasks import RunConfig, config_from_dict
from ragtune.tuning.results import TuneResult, counts_of, objective_of, write_results
from ragtune.tuning.space import Param, parse_space, suggest, trial_tree

log = logging.getLogger("ragtune.tune")

STUDY_DB = "study.db"
TRIALS_DIR = "trials"
HEARTBEAT_S = 30
GRACE_PERIOD_S = 90
# Keys a resumed study may change; any other difference from the study's config is an error.
RESUMABLE_CHANGES = ("tune.trials", "tune.timeout_s", "train.threads", "name")


def storage_url(out_dir: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{(out_dir / STUDY_DB).resolve()}"


SCHEMA_RETRIES = 5  # attempts to open a storage whose tables another worker may be creating


STORAGE_FORMS = ("give e.g. sqlite:///study.db or postgresql://user:password@host/dbname "
                 "(any SQLAlchemy URL Optuna's RDBStorage accepts)")


def check_storage_url(url: str) -> None:
    """Refuse a ``--storage`` that is not a database URL of a known SQLAlchemy dialect (before anything runs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if "://" not in url:
        raise RagtuneError(f"--storage {url!r} is not a database URL; {STORAGE_FORMS}")
    try:
        make_url(url).get_dialect()
    except NoSuchModuleError:
        scheme = url.split("://", 1)[0]
        raise RagtuneError(f"--storage {url!r}: unknown database kind {scheme!r}; {STORAGE_FORMS}") from None
    except (ArgumentError, ValueError) as exc:
        raise RagtuneError(f"--storage {url!r} is not a database URL ({exc}); {STORAGE_FORMS}") from None


def _storage(url: str):
    import optuna

    check_storage_url(url)
    from sqlalchemy.exc import DBAPIError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(SCHEMA_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since Optuna 2.8
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except ImportError as exc:  # e.g. postgresql:// without a driver installed
            raise RagtuneError(f"--storage {url}: {exc} (install the database driver, e.g. pip install 'psycopg[binary]' for postgresql://)") from None
        except DBAPIError as exc:
            # Workers started together on an empty database race to create Optuna's tables; the loser
            # gets a duplicate-key error and finds the tables on the next attempt.
            if attempt == SCHEMA_RETRIES - 1:
                reason = str(exc.orig or exc).strip().splitlines()[0]
                raise RagtuneError(f"--storage {url}: cannot open the study database ({reason})") from None
            time.sleep(0.5 * (attempt + 1))


def _sampler(cfg: RunConfig, params: list[Param]):
    import optuna

    t = cfg.tune
    if t.sampler == "random":
        return optuna.samplers.RandomSampler(seed=t.seed)
    if t.sampler == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid_values() for p in params}, seed=t.seed)
    return optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=min(10, max(2, t.trials // 3)))


def _pruner(cfg: RunConfig):
    import optuna

    t = cfg.tune
    if t.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=t.pruner_startup_trials, n_warmup_steps=t.pruner_warmup_epochs)
    if t.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.train.epochs)
    return optuna.pruners.NopPruner()


def open_study(cfg: RunConfig, out_dir: Path, storage: str | None, study_name: str | None, params: list[Param],
               create: bool = True):
    """Create the study (or load it, checking it was made from the same config) and return it."""
    import optuna

    metric, direction = objective_of(cfg)
    name = study_name or cfg.name or "ragtune"
    base = cfg.model_dump(mode="json")
    url = storage_url(out_dir, storage)
    store = _storage(url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)}
    if name in existing:
        study = optuna.load_study(study_name=name, storage=store, sampler=_sampler(cfg, params), pruner=_pruner(cfg))
        saved = study.user_attrs.get("ragtune_config")
        if saved is not None:
            old, new = flatten(saved), flatten(base)
            # over the config's own keys: a study saved before the per-task schema holds every task's keys
            diffs = [f"{k}: {old.get(k)!r} in the study, {new.get(k)!r} now" for k in sorted(new)
                     if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES]
            if diffs:
                shown = "\n".join(f"  - {d}" for d in diffs[:20])
                raise RagtuneError(
                    f"study {name!r} in {url} was started from another config; resume it with the same config "
                    f"and overrides (only {', '.join(RESUMABLE_CHANGES)} may change), or use a new --out / --study-name. "
                    f"Differences:\n{shown}")
        return study
    if not create:
        raise RagtuneError(f"no study {name!r} in {url}")
    study = optuna.create_study(study_name=name, storage=store, direction=direction, sampler=_sampler(cfg, params),
                                pruner=_pruner(cfg), load_if_exists=True)
    study.set_user_attr("ragtune_config", base)
    study.set_user_attr("metric", metric)
    if cfg.tune.start_from_config and cfg.tune.sampler != "grid":
        flat = flatten(base)
        start = {p.key: flat[p.key] for p in params}
        outside = [p.key for p in params if not p.contains(start[p.key])]
        if outside:
            log.info("tune: the config's own values of %s lie outside the space; the study starts from sampled values",
                     ", ".join(outside))
        else:
            study.enqueue_trial(start, user_attrs={"start": "the config's own values"})
    return study


def shared_tokenizer(cfg: RunConfig, params: list[Param], out_dir: Path, create: bool = True) -> Path | None:
    """``OUT/tokenizer.json``, trained once for all trials of a scratch model whose tokenized texts the
    space does not change (no ``tokenizer.*``, ``data.*`` or ``retrieval.*`` key searched); else None.

    One vocabulary for every trial makes trials differ only by the searched values, and lets
    ``best.yaml`` (which points at it) reproduce its trial exactly.
    """
    from ragtune.tasks import train_tokenizer_for

    if cfg.model.backbone != "scratch" or cfg.tokenizer.path:
        return None
    if any(p.key.startswith(("tokenizer.", "data.", "retrieval.")) for p in params):
        return None
    path = out_dir / "tokenizer.json"
    if not path.exists() and create:
        log.info("tune: training the study's tokenizer (shared by every trial): %s", path)
        train_tokenizer_for(cfg, path, demo_dir=out_dir / "demo_data")
    return path if path.exists() else None


def make_objective(cfg: RunConfig, params: list[Param], out_dir: Path, config_path: str | Path | None):
    """The Optuna objective: one ragtune run per trial, validation only, reporting each epoch."""
    import optuna

    from ragtune.tasks import run

    metric, _ = objective_of(cfg)
    base = cfg.model_dump(mode="json")
    tokenizer = shared_tokenizer(cfg, params, out_dir, create=False)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, params)
        tree = trial_tree(base, values)
        tree["eval"]["metric"] = metric  # each trial keeps its best epoch by the study's metric
        if tokenizer is not None:
            tree["tokenizer"]["path"] = str(tokenizer.resolve())
        run_dir = out_dir / TRIALS_DIR / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("config", tree)
        pruned_at: list[int] = []

        def report(epoch: int, metrics: dict) -> bool:
            value = metrics.get(metric)
            if value is None:
                return False
            trial.report(float(value), epoch)
            if trial.should_prune():
                pruned_at.append(epoch)
                return True
            return False

        try:  # a combination the config rejects (each value alone was checked), or a failed run
            trial_cfg = config_from_dict(tree, f"trial {trial.number}")
            if run_dir.exists():
                shutil.rmtree(run_dir)
            result = run(trial_cfg, run_dir, progress=False, on_epoch_end=report, evaluate_test=False,
                         config_path=config_path, reports=False)
        except RagtuneError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        if pruned_at:
            raise optuna.TrialPruned(f"{metric} {result.train.history[-1].get('validation_' + metric)} at epoch {pruned_at[0]}")
        return float(result.metrics["validation"][metric])

    return objective


def _progress_text(study, counts: dict[str, int]) -> str:
    try:
        best = study.best_trial
        best_text = f"best {best.value:.4f} (trial {best.number})"
    except ValueError:
        best_text = "best -"
    return f"{best_text} · pruned {counts['pruned']} · failed {counts['failed']}"


def optimize(study, cfg: RunConfig, params: list[Param], out_dir: Path, config_path, trials: int,
             timeout_s: float | None, progress: bool) -> None:
    """Run trials in this process until ``trials`` have finished (complete or pruned) in the whole study."""
    import optuna
    from optuna.trial import TrialState
    from tqdm.auto import tqdm

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = sum(counts_of(study)[k] for k in ("complete", "pruned"))
    if done >= trials:
        return
    failures = {"n": 0}
    bar = tqdm(total=trials, initial=done, desc="tune", unit="trial", disable=not progress, dynamic_ncols=True)

    def after_trial(study, trial) -> None:
        counts = counts_of(study)
        bar.n = counts["complete"] + counts["pruned"]
        bar.set_postfix_str(_progress_text(study, counts))
        bar.refresh()
        line = f"trial {trial.number}: {trial.state.name.lower()}"
        if trial.value is not None:
            line += f", {objective_of(cfg)[0]} {trial.value:.4f}"
        if trial.user_attrs.get("error"):
            line += f" ({trial.user_attrs['error'].splitlines()[-1].strip()})"
        log.info(line)
        if trial.state == TrialState.FAIL:
            failures["n"] += 1
            if failures["n"] >= max(3, trials):
                log.warning("tune: %d trials failed in this process; stopping (see their run.log)", failures["n"])
                study.stop()

    try:
        study.optimize(make_objective(cfg, params, out_dir, config_path), n_trials=None, timeout=timeout_s,
                       catch=(RagtuneError,), callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished), after_trial])
    finally:
        bar.close()


WORKER_INDEX_ENV = "RAGTUNE_TUNE_WORKER_INDEX"  # set by _spawn_workers: 0, 1, ... per local worker process


def _wait_for_queued_trials(study, timeout_s: float = 120.0) -> None:
    """Let worker 0 take the enqueued trials (the config's own values) before this worker starts.

    Optuna hands a queued trial to a process by reading it as WAITING and setting it RUNNING in one
    ``SELECT ... FOR UPDATE`` transaction; SQLite ignores ``FOR UPDATE``, so two local workers that
    start together can both take the same queued trial and run it twice. Only worker 0 takes queued
    trials; the others wait until none is left (or ``timeout_s``). Workers on other machines share a
    server database (PostgreSQL, MySQL), whose row locks make this unnecessary.
    """
    deadline = time.monotonic() + timeout_s
    while counts_of(study)["waiting"] and time.monotonic() < deadline:
        time.sleep(0.2)


def _spawn_workers(args_for_worker: list[str], workers: int, threads: int, progress: bool, study, trials: int) -> None:
    """``workers`` processes of ``ragtune tune --worker`` on this machine; waits while showing progress."""
    from tqdm.auto import tqdm

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([sys.executable, "-m", "ragtune", "tune", *args_for_worker, "--worker"],
                              env={**env, WORKER_INDEX_ENV: str(i)})
             for i in range(workers)]
    bar = tqdm(total=trials, desc="tune", unit="trial", disable=not progress, dynamic_ncols=True)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(5)
            counts = counts_of(study)
            bar.n = min(trials, counts["complete"] + counts["pruned"])
            bar.set_postfix_str(_progress_text(study, counts) + f" · running {counts['running']}")
            bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    finally:
        bar.close()
    failed = [p.returncode for p in procs if p.returncode]
    if failed:
        raise RagtuneError(f"{len(failed)} of {workers} worker processes exited with an error (codes {failed}); "
                           "their messages are above; run the same command again to resume the study")


def tune(cfg: RunConfig, out_dir: str | Path, *, config_path: str | Path | None = None, trials: int | None = None,
         storage: str | None = None, study_name: str | None = None, workers: int = 1, timeout_s: float | None = None,
         progress: bool = True, worker_args: list[str] | None = None, worker: bool = False) -> TuneResult | None:
    """Run (or resume) the study of ``cfg.tune`` into ``out_dir``; returns the result (``None`` for a worker).

    ``workers`` > 1 starts that many ``ragtune tune --worker`` processes (``worker_args`` are their
    command-line arguments) sharing the study's storage, each on ``cores // workers`` threads unless
    ``train.threads`` is set. A ``worker`` only runs trials; the process that started it writes the results.
    """
    import optuna

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if workers < 1:
        raise RagtuneError(f"--workers must be at least 1, got {workers}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = parse_space(cfg, cfg.tune.space, cfg.tune.sampler)
    trials = trials or cfg.tune.trials
    timeout_s = timeout_s if timeout_s is not None else cfg.tune.timeout_s
    study = open_study(cfg, out_dir, storage, study_name, params, create=not worker)
    if worker:
        if int(os.environ.get(WORKER_INDEX_ENV, "0")) > 0:
            _wait_for_queued_trials(study)
        optimize(study, cfg, params, out_dir, config_path, trials, timeout_s, progress=False)
        return None
    shared_tokenizer(cfg, params, out_dir)
    (out_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")  # the base config: what resumes it
    if workers > 1:
        threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // workers)
        args = [*(worker_args or []), "--storage", storage_url(out_dir, storage), "--trials", str(trials)]
        if cfg.train.threads is None:
            args.append(f"train.threads={threads}")
        _spawn_workers(args, workers, threads, progress, study, trials)
    else:
        optimize(study, cfg, params, out_dir, config_path, trials, timeout_s, progress)
    return write_results(study, cfg, params, out_dir, wall_seconds=time.perf_counter() - started)
