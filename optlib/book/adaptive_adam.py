"""Deprecated: the helpers of chapter 5, kept while it moves to the
concept modules of ``optlib.book`` (``compare``, ``train``, ``inspect``, ``noise``,
``surfaces``, ``sweeps``, ``optimizers``, ``data``). New code imports from those
modules; this module only re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from . import train as _train
from .compare import side_by_side
from .data import noisy_labels  # noqa: F401
from .inspect import effective_lr  # noqa: F401
from .noise import decay_under_noise  # noqa: F401
from .optimizers import make_adam_l2, make_adamw_paper, make_adamw_torch  # noqa: F401
from .surfaces import run_1d  # noqa: F401
from .sweeps import lr_wd_grid, mark_best_per_column  # noqa: F401
from .train import Rule  # noqa: F401


def compare(make_model: Callable[[], nn.Module], x: Tensor, y: Tensor, rule: Rule,
            optimizers: dict[str, Callable], steps: int = 20, batch_size: int = 32,
            seed: int = 0) -> dict[str, float]:
    """:func:`optlib.book.compare.side_by_side` with ``rule`` first; the gaps of the
    optimizers from it."""
    gaps = side_by_side(make_model, x, y, {None: rule, **optimizers}, steps=steps,
                        batch_size=batch_size, seed=seed)
    return {name: gaps[name] for name in optimizers}


def fit(model: nn.Module, optimizer, batches: Iterable, steps: int, *, loss_scale: float = 1.0,
        hyper: dict | None = None, schedule: Callable[[int], float] | None = None) -> list[float]:
    """:func:`optlib.book.train.fit`'s losses, padded with ``inf`` after a divergence."""
    if schedule is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError("schedule needs a torch optimizer, not a rule")
    history = _train.fit(model, optimizer, batches, steps, loss_scale=loss_scale, hyper=hyper,
                         schedule=schedule, progress=False)
    losses = history.loss[:-1] if history.diverged else history.loss
    return losses + [math.inf] * (steps - len(losses))
