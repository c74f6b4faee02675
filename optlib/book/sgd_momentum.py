"""Deprecated: the helpers of chapter 2, kept while it moves to the
concept modules of ``optlib.book`` (``rates``, ``noise``, ``compare``, ``train``). New
code imports from those modules; this module only re-exports them, plus the epoch loop
that chapter 2 still uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .compare import side_by_side
from .noise import minibatch_noise, per_example_grads, predicted_noise, sharpness  # noqa: F401
from .rates import (  # noqa: F401
    gd_rate,
    heavy_ball_grid,
    heavy_ball_path,
    heavy_ball_rate,
    nesterov_rate,
    polyak_parameters,
    quadratic_eigenvalues,
    run_per_coordinate,
    steps_to_tolerance,
)
from .train import Rule  # noqa: F401


def compare_updates(make_model: Callable[[], nn.Module], data, contenders: dict, steps: int = 20,
                    batch_size: int = 32, seed: int = 0,
                    lr_at: Callable[[int], float] | None = None) -> dict[str, float]:
    """:func:`optlib.book.compare.side_by_side` on ``data.x_train, data.y_train``."""
    return side_by_side(make_model, data.x_train, data.y_train, contenders, steps=steps,
                        batch_size=batch_size, seed=seed, lr_at=lr_at)


@dataclass
class EpochRun:
    """What :func:`train_epochs` measured: full-batch training loss before training and
    after every epoch, test accuracy at the end, optimizer steps taken and the mean wall time of one epoch."""

    train_loss: list[float] = field(default_factory=list)
    test_accuracy: float = float("nan")
    steps: int = 0
    seconds_per_epoch: float = float("nan")

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.train_loss[-1]) or self.train_loss[-1] > 1e3


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, data, batch_size: int,
                 epochs: int, seed: int = 0, loss_fn: Callable = F.cross_entropy,
                 schedule: Callable[[int], float] | None = None) -> EpochRun:
    """Train for whole epochs (shuffled, last batch smaller), recording loss per epoch.

    ``data`` has ``x_train, y_train, x_test, y_test`` (``optlib.book.data.digits()``).
    ``schedule(step)`` multiplies each group's initial lr. Stops once the loss is not
    finite or above 1e3 (diverged).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    n = len(x)
    base = [g["lr"] for g in optimizer.param_groups]
    run = EpochRun()
    with torch.no_grad():
        run.train_loss.append(loss_fn(model(x), y).item())     # epoch 0: before training
    elapsed = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            if schedule is not None:
                for g, lr in zip(optimizer.param_groups, base, strict=True):
                    g["lr"] = lr * schedule(run.steps)
            idx = perm[i:i + batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.steps += 1
        elapsed += time.perf_counter() - start
        with torch.no_grad():
            run.train_loss.append(loss_fn(model(x), y).item())
        if run.diverged:
            break
    run.seconds_per_epoch = elapsed / (len(run.train_loss) - 1)
    with torch.no_grad():
        pred = model(data.x_test).argmax(1)
        run.test_accuracy = (pred == data.y_test).float().mean().item()
    return run
