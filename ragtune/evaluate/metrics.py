"""Evaluation metrics for classification and regression, as plain JSON-ready dicts.

Every function here takes plain data (lists or numpy arrays) and returns a flat ``dict`` whose values
are plain Python ``int``/``float``/``None``/``list``/``dict``, so the result can be written with
``json.dump`` as it is. The numbers come from scikit-learn; this module only chooses the settings,
checks the inputs and names the results.

Classification: which average to read
-------------------------------------
Precision, recall and F1 are defined per class (one class against the rest):

* **precision** of class *c*: of the examples the model *predicted* as *c*, the fraction that really
  are *c*. Low precision = many false alarms.
* **recall** of class *c*: of the examples that really are *c*, the fraction the model found.
  Low recall = many misses.
* **F1**: the harmonic mean of the two, ``2 * P * R / (P + R)``; high only when both are high.

To get one number for the whole task they are averaged in one of three ways:

* **macro**: the plain mean over classes. Every class counts the same whatever its size, so a rare
  class that the model never gets right pulls the score down hard. Use ``macro_f1`` when all classes
  matter equally, and on imbalanced data.
* **micro**: pool every decision, then compute the metric once. For single-label classification over
  all classes, micro precision = micro recall = micro F1 = accuracy. Dominated by the big classes.
* **weighted**: the mean over classes weighted by each class's support (its number of true examples).
  Between the two; like micro it hides a failing rare class.

A class that is never predicted has precision 0 (``zero_division=0``) rather than an error or a
warning; a class with no true examples has recall 0 and support 0.

Regression
----------
``mse`` (mean squared error) punishes big errors most; ``rmse`` is its square root, in the target's
own unit; ``mae`` (mean absolute error) is the typical size of an error and is less swayed by
outliers; ``r2`` is 1 minus the MSE relative to always predicting the mean (1 = perfect, 0 = no
better than the mean, negative = worse); ``pearson`` is the linear correlation between predictions
and targets (ignores scale and offset).

Direction
---------
:data:`METRIC_DIRECTIONS` says for each metric name whether bigger (``"max"``) or smaller
(``"min"``) is better; :func:`metric_direction` looks a name up, for early stopping and tuning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

from ragtune.errors import RagtuneError
from ragtune.evaluate.text_metrics import TEXT_METRIC_DIRECTIONS

__all__ = [
    "METRIC_DIRECTIONS",
    "METRIC_PREFIXES",
    "classification_metrics",
    "metric_direction",
    "regression_metrics",
]

#: For each metric name: ``"max"`` if bigger is better, ``"min"`` if smaller is better.
METRIC_DIRECTIONS: dict[str, str] = {
    # classification
    "accuracy": "max",
    "macro_precision": "max",
    "macro_recall": "max",
    "macro_f1": "max",
    "micro_precision": "max",
    "micro_recall": "max",
    "micro_f1": "max",
    "weighted_precision": "max",
    "weighted_recall": "max",
    "weighted_f1": "max",
    "log_loss": "min",
    # regression
    "mse": "min",
    "mae": "min",
    "rmse": "min",
    "r2": "max",
    "pearson": "max",
    # question answering (SQuAD, 0-100)
    "exact_match": "max",
    "f1": "max",
    # generated text (translation): bleu, chrf, rouge1/2/L (max), perplexity (min)
    **TEXT_METRIC_DIRECTIONS,
    # the training objective
    "loss": "min",
}

#: Split prefixes that :func:`metric_direction` accepts in front of a metric name,
#: e.g. ``"validation_macro_f1"`` or ``"train_loss"``.
METRIC_PREFIXES: tuple[str, ...] = ("train_", "validation_", "test_")


def metric_direction(name: str) -> str:
    """Return ``"max"`` if a bigger value of metric ``name`` is better, ``"min"`` if smaller is.

    ``name`` is one of the keys of :data:`METRIC_DIRECTIONS` (``"accuracy"``, ``"macro_f1"``,
    ``"rmse"``, ``"loss"``, ...), optionally prefixed with the split it was measured on
    (``"validation_macro_f1"``, ``"train_loss"``, ``"test_rmse"``).

    Raises :class:`~ragtune.errors.RagtuneError` for an unknown name; the message lists the valid ones.
    """
    if not isinstance(name, str):
        raise RagtuneError(f"metric name must be a string, got {name!r}")
    key = name.strip()
    if key in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[key]
    for prefix in METRIC_PREFIXES:
        if key.startswith(prefix) and key[len(prefix):] in METRIC_DIRECTIONS:
            return METRIC_DIRECTIONS[key[len(prefix):]]
    valid = ", ".join(sorted(METRIC_DIRECTIONS))
    prefixes = ", ".join(repr(p) for p in METRIC_PREFIXES)
    raise RagtuneError(
        f"unknown metric {name!r}; valid metrics are: {valid} "
        f"(optionally prefixed with {prefixes}, e.g. 'validation_macro_f1')"
    )


def _as_1d(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise RagtuneError(f"{what} must be a flat sequence of numbers, got an array of shape {arr.shape}")
    return arr


def _class_indices(values: Any, what: str, n_labels: int) -> np.ndarray:
    arr = _as_1d(values, what)
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise RagtuneError(f"{what} must hold integer class indices, got values like {arr[0]!r}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = arr[~(np.isfinite(arr) & (arr == np.round(arr)))][0]
            raise RagtuneError(f"{what} must hold integer class indices, got {bad!r}")
    arr = arr.astype(np.int64)
    out_of_range = (arr < 0) | (arr >= n_labels)
    if out_of_range.any():
        raise RagtuneError(
            f"{what} holds class index {int(arr[out_of_range][0])}, but there are only {n_labels} labels "
            f"(valid indices are 0..{n_labels - 1})"
        )
    return arr


def classification_metrics(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: list[str],
    probs: np.ndarray | None = None,
) -> dict:
    """Score single-label classification predictions.

    Args:
        y_true: the true class of each example, as an index into ``labels``.
        y_pred: the predicted class of each example, as an index into ``labels``.
        labels: the class names; ``labels[i]`` is the name of class index ``i``. Every label is
            reported, including ones absent from both ``y_true`` and ``y_pred``.
        probs: optional ``(n, len(labels))`` array of predicted class probabilities (rows sum to 1,
            e.g. a softmax). When given, ``log_loss`` is added.

    Returns:
        A JSON-serialisable dict:

        * ``accuracy``: fraction of examples whose predicted class is the true class.
        * ``macro_precision``, ``macro_recall``, ``macro_f1``: per-class metric, plain mean over classes.
        * ``micro_precision``, ``micro_recall``, ``micro_f1``: computed once over all decisions pooled
          (equal to accuracy here).
        * ``weighted_precision``, ``weighted_recall``, ``weighted_f1``: per-class metric, mean weighted
          by support.
        * ``n``: number of examples.
        * ``per_class``: ``{label: {"precision", "recall", "f1", "support"}}`` where ``support`` is
          the number of true examples of that class.
        * ``confusion_matrix``: ``len(labels) x len(labels)`` list of lists of counts; row ``i`` is
          the true class ``labels[i]``, column ``j`` the predicted class ``labels[j]``; so the
          diagonal holds the correct predictions and row sums are the supports.
        * ``log_loss`` (only when ``probs`` is given): mean negative log-probability of the true
          class (cross-entropy); 0 is perfect, ``log(len(labels))`` is a uniform guess.

        Averages follow ``zero_division=0``: a class never predicted gets precision 0, a class
        never present gets recall 0, with no warning. See the module docstring for which average
        to read.

    Raises:
        RagtuneError: empty input, length mismatch, duplicate labels, an index outside ``labels``,
            or ``probs`` of the wrong shape or not probabilities.
    """
    labels = [str(label) for label in labels]
    k = len(labels)
    if k == 0:
        raise RagtuneError("labels is empty; classification needs at least one class name")
    if len(set(labels)) != k:
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        raise RagtuneError(f"labels must be unique, but these appear more than once: {dupes}")
    t = _class_indices(y_true, "y_true", k)
    p = _class_indices(y_pred, "y_pred", k)
    if t.shape[0] != p.shape[0]:
        raise RagtuneError(f"y_true has {t.shape[0]} items but y_pred has {p.shape[0]}; they must match")
    n = int(t.shape[0])
    if n == 0:
        raise RagtuneError("no examples to score: y_true and y_pred are empty")

    idx = list(range(k))
    out: dict[str, Any] = {"accuracy": float(skm.accuracy_score(t, p))}
    for average in ("macro", "micro", "weighted"):
        prec, rec, f1, _ = skm.precision_recall_fscore_support(
            t, p, labels=idx, average=average, zero_division=0
        )
        out[f"{average}_precision"] = float(prec)
        out[f"{average}_recall"] = float(rec)
        out[f"{average}_f1"] = float(f1)
    out["n"] = n

    prec, rec, f1, support = skm.precision_recall_fscore_support(
        t, p, labels=idx, average=None, zero_division=0
    )
    out["per_class"] = {
        label: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    out["confusion_matrix"] = [[int(v) for v in row] for row in skm.confusion_matrix(t, p, labels=idx)]

    if probs is not None:
        pr = np.asarray(probs, dtype=np.float64)
        if pr.shape != (n, k):
            raise RagtuneError(
                f"probs must have shape (n_examples, n_labels) = ({n}, {k}), got {pr.shape}"
            )
        if not np.all(np.isfinite(pr)) or pr.min() < 0 or pr.max() > 1 + 1e-6:
            raise RagtuneError("probs must be probabilities in [0, 1] (apply softmax to logits first)")
        sums = pr.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-3):
            worst = float(sums[np.argmax(np.abs(sums - 1.0))])
            raise RagtuneError(
                f"each row of probs must sum to 1 (apply softmax to logits first); a row sums to {worst:.4g}"
            )
        pr = np.clip(pr, 0.0, 1.0)
        pr = pr / pr.sum(axis=1, keepdims=True)  # remove float32 rounding so sklearn does not warn
        out["log_loss"] = float(skm.log_loss(t, pr, labels=idx))
    return out


def _finite_floats(values: Any, what: str) -> np.ndarray:
    arr = _as_1d(values, what)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise RagtuneError(f"{what} must hold numbers: {exc}") from None
    if not np.all(np.isfinite(arr)):
        raise RagtuneError(f"{what} contains NaN or infinite values; every target and prediction must be a finite number")
    return arr


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """Score regression predictions.

    Args:
        y_true: the true target values.
        y_pred: the predicted values, same length.

    Returns:
        A JSON-serialisable dict:

        * ``mse``: mean squared error, ``mean((y_pred - y_true) ** 2)``; lower is better.
        * ``mae``: mean absolute error, ``mean(|y_pred - y_true|)``; lower is better.
        * ``rmse``: square root of ``mse``, in the unit of the target; lower is better.
        * ``r2``: coefficient of determination, ``1 - SS_res / SS_tot``; 1 is perfect, 0 matches
          always predicting the mean of ``y_true``, negative is worse than that. When ``y_true`` is
          constant it is 1.0 for a perfect fit and 0.0 otherwise (scikit-learn's convention);
          ``None`` with fewer than 2 examples.
        * ``pearson``: Pearson correlation of predictions and targets, in [-1, 1]; ``None`` when
          it is undefined (fewer than 2 examples, or either side constant).
        * ``n``: number of examples.

    Raises:
        RagtuneError: empty input, length mismatch, or a non-finite value.
    """
    t = _finite_floats(y_true, "y_true")
    p = _finite_floats(y_pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise RagtuneError(f"y_true has {t.shape[0]} items but y_pred has {p.shape[0]}; they must match")
    n = int(t.shape[0])
    if n == 0:
        raise RagtuneError("no examples to score: y_true and y_pred are empty")

    mse = float(skm.mean_squared_error(t, p))
    r2: float | None = float(skm.r2_score(t, p)) if n >= 2 else None
    pearson: float | None = None
    if n >= 2 and np.ptp(t) > 0 and np.ptp(p) > 0:
        value = float(np.corrcoef(t, p)[0, 1])
        pearson = value if math.isfinite(value) else None
    return {
        "mse": mse,
        "mae": float(skm.mean_absolute_error(t, p)),
        "rmse": math.sqrt(mse),
        "r2": r2,
        "pearson": pearson,
        "n": n,
    }
