"""The curvature of a loss, measured: where training ends, what critical points look like.

* :func:`train_to_loss` trains with minibatch SGD (or any optimizer) until the full-batch
  training loss first falls to a target, so that the end points of different optimizers
  are compared at the same loss (a flatter end point at a higher loss proves nothing:
  the cross-entropy's curvature shrinks as its loss falls);
* :func:`hessian` computes the whole Hessian of a function of one flat parameter vector
  (small problems only: it is d × d), and :func:`index` is the fraction of its negative
  eigenvalues (0 at a minimum, between 0 and 1 at a saddle);
* :func:`all_positive_fraction` measures how often a random symmetric matrix (Gaussian
  orthogonal ensemble) has only positive eigenvalues, for each size n.

The largest Hessian eigenvalue of a network (power iteration on Hessian–vector
products) is ``optlib.book.noise.sharpness``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["train_to_loss", "hessian", "index", "all_positive_fraction"]


def train_to_loss(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                  batch_size: int, target: float, *, check_every: int = 5,
                  max_steps: int = 100_000, seed: int = 0,
                  loss_fn: Callable = F.cross_entropy) -> int | None:
    """Train on shuffled epochs until the full-batch loss is at most ``target``.

    :func:`optlib.book.train.fit` on :func:`optlib.book.train.epochs` (each epoch a fresh
    shuffle, the last batch smaller): the loss on all of ``(x, y)`` is evaluated every
    ``check_every`` steps (and before the first), and its ``stop`` ends training at the
    first evaluation at or below ``target``.

    Returns:
        the number of optimizer steps taken, or ``None`` when ``max_steps`` steps did
        not reach the target or the minibatch loss stopped being finite (diverged).
    """
    from .train import epochs, fit

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    history = fit(model, optimizer, epochs(x, y, batch_size, seed=seed), max_steps,
                  loss_fn=loss_fn, evaluate=lambda: loss_fn(model(x), y).item(),
                  eval_every=check_every, stop=lambda loss: loss <= target, progress=False)
    return history.steps if history.stopped else None


def hessian(f: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """The d × d Hessian of a scalar function ``f`` of a flat vector, at ``theta``."""
    return torch.func.hessian(f)(theta)


def index(H: Tensor, tol: float = 0.0) -> float:
    """The fraction of eigenvalues of the symmetric ``H`` below ``-tol``: 0 at a minimum,
    1 at a maximum, in between at a saddle (Dauphin et al. call it the index α)."""
    eigenvalues = torch.linalg.eigvalsh(H)
    return (eigenvalues < -tol).double().mean().item()


def all_positive_fraction(sizes: Sequence[int], samples: int = 100_000,
                          seed: int = 0) -> dict[int, float]:
    """For each n, the fraction of ``samples`` random symmetric n × n matrices whose
    eigenvalues are all positive.

    The matrices are the Gaussian orthogonal ensemble: (A + Aᵀ)/2 with independent
    standard normal entries in A, so each eigenvalue is as likely to be negative as
    positive, and the measured fraction falls far faster than 2⁻ⁿ as n grows.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n in sizes:
        if n < 1:
            raise ValueError(f"sizes must be positive, got {n}")
        A = torch.randn(samples, n, n, generator=gen, dtype=torch.float64)
        eigenvalues = torch.linalg.eigvalsh((A + A.transpose(1, 2)) / 2)
        out[n] = (eigenvalues[:, 0] > 0).double().mean().item()
    return out
