"""Helpers for chapter 1 (foundations): plain gradient descent, measured.

* :func:`gd_paths` runs gradient descent from many starting points at once on a 2-D
  :class:`~optlib.book.surfaces.Surface` (a batch of independent runs, one optimizer);
* :func:`steps_to_reach` counts the steps an optimizer needs to come within a fraction
  of its starting distance to the minimum;
* :func:`escape_steps` reads, off a batch of paths, when each one first left a region;
* :func:`deep_mlp` builds a deep, narrow MLP with a chosen activation and weight scale,
  and :func:`gradient_norms` measures its gradients layer by layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..sgd import SGD
from . import models

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def gd_paths(surface, lr: float, starts, steps: int, momentum: float = 0.0) -> Tensor:
    """Gradient descent (``optlib.SGD``) from every row of ``starts`` (n, 2) at once.

    The loss handed to the optimizer is the *sum* of ``surface.f`` over the n points;
    the gradient of a sum of independent terms with respect to one point is that
    point's own gradient, so this is n independent runs for the price of one. The
    gradients are exact (a surface's ``noise`` is not added; use ``surfaces.run`` for that).
    Returns a float64 tensor (steps + 1, n, 2); a run whose point overflows to a
    non-finite value is NaN from then on (a diverged run).
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    xy = torch.as_tensor(starts, dtype=torch.float64).reshape(-1, 2).clone().requires_grad_(True)
    optimizer = SGD([xy], lr=lr, momentum=momentum)
    paths = torch.empty(steps + 1, xy.shape[0], 2, dtype=torch.float64)
    paths[0] = xy.detach()
    for t in range(1, steps + 1):
        optimizer.zero_grad()
        surface.f(xy).sum().backward()
        optimizer.step()
        with torch.no_grad():
            # Freeze a diverged run at NaN, so its overflow cannot spread to the sum.
            xy[~torch.isfinite(xy).all(-1)] = float("nan")
        paths[t] = xy.detach()
    return paths


def steps_to_reach(surface, make_optimizer: Callable, start, tol: float = 1e-3,
                   max_steps: int = 100_000) -> int | None:
    """The first step t with ‖x_t − x*‖ ≤ tol·‖x_0 − x*‖ (x* = ``surface.minimum``),
    for ``make_optimizer([xy])``; ``None`` if ``max_steps`` steps do not get there."""
    if surface.minimum is None:
        raise ValueError(f"surface {surface.name!r} has no minimum to reach")
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    xy = torch.as_tensor(start, dtype=torch.float64).reshape(2).clone().requires_grad_(True)
    optimizer = make_optimizer([xy])
    target = tol * float((xy.detach() - surface.minimum).norm())
    for t in range(max_steps + 1):
        distance = float((xy.detach() - surface.minimum).norm())
        if distance <= target:
            return t
        if not math.isfinite(distance):
            return None
        optimizer.zero_grad()
        surface.f(xy).backward()
        optimizer.step()
    return None


def escape_steps(paths: Tensor, coordinate: int = 1, radius: float = 1.0) -> list[int | None]:
    """For paths (steps + 1, n, 2): the first step at which |coordinate| > radius, per
    run (``None`` for a run that never gets out)."""
    outside = paths[..., coordinate].abs() > radius
    return [int(col.nonzero()[0]) if col.any() else None for col in outside.T]


def deep_mlp(depth: int, width: int = 64, in_features: int = 64, out_features: int = 10,
             activation: str = "relu", weight_scale: float = 1.0, seed: int = 0,
             dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """``depth`` hidden layers ``Linear(width) → activation``, then a linear read-out.

    Hidden weights are drawn from N(0, weight_scale² / fan_in) and biases are zero, so
    ``weight_scale`` is the knob the theory talks about: 1 is LeCun's initialization,
    √2 with ReLU is He et al.'s (Kaiming). The read-out uses scale 1. The parameters have
    ``dtype`` (float64 keeps gradients of 1e-30 and below measurable).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not (isinstance(depth, int) and depth >= 1):
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if not weight_scale > 0:
        raise ValueError(f"weight_scale must be positive, got {weight_scale}")
    sizes = (in_features,) + (width,) * depth + (out_features,)
    model = models.mlp(sizes, activation=ACTIVATIONS[activation], seed=seed)
    generator = torch.Generator().manual_seed(seed)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, layer in enumerate(linears):
            scale = 1.0 if i == len(linears) - 1 else weight_scale
            layer.weight.normal_(0.0, scale / math.sqrt(layer.in_features), generator=generator)
            layer.bias.zero_()
    return model.to(dtype)


def gradient_norms(model: nn.Sequential, x: Tensor, y: Tensor,
                   loss_fn: Callable = nn.functional.cross_entropy) -> dict[str, list[float]]:
    """One forward and backward pass of ``loss_fn(model(x), y)``; per hidden layer, from
    the input side on:

    * ``"signal"``: ‖∂L/∂h_l‖, the gradient with respect to the layer's output h_l
      (what backpropagation hands down, the quantity that vanishes or explodes);
    * ``"weight"``: ‖∂L/∂W_l‖, the gradient the optimizer actually sees for W_l.

    Norms are Frobenius norms over the whole batch. The model's ``.grad`` fields are
    left as this pass set them.
    """
    model.zero_grad()
    outputs = []
    h = x
    for module in model:
        h = module(h)
        if not isinstance(module, nn.Linear):  # an activation: the output of a hidden layer
            h.retain_grad()
            outputs.append(h)
    loss_fn(h, y).backward()
    linears = [m for m in model if isinstance(m, nn.Linear)][:-1]  # hidden layers only
    return {
        "signal": [float(o.grad.norm()) for o in outputs],
        "weight": [float(m.weight.grad.norm()) for m in linears],
    }
