"""What a server serves: a run (classification, regression or QA), an ONNX export, or an index.

:func:`load_service` looks at the folder it is given and loads the same predictor the CLI uses
(``ragtune predict`` and the server share :class:`ragtune.tasks.classification.predictor.Predictor` and
:class:`ragtune.tasks.qa.predictor.QAPredictor`; there is no second inference path). The result says
which endpoints make sense:

========================================  ===========================================
folder                                    endpoints
========================================  ===========================================
classification / regression run           ``/v1/predict`` (+ ``/v1/retrieve`` with retrieval)
``ragtune export`` folder (engine onnx)   ``/v1/predict`` (+ ``/v1/retrieve`` with retrieval)
``task: qa`` run                          ``/v1/answer`` (+ ``/v1/retrieve`` when it reads an index)
``task: translation`` run                 ``/v1/translate``
``task: generation`` run                  ``/v1/generate`` (and ``/v1/retrieve`` when it retrieves)
index folder (``ragtune index``)          ``/v1/retrieve``
========================================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ragtune.config import ServeConfig, read_yaml, validate
from ragtune.errors import RagtuneError, read_model_meta
from ragtune.tasks import TASKS, task_of

ENGINES = ("torch", "onnx")


@dataclass
class Service:
    """A loaded model or index and what it can do.

    ``kind`` is the run's task (``classification``, ``regression``, ``qa``, ``translation``,
    ``generation``) or ``index``; ``predictor`` the task's predictor (the one ``ragtune predict`` uses)
    and ``endpoint`` where it answers (:data:`ragtune.tasks.TASKS`); ``index`` the Index used by
    ``/v1/retrieve`` (None where there is none). ``settings`` are the batching and limits (the run's
    ``serve:`` section, or the defaults).
    """

    kind: str
    name: str
    engine: str
    settings: ServeConfig
    predictor: object | None = None
    endpoint: str | None = None
    index: object | None = None
    labels: list[str] = field(default_factory=list)
    device: str = "cpu"  # where the model runs (``/healthz``)

    @property
    def endpoints(self) -> list[str]:
        out = [self.endpoint] if self.predictor is not None and self.endpoint else []
        if self.index is not None:
            out.append("/v1/retrieve")
        return out


def _serve_settings(folder: Path) -> ServeConfig:
    """The ``serve:`` section of the folder's ``config.yaml`` (a run, or an export that copied it), else defaults;
    the other sections are the task's business (``ragtune predict`` reads them)."""
    path = folder / "config.yaml"
    if path.exists():
        return validate(ServeConfig, read_yaml(path).get("serve") or {}, f"{path}: serve")
    return ServeConfig()


def load_service(path: str | Path, engine: str = "torch", device="auto") -> Service:
    """Load what ``path`` holds (see the module table). ``engine="onnx"`` needs a ``ragtune export`` folder.
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``): where the model, and an index's encoder, run."""
    from ragtune.retrieval.manifest import MANIFEST

    folder = Path(path)
    if engine not in ENGINES:
        raise RagtuneError(f"--engine: unknown engine {engine!r}; choose one of {list(ENGINES)}")
    if not folder.is_dir():
        raise RagtuneError(f"{folder}: no such folder (give a run directory, a `ragtune export` folder or an index folder)")
    settings = _serve_settings(folder)
    name = folder.resolve().name
    if (folder / MANIFEST).exists() and not (folder / "model.json").exists():  # an index folder
        if engine != "torch":
            raise RagtuneError(f"{folder} is an index folder: it has no model to run with --engine {engine}")
        from ragtune.retrieval.index import load_index

        index = load_index(folder, device=device)
        encoder = getattr(index, "encoder", None)
        return Service("index", name, engine, settings, index=index,
                       device=str(getattr(encoder, "device", "cpu")))
    meta_path = folder / "model.json"
    if not meta_path.exists():
        raise RagtuneError(f"{folder} is neither a ragtune run, an export nor an index folder (no model.json or "
                           f"{MANIFEST}); train one with `ragtune run CONFIG --out DIR`")
    task = task_of(read_model_meta(meta_path, list(TASKS))["task"])
    if engine not in task.engines:
        raise RagtuneError(f"{folder} is a task: {task.name} run; --engine {engine} serves classification and "
                           "regression exports only")
    predictor = task.load_predictor(folder, settings.max_batch_size, engine=engine, device=device)
    from ragtune.runs import model_device

    return Service(task.name, name, engine, settings, predictor=predictor, endpoint=task.endpoint,
                   index=_index_of(predictor), labels=list(getattr(predictor, "labels", [])),
                   device=str(model_device(getattr(predictor, "model", None) or getattr(predictor, "reader", None))))


def _index_of(predictor) -> object | None:
    """The index a predictor reads (a QA run's ``index``; a classification or generation run's retriever's)."""
    if getattr(predictor, "index", None) is not None:
        return predictor.index
    retriever = getattr(predictor, "retriever", None)
    return retriever.index if retriever is not None else None
