"""ragtune from Python: the command line's steps as functions, through the same code.

::

    import ragtune

    result = ragtune.run("configs/demo.yaml", out="runs/demo", overrides=["train.epochs=1"])
    print(result.metrics["test"]["accuracy"], result.run_dir)
    predictor = ragtune.load("runs/demo")              # the run's predictor, whatever its task
    predictor.predict(["The chancellor cut interest rates"])

    ragtune.index(["docs/"], out="indexes/docs", kind="bm25")
    ragtune.retrieve("indexes/docs", ["how do I resume a run?"], k=3)
    study = ragtune.tune("configs/seed_tune.yaml", out="tunes/seed", trials=8)

A config is a YAML path, a mapping (the YAML's tree; its relative paths resolve against the current
folder) or a config object (:func:`load_config`'s result). Overrides are ``"key=value"`` strings, as on
the command line, or a mapping ``{"train.epochs": 3}``. ``data.train``, ``data.validation`` and
``data.test`` may also be a pandas ``DataFrame``, a ``datasets.Dataset`` or a list of dicts
(ragtune/data/inline.py: written once to a content-named file in the cache, which the run names)::

    import pandas as pd
    df = pd.DataFrame({"text": texts, "label": labels})
    ragtune.run({"task": "classification", "data": {"train": df}}, out="runs/df")

Errors are :class:`ragtune.RagtuneError` with the message the command line prints. Each function
does what its command does, with the same checks before anything is written (``run``: an existing
run directory is refused unless ``overwrite=True``, which replaces it only once the new run has
finished; ``resume=True`` continues the killed run in ``out``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.errors import RagtuneError
from ragtune.locks import folder_lock
from ragtune.staging import staged

if TYPE_CHECKING:
    from ragtune.retrieval.index import Index
    from ragtune.tasks import RunResult
    from ragtune.tuning.study import TuneResult

Overrides = Sequence[str] | Mapping[str, Any] | None


def _extras_named(function):
    """``function`` with an ImportError of an optional package turned into the RagtuneError naming its extra."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ImportError as exc:
            from ragtune.extras import missing_extra

            error = missing_extra(exc)
            if error is None:
                raise
            raise error from None

    return wrapper


# -- configs ---------------------------------------------------------------------------------------
def packaged_configs() -> dict[str, Path]:
    """``{name: path}`` of the example configs that ship in the package (``ragtune configs`` lists them)."""
    from importlib import resources

    folder = Path(str(resources.files("ragtune") / "configs"))
    # in a source checkout, through its configs/ link: the examples' relative data paths (../../shared/data)
    # are written from there
    link = folder.parent.parent / "configs"
    if link.is_symlink() and link.resolve() == folder.resolve():
        folder = link
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def describe_config(path: Path) -> str:
    """The first line of a config's header comment (what it does), without the ``#``."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and line.lstrip("# ").strip():
            return line.lstrip("# ").strip()
        if line.strip() and not line.startswith("#"):
            break
    return ""


def config_file(config: str | Path) -> str:
    """A config path, or the name of a packaged example (``demo`` → its file in the package): a name
    that is not a file here and has no ``.yaml`` suffix or folder is looked up among the packaged configs."""
    text = str(config)
    if Path(text).exists() or text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text:
        return text
    packaged = packaged_configs()
    if text in packaged:
        return str(packaged[text])
    from difflib import get_close_matches

    close = get_close_matches(text, list(packaged), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise RagtuneError(f"config {text!r}: no such file, and no packaged config of that name ({hint}the packaged "
                       f"ones: {', '.join(packaged)}; ragtune configs lists them)")


def packaged_data_hint(config_path: str | None, error: str = "") -> str:
    """For a packaged example whose data files are missing (``error``, the missing-inputs message, names
    ``shared/data``): where its data comes from (its header says)."""
    if not config_path or "shared/data" not in error.replace("\\", "/"):
        return ""
    path = Path(config_path)
    if path.parent != next(iter(packaged_configs().values()), path).parent:
        return ""
    return (f"\n{path.stem} is an example config that reads its data from ../shared/data of the ragtune repository; "
            f"its header says where the data comes from (ragtune cp {path.stem} shows it): give the files as "
            f"overrides, e.g. data.train=PATH")


def load_config(config: Any = None, overrides: Overrides = None):
    """The validated config of ``config`` (a path, a mapping, a config object, or None: the defaults)
    with ``overrides`` applied; every problem is reported at once in one :class:`RagtuneError`."""
    from pydantic import BaseModel

    from ragtune.config import read_yaml
    from ragtune.tasks import load_config as load

    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    if config is not None and not isinstance(config, (str, Path, Mapping)):
        raise RagtuneError(f"config: give a YAML path, a mapping or a config object (got {type(config).__name__})")
    if isinstance(config, (str, Path)):
        config = config_file(config)
    tree = dict(config) if isinstance(config, Mapping) else None
    items = _override_items(overrides)
    if tree is not None or any(isinstance(i, tuple) for i in items):  # data as Python objects: written to files
        task = (tree if tree is not None else read_yaml(config) if config is not None else {}).get("task")
        task = next((i.partition("=")[2].strip() for i in items if isinstance(i, str) and i.startswith("task=")),
                    task or "classification")
        tree = _inline_data_written(tree, task) if tree is not None else None
        items = [f"{i[0]}={json.dumps(_written(i[0], i[1], task))}" if isinstance(i, tuple) else i for i in items]
    cfg = load(None, items, tree=tree) if tree is not None else load(str(config) if config is not None else None, items)
    return _hub_data_read(cfg, lambda more: load(None, [*items, *more], tree=tree) if tree is not None else
                          load(str(config) if config is not None else None, [*items, *more]))


def _hub_data_read(cfg, reload):
    """``cfg`` with each ``hf://`` dataset of ``data.*`` read into a file (ragtune/data/hub.py) that it names."""
    from ragtune.data.hub import is_hub, resolve
    from ragtune.data.inline import INLINE_KEYS

    hub = {key: getattr(cfg.data, key.split(".")[1], None) for key in INLINE_KEYS}
    more = [f"{key}={json.dumps(resolve(value, key, cfg.task))}" for key, value in hub.items() if is_hub(value)]
    return reload(more) if more else cfg


