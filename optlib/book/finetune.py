"""Fine-tuning a pretrained network: tasks built from classes of the digits, and LoRA.

The book's fine-tuning experiment pretrains the digits MLP on some classes and fine-tunes
it on others, with a new head, either fully (every weight trains) or with a LoRA adapter
(Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models"): each hidden
``Linear`` keeps its pretrained weight ``W`` frozen and learns a low-rank correction,

    y = W x + b + (α / r) · B A x ,     A ∈ R^{r×in} random,  B ∈ R^{out×r} zero,

so the adapted network starts exactly at the pretrained one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .data import DigitsTask

__all__ = ["class_task", "LoRALinear", "add_lora", "new_head"]


def class_task(classes: Sequence[int], batch_size: int = 32, seed: int = 0,
               per_class: int | None = None):
    """A :class:`~optlib.book.data.DigitsTask` restricted to ``classes``, relabelled
    ``0 .. len(classes)-1``.

    Args:
        classes: the digits to keep, in the order of their new labels.
        batch_size: examples per step.
        seed: orders the minibatches (and picks the ``per_class`` examples).
        per_class: keep only this many training examples of each class (the test set is
            kept whole); None keeps all.
    """
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
        raise ValueError(f"classes must be distinct digits 0..9, got {classes!r}")
    if per_class is not None and not (isinstance(per_class, int) and per_class >= 1):
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")
    task = DigitsTask(batch_size=batch_size, seed=seed)
    s = task.split
    relabel = torch.full((10,), -1, dtype=torch.long)
    relabel[classes] = torch.arange(len(classes))

    def keep(y: torch.Tensor, limit: int | None) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        rows = []
        for c in classes:
            idx = (y == c).nonzero().flatten()
            if limit is not None:
                idx = idx[torch.randperm(len(idx), generator=g)[:limit]]
            rows.append(idx)
        return torch.cat(rows).sort().values

    train, test = keep(s.y_train, per_class), keep(s.y_test, None)
    task.split = s._replace(x_train=s.x_train[train], y_train=relabel[s.y_train[train]],
                            x_test=s.x_test[test], y_test=relabel[s.y_test[test]])
    task.n_train = len(train)
    task.batch_size = min(task.batch_size, task.n_train)
    return task


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / rank) · B A``."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float | None = None,
                 seed: int | None = None):
        super().__init__()
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.scale = (rank if alpha is None else alpha) / rank
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        bound = 1 / math.sqrt(base.in_features)      # nn.Linear's initialization for A
        a = (torch.rand(rank, base.in_features, generator=g) * 2 - 1) * bound
        self.A = nn.Parameter(a.to(base.weight.dtype))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T


def add_lora(model: nn.Sequential, rank: int = 4, alpha: float | None = None,
             seed: int | None = None) -> nn.Sequential:
    """Replace every ``Linear`` of ``model`` but the last (the head) by a :class:`LoRALinear`.

    The head stays a plain trainable ``Linear``; every other original weight is frozen.
    Returns ``model`` (changed in place).
    """
    linears = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ValueError("model must have at least two Linear layers (body and head)")
    for k, i in enumerate(linears[:-1]):
        model[i] = LoRALinear(model[i], rank, alpha, None if seed is None else seed + k)
    return model


def new_head(model: nn.Sequential, outputs: int, seed: int | None = None) -> nn.Sequential:
    """Replace the last ``Linear`` of ``model`` by a freshly initialized one with ``outputs``."""
    i = max(i for i, m in enumerate(model) if isinstance(m, nn.Linear))
    old = model[i]
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model[i] = nn.Linear(old.in_features, outputs, dtype=old.weight.dtype)
    return model
