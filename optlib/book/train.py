"""The book's training loop: one function, and a history of what happened at every step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optlib.clipping import clip_grad_norm_

from .progress import progress as _progress


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy; sequence logits (B, T, V) with targets (B, T) are flattened."""
    if logits.dim() > 2:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return F.cross_entropy(logits, targets)


@dataclass
class History:
    """What :func:`train` saw, step by step (index k: the k-th optimizer step).

    ``loss``: the minibatch loss before the step; ``lr``: the first group's learning rate
    used by the step; ``grad_norm``: the global gradient norm (before clipping);
    ``update_ratio``: ‖Δθ‖/‖θ‖ over all parameters; ``eval_steps``/``eval``: the number of
    completed steps and the ``evaluate()`` value there; ``diverged``: the loss stopped
    being finite (training stopped there).
    """

    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    update_ratio: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    eval: list = field(default_factory=list)
    diverged: bool = False

    def final(self, n: int = 20) -> float:
        """Mean of the last ``n`` losses (``inf`` if training diverged)."""
        if self.diverged:
            return math.inf
        tail = self.loss[-n:]
        return sum(tail) / len(tail) if tail else math.nan

    def __repr__(self) -> str:
        last = f"{self.final():.4g}" if self.loss else "-"
        return (f"History(steps={len(self.loss)}, final_loss={last}, "
                f"diverged={self.diverged}, evals={len(self.eval)})")


def _scheduler(optimizer, schedule):
    if schedule is None:
        return None
    if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler):
        return schedule
    if callable(schedule):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    raise ValueError(
        f"schedule must be a step -> multiplier callable or a torch scheduler, got {schedule!r}"
    )


def _norm(tensors: list[Tensor]) -> float:
    if not tensors:
        return 0.0
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))).item()


def train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable, steps: int, *,
          loss_fn: Callable = cross_entropy, schedule=None, clip: float | None = None,
          evaluate: Callable[[], float] | None = None, eval_every: int = 50,
          progress: bool | None = None) -> History:
    """Train ``model`` for ``steps`` optimizer steps on ``batches`` (an iterator of (x, y)).

    The loss is ``loss_fn(model(x), y)``. ``schedule``: a ``step -> multiplier`` callable
    (applied with ``LambdaLR``) or a torch scheduler, stepped after every optimizer step.
    ``clip``: the maximum global gradient norm. ``evaluate()``: a float metric, computed
    before training and every ``eval_every`` steps and after the last one, in ``eval``
    mode without gradients. ``progress``: show a bar (default: yes, except under
    pytest/nbval or with ``OPTLIB_PROGRESS=0``). Deterministic on CPU for a fixed seed.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not (isinstance(eval_every, int) and eval_every >= 1):
        raise ValueError(f"eval_every must be a positive integer, got {eval_every!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive or None, got {clip}")
    scheduler = _scheduler(optimizer, schedule)
    history = History()
    params = [p for p in model.parameters() if p.requires_grad]
    it = iter(batches)

    def run_eval(step: int) -> None:
        if evaluate is None:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            value = float(evaluate())
        model.train(was_training)
        history.eval_steps.append(step)
        history.eval.append(value)

    model.train()
    run_eval(0)
    for step in _progress(range(1, steps + 1), total=steps, desc="train", enabled=progress):
        x, y = next(it)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        value = loss.item()
        history.loss.append(value)
        history.lr.append(float(optimizer.param_groups[0]["lr"]))
        if not math.isfinite(value):
            history.diverged = True
            break
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if clip is not None:
            norm = float(clip_grad_norm_(params, clip))
        else:
            norm = _norm(grads)
        history.grad_norm.append(norm)
        before = [p.detach().clone() for p in params]
        optimizer.step()
        with torch.no_grad():
            delta = torch._foreach_sub([p.detach() for p in params], before)
            theta = _norm(before)
            history.update_ratio.append(_norm(delta) / theta if theta > 0 else math.inf)
        if scheduler is not None:
            scheduler.step()
        if step % eval_every == 0 or step == steps:
            run_eval(step)
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of rows whose arg-max output equals the label (model in eval mode)."""
    was_training = model.training
    model.eval()
    pred = model(x).argmax(dim=-1)
    model.train(was_training)
    return (pred == y).float().mean().item()


@torch.no_grad()
def evaluate_loss(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable = cross_entropy) -> float:
    """``loss_fn(model(x), y)`` in eval mode without gradients."""
    was_training = model.training
    model.eval()
    value = loss_fn(model(x), y).item()
    model.train(was_training)
    return value
