"""Gradient accumulation, and two guards of large runs: the z-loss and rolling back spikes.

Gradient accumulation: one optimizer step's gradient built from k micro-batches.

The mean loss over a batch of B examples splits into k micro-batches of B/k:

    ∇ (1/B) Σ_{i=1..B} ℓ_i  =  Σ_{j=1..k} (1/k) ∇ (k/B) Σ_{i ∈ j} ℓ_i ,

so dividing each micro-batch's mean loss by k before ``backward`` (which adds into ``.grad``)
gives the large batch's gradient exactly, up to the order of the additions. The practice is
the standard way to train with batches larger than the memory holds (for example
Goyal et al. 2017, "Accurate, Large Minibatch SGD"; PyTorch's AMP examples, "gradient
accumulation").
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
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


def z_loss(weight: float = 1e-4) -> Callable[[Tensor, Tensor], Tensor]:
    """A loss function for :func:`optlib.book.train.fit`: the cross-entropy plus the z-loss.

    ``loss_fn(logits, targets) = cross_entropy + weight · mean(log Z)²`` with
    ``log Z = logsumexp(logits)`` over the last dimension (Chowdhery et al. 2022, "PaLM";
    Wortsman et al. 2024, "Small-scale proxies for large-scale Transformer training
    instabilities", who use ``weight = 1e-4``). Sequence logits (B, T, V) are flattened.

    Args:
        weight: the z-loss coefficient (non-negative; 0 gives the plain cross-entropy).

    Raises:
        ValueError: a negative ``weight``.
    """
    if not weight >= 0:
        raise ValueError(f"weight must be non-negative, got {weight!r}")

    def loss_fn(logits: Tensor, targets: Tensor) -> Tensor:
        logits = logits.reshape(-1, logits.shape[-1])
        ce = torch.nn.functional.cross_entropy(logits, targets.reshape(-1))
        if weight == 0:
            return ce
        return ce + weight * torch.logsumexp(logits, dim=-1).pow(2).mean()

    return loss_fn


class ZLossTask:
    """A task whose training loss adds the z-loss ``weight · mean(log Z)²`` to the cross-entropy.

    ``log Z = logsumexp(logits)`` is the log of the softmax's normalizer. The cross-entropy does
    not change when a constant is added to every logit, so nothing stops ``log Z`` from
    drifting; the z-loss pulls it to 0 (PaLM used ``weight = 1e-4``: Chowdhery et al. 2022,
    "PaLM: Scaling Language Modeling with Pathways"). Everything but ``loss`` (batches,
    validation loss without the penalty) is the wrapped task's. :func:`z_loss` is the same
    loss as a ``loss_fn`` for :func:`optlib.book.train.fit`.

    Args:
        task: the wrapped task (an ``LMTask``, a ``DigitsTask``).
        weight: the z-loss coefficient (non-negative).
    """

    def __init__(self, task, weight: float = 1e-4):
        self._loss = z_loss(weight)
        self.task, self.weight = task, weight

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The cross-entropy plus the z-loss of the batch.

        Args:
            model: the model.
            x: inputs.
            y: targets.
        """
        return self._loss(model(x), y)


@torch.no_grad()
def log_normalizer(model: nn.Module, x: Tensor) -> Tensor:
    """``logsumexp`` of the model's logits for each row of ``x`` (its last dimension)."""
    return torch.logsumexp(model(x), dim=-1)


def train_with_rollback(task, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, *,
                        corrupt: Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
                        rollback: bool = False, every: int = 25, window: int = 20,
                        factor: float = 3.0, jump: float = 1.0) -> dict:
    """Train on ``task.batch(b)`` for ``steps`` optimizer steps, optionally rolling back spikes.

    Args:
        task: a task with ``batch(b)`` and ``loss(model, x, y)`` (a ``DigitsTask``, say).
        model, optimizer: trained in place.
        steps: optimizer steps to take.
        corrupt: ``corrupt(b, x, y) -> (x, y)`` replaces batch ``b`` (to inject a bad batch).
        rollback: detect spikes and roll back (else every batch is stepped on).
        every: steps between in-memory checkpoints.
        window, factor, jump: a spike is a loss above ``factor`` times the median of the
            last ``window`` losses and above that median plus ``jump``.

    Every ``every`` steps the weights, the optimizer state and the data position are kept in
    memory. With ``rollback``, a batch whose loss exceeds both ``factor`` times the median of
    the last ``window`` losses and that median plus ``jump`` is not stepped on: the run
    returns to the last checkpoint and continues with the batch *after* the spike, skipping
    the ones in between (the recipe of Chowdhery et al. 2022, "PaLM", who restart about 100
    steps before a spike and skip 200 to 500 batches). ``corrupt(b, x, y)`` may replace
    batch ``b`` (to inject a bad batch).

    Returns:
        ``{"loss": [...], "rollbacks": [batch indices], "batches": [batch index per step]}``.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not (isinstance(every, int) and every >= 1 and isinstance(window, int) and window >= 1):
        raise ValueError(f"every and window must be positive integers, got {every!r}, {window!r}")
    out = {"loss": [], "rollbacks": [], "batches": []}
    b = 0
    saved = None
    while len(out["loss"]) < steps:
        t = len(out["loss"])
        if t % every == 0 and (saved is None or saved[0] != t):
            saved = (t, b, copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
        x, y = task.batch(b)
        if corrupt is not None:
            x, y = corrupt(b, x, y)
        loss = task.loss(model, x, y)
        recent = out["loss"][-window:]
        median = float(np.median(recent)) if recent else 0.0
        spike = loss.item() > max(factor * median, median + jump)
        if rollback and len(recent) == window and spike:
            out["rollbacks"].append(b)
            t0, _, weights, state = saved
            model.load_state_dict(weights)
            optimizer.load_state_dict(state)
            del out["loss"][t0:], out["batches"][t0:]
            b += 1                                   # skip every batch up to the spike
            continue
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out["loss"].append(loss.item())
        out["batches"].append(b)
        b += 1
    return out
