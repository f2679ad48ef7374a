"""ragtune: build, fine-tune, evaluate, tune and serve Transformer text models from one YAML file.

The Python API (ragtune/api.py; each function does what its command does)::

    import ragtune

    result = ragtune.run("configs/demo.yaml", out="runs/demo")   # steps 1-4; result.metrics, result.run_dir
    predictor = ragtune.load("runs/demo")                         # the run's predictor, whatever its task
    predictor.predict(["The chancellor cut interest rates"])
    ragtune.rerun("runs/demo")                                    # the same run again, exactly
    ragtune.tune("configs/seed_tune.yaml", out="tunes/seed")     # steps 5-6: an Optuna study
    ragtune.index(["docs/"], out="indexes/docs")                 # retrieval
    ragtune.retrieve("indexes/docs", "how do I resume a run?", k=3)

Importing ``ragtune`` loads none of this (nor torch) until a function is first used.
"""

from ragtune.errors import RagtuneError
from ragtune.version import __version__

__all__ = ["RagtuneError", "__version__", "index", "load", "load_config", "rerun", "retrieve", "run", "tune"]
_API = {"index", "load", "load_config", "rerun", "retrieve", "run", "tune"}


def __getattr__(name: str):
    if name in _API:
        from ragtune import api

        return getattr(api, name)
    raise AttributeError(f"module 'ragtune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
