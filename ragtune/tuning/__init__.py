"""Hyperparameter tuning on Optuna (steps 5 and 6): ``space`` parses ``tune.space``, ``study`` runs
the trials (each a ragtune run), ``results`` writes what a study leaves behind."""

from ragtune.tuning.results import TuneResult
from ragtune.tuning.space import Param, parse_space
from ragtune.tuning.study import tune

__all__ = ["Param", "TuneResult", "parse_space", "tune"]