def _override_items(overrides: Overrides) -> list:
    """``key=value`` strings; a mapping's values are written as JSON (a subset of YAML, so any string
    survives), except in-memory data, which stays a ``(key, object)`` pair until it is written."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise RagtuneError(f"overrides: give a list of 'key=value' strings or a mapping, not one string ({overrides!r})")
    if isinstance(overrides, Mapping):
        from ragtune.data.inline import is_inline

        return [(k, v) if is_inline(v) else f"{k}={json.dumps(_plain(v), ensure_ascii=False)}"
                for k, v in overrides.items()]
    bad = [o for o in overrides if not isinstance(o, str)]
    if bad:
        raise RagtuneError(f"overrides: each must be a 'key=value' string (got {bad[0]!r})")
    return list(overrides)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _written(key: str, value: Any, task: str) -> str:
    from ragtune.data.inline import INLINE_KEYS, materialise

    if key not in INLINE_KEYS:
        raise RagtuneError(f"{key}: only {', '.join(INLINE_KEYS)} take data as Python objects; give a path")
    return materialise(value, key, task)


def _inline_data_written(tree: dict, task: str) -> dict:
    """``tree`` with the in-memory data of its ``data:`` keys replaced by the paths of their files."""
    from ragtune.data.inline import INLINE_KEYS, is_inline

    data = tree.get("data")
    if not isinstance(data, Mapping):
        return tree
    data = dict(data)
    for key in INLINE_KEYS:
        leaf = key.split(".")[1]
        if is_inline(data.get(leaf)):
            data[leaf] = _written(key, data[leaf], task)
    return {**tree, "data": data}


# -- step 1-4: a run -------------------------------------------------------------------------------
@dataclass
class RunPlan:
    """A checked run, not started: its config, its folder and whether it resumes (:func:`plan_run`)."""

    cfg: Any
    config_path: str | None
    run_dir: Path
    resume: bool
    overwrite: bool

    @property
    def interrupt_hint(self) -> str:
        """What a Ctrl-C leaves, in words (the command line prints it)."""
        if not self.resume and self.overwrite and (self.run_dir / "config.yaml").is_file():
            return (f"the earlier run in {self.run_dir} is unchanged (--overwrite replaces it only once the new run "
                    "has finished); the new run's partial results were removed")
        config = self.config_path or "CONFIG"
        return f"the run can be resumed with ragtune run {config} --resume {self.run_dir}"


def plan_run(config: Any, out: str | Path | None = None, overrides: Overrides = None, *, resume: bool = False,
             overwrite: bool = False) -> RunPlan:
    """Load and check everything a run needs before it writes anything: the config and its inputs,
    the device and precision, and (``resume``) that ``out`` is a run directory."""
    from ragtune import devices
    from ragtune.config import check_inputs
    from ragtune.train import tracking

    config_path = config_file(config) if isinstance(config, (str, Path)) else None
    cfg = load_config(config_path or config, overrides)
    try:
        check_inputs(cfg, config_path or "<config>")  # a failed start leaves no run directory
    except RagtuneError as exc:
        raise RagtuneError(f"{exc}{packaged_data_hint(config_path, str(exc))}") from None
    tracking.check_available(cfg.train.report_to)  # train.report_to: its packages
    devices.check_precision(devices.resolve(cfg.train.device), cfg.train.precision)  # a GPU this machine lacks
    if resume:
        if out is None:
            raise RagtuneError("resume: give the run directory to continue (--resume RUN_DIR; out= in Python)")
        if not Path(out).is_dir():
            raise RagtuneError(f"--resume {out}: no such run directory")
    run_dir = Path(out) if out is not None else default_run_dir(config_path, cfg.name)
    return RunPlan(cfg, config_path, run_dir, resume, overwrite)


def default_run_dir(config_path: str | None, name: str | None) -> Path:
    """``runs/<name>-<date>-<time>``: the run directory when none is given (name: the config's, else its file's)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name or (Path(config_path).stem if config_path else 'run')}-{stamp}"


