"""One side-by-side runner: identical float64 copies of a model trained on the same
minibatches, one per contender, and how far apart they end up (:func:`max_difference`,
also the measure of the chapters' other "the same weights?" comparisons).

It backs the chapters' "equal to torch" cells: a from-scratch rule beside ``optlib`` and
``torch.optim``, where a gap at round-off level says that they compute the same thing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .data import batches
from .train import fit

__all__ = ["side_by_side", "is_rule", "max_difference"]


def is_rule(contender) -> bool:
    """Whether ``contender`` is a from-scratch rule ``rule(params, grads, state, ...)``
    (three or more parameters) rather than an optimizer factory ``params -> optimizer``
    (an optimizer class, such as ``optlib.Adam``, is a factory).

    Args:
        contender: a rule or a factory.
    """
    if isinstance(contender, type):
        return False
    try:
        return len(inspect.signature(contender).parameters) >= 3
    except (TypeError, ValueError):
        return False


def max_difference(a: nn.Module | Sequence[Tensor], b: nn.Module | Sequence[Tensor]) -> float:
    """The largest absolute difference between the parameters of two models, or between
    two sequences of tensors of the same shapes, taken in order.

    Args:
        a: a model or a sequence of tensors.
        b: a model or a sequence of tensors, with ``a``'s shapes.
    """
    a, b = (list(m.parameters()) if isinstance(m, nn.Module) else list(m) for m in (a, b))
    if len(a) != len(b):
        raise ValueError(f"a and b hold {len(a)} and {len(b)} tensors")
    with torch.no_grad():
        return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def side_by_side(make_model: Callable[[], nn.Module], x: Tensor, y: Tensor, contenders: dict,
                 steps: int = 20, batch_size: int = 32, seed: int = 0,
                 lr_at: Callable[[int], float] | None = None) -> dict[str, float]:
    """Train identical float64 copies of ``make_model()`` (each built after
    ``torch.manual_seed(seed)``) on the same minibatches of ``(x, y)`` with the
    cross-entropy loss, one per contender, each with :func:`optlib.book.train.fit`;
    return each one's largest parameter difference from the first contender's (0 for
    the first).

    Args:
        make_model: builds the model.
        x: inputs (converted to float64).
        y: labels.
        contenders: name -> a from-scratch rule (see :func:`is_rule`), called without
            gradients as ``rule(params, grads, state)``, or ``rule(..., lr=lr_at(t))``
            when ``lr_at`` is given; or a factory ``params -> torch.optim.Optimizer``.
        steps: the number of steps.
        batch_size: examples per minibatch.
        seed: the seed of the initialization and of the minibatch order.
        lr_at: the learning rate of step t (t = 0, 1, ...), handed to the rules and
            written into the optimizers' groups: :func:`~optlib.book.train.fit`'s
            schedule (:class:`~optlib.book.train.LRSchedule`) over a base rate of 1.
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not contenders:
        raise ValueError("contenders must not be empty")
    models = {}
    for name, contender in contenders.items():
        torch.manual_seed(seed)
        models[name] = model = make_model().double()
        rule = is_rule(contender)
        optimizer = contender if rule else contender(list(model.parameters()))
        if lr_at is not None and not rule:
            for group in optimizer.param_groups:
                group["lr"] = 1.0           # the base rate that lr_at(t) multiplies
        fit(model, optimizer, batches(x.double(), y, batch_size, seed=seed), steps,
            schedule=lr_at, hyper={"lr": 1.0} if rule and lr_at is not None else None,
            validate=False, progress=False)
    first = next(iter(models.values()))
    return {name: max_difference(first, m) for name, m in models.items()}
