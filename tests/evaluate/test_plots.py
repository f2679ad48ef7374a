"""Tests for ragtune.evaluate.plots: files are written, CJK labels render, edge cases work."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from ragtune.errors import RagtuneError
from ragtune.evaluate import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CJK_LABELS = ["体育", "财经", "娱乐"]
HAS_CJK_FONT = plots.find_cjk_font() is not None


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def _history(epochs: int) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "validation_loss": 1.1 / e,
            "validation_accuracy": 1 - 1 / (e + 1),
            "validation_macro_f1": 0.9 - 1 / (e + 2),
            "lr": 1e-3 / e,
        }
        for e in range(1, epochs + 1)
    ]


def test_confusion_matrix_png_and_parent_dirs(tmp_path):
    out = plots.plot_confusion_matrix([[1, 1, 0], [0, 2, 0], [2, 0, 0]], ["a", "b", "c"], tmp_path / "x" / "y" / "cm.png")
    assert isinstance(out, Path) and out == tmp_path / "x" / "y" / "cm.png"
    assert _is_png(out)


def test_confusion_matrix_normalized_many_long_labels(tmp_path):
    k = 12
    labels = [f"类别{i} a rather long label name number {i}" for i in range(k)]
    cm = np.random.default_rng(0).integers(0, 30, (k, k)).tolist()
    cm[3] = [0] * k  # a class with no examples must not divide by zero
    out = plots.plot_confusion_matrix(cm, labels, str(tmp_path / "cm.png"), title="混淆矩阵", normalize=True)
    assert _is_png(out)


def test_confusion_matrix_shape_mismatch(tmp_path):
    with pytest.raises(RagtuneError, match="3x3"):
        plots.plot_confusion_matrix([[1, 0], [0, 1]], CJK_LABELS, tmp_path / "cm.png")


@pytest.mark.skipif(not HAS_CJK_FONT, reason="no CJK font installed (apt-get install fonts-noto-cjk)")
def test_chinese_labels_no_missing_glyph_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_confusion_matrix([[3, 1, 0], [0, 2, 1], [1, 0, 4]], CJK_LABELS, tmp_path / "cm.png", title="混淆矩阵")
        plots.plot_class_balance({"train": {lb: 10 for lb in CJK_LABELS}, "验证": {"体育": 2}}, tmp_path / "bal.png")
        plots.plot_curves([{"epoch": 1, "train_loss": 1.0, "validation_准确率": 0.5}], tmp_path / "c.png")
        plots.plot_length_histogram({"训练": [1, 2, 3]}, tmp_path / "len.png", unit="字")
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "missing from font" in m or "Glyph" in m], messages
    assert not [m for m in messages if "CJK" in m], messages


def test_warns_once_naming_package_when_no_cjk_font(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "find_cjk_font", lambda: None)
    monkeypatch.setattr(plots, "_CJK_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], tmp_path / "a.png")
        plots.plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], tmp_path / "b.png")
    ours = [str(w.message) for w in caught if "fonts-noto-cjk" in str(w.message)]
    assert len(ours) == 1


def test_curves_multi_epoch_and_selected_metrics(tmp_path):
    assert _is_png(plots.plot_curves(_history(5), tmp_path / "curves.png"))
    assert _is_png(plots.plot_curves(_history(5), tmp_path / "sel.png", metrics=["macro_f1", "validation_accuracy"]))


def test_curves_single_epoch(tmp_path):
    assert _is_png(plots.plot_curves(_history(1), tmp_path / "one.png"))


def test_curves_missing_keys(tmp_path):
    history = _history(4)
    del history[1]["validation_loss"]
    del history[2]["epoch"]
    history[3]["validation_accuracy"] = None
    history.append({"epoch": 5, "train_loss": 0.1})  # no validation at all this epoch
    assert _is_png(plots.plot_curves(history, tmp_path / "gaps.png"))
    # only train loss, no validation metrics anywhere
    assert _is_png(plots.plot_curves([{"train_loss": 0.5}, {"train_loss": 0.4}], tmp_path / "train_only.png"))


def test_curves_errors(tmp_path):
    with pytest.raises(RagtuneError, match="empty"):
        plots.plot_curves([], tmp_path / "x.png")
    with pytest.raises(RagtuneError, match="'bleu'"):
        plots.plot_curves(_history(2), tmp_path / "x.png", metrics=["bleu"])


def test_step_loss(tmp_path):
    steps = list(range(200))
    losses = list(np.exp(-np.arange(200) / 50) + np.random.default_rng(0).normal(0, 0.05, 200))
    losses[10] = float("nan")  # skipped, not fatal
    assert _is_png(plots.plot_step_loss(steps, losses, tmp_path / "steps.png"))
    assert _is_png(plots.plot_step_loss([1], [0.7], tmp_path / "one.png"))
    with pytest.raises(RagtuneError, match="must match"):
        plots.plot_step_loss([1, 2], [0.7], tmp_path / "bad.png")


def test_moving_average_is_centred_and_keeps_constants():
    flat = plots._moving_average(np.full(10, 2.0), 5)
    np.testing.assert_allclose(flat, 2.0)
    ramp = plots._moving_average(np.arange(10, dtype=float), 3)
    np.testing.assert_allclose(ramp[1:-1], np.arange(1, 9))  # no lag in the interior


def test_class_balance(tmp_path):
    counts = {
        "train": {"体育": 120, "财经": 80, "娱乐": 30},
        "validation": {"体育": 15, "财经": 10},  # a label missing from a split counts 0
        "test": {"体育": 14, "财经": 11, "娱乐": 4},
    }
    assert _is_png(plots.plot_class_balance(counts, tmp_path / "balance.png"))
    with pytest.raises(RagtuneError):
        plots.plot_class_balance({}, tmp_path / "empty.png")


def test_length_histogram(tmp_path):
    rng = np.random.default_rng(0)
    lengths = {"train": rng.poisson(50, 500).tolist(), "validation": rng.poisson(55, 50), "test": []}
    assert _is_png(plots.plot_length_histogram(lengths, tmp_path / "len.png"))
    assert _is_png(plots.plot_length_histogram({"train": [7, 7, 7]}, tmp_path / "const.png", unit="characters"))
    with pytest.raises(RagtuneError):
        plots.plot_length_histogram({"train": []}, tmp_path / "none.png")


def test_no_pyplot_figures_left_open(tmp_path):
    import matplotlib._pylab_helpers as helpers

    before = helpers.Gcf.get_num_fig_managers()
    plots.plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], tmp_path / "cm.png")
    plots.plot_curves(_history(2), tmp_path / "c.png")
    assert helpers.Gcf.get_num_fig_managers() == before
