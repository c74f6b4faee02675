"""One consistent look for the book's figures: curves, sweeps and heatmaps.

Every helper takes an optional ``ax`` (a new figure is made when it is ``None``) and
returns the ``Axes``, so a chapter can add to a plot or lay several out side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

STYLE = {
    "figure.figsize": (6.0, 3.8),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "figure.constrained_layout.use": True,
}


def apply_style() -> None:
    """Set matplotlib's defaults to the book's style (called by ``optlib.book.setup``)."""
    mpl.rcParams.update(STYLE)


def _ax(ax):
    if ax is None:
        _, ax = plt.subplots()
    return ax


def _xy(values):
    """``ys`` or ``(xs, ys)`` → numpy arrays (xs defaults to 0, 1, 2, ...)."""
    if isinstance(values, tuple) and len(values) == 2:
        xs, ys = values
    else:
        ys = values
        xs = None
    ys = np.asarray([float(v) for v in ys], dtype=float)
    xs = np.arange(len(ys)) if xs is None else np.asarray([float(v) for v in xs], dtype=float)
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length: {len(xs)} != {len(ys)}")
    return xs, ys


def curves(series: Mapping, ax=None, xlabel: str = "step", ylabel: str = "loss",
           logy: bool = False, logx: bool = False, title: str | None = None, **line_kwargs):
    """Plot ``{label: ys}`` or ``{label: (xs, ys)}`` as lines with a legend."""
    ax = _ax(ax)
    for label, values in series.items():
        xs, ys = _xy(values)
        ax.plot(xs, ys, label=str(label), **line_kwargs)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(series) > 1 or any(str(k) for k in series):
        ax.legend()
    return ax


def sweep(xs: Sequence, series: Mapping, ax=None, logx: bool = True, logy: bool = False,
          xlabel: str = "learning rate", ylabel: str = "final loss", title: str | None = None):
    """A hyperparameter sweep: one marked line per ``{label: ys}`` over the shared ``xs``.

    Non-finite values (diverged runs) are left out of the line and marked with an x at
    the top of the axes, so a reader sees where a setting blew up.
    """
    ax = _ax(ax)
    xs = np.asarray([float(x) for x in xs], dtype=float)
    diverged = []
    for i, (label, ys) in enumerate(series.items()):
        ys = np.asarray([float(y) for y in ys], dtype=float)
        if len(ys) != len(xs):
            raise ValueError(f"series {label!r} has {len(ys)} values for {len(xs)} xs")
        color = PALETTE[i % len(PALETTE)]
        ok = np.isfinite(ys)
        ax.plot(xs[ok], ys[ok], marker="o", markersize=4, label=str(label), color=color)
        diverged.extend((x, color) for x in xs[~ok])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if diverged:
        top = ax.get_ylim()[1]
        for x, color in diverged:
            ax.plot([x], [top], marker="x", color=color, clip_on=False, linestyle="none")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def heatmap(values, xticklabels: Sequence, yticklabels: Sequence, ax=None,
            xlabel: str | None = None, ylabel: str | None = None, fmt: str = ".2f",
            cmap: str = "viridis_r", title: str | None = None, colorbar: bool = True,
            vmin: float | None = None, vmax: float | None = None):
    """A grid of numbers (rows ↔ ``yticklabels``, columns ↔ ``xticklabels``), each cell
    annotated with its value; non-finite cells (diverged runs) are grey and marked "div"."""
    ax = _ax(ax)
    grid = np.asarray(values, dtype=float)
    if grid.ndim != 2 or grid.shape != (len(yticklabels), len(xticklabels)):
        raise ValueError(
            f"values has shape {grid.shape}, expected ({len(yticklabels)}, {len(xticklabels)}) "
            "(rows = yticklabels, columns = xticklabels)"
        )
    masked = np.ma.masked_invalid(grid)
    cm = mpl.colormaps[cmap].with_extremes(bad="#bbbbbb")
    image = ax.imshow(masked, cmap=cm, aspect="auto", vmin=vmin, vmax=vmax)
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            text = format(v, fmt) if math.isfinite(v) else "div"
            dark = math.isfinite(v) and ((v > middle) == cmap.endswith("_r"))
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(xticklabels)), [str(t) for t in xticklabels])
    ax.set_yticks(range(len(yticklabels)), [str(t) for t in yticklabels])
    ax.grid(False)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax)
    return ax


def smooth(values, k: int = 25) -> np.ndarray:
    """Moving average over windows of ``k`` consecutive values (only full windows, so
    ``len(values) - k + 1`` values; entry ``i`` ends at value ``i + k - 1``).

    Args:
        values: a sequence of numbers.
        k: the window.
    """
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    x = np.asarray(values, dtype=float)
    return np.convolve(x, np.ones(k) / k, mode="valid")


def distance_and_steps(paths: Mapping, step_ylim: tuple[float, float] = (1e-3, 5)):
    """Two panels for runs on a one-dimensional problem whose minimum is at 0: the
    distance ``|x_t|`` against the step (left), and the step length ``|x_t − x_{t−1}|``
    on log-log axes (right), one line per path.

    Args:
        paths: label -> the points ``x_0 .. x_T`` of a run (a 1-D tensor or sequence, as
            :func:`optlib.book.surfaces.run_1d` returns).
        step_ylim: the limits of the step length's axis.

    Returns:
        The two ``Axes`` (distance, step length), to add reference lines to.
    """
    _, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    paths = {k: np.asarray([float(v) for v in path], dtype=float) for k, path in paths.items()}
    curves({k: np.abs(x) for k, x in paths.items()}, ax=left,
           ylabel=r"distance to the minimum $|x|$")
    curves({k: (np.arange(1, len(x)), np.abs(np.diff(x))) for k, x in paths.items()},
           ax=right, logx=True, logy=True, ylabel=r"step length $|x_t - x_{t-1}|$")
    right.set_ylim(*step_ylim)
    return left, right
