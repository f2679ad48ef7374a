"""The search space of a study: ``tune.space`` parsed, checked against the config, and sampled.

A space maps dotted config keys to one of five forms::

    tune:
      space:
        train.lr: {log_uniform: [1.0e-5, 1.0e-2]}   # float, sampled on a log scale
        model.dropout: {uniform: [0.0, 0.3]}         # float
        model.layers: {int: [2, 12]}                 # int, both ends included (optional step: 2)
        model.ffn_dim: {log_int: [128, 1024]}        # int on a log scale
        train.optimizer: {choice: [sgd, adamw]}      # one of the listed values (str, number, bool, null)
        retrieval.top_k: {choice: [0, 3, 5]}

:func:`parse_space` checks everything before a trial runs and reports every problem at once: an
unknown key (with the closest valid one), a form it does not know, bounds that are not two numbers
or whose low is above high, a log range that reaches 0, an empty choice, and every value the config
itself rejects (each choice, and both ends of a range, are validated in the config they would
produce). With ``sampler: grid`` every parameter must be a ``choice`` or an ``int`` range.

:func:`suggest` draws one trial's values through Optuna's ``trial.suggest_*``; :func:`trial_tree`
writes them into a copy of the config tree.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from ragtune.config import TaskConfig, key_hint, valid_keys, validate
from ragtune.errors import RagtuneError

KINDS = ("log_uniform", "uniform", "int", "log_int", "choice")
GRID_KINDS = ("int", "choice")
# Keys a trial may not change: the study's own settings, and what says which task the run is.
FIXED_PREFIXES = ("tune.", "task")


@dataclass(frozen=True)
class Param:
    """One searched config key: ``kind`` is one of :data:`KINDS`; ``low``/``high``/``step`` for
    ranges, ``choices`` for ``choice``."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple = ()

    def grid_values(self) -> list:
        """Every value of a ``choice`` or ``int`` parameter (what the grid sampler walks through)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise RagtuneError(f"tune.space.{self.key}: a {self.kind} range has no finite grid; use choice or int")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a value this parameter can take."""
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind in ("int", "log_int"):
            if int(value) != value:
                return False
            step = int(self.step or 1)
            return self.low <= value <= self.high and (int(value) - int(self.low)) % step == 0
        return self.low <= value <= self.high


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_one(key: str, spec: Any, errors: list[str]) -> Param | None:
    where = f"tune.space.{key}"
    if not isinstance(spec, dict):
        errors.append(f"{where}: must be a mapping like {{log_uniform: [1.0e-5, 1.0e-2]}} or {{choice: [a, b]}}, got {spec!r}")
        return None
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in KINDS and k != "step"]
    if len(kinds) != 1 or extra:
        errors.append(f"{where}: give exactly one of {list(KINDS)} (optionally with step), got keys {sorted(spec)}")
        return None
    kind = kinds[0]
    value = spec[kind]
    if kind == "choice":
        if "step" in spec:
            errors.append(f"{where}: step applies to int and uniform ranges, not to choice")
        if not isinstance(value, list) or not value:
            errors.append(f"{where}: choice needs a non-empty list of values, got {value!r}")
            return None
        bad = [v for v in value if v is not None and not isinstance(v, (str, int, float, bool))]
        if bad:
            errors.append(f"{where}: choice values must be strings, numbers, booleans or null (Optuna's categorical "
                          f"values), got {bad[0]!r}")
            return None
        if len({repr(v) for v in value}) != len(value):
            errors.append(f"{where}: choice lists a value twice: {value!r}")
            return None
        return Param(key, kind, choices=tuple(value))
    if not isinstance(value, list) or len(value) != 2 or not all(_number(v) for v in value):
        errors.append(f"{where}: {kind} needs [low, high], two numbers, got {value!r}")
        return None
    low, high = value
    step = spec.get("step")
    problems = []
    if low > high:
        problems.append(f"low {low} is above high {high}")
    if kind.startswith("log") and low <= 0:
        problems.append(f"a log range needs low > 0 (got {low})")
    if kind in ("int", "log_int") and not all(float(v).is_integer() for v in value):
        problems.append(f"int bounds must be whole numbers (got {value})")
    if step is not None:
        if kind.startswith("log"):
            problems.append("step cannot be combined with a log range")
        elif not _number(step) or step <= 0 or (kind == "int" and not float(step).is_integer()):
            problems.append(f"step must be a positive {'whole ' if kind == 'int' else ''}number (got {step!r})")
    if problems:
        errors.append(f"{where}: " + "; ".join(problems))
        return None
    if kind in ("int", "log_int"):
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    return Param(key, kind, low=low, high=high, step=step)


