"""The maximal-update parametrization (μP) in its simplest form, for MLPs trained with Adam.

Under the standard parametrization (SP: PyTorch's default initialization, one learning
rate for every parameter) the best Adam learning rate of a network falls as it gets wider.
μP (Yang & Hu 2021, "Feature Learning in Infinite-Width Neural Networks"; Yang et al.
2022, "Tensor Programs V", Table 3) rescales the initialization and the per-layer learning
rates with the width so that every layer's update changes its output by the same order of
magnitude whatever the width, and the best learning rate of a narrow *base* model then
carries over to wide ones. For Adam, with ``r = width / base_width``:

============  ======================  ======================
layer         initialization           Adam learning rate
============  ======================  ======================
input         as SP                    ``lr``
hidden        as SP                    ``lr / r``
readout       SP's std times 1/√r      ``lr / r``
biases        as SP                    ``lr``
============  ======================  ======================

At ``width == base_width`` μP is SP exactly, so the two can be compared at one learning
rate grid. :func:`fit` builds such an MLP and trains it with Adam at these rates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import train as _train
from .models import mlp as _mlp

__all__ = ["mlp", "param_groups", "fit", "PARAMETRIZATIONS"]

PARAMETRIZATIONS = ("sp", "mup")


def _check(parametrization: str, width: int, base_width: int) -> None:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
    for name, value in (("width", width), ("base_width", base_width)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def mlp(width: int, parametrization: str = "sp", base_width: int = 32, depth: int = 2,
        inputs: int = 64, outputs: int = 10, seed: int | None = None) -> nn.Sequential:
    """An MLP ``inputs → width → … → width → outputs`` with ``depth`` hidden layers (ReLU).

    Args:
        width: the hidden width.
        parametrization: ``"sp"`` (PyTorch's initialization) or ``"mup"`` (the readout's
            initial weights scaled by ``sqrt(base_width / width)``).
        base_width: the width at which μP equals SP.
        depth: the number of hidden layers.
        inputs, outputs: the input and output sizes.
        seed: initialize with this seed (None: the global generator).
    """
    _check(parametrization, width, base_width)
    if not (isinstance(depth, int) and depth >= 1):
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    model = _mlp((inputs, *([width] * depth), outputs), seed=seed)
    if parametrization == "mup":
        with torch.no_grad():
            model[-1].weight.mul_(math.sqrt(base_width / width))
    return model


def param_groups(model: nn.Sequential, lr: float, parametrization: str = "sp",
                 base_width: int = 32) -> list[dict]:
    """Parameter groups for Adam-type optimizers: one ``lr`` (SP), or μP's per-layer rates.

    Args:
        model: an MLP from :func:`mlp` (a ``Sequential`` of ``Linear`` layers and activations).
        lr: the base learning rate (the rate of every parameter at ``base_width``).
        parametrization: ``"sp"`` or ``"mup"``.
        base_width: the width at which μP equals SP.

    Returns:
        A list of ``{"params": [...], "lr": ...}`` for the optimizer's constructor: input
        weights and all biases at ``lr``, hidden and readout weights at
        ``lr * base_width / width`` under μP.
    """
    linears = [m for m in model if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ValueError("model must have at least two Linear layers")
    width = linears[0].out_features
    _check(parametrization, width, base_width)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if parametrization == "sp":
        return [{"params": list(model.parameters()), "lr": lr}]
    scaled = [m.weight for m in linears[1:]]
    plain = [linears[0].weight] + [m.bias for m in linears if m.bias is not None]
    return [{"params": plain, "lr": lr},
            {"params": scaled, "lr": lr * base_width / width}]


def fit(task, width: int, lr: float, steps: int, parametrization: str = "sp",
        base_width: int = 32, *, seed: int | None = None, **kwargs):
    """The MLP of :func:`mlp` trained on ``task`` with ``torch.optim.Adam`` (no weight
    decay) at the rates of :func:`param_groups`, through :func:`optlib.book.train.fit`.

    Args:
        task: a task with ``batch(t)``, a :class:`~optlib.book.data.DigitsTask` say (its
            ``seed`` orders the batches).
        width: the hidden width.
        lr: the base learning rate.
        steps: the number of steps.
        parametrization: ``"sp"`` or ``"mup"``.
        base_width: the width at which μP equals SP.
        seed: the initialization's seed (None: the global generator).
        **kwargs: more arguments of :func:`optlib.book.train.fit` (``validate``, ``hooks``,
            ...).

    Returns:
        The :class:`~optlib.book.train.History`; ``History.model`` is the trained MLP.
    """
    model = mlp(width, parametrization, base_width, seed=seed)
    adam = torch.optim.Adam(param_groups(model, lr, parametrization, base_width))
    return _train.fit(model, adam, task, steps, **kwargs)
