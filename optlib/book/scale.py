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

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .train import cross_entropy, fit


def accumulate(model: nn.Module, loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor],
               x: Tensor, y: Tensor, micro_batches: int, divide: bool = True,
               clip_each: float | None = None) -> float:
    """Add the gradient of the batch ``(x, y)`` into ``.grad``, in ``micro_batches`` pieces.

    :func:`optlib.book.train.fit` trains with it as its ``gradient``:
    ``fit(model, optimizer, task, steps, gradient=lambda m, x, y: accumulate(m, loss_fn,
    x, y, k))`` clips, steps and schedules once per batch of ``k`` micro-batches.

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


class _Skipping:
    """``task`` as a run sees it after skipping batches: step ``t`` trains on batch
    ``t + offset``, through ``corrupt`` when given."""

    def __init__(self, task, offset: int, corrupt):
        self.task, self.offset, self.corrupt = task, offset, corrupt

    def batch(self, t: int) -> tuple[Tensor, Tensor]:
        b = t + self.offset
        x, y = self.task.batch(b)
        return (x, y) if self.corrupt is None else self.corrupt(b, x, y)


def train_with_rollback(task, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, *,
                        corrupt: Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
                        rollback: bool = False, every: int = 25, window: int = 20,
                        factor: float = 3.0, jump: float = 1.0,
                        loss_fn: Callable[[Tensor, Tensor], Tensor] = cross_entropy) -> dict:
    """Train on ``task.batch(b)`` for ``steps`` optimizer steps, optionally rolling back spikes.

    Every ``every`` steps the weights and the optimizer state are kept in memory. With
    ``rollback``, a batch whose loss exceeds both ``factor`` times the median of the last
    ``window`` losses and that median plus ``jump`` is not stepped on: the run returns to
    the last checkpoint and continues with the batch *after* the spike, skipping the ones
    in between (the recipe of Chowdhery et al. 2022, "PaLM", who restart about 100 steps
    before a spike and skip 200 to 500 batches).

    The loop is :func:`optlib.book.train.fit`'s, run in segments: the guard is its
    ``reject``, the checkpoints its ``save_at`` and ``start``, and after a rollback step
    ``t`` trains on batch ``t`` plus the number of batches skipped so far. Its divergence
    rule holds: a loss that is not finite (and not rolled back) ends the run, as the last
    loss.

    Args:
        task: a task with ``batch(b)`` (a ``DigitsTask``, say).
        model: the model, trained in place.
        optimizer: its ``torch.optim.Optimizer``.
        steps: optimizer steps to take.
        corrupt: ``corrupt(b, x, y) -> (x, y)`` replaces batch ``b`` (to inject a bad batch).
        rollback: detect spikes and roll back (else every batch is stepped on).
        every: steps between in-memory checkpoints.
        window: how many of the last losses the median of the guard takes.
        factor: a spike's loss exceeds ``factor`` times that median,
        jump: and that median plus ``jump``.
        loss_fn: ``loss_fn(outputs, targets)``, as in :func:`~optlib.book.train.fit`.

    Returns:
        ``{"loss": [...], "rollbacks": [batch indices], "batches": [batch index per step]}``.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not (isinstance(every, int) and every >= 1 and isinstance(window, int) and window >= 1):
        raise ValueError(f"every and window must be positive integers, got {every!r}, {window!r}")
    out = {"loss": [], "rollbacks": [], "batches": []}
    kept = []                   # the losses of the steps kept, as the guard reads them

    def spike(loss: float) -> bool:
        recent = kept[-window:]
        if len(recent) == window:
            median = float(np.median(recent))
            if loss > max(factor * median, median + jump):
                return True
        kept.append(loss)
        return False

    start, offset = None, 0
    while True:
        first = 0 if start is None else start.step
        history = fit(model, optimizer, _Skipping(task, offset, corrupt), steps, loss_fn=loss_fn,
                      start=start, save_at=range(0, steps, every),
                      reject=spike if rollback else None, validate=False, progress=False)
        losses = history.loss[:-1] if history.rejected else history.loss
        out["loss"][first:] = losses
        out["batches"][first:] = range(first + offset, first + offset + len(losses))
        if not history.rejected:
            return out
        b = first + len(losses) + offset              # the spike's batch
        out["rollbacks"].append(b)
        start = history.checkpoints[max(history.checkpoints)]
        del kept[start.step:]
        offset = b + 1 - start.step                   # skip every batch up to the spike