def execute(plan: RunPlan, progress: bool = True) -> RunResult:
    """Run a :class:`RunPlan`: one writer per run directory (ragtune/locks.py), an earlier run there
    replaced only once the new one has finished (ragtune/staging.py); under torchrun, only rank 0 writes it."""
    from ragtune.tasks import run
    from ragtune.train import distributed

    rank = distributed.init_from_env()  # under torchrun: join the process group (ragtune/train/distributed.py)
    run_dir = plan.run_dir
    with folder_lock(run_dir) if rank.is_main else contextlib.nullcontext():
        replace = rank.is_main and not plan.resume and replaces_run_dir(run_dir, plan.overwrite, plan.cfg, plan.config_path)
        try:
            with staged(run_dir) if replace else contextlib.nullcontext(run_dir) as work:
                try:
                    return run(plan.cfg, work, resume=plan.resume, progress=progress, config_path=plan.config_path)
                except RagtuneError as exc:
                    if replace:
                        raise RagtuneError(f"{exc}\n(the earlier run in {run_dir} is unchanged)") from None
                    raise
        finally:
            distributed.shutdown()


@_extras_named
def run(config: Any, out: str | Path | None = None, overrides: Overrides = None, *, resume: bool = False,
        overwrite: bool = False, progress: bool = True) -> RunResult:
    """Steps 1-4 for ``config``: prepare the data, build, train, evaluate and report into ``out``
    (default ``runs/<name>-<date>-<time>``); what ``ragtune run`` does.

    Returns a ``RunResult``: ``run_dir``, ``metrics`` (``{"validation": {...}, "test": {...}, ...}``,
    as in ``metrics.json``) and ``train`` (the training loop's result: epochs, steps, history).
    ``resume=True`` continues the killed run in ``out``; ``overwrite=True`` replaces the run in ``out``
    once the new one has finished (an input inside it, or a folder that is not a run, is refused).
    """
    return execute(plan_run(config, out, overrides, resume=resume, overwrite=overwrite), progress)


