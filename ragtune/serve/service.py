"""What a server serves: a run (classification, regression or QA), an ONNX export, or an index.

:func:`load_service` looks at the folder it is given and loads the same predictor the CLI uses
(``ragtune predict`` and the server share :class:`ragtune.predictor.Predictor` and
:class:`ragtune.qa_predictor.QAPredictor`; there is no second inference path). The result says
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

import json
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.config import ServeConfig, read_yaml, validate
from ragtune.errors import RagtuneError

ENGINES = ("torch", "onnx")


@dataclass
class Service:
    """A loaded model or index and what it can do.

    ``kind`` is ``classification``, ``regression``, ``qa``, ``translation``, ``generation`` or ``index``;
    ``predictor`` a Predictor (classification/regression), ``qa`` a QAPredictor, ``seq2seq`` a
    Seq2SeqPredictor (translation), ``generator`` a GenerationPredictor, ``index`` the Index used by
    ``/v1/retrieve`` (None where there is none). ``settings`` are the batching and limits
    (the run's ``serve:`` section, or the defaults).
    """

    kind: str
    name: str
    engine: str
    settings: ServeConfig
    predictor: object | None = None
    qa: object | None = None
    seq2seq: object | None = None
    generator: object | None = None
    index: object | None = None
    labels: list[str] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        out = []
        if self.predictor is not None:
            out.append("/v1/predict")
        if self.qa is not None:
            out.append("/v1/answer")
        if self.seq2seq is not None:
            out.append("/v1/translate")
        if self.generator is not None:
            out.append("/v1/generate")
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


def load_service(path: str | Path, engine: str = "torch") -> Service:
    """Load what ``path`` holds (see the module table). ``engine="onnx"`` needs a ``ragtune export`` folder."""
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

        return Service("index", name, engine, settings, index=load_index(folder))
    meta_path = folder / "model.json"
    if not meta_path.exists():
        raise RagtuneError(f"{folder} is neither a ragtune run, an export nor an index folder (no model.json or "
                           f"{MANIFEST}); train one with `ragtune run CONFIG --out DIR`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("task") == "translation":
        if engine != "torch":
            raise RagtuneError(f"{folder} is a task: translation run; --engine onnx serves classification and "
                               "regression exports only")
        from ragtune.seq2seq_predictor import Seq2SeqPredictor

        return Service("translation", name, engine, settings,
                       seq2seq=Seq2SeqPredictor.from_run_dir(folder, batch_size=settings.max_batch_size))
    if meta.get("task") == "generation":
        if engine != "torch":
            raise RagtuneError(f"{folder} is a task: generation run; --engine onnx serves classification and "
                               "regression exports only")
        from ragtune.generation_predictor import GenerationPredictor

        generator = GenerationPredictor.from_run_dir(folder, batch_size=settings.max_batch_size)
        index = generator.retriever.index if generator.retriever is not None else None
        return Service("generation", name, engine, settings, generator=generator, index=index)
    if meta.get("task") == "qa":
        if engine != "torch":
            raise RagtuneError(f"{folder} is a task: qa run; --engine onnx serves classification and regression "
                               "exports only")
        from ragtune.qa_predictor import QAPredictor

        qa = QAPredictor.from_run_dir(folder, batch_size=settings.max_batch_size)
        return Service("qa", name, engine, settings, qa=qa, index=qa.index)
    from ragtune.predictor import Predictor

    predictor = Predictor.from_run_dir(folder, batch_size=settings.max_batch_size, engine=engine)
    retriever = getattr(predictor, "retriever", None)
    return Service(predictor.task, name, engine, settings, predictor=predictor,
                   index=retriever.index if retriever is not None else None, labels=list(predictor.labels))
