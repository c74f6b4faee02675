"""Sweeps over hyperparameters and what to read off them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import batches
from .train import fit

__all__ = ["lr_wd_grid", "mark_best_per_column", "steps_to", "grid_edge", "best_lrs",
           "best_lr_table"]


def lr_wd_grid(make_optimizer: Callable, lrs: Sequence[float], wds: Sequence[float], data,
               make_model: Callable[[int], nn.Module], steps: int = 600, batch_size: int = 32,
               seeds: Sequence[int] = (0,), schedule: Callable[[int], float] | None = None
               ) -> tuple[Tensor, Tensor]:
    """Test error and test loss (each averaged over ``seeds``) for every (wd, lr) pair:
    two tensors of shape (len(wds), len(lrs)), rows = weight decays.

    ``make_optimizer(params, lr, wd)`` builds the optimizer, ``make_model(seed)`` the model;
    ``data`` is a :class:`~optlib.book.data.Split`. A run whose loss stops being finite
    counts as error 1 (and loss ``inf``)."""
    err = torch.zeros(len(wds), len(lrs), dtype=torch.float64)
    test_loss = torch.zeros_like(err)
    for i, wd in enumerate(wds):
        for j, lr in enumerate(lrs):
            for seed in seeds:
                model = make_model(seed)
                opt = make_optimizer(model.parameters(), lr, wd)
                history = fit(model, opt, batches(data.x_train, data.y_train, batch_size,
                                                  seed=seed), steps, schedule=schedule)
                with torch.no_grad():
                    out = model(data.x_test)
                    if not history.diverged and torch.isfinite(out).all():
                        err[i, j] += (out.argmax(1) != data.y_test).double().mean()
                        test_loss[i, j] += F.cross_entropy(out, data.y_test).item()
                    else:
                        err[i, j] += 1.0
                        test_loss[i, j] += math.inf
    return err / len(seeds), test_loss / len(seeds)


def mark_best_per_column(ax, values) -> list[int]:
    """Outline, in a heatmap drawn by ``plots.heatmap``, the smallest value of each column
    (the best weight decay for each learning rate); return those rows."""
    from matplotlib.patches import Rectangle

    grid = torch.as_tensor(values, dtype=torch.float64)
    rows = [int(torch.nan_to_num(grid[:, j], nan=math.inf).argmin()) for j in range(grid.shape[1])]
    for j, i in enumerate(rows):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    return rows


def steps_to(losses, target: float, window: int = 25) -> int | None:
    """First step at which the mean of the last ``window`` losses is at or below ``target``."""
    x = np.asarray(losses, dtype=float)
    if len(x) < window:
        return None
    means = np.convolve(x, np.ones(window) / window, mode="valid")
    hit = np.nonzero(means <= target)[0]
    return int(hit[0]) + window if hit.size else None


def grid_edge(lr: float, lrs: Sequence[float]) -> str:
    """``"<"`` when ``lr`` is the lowest rate of the grid ``lrs``, ``">"`` the highest,
    ``" "`` inside it: a best rate at an edge may hide a better one outside the grid.

    Args:
        lr: the chosen learning rate.
        lrs: the grid, lowest first.
    """
    return "<" if lr == lrs[0] else ">" if lr == lrs[-1] else " "


def best_lrs(runs: dict, grids: dict) -> dict:
    """Each optimizer's learning rate with the lowest validation loss in its grid:
    name -> lr.

    Args:
        runs: ``(name, lr) -> History`` (with ``val_loss``).
        grids: name -> the learning rates tried.
    """
    return {name: min(lrs, key=lambda lr: runs[name, lr].val_loss)
            for name, lrs in grids.items()}


def best_lr_table(runs: dict, grids: dict, target: float) -> list[tuple]:
    """Each optimizer at the learning rate of its grid with the lowest validation loss:
    rows ``(name, "lr" with "<"/">" when at the grid's low/high edge, final training loss,
    validation loss, steps to a training loss of target)``, sorted by validation loss.

    Args:
        runs: ``(name, lr) -> History`` (with ``val_loss``).
        grids: name -> the learning rates tried.
        target: the training loss of :func:`steps_to`.
    """
    rows = []
    for name, lr in best_lrs(runs, grids).items():
        r = runs[name, lr]
        hit = steps_to(r.loss, target)
        rows.append((name, f"{lr:.0e}{grid_edge(lr, grids[name])}", r.final(), r.val_loss,
                     hit))
    return sorted(rows, key=lambda row: row[3])
