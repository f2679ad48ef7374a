"""The tasks: each folder holds one task's config schema (``config.py``)."""

from __future__ import annotations

# --- config: the union of the tasks' schemas and its entry points (the machinery is ragtune/config.py) ---
from ragtune import config as _config
from ragtune.tasks.classification.config import ClassificationConfig
from ragtune.tasks.generation.config import GenerationConfig
from ragtune.tasks.qa.config import QAConfig
from ragtune.tasks.translation.config import TranslationConfig

# A config of any task: `task` picks the schema (classification and regression share one).
RunConfig = _config.tagged_union("task", "classification", {
    "classification": ClassificationConfig, "regression": ClassificationConfig, "qa": QAConfig,
    "translation": TranslationConfig, "generation": GenerationConfig,
})


def config_from_dict(tree: dict, source: str = "<config>", saved: bool = False) -> _config.TaskConfig:
    """Validate a raw config tree, reporting every problem at once (``saved=True``: a run's own config.yaml)."""
    return _config.validate(RunConfig, tree, source, saved)


def load_config(path, overrides: list[str] | None = None, cwd=None) -> _config.TaskConfig:
    """Load ``path`` (or start from defaults when None), apply overrides, resolve paths, validate."""
    return _config.load(RunConfig, path, overrides, cwd)


def config_reference() -> str:
    """The Markdown reference of every task's keys (``ragtune validate --reference``, the README)."""
    return _config.reference(RunConfig)


def valid_keys() -> list[str]:
    """Every dotted key a config of some task may set."""
    return _config.valid_keys(RunConfig)
# --- end config ---
