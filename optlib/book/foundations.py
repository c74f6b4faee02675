"""Deprecated: the helpers of chapter 1, kept while it moves to the concept modules of
``optlib.book`` (``surfaces``, ``models``, ``inspect``); this module re-exports them.
"""

from __future__ import annotations

import torch
from torch import nn

from . import models
from .inspect import gradient_norms  # noqa: F401
from .surfaces import escape_steps, gd_paths, steps_to_reach  # noqa: F401

ACTIVATIONS = models.ACTIVATIONS


def deep_mlp(depth: int, width: int = 64, in_features: int = 64, out_features: int = 10,
             activation: str = "relu", weight_scale: float = 1.0, seed: int = 0,
             dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """``depth`` hidden layers ``Linear(width) → activation``, then a linear read-out.

    Hidden weights are drawn from N(0, weight_scale² / fan_in) and biases are zero, so
    ``weight_scale`` is the knob the theory talks about: 1 is LeCun's initialization,
    √2 with ReLU is He et al.'s (Kaiming). The read-out uses scale 1. The parameters have
    ``dtype`` (float64 keeps gradients of 1e-30 and below measurable).
    """
    if not (isinstance(depth, int) and depth >= 1):
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if not weight_scale > 0:
        raise ValueError(f"weight_scale must be positive, got {weight_scale}")
    sizes = (in_features,) + (width,) * depth + (out_features,)
    return models.mlp(sizes, activation=activation, seed=seed, init_scale=weight_scale,
                      dtype=dtype)


