"""Tests for ragtune.evaluate.metrics, against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ragtune.errors import RagtuneError
from ragtune.evaluate.metrics import (
    METRIC_DIRECTIONS,
    classification_metrics,
    metric_direction,
    regression_metrics,
)

LABELS = ["体育", "财经", "娱乐"]
# true:  0 0 1 1 2 2
# pred:  0 1 1 1 0 0   -> class 2 ("娱乐") is never predicted
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 0, 0]


def test_classification_hand_computed():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    # 3 of 6 right
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["n"] == 6
    # class 0: predicted 3 times (1 right) -> P=1/3, R=1/2, F1=0.4
    # class 1: predicted 3 times (2 right) -> P=2/3, R=1,   F1=0.8
    # class 2: never predicted             -> P=0 (zero_division), R=0, F1=0
    pc = m["per_class"]
    assert list(pc) == LABELS
    assert pc["体育"] == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "support": 2})
    assert pc["财经"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert pc["娱乐"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["macro_precision"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["macro_recall"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    # micro over all classes == accuracy for single-label classification
    for key in ("micro_precision", "micro_recall", "micro_f1"):
        assert m[key] == pytest.approx(0.5)
    # equal supports -> weighted == macro here
    assert m["weighted_f1"] == pytest.approx(m["macro_f1"])


def test_weighted_differs_from_macro_with_unequal_support():
    # true: 0 0 0 1 ; pred: 0 0 0 0  -> class 0 F1 = 2*0.75*1/1.75 = 6/7, class 1 F1 = 0
    m = classification_metrics([0, 0, 0, 1], [0, 0, 0, 0], ["a", "b"])
    assert m["macro_f1"] == pytest.approx((6 / 7) / 2)
    assert m["weighted_f1"] == pytest.approx((6 / 7) * 3 / 4)
    assert m["per_class"]["b"]["support"] == 1


def test_confusion_matrix_orientation_rows_true_cols_pred():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    cm = m["confusion_matrix"]
    assert cm == [
        [1, 1, 0],  # true 体育: 1 right, 1 predicted as 财经
        [0, 2, 0],  # true 财经: both right
        [2, 0, 0],  # true 娱乐: both predicted as 体育
    ]
    # row sums are the supports
    assert [sum(row) for row in cm] == [m["per_class"][lb]["support"] for lb in LABELS]


def test_labels_absent_everywhere_still_reported():
    m = classification_metrics([0, 1], [0, 1], ["a", "b", "c", "d"])
    assert len(m["confusion_matrix"]) == 4 and all(len(r) == 4 for r in m["confusion_matrix"])
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["accuracy"] == 1.0


def test_plain_python_types_and_json():
    probs = np.array([[0.7, 0.2, 0.1]] * 6, dtype=np.float32)
    m = classification_metrics(np.array(Y_TRUE), np.array(Y_PRED), LABELS, probs=probs)
    json.dumps(m)  # must not raise
    for key, value in m.items():
        if key in ("per_class", "confusion_matrix"):
            continue
        assert type(value) in (int, float), (key, type(value))
    assert type(m["confusion_matrix"][0][0]) is int
    assert type(m["per_class"]["体育"]["support"]) is int


def test_log_loss():
    probs = np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5], [0.8, 0.1, 0.1]])
    m = classification_metrics([0, 1, 2, 1], [0, 1, 2, 0], LABELS, probs=probs)
    expected = -(3 * math.log(0.5) + math.log(0.1)) / 4
    assert m["log_loss"] == pytest.approx(expected)
    assert "log_loss" not in classification_metrics([0, 1], [0, 1], LABELS)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"y_true": [0, 1], "y_pred": [0], "labels": ["a", "b"]}, "must match"),
        ({"y_true": [], "y_pred": [], "labels": ["a", "b"]}, "empty"),
        ({"y_true": [0, 3], "y_pred": [0, 1], "labels": ["a", "b"]}, "class index 3"),
        ({"y_true": [0, 1], "y_pred": [0, 1], "labels": ["a", "a"]}, "unique"),
        ({"y_true": [0, 1], "y_pred": [0, 1], "labels": ["a", "b"], "probs": np.ones((2, 3)) / 3}, "shape"),
        ({"y_true": [0, 1], "y_pred": [0, 1], "labels": ["a", "b"], "probs": np.ones((2, 2))}, "sum to 1"),
    ],
)
def test_classification_bad_input(kwargs, fragment):
    with pytest.raises(RagtuneError, match=fragment):
        classification_metrics(**kwargs)


def test_regression_hand_computed():
    # errors: 0, 0, 1, -1 -> MSE = 2/4 = 0.5, MAE = 0.5
    y_true = [1.0, 2.0, 3.0, 4.0]
    y_pred = [1.0, 2.0, 4.0, 3.0]
    m = regression_metrics(y_true, y_pred)
    assert m["mse"] == pytest.approx(0.5)
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    # SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5, SS_res = 2 -> R2 = 1 - 2/5 = 0.6
    assert m["r2"] == pytest.approx(0.6)
    # both sides are centred {-1.5,-0.5,0.5,1.5} vs {-1.5,-0.5,1.5,0.5}:
    # cov = 2.25+0.25+0.75+0.75 = 4, var = 5 each -> r = 0.8
    assert m["pearson"] == pytest.approx(0.8)
    assert m["n"] == 4
    json.dumps(m)


def test_regression_constant_input_gives_none_pearson():
    m = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert m["pearson"] is None
    assert m["mse"] == pytest.approx(2 / 3)
    m1 = regression_metrics([1.0], [1.5])
    assert m1["pearson"] is None and m1["r2"] is None and m1["mae"] == pytest.approx(0.5)


def test_regression_bad_input():
    with pytest.raises(RagtuneError, match="must match"):
        regression_metrics([1.0, 2.0], [1.0])
    with pytest.raises(RagtuneError, match="NaN"):
        regression_metrics([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(RagtuneError, match="empty"):
        regression_metrics([], [])


def test_metric_directions():
    for name in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "r2", "pearson"):
        assert metric_direction(name) == "max"
    for name in ("mse", "mae", "rmse", "loss", "log_loss"):
        assert metric_direction(name) == "min"
    assert metric_direction("validation_macro_f1") == "max"
    assert metric_direction("train_loss") == "min"
    assert set(METRIC_DIRECTIONS.values()) == {"max", "min"}


def test_every_computed_metric_has_a_direction():
    cls = classification_metrics([0, 1], [0, 1], ["a", "b"], probs=np.eye(2))
    reg = regression_metrics([1.0, 2.0], [1.0, 2.5])
    for key in list(cls) + list(reg):
        if key not in ("n", "per_class", "confusion_matrix"):
            assert key in METRIC_DIRECTIONS, key


def test_unknown_metric_names_valid_choices():
    with pytest.raises(RagtuneError) as info:
        metric_direction("f1_score")
    message = str(info.value)
    assert "'f1_score'" in message
    for name in ("accuracy", "macro_f1", "rmse", "loss"):
        assert name in message
