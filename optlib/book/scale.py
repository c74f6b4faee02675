"""Gradient accumulation: one optimizer step's gradient built from k micro-batches.

The mean loss over a batch of B examples splits into k micro-batches of B/k:

    ∇ (1/B) Σ_{i=1..B} ℓ_i  =  Σ_{j=1..k} (1/k) ∇ (k/B) Σ_{i ∈ j} ℓ_i ,

so dividing each micro-batch's mean loss by k before ``backward`` (which adds into ``.grad``)
gives the large batch's gradient exactly, up to the order of the additions. The practice is
the standard way to train with batches larger than the memory holds (for example
Goyal et al. 2017, "Accurate, Large Minibatch SGD"; PyTorch's AMP examples, "gradient
accumulation").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def accumulate(model: nn.Module, loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor],
               x: Tensor, y: Tensor, micro_batches: int, divide: bool = True,
               clip_each: float | None = None) -> float:
    """Add the gradient of the batch ``(x, y)`` into ``.grad``, in ``micro_batches`` pieces.

    Args:
        model: the model; its gradients are added to (call ``zero_grad`` first).
        loss_fn: ``loss_fn(model, x, y)``, the mean loss of a (micro-)batch.
        x, y: the batch; its size must be a multiple of ``micro_batches``.
        micro_batches: k, the number of equal slices.
        divide: divide each slice's loss by k (the correct recipe); without it the
            gradient is k times the batch's.
        clip_each: if given, clip each slice's gradient to this total norm before adding
            it (the mistake: clipping belongs after the accumulation).

    Returns:
        The batch's mean loss (the mean of the slices' losses).

    Raises:
        ValueError: ``micro_batches`` not a positive integer dividing the batch size, or a
            non-positive ``clip_each``.
    """
    if not (isinstance(micro_batches, int) and micro_batches >= 1):
        raise ValueError(f"micro_batches must be a positive integer, got {micro_batches!r}")
    if len(x) % micro_batches:
        raise ValueError(f"micro_batches must divide the batch size {len(x)}, got {micro_batches!r}")
    if clip_each is not None and not clip_each > 0:
        raise ValueError(f"clip_each must be positive, got {clip_each!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    total = 0.0
    for xs, ys in zip(x.chunk(micro_batches), y.chunk(micro_batches), strict=True):
        loss = loss_fn(model, xs, ys)
        total += loss.item() / micro_batches
        scaled = loss / micro_batches if divide else loss
        grads = torch.autograd.grad(scaled, params)
        if clip_each is not None:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            factor = torch.clamp(clip_each / (norm + 1e-6), max=1.0)
            grads = [g * factor for g in grads]
        for p, g in zip(params, grads, strict=True):
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)
    return total
