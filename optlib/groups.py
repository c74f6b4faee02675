"""Parameter groups: weight decay on weight matrices only."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from torch import nn


def param_groups(model: nn.Module, weight_decay: float, *,
                 no_decay: Callable[[str, nn.Parameter], bool] | None = None,
                 **options) -> list[dict]:
    """Split a model's trainable parameters into a decayed and an undecayed group.

    By default every parameter with two or more dimensions (Linear and Conv weights,
    embeddings) is decayed, and every parameter with fewer (biases, LayerNorm and
    BatchNorm scales and shifts) is not: decay pulls a norm's gain towards 0, which
    fights the normalization, and a bias has no scale to regularize. This is the rule of
    nanoGPT's ``configure_optimizers`` and of most large-model recipes.

    ``no_decay(name, param)`` overrides the rule: return True to exclude a parameter.
    Extra keyword arguments (``lr=...``) are copied into both groups. Empty groups are
    left out; parameters with ``requires_grad=False`` are skipped.

    Args:
        model: the model whose trainable parameters are split.
        weight_decay: λ of the decayed group.
        no_decay: (name, param) → True to exclude a parameter from decay (replaces the default
            rule).
        options: copied into both groups (lr=..., betas=...).
    """
    if (isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real)
            or not 0 <= weight_decay < math.inf):
        raise ValueError(f"Invalid weight_decay value: {weight_decay!r} "
                         "(expected a finite number >= 0)")
    excluded = no_decay or (lambda name, p: p.ndim < 2)
    decay, keep = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (keep if excluded(name, p) else decay).append(p)
    groups = [dict(params=decay, weight_decay=weight_decay, **options),
              dict(params=keep, weight_decay=0.0, **options)]
    return [g for g in groups if g["params"]]
