"""Hyperparameter tuning on Optuna (steps 5 and 6): ``space`` parses ``tune.space``, ``study`` runs
the trials (each a ragtune run), ``results`` writes what a study leaves behind."""

from ragtune.tune.results import TuneResult
from ragtune.tune.space import Param, parse_space
from ragtune.tune.study import tune

__all__ = ["Param", "TuneResult", "parse_space", "tune"]
