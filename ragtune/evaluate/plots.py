"""Plots for training runs, evaluation results and data reports, written as PNG files.

Every function takes plain data and an output path, creates the parent folders, writes the image
and returns the path as a :class:`pathlib.Path`.

The figures are drawn with matplotlib's Agg (raster, no display) canvas directly, without pyplot:
nothing is registered in pyplot's list of open figures, the process-wide backend is left alone, and
each figure is dropped when the function returns. Font settings are applied only for the duration
of each call (``matplotlib.rc_context``), so a caller's own matplotlib settings are untouched.

Chinese, Japanese and Korean labels
-----------------------------------
Label names can be any text. Matplotlib's default font (DejaVu Sans) has no CJK glyphs, so each
plot adds an installed CJK font (Noto Sans CJK, Source Han Sans, WenQuanYi, ...) as a *fallback*
family after the usual one: Latin text keeps its normal look and CJK characters come from the
fallback. If no CJK font is installed, one warning says so; install one with
``apt-get install fonts-noto-cjk`` (Debian/Ubuntu).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ragtune.errors import RagtuneError

__all__ = [
    "CJK_FONT_CANDIDATES",
    "find_cjk_font",
    "plot_class_balance",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_length_histogram",
    "plot_step_loss",
]

#: Font family names tried, in order, for CJK text. Sans-serif first, Simplified Chinese first.
CJK_FONT_CANDIDATES: tuple[str, ...] = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK HK",
    "Noto Sans CJK KR",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "Source Han Sans",
    "Noto Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "Arial Unicode MS",
    "Noto Serif CJK SC",
    "Noto Serif CJK JP",
    "AR PL UMing CN",
    "AR PL UKai CN",
)

# File names of CJK fonts, for when matplotlib's font cache predates the font's installation.
_CJK_FILE_PATTERN = re.compile(
    r"(notosanscjk|notoserifcjk|sourcehansans|notosanssc|wqy|wenquanyi|droidsansfallback|"
    r"msyh|simhei|pingfang|hiragino|arialuni|uming|ukai)",
    re.IGNORECASE,
)

_CJK_WARNED = False

# Longer label names are cut to this many characters (ending in "…") on plot axes.
_LABEL_MAX_CHARS = 28


@lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """Return the family name of an installed font with CJK glyphs, or ``None`` if there is none.

    Looks through :data:`CJK_FONT_CANDIDATES` in matplotlib's font list. If none is there (the font
    may have been installed after matplotlib cached its font list), the system font folders are
    scanned once for CJK font files, which are added to matplotlib's font manager for this process.
    The result is cached for the life of the process.
    """
    def known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((candidate for candidate in CJK_FONT_CANDIDATES if candidate in names), None)

    found = known()
    if found is not None:
        return found
    try:
        files = font_manager.findSystemFonts()
    except Exception:  # pragma: no cover - depends on the system's font tools
        files = []
    added = False
    for path in files:
        if _CJK_FILE_PATTERN.search(os.path.basename(path)):
            try:
                font_manager.fontManager.addfont(path)
                added = True
            except Exception:  # pragma: no cover - unreadable font file
                continue
    return known() if added else None


def _font_rc() -> dict[str, Any]:
    """rcParams for one plot: the current font family plus a CJK fallback (warns once if none)."""
    global _CJK_WARNED
    family = matplotlib.rcParams["font.family"]
    family = [family] if isinstance(family, str) else list(family)
    cjk = find_cjk_font()
    if cjk is None and not _CJK_WARNED:
        _CJK_WARNED = True
        warnings.warn(
            "ragtune plots: no CJK font found, so Chinese/Japanese/Korean label text will show "
            "as empty boxes. Install one, e.g. the Debian/Ubuntu package fonts-noto-cjk "
            "(apt-get install fonts-noto-cjk).",
            stacklevel=3,
        )
    elif cjk is not None and cjk not in family:
        family.append(cjk)
    return {"font.family": family}


@contextmanager
def _figure(path: str | os.PathLike, figsize: tuple[float, float]) -> Iterator[tuple[Figure, Path]]:
    """A fresh Agg figure under the plot font settings; saved to ``path`` as the block ends."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(_font_rc()):
        fig = Figure(figsize=figsize, dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        try:
            yield fig, out
            with warnings.catch_warnings():  # a label with a character no installed font has: drawn as a box
                warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
                fig.savefig(out, dpi=120, format=_format_of(out), bbox_inches="tight", pad_inches=0.15)
        finally:
            fig.clear()


def _format_of(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return ext if ext in {"png", "svg", "pdf", "jpg", "jpeg"} else "png"


def _short(label: Any, max_chars: int = _LABEL_MAX_CHARS) -> str:
    text = str(label)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def plot_confusion_matrix(
    cm: list[list[int]],
    labels: list[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix",
    normalize: bool = False,
) -> Path:
    """Draw a confusion matrix as an annotated heat map.

    Args:
        cm: square matrix of counts, ``cm[i][j]`` = number of examples of true class ``labels[i]``
            predicted as ``labels[j]`` (as returned by ``classification_metrics(...)["confusion_matrix"]``).
        labels: class names in index order. Long names are shortened with "…"; any script works.
        path: output image file (PNG unless the suffix says svg/pdf/jpg).
        title: figure title.
        normalize: if true, each row is divided by its sum, so a cell shows the fraction of that
            true class predicted as each class (the diagonal is per-class recall). Rows with no
            examples stay 0.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    matrix = np.asarray(cm, dtype=np.float64)
    k = len(labels)
    if k == 0:
        raise RagtuneError("labels is empty; a confusion matrix needs at least one class")
    if matrix.shape != (k, k):
        raise RagtuneError(f"confusion matrix must be {k}x{k} to match {k} labels, got shape {matrix.shape}")
    counts = matrix
    if normalize:
        sums = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)

    side = min(max(5.0, 0.55 * k + 3.0), 30.0)
    with _figure(path, (side + 1.2, side)) as (fig, out):
        ax = fig.add_subplot()
        vmax = 1.0 if normalize else max(float(matrix.max()), 1.0)
        image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
        colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if not normalize:
            colorbar.locator = MaxNLocator(integer=True)
            colorbar.update_ticks()

        names = [_short(label) for label in labels]
        ticks = np.arange(k)
        tick_size = 10 if k <= 12 else max(5, int(10 - (k - 12) / 4))
        ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor", fontsize=tick_size)
        ax.set_yticks(ticks, names, fontsize=tick_size)
        ax.set(xlabel="Predicted label", ylabel="True label", title=title)

        if k <= 40:
            cell_size = 11 if k <= 6 else max(5, int(11 - (k - 6) / 4))
            threshold = vmax / 2.0
            for i in range(k):
                for j in range(k):
                    value = matrix[i, j]
                    text = f"{value:.2f}" if normalize else f"{int(round(counts[i, j]))}"
                    if normalize and k <= 15:
                        text += f"\n({int(round(counts[i, j]))})"
                    ax.text(
                        j, i, text, ha="center", va="center", fontsize=cell_size,
                        color="white" if value > threshold else "black",
                    )
    return out


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(history):
        value = row.get(key)
        if _finite(value):
            epoch = row.get("epoch")
            xs.append(float(epoch) if _finite(epoch) else float(i + 1))
            ys.append(float(value))
    return xs, ys


_NOT_METRICS = {"epoch", "step", "steps", "global_step", "lr", "learning_rate", "time", "seconds", "elapsed"}


def plot_curves(
    history: list[dict],
    path: str | os.PathLike,
    metrics: Sequence[str] | None = None,
) -> Path:
    """Draw training curves per epoch: a loss panel and a metric panel.

    Args:
        history: one dict per epoch, e.g. ``{"epoch": 1, "train_loss": 0.9, "validation_loss": 0.8,
            "validation_accuracy": 0.7, "lr": 0.001}``. Keys may be missing from some epochs (that
            point is skipped); ``None``/NaN values are skipped too. Without ``"epoch"`` the position
            in the list (from 1) is used.
        path: output image file.
        metrics: which metrics to draw in the right panel, by key (``"validation_macro_f1"``) or by
            bare name (``"macro_f1"``, looked up as ``"validation_<name>"`` then as given). Default:
            every numeric ``validation_*`` key that is not a loss.

    The left panel shows every key ending in ``loss`` (``train_loss``, ``validation_loss``, ...).
    A single epoch is drawn as markers.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        RagtuneError: empty ``history``, or a requested metric that no epoch has.
    """
    if not history:
        raise RagtuneError("history is empty; there are no epochs to plot")
    keys = list(dict.fromkeys(key for row in history for key in row))  # in order of first appearance
    numeric = [k for k in keys if any(_finite(row.get(k)) for row in history)]
    loss_keys = [k for k in numeric if k.endswith("loss") and not k.endswith("log_loss")]

    if metrics is None:
        metric_keys = [
            k for k in numeric
            if k.startswith("validation_") and k not in loss_keys and k not in _NOT_METRICS
        ]
    else:
        metric_keys = []
        for name in metrics:
            for candidate in (f"validation_{name}", name):
                if candidate in numeric:
                    metric_keys.append(candidate)
                    break
            else:
                available = [k for k in numeric if k not in _NOT_METRICS]
                raise RagtuneError(
                    f"metric {name!r} is not in the training history; available keys: {available}"
                )

    with _figure(path, (12.0, 4.8)) as (fig, out):
        ax_loss, ax_metric = fig.subplots(1, 2)
        for ax, keys_, title, empty in (
            (ax_loss, loss_keys, "Loss", "no loss recorded"),
            (ax_metric, metric_keys, "Validation metrics", "no validation metrics recorded"),
        ):
            for key in keys_:
                xs, ys = _series(history, key)
                ax.plot(xs, ys, marker="o", markersize=4 if len(xs) > 1 else 7, label=key)
            ax.set(title=title, xlabel="epoch")
            ax.grid(True, alpha=0.3)
            if keys_:
                ax.legend(fontsize=9)
                epochs = sorted({x for key in keys_ for x in _series(history, key)[0]})
                if epochs and len(epochs) <= 20 and all(float(e).is_integer() for e in epochs):
                    ax.set_xticks(epochs)
            else:
                ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="gray")
    return out


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average (no lag); near the ends it averages the points that exist."""
    if window <= 1 or values.size < 2:
        return values.copy()
    kernel = np.ones(window)
    sums = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones_like(values), kernel, mode="same")
    return sums / counts


def plot_step_loss(
    steps: Sequence[int],
    losses: Sequence[float],
    path: str | os.PathLike,
    *,
    window: int | None = None,
) -> Path:
    """Draw the training loss at every optimisation step, raw (faint) and smoothed (bold).

    Args:
        steps: the step numbers.
        losses: the loss at each step, same length. NaN/inf points are left out.
        path: output image file.
        window: number of points in the centred moving average drawn as the smoothed line
            (1 = no smoothing). By default about 1/20 of the points, at least 1.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        RagtuneError: empty input, a length mismatch, or ``window`` below 1.
    """
    x = np.asarray(steps, dtype=np.float64).reshape(-1)
    y = np.asarray(losses, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise RagtuneError(f"steps has {x.size} items but losses has {y.size}; they must match")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0:
        raise RagtuneError("no finite step losses to plot")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if window is None:
        window = max(1, x.size // 20) | 1  # odd, so the average is centred on each point
    if int(window) < 1:
        raise RagtuneError(f"window must be at least 1, got {window}")
    window = int(window)

    with _figure(path, (9.0, 4.5)) as (fig, out):
        ax = fig.add_subplot()
        ax.plot(x, y, color="tab:blue", alpha=0.3, linewidth=1, marker="o" if x.size == 1 else None,
                label="loss")
        if x.size > 1 and window > 1:
            ax.plot(x, _moving_average(y, window), color="tab:blue", linewidth=2,
                    label=f"smoothed (moving average of {window})")
        ax.set(xlabel="step", ylabel="training loss", title="Training loss per step")
        ax.grid(True, alpha=0.3)
        ax.legend()
    return out


def plot_class_balance(counts: dict[str, dict[str, int]], path: str | os.PathLike) -> Path:
    """Draw the number of examples per label and split as grouped bars.

    Args:
        counts: ``{split: {label: count}}``, e.g. ``{"train": {"体育": 120, "财经": 80},
            "validation": {"体育": 15, "财经": 10}}``. One group of bars per label (in order of first
            appearance), one bar per split (in the dict's order); a label missing from a split
            counts 0.
        path: output image file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        RagtuneError: no splits or no labels.
    """
    if not counts:
        raise RagtuneError("counts is empty; expected {split: {label: count}}")
    splits = list(counts)
    for split in splits:
        if not isinstance(counts[split], Mapping):
            raise RagtuneError(
                f"counts[{split!r}] must be a {{label: count}} mapping, got {type(counts[split]).__name__}"
            )
    labels = list(dict.fromkeys(label for split in splits for label in counts[split]))
    if not labels:
        raise RagtuneError("counts has no labels; expected {split: {label: count}}")

    n_labels, n_splits = len(labels), len(splits)
    width = 0.8 / n_splits
    with _figure(path, (min(max(6.0, 0.35 * n_labels * max(n_splits, 2) + 2.0), 30.0), 5.0)) as (fig, out):
        ax = fig.add_subplot()
        centers = np.arange(n_labels)
        annotate = n_labels * n_splits <= 40
        for s, split in enumerate(splits):
            values = [int(counts[split].get(label, 0) or 0) for label in labels]
            total = sum(values)
            bars = ax.bar(centers - 0.4 + width * (s + 0.5), values, width, label=f"{split} (n={total})")
            if annotate:
                ax.bar_label(bars, fontsize=8, padding=1)
        ax.set_xticks(centers, [_short(label) for label in labels],
                      rotation=45 if n_labels > 4 or max(len(str(lb)) for lb in labels) > 10 else 0,
                      ha="right" if n_labels > 4 else "center", rotation_mode="anchor")
        ax.set(ylabel="examples", title="Examples per label and split")
        ax.grid(True, axis="y", alpha=0.3)
        ax.margins(y=0.1)
        ax.legend()
    return out


def plot_length_histogram(
    lengths: dict[str, Sequence[int]],
    path: str | os.PathLike,
    *,
    unit: str = "tokens",
) -> Path:
    """Draw the distribution of text lengths per split as overlaid histograms.

    Args:
        lengths: ``{split: [length of each example]}``; empty splits are skipped.
        path: output image file.
        unit: what the length counts, for the axis label (``"tokens"`` or ``"characters"``).

    The y axis is the fraction of the split's examples, so splits of different sizes compare
    directly. The legend gives each split's size, median and 95th percentile.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        RagtuneError: no split has any length.
    """
    data: dict[str, np.ndarray] = {}
    for split, values in lengths.items():
        arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
        arr = arr[np.isfinite(arr)]
        if arr.size:
            data[split] = arr
    if not data:
        raise RagtuneError("lengths has no values; expected {split: [length, ...]} with at least one length")

    lo = min(float(a.min()) for a in data.values())
    hi = max(float(a.max()) for a in data.values())
    if hi <= lo:
        hi = lo + 1.0
    span = hi - lo
    n_bins = int(min(50, max(5, span + 1))) if float(lo).is_integer() and float(hi).is_integer() else 30
    bins = np.linspace(lo, hi, n_bins + 1)

    with _figure(path, (9.0, 4.5)) as (fig, out):
        ax = fig.add_subplot()
        for split, arr in data.items():
            median = float(np.median(arr))
            p95 = float(np.percentile(arr, 95))
            ax.hist(
                arr, bins=bins, weights=np.full(arr.size, 1.0 / arr.size), histtype="stepfilled",
                alpha=0.4, linewidth=1.2,
                label=f"{split} (n={arr.size}, median {round(median, 1):g}, p95 {round(p95, 1):g})",
            )
        ax.set(xlabel=f"length ({unit})", ylabel="fraction of examples", title=f"Length distribution ({unit})")
        ax.grid(True, alpha=0.3)
        ax.legend()
    return out