@_extras_named
def rerun(run_dir: str | Path, out: str | Path | None = None, *, overwrite: bool = False,
          progress: bool = True) -> RunResult:
    """Run the run in ``run_dir`` again, exactly: its saved ``config.yaml`` and, for a model trained from
    scratch, its own ``tokenizer.json`` (``tokenizer.path``), because training a tokenizer again breaks
    ties between equally frequent pieces differently in each process. Into ``out`` (default
    ``RUN_DIR-rerun-<date>-<time>`` beside it); what ``ragtune rerun`` does. The same seed, data and
    library versions give the same metrics (on the same device: a GPU's kernels differ from a CPU's)."""
    from ragtune.config import read_yaml

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    cfg = run_config(run_dir)  # checks it is a run directory
    overrides = []
    tokenizer = run_dir / "tokenizer.json"
    if getattr(cfg, "tokenizer", None) is not None and getattr(cfg.model, "backbone", "scratch") == "scratch" \
            and tokenizer.is_file():
        overrides.append(f"tokenizer.path={json.dumps(str(tokenizer.resolve()))}")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(out) if out is not None else run_dir.parent / f"{run_dir.name}-rerun-{stamp}"
    if out.resolve() == run_dir.resolve():
        raise RagtuneError(f"--out {out} is the run being re-run; choose another folder")
    tree = read_yaml(config_path)
    return execute(plan_run(tree, out, overrides, overwrite=overwrite), progress)


def replaces_run_dir(out: Path, overwrite: bool, cfg, config_path: str | None) -> bool:
    """Whether a new run into ``out`` replaces an earlier run there (``--overwrite``; then it is
    written beside ``out`` and swapped in at the end, ragtune/staging.py). Refuses, before anything is
    written: a file, a non-empty folder without ``--overwrite``, a folder that is not a run directory,
    the current folder, and a folder that holds an input of the run (the config, a data file)."""
    from ragtune.config import input_paths
    from ragtune.staging import inputs_inside

    if out.exists() and not out.is_dir():
        raise RagtuneError(f"--out {out} is a file, not a folder")
    if not (out.is_dir() and any(out.iterdir())):
        return False
    if not overwrite:
        raise RagtuneError(f"run directory {out} exists and is not empty; choose another --out, "
                           "add --overwrite to replace it, or --resume it")
    if not (out / "config.yaml").is_file():
        raise RagtuneError(f"--out {out} is not a ragtune run directory (it holds no config.yaml), and --overwrite "
                           "replaces only run directories; choose another --out, or empty the folder yourself")
    cwd = Path.cwd().resolve()
    if out.resolve() == cwd or out.resolve() in cwd.parents:
        raise RagtuneError(f"--out {out} is the current folder or holds it; --overwrite will not replace it: "
                           "choose another --out")
    named = [("the config file", config_path)] if config_path else []
    inside = inputs_inside(out, [*named, *((key, value) for key, value in input_paths(cfg) if isinstance(value, str))])
    if inside:
        what, path = inside[0]
        raise RagtuneError(f"--overwrite would delete {what} {path}: it is an input of this run and lies inside "
                           f"--out {out}; move it out of the run directory or choose another --out")
    return True


# -- using a run -----------------------------------------------------------------------------------
def run_config(run_dir: str | Path):
    """The config a finished run (or a ``ragtune export`` folder) was made with, from its ``config.yaml``."""
    from ragtune.config import read_yaml
    from ragtune.tasks import config_from_dict

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise RagtuneError(f"{run_dir} is not a ragtune run directory (no config.yaml)")
    return config_from_dict(read_yaml(path), str(path), saved=True)


@_extras_named
def load(run_dir: str | Path, *, device: str = "auto", batch_size: int | None = None, engine: str = "torch"):
    """The predictor of the finished run in ``run_dir``, whatever its task: the one ``ragtune predict``,
    ``eval`` and ``serve`` use.

    ================  ===================  =================================================
    task              predictor            main calls
    ================  ===================  =================================================
    classification    ``Predictor``        ``predict(texts)`` → label, scores (regression: value)
    qa                ``QAPredictor``      ``answer(questions)``, ``evaluate(records)``
    translation       ``Seq2SeqPredictor`` ``translate(texts)``
    generation        ``GenerationPredictor`` ``generate(prompts)``
    ================  ===================  =================================================

    ``device``: ``auto`` (CUDA, else MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``;
    ``batch_size`` defaults to the run's ``eval.batch_size``; ``engine="onnx"`` loads a
    ``ragtune export`` folder of a classification run.
    """
    from ragtune import devices
    from ragtune.tasks import task_of

    cfg = run_config(run_dir)
    return task_of(cfg.task).load_predictor(run_dir, batch_size or cfg.eval.batch_size, engine=engine,
                                            device=devices.resolve(device))


