"""Helpers for chapter 8 (practice): models, data faults and signals used to debug training.

Each function here makes one experiment of the chapter reproducible in a line: a model
with LayerNorm (to see what weight decay does to its gains), a batch stream with
corrupted batches (to cause loss spikes), noisy labels (to cause overfitting), the
roughness of a loss curve (to measure oscillation), and the sharding of a tensor the way
FSDP does it (to see why per-tensor norms need the whole tensor).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn


def ln_mlp(sizes: Sequence[int] = (64, 128, 128, 10), seed: int | None = None) -> nn.Sequential:
    """An MLP whose hidden layers are Linear → LayerNorm → ReLU (the last layer is plain Linear)."""
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least two widths, got {tuple(sizes)!r}")
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers += [nn.LayerNorm(b), nn.ReLU()]
    return nn.Sequential(*layers)


def norm_gains(model: nn.Module) -> list[float]:
    """The mean gain (weight) of every LayerNorm in ``model``, in order."""
    return [m.weight.mean().item() for m in model.modules() if isinstance(m, nn.LayerNorm)]


def with_outliers(batches: Iterable, every: int, scale: float,
                  num_classes: int | None = None) -> Iterator:
    """Pass batches through, but corrupt every ``every``-th one (steps ``every``,
    ``2*every``, ... counting from 1): its inputs are multiplied by ``scale`` and, when
    ``num_classes`` is given, its labels are shifted to the next class. A stand-in for a
    broken batch (unnormalized images with misaligned labels) whose gradient is enormous."""
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"every must be a positive integer, got {every!r}")
    for step, (x, y) in enumerate(batches, start=1):
        if step % every == 0:
            x = x * scale
            if num_classes is not None:
                y = (y + 1) % num_classes
        yield x, y


def noisy_labels(y: Tensor, fraction: float, num_classes: int, seed: int = 0) -> Tensor:
    """A copy of ``y`` with a ``fraction`` of the entries replaced by uniformly random classes."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    y = y.clone()
    hit = torch.rand(len(y), generator=g) < fraction
    y[hit] = torch.randint(0, num_classes, (int(hit.sum()),), generator=g).to(y)
    return y


def roughness(losses: Sequence[float], last: int = 100) -> float:
    """Mean absolute change of the loss from one step to the next over the last ``last``
    steps: near 0 for a curve that has settled, large for one that bounces."""
    tail = [float(v) for v in losses[-last:]]
    if len(tail) < 2:
        return math.nan
    return sum(abs(b - a) for a, b in zip(tail[:-1], tail[1:], strict=False)) / (len(tail) - 1)


def shards(t: Tensor, n: int) -> list[Tensor]:
    """Flatten ``t`` and cut it into ``n`` contiguous pieces, as FSDP shards a flat parameter
    (the pieces ignore row boundaries: a shard may hold part of a row)."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return list(t.detach().reshape(-1).tensor_split(n))


def trust_ratio(p_norm: Tensor | float, u_norm: Tensor | float) -> float:
    """LAMB's ratio ‖θ‖/‖u‖ for one tensor, 1 when either norm is 0 (You et al., 2020)."""
    p_norm, u_norm = float(p_norm), float(u_norm)
    return p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0


def state_bytes_per_param(make_optimizer, model: nn.Module) -> float:
    """Bytes of optimizer state per parameter once every tensor has taken one step.

    ``make_optimizer(params)`` builds the optimizer; it steps on a copy of ``model`` with
    gradients of ones, so ``model`` itself is left alone.
    """
    import copy

    from optlib.memory import state_bytes

    clone = copy.deepcopy(model)
    params = [p for p in clone.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer = make_optimizer(params)
    optimizer.step()
    return state_bytes(optimizer) / sum(p.numel() for p in params)


@torch.no_grad()
def loss_breakdown(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Where a classifier's mean cross-entropy comes from, to reconcile it with accuracy.

    Per example, :math:`\\ell_i = -\\log p_{y_i}(x_i)`. Returns ``mean`` (the usual loss),
    ``median``, ``accuracy``, ``wrong_share`` (the fraction of :math:`\\sum_i \\ell_i`
    carried by misclassified examples) and ``wrong_mean`` (their mean loss; 0 when none is
    wrong). A confident mistake costs without bound while accuracy counts it once, so a
    network can have a high mean loss and a high accuracy at once: then ``wrong_share``
    is near 1 and ``wrong_mean`` large."""
    logits = model(x)
    per = nn.functional.cross_entropy(logits, y, reduction="none")
    wrong = logits.argmax(1) != y
    total = per.sum().item()
    return dict(mean=per.mean().item(), median=per.median().item(),
                accuracy=1.0 - wrong.float().mean().item(),
                wrong_share=per[wrong].sum().item() / total if total > 0 else 0.0,
                wrong_mean=per[wrong].mean().item() if wrong.any() else 0.0)
