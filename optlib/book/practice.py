"""Deprecated: the helpers of chapter 8, kept while it moves to the concept modules of
``optlib.book`` (``models``, ``data``, ``inspect``). This module re-exports them, plus
the ``noisy_labels`` that chapter 8 still draws its labels with.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import models
from .data import with_outliers  # noqa: F401
from .inspect import (  # noqa: F401
    loss_breakdown,
    norm_gains,
    roughness,
    shards,
    state_bytes_per_param,
    trust_ratio,
)


def ln_mlp(sizes=(64, 128, 128, 10), seed: int | None = None) -> nn.Sequential:
    """``book.models.mlp(sizes, seed=seed, layernorm=True)``."""
    return models.mlp(sizes, seed=seed, layernorm=True)


def noisy_labels(y: Tensor, fraction: float, num_classes: int, seed: int = 0) -> Tensor:
    """A copy of ``y`` with a ``fraction`` of the entries replaced by uniformly random classes."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    y = y.clone()
    hit = torch.rand(len(y), generator=g) < fraction
    y[hit] = torch.randint(0, num_classes, (int(hit.sum()),), generator=g).to(y)
    return y