# -- step 5-6: tuning ------------------------------------------------------------------------------
@_extras_named
def tune(config: Any, out: str | Path, overrides: Overrides = None, *, trials: int | None = None,
         timeout_s: float | None = None, storage: str | None = None, study_name: str | None = None,
         progress: bool = True) -> TuneResult:
    """Run (or resume) the Optuna study of ``config``'s ``tune:`` section into ``out``: what ``ragtune
    tune`` does with one worker process. Returns the ``TuneResult`` (``best_trial``, ``best_value``,
    ``best_params``, ``test_metrics``, ``counts``); ``out/best.yaml`` re-runs the best trial."""
    from ragtune.config import check_inputs
    from ragtune.train import tracking
    from ragtune.tuning import tune as run_study
    from ragtune.tuning.study import check_storage_url

    if storage is not None:
        check_storage_url(storage)
    config_path = config_file(config) if isinstance(config, (str, Path)) else None
    cfg = load_config(config_path or config, overrides)
    try:
        check_inputs(cfg, config_path or "<config>")
    except RagtuneError as exc:
        raise RagtuneError(f"{exc}{packaged_data_hint(config_path, str(exc))}") from None
    tracking.check_available(cfg.train.report_to)
    out = Path(out)
    with folder_lock(out):
        check_study_folder(out, storage)
        return run_study(cfg, out, config_path=config_path, trials=trials, storage=storage, study_name=study_name,
                         timeout_s=timeout_s, progress=progress)


def check_study_folder(out: Path, storage: str | None) -> None:
    """A study folder is new, empty or an earlier study's (which then resumes)."""
    if out.exists() and not out.is_dir():
        raise RagtuneError(f"--out {out} is a file, not a folder")
    if (out.is_dir() and any(out.iterdir()) and not (out / "study.db").exists() and not (out / "trials").exists()
            and not storage):
        raise RagtuneError(f"--out {out} is a non-empty folder that holds no study; choose a new folder")


# -- retrieval -------------------------------------------------------------------------------------
@_extras_named
def index(corpus: str | Path | Iterable[str | Path], out: str | Path, *, kind: str = "bm25", encoder: str = "minilm",
          faiss: str = "flat", chunk_tokens: int | None = None, chunk_overlap: int | None = None,
          add: bool = False, overwrite: bool = False, progress: bool = True, device: str = "auto") -> Index:
    """Index the files and folders of ``corpus`` into ``out`` (``ragtune index``) and return the loaded
    index; ``add=True`` adds them to the existing index in ``out`` with its own settings.

    ``kind``: ``bm25``, ``dense`` or ``hybrid``; ``encoder`` (dense, hybrid): an alias such as
    ``minilm``, a folder or a hub id; ``faiss``: ``flat``, ``hnsw`` or ``ivfpq``."""
    from ragtune.retrieval import add_to_index, build_index, load_index
    from ragtune.retrieval import index as defaults

    paths = [str(corpus)] if isinstance(corpus, (str, Path)) else [str(p) for p in corpus]
    out = Path(out)
    with folder_lock(out):
        if add:
            if overwrite:
                raise RagtuneError("give either add=True (extend the index) or overwrite=True (replace it), not both")
            add_to_index(out, paths, progress=progress, device=device)
        else:
            build_index(paths, out, kind=kind, encoder=encoder, faiss_index=faiss,
                        chunk_tokens=defaults.DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens,
                        chunk_overlap=defaults.DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap,
                        progress=progress, overwrite=overwrite, device=device)
    return load_index(out, device=device)


@_extras_named
def retrieve(index_or_dir: Any, queries: str | Sequence[str], k: int = 5, *, device: str = "auto") -> list[list[dict]]:
    """The ``k`` best passages for each query (one string: one query), best first, as dicts (``id``,
    ``text``, ``score``, ``source``, ...: what ``ragtune retrieve`` prints), from an index folder or a
    loaded index (:func:`index`'s result)."""
    from ragtune.retrieval import load_index

    if isinstance(queries, str):
        queries = [queries]
    if k < 1:
        raise RagtuneError(f"k must be at least 1 (got {k})")
    idx = load_index(index_or_dir, device=device) if isinstance(index_or_dir, (str, Path)) else index_or_dir
    return [[hit.to_dict() for hit in hits] for hits in idx.search_batch(list(queries), k)]