def _probe_values(param: Param) -> list:
    """The values checked against the config: each choice, or both ends of a range."""
    return list(param.choices) if param.kind == "choice" else sorted({param.low, param.high})


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"`` (creating missing sections) in place."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def trial_tree(base: dict, values: dict[str, Any]) -> dict:
    """A deep copy of the config tree ``base`` with ``values`` (dotted keys) written in."""
    tree = copy.deepcopy(base)
    for key, value in values.items():
        set_dotted(tree, key, value)
    return tree


def parse_space(cfg: TaskConfig, space: dict | None, sampler: str = "tpe") -> list[Param]:
    """Parse and check ``space`` (``tune.space``) against the config ``cfg`` (its task's schema and values).

    Returns the parameters in the order given. Raises :class:`RagtuneError` listing every problem
    (see the module docstring), so a study never starts on a space it cannot run.
    """
    if not space:
        raise RagtuneError("tune.space is empty: give at least one key to search, e.g. "
                           "tune.space: {train.lr: {log_uniform: [1.0e-5, 1.0e-2]}}")
    if not isinstance(space, dict):
        raise RagtuneError(f"tune.space must be a mapping of dotted config keys to ranges, got {type(space).__name__}")
    errors: list[str] = []
    schema, base = type(cfg), cfg.model_dump(mode="json")
    keys = set(valid_keys(schema))
    params = []
    for key, spec in space.items():
        if not isinstance(key, str) or key not in keys:
            errors.append(f"tune.space.{key}: not a config key{key_hint(schema, str(key))}")
            continue
        if key.startswith(FIXED_PREFIXES):
            errors.append(f"tune.space.{key}: cannot be searched (the study's own settings and the task stay fixed)")
            continue
        if any(other != key and (other.startswith(key + ".") or key.startswith(other + ".")) for other in space):
            errors.append(f"tune.space.{key}: overlaps another searched key (search a section or its keys, not both)")
            continue
        param = _parse_one(key, spec, errors)
        if param is None:
            continue
        if sampler == "grid" and param.kind not in GRID_KINDS:
            errors.append(f"tune.space.{key}: tune.sampler: grid walks only choice and int parameters, not {param.kind}; "
                          f"use a choice list, or sampler tpe/random")
            continue
        for value in _probe_values(param):
            try:
                validate(schema, trial_tree(base, {key: value}), f"tune.space.{key}")
            except RagtuneError as exc:
                reasons = [line.strip()[2:] for line in str(exc).splitlines()[1:] if line.strip().startswith("- ")]
                errors.append(f"tune.space.{key}: the value {value!r} is rejected by the config: "
                              + ("; ".join(reasons) or str(exc)))
        params.append(param)
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        lines = "\n".join(f"  - {e}" for e in errors)
        raise RagtuneError(f"tune.space: {len(errors)} {noun}:\n{lines}")
    return params


def suggest(trial, params: list[Param]) -> dict[str, Any]:
    """One value per parameter from an Optuna ``trial`` (``suggest_float``/``suggest_int``/``suggest_categorical``)."""
    values: dict[str, Any] = {}
    for p in params:
        if p.kind == "choice":
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind in ("int", "log_int"):
            values[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.kind == "log_int")
        else:
            values[p.key] = trial.suggest_float(p.key, float(p.low), float(p.high), step=p.step,
                                                log=p.kind == "log_uniform")
    return values
