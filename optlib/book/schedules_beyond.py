"""Deprecated: the helpers of chapters 6, 7 and 9, kept while those chapters move to the
concept modules of ``optlib.book`` (``train``, ``data``, ``inspect``, ``noise``,
``sweeps``). New code imports from those modules; this module re-exports them, plus the
step-indexed loop :func:`run` that those chapters still use.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

import optlib

from .data import DigitsTask, LMTask  # noqa: F401
from .inspect import adafactor_update_rms, matrix_params, trust_ratios  # noqa: F401
from .noise import second_moment_noise  # noqa: F401
from .sweeps import steps_to  # noqa: F401
from .train import Checkpoint

__all__ = ["LMTask", "DigitsTask", "Checkpoint", "Run", "run", "second_moment_noise",
           "matrix_params", "adafactor_update_rms", "trust_ratios", "steps_to"]


@dataclass
class Run:
    """What :func:`run` records, one entry per step (``step`` counts from 0)."""

    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    update_ratio: list = field(default_factory=list)   # ||Δθ|| / ||θ|| of the step
    update_rms: list = field(default_factory=list)     # RMS of Δθ divided by the step's lr
    val_loss: float = float("nan")
    diverged: bool = False
    checkpoints: dict = field(default_factory=dict)
    model: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None

    def final(self, n: int = 20) -> float:
        """Mean training loss of the last ``n`` steps (nan if the run diverged)."""
        if self.diverged or not self.loss:
            return float("nan")
        tail = self.loss[-n:]
        return sum(tail) / len(tail)


def _flat(params: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def run(task, make_model: Callable[[], nn.Module],
        make_optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer],
        steps: int, schedule: Callable[[int], float] | None = None, *,
        start: Checkpoint | None = None, save_at: Iterable[int] = (),
        clip: float | None = None, evaluate: bool = True,
        on_step: Callable | None = None, hessian_every: int = 10,
        optimizer_gets_model: bool = False, record_updates: bool = True) -> Run:
    """Train ``make_model()`` with ``make_optimizer(params)`` until ``steps`` steps are done.

    At step ``t`` every group's lr is its base lr times ``schedule(t)`` (constant when
    ``schedule`` is None). ``start`` resumes from a checkpoint (the step count, the
    weights and the optimizer state); ``save_at`` lists the completed-step counts at which
    to keep a :class:`Checkpoint` in ``Run.checkpoints``. A non-finite loss stops the run
    and sets ``diverged``. ``task`` is an :class:`LMTask` or a :class:`DigitsTask`.

    ``on_step(t, model, optimizer)`` is called after each step (to record anything).
    A :class:`~optlib.SophiaG` gets its Hessian estimate refreshed with
    :func:`optlib.gnb_update_hessian` every ``hessian_every`` steps, as in the authors'
    training loop, and ``bs`` = the number of predictions per batch.
    ``optimizer_gets_model=True`` calls ``make_optimizer(model)`` instead of
    ``make_optimizer(model.parameters())`` (for :class:`optlib.MuonWithAdamW`, which splits
    a model by its modules). ``record_updates=False`` skips ``update_ratio`` and
    ``update_rms`` (two copies of the weights per step; the loss and lr are still recorded).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    model = make_model()
    optimizer = make_optimizer(model if optimizer_gets_model else model.parameters())
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    first = 0
    if start is not None:
        model.load_state_dict(start.model)
        optimizer.load_state_dict(start.optimizer)
        for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = lr          # the checkpoint stored the scheduled lr; restore the base
        first = start.step
    save_at = set(save_at)
    out = Run()
    params = [p for p in model.parameters() if p.requires_grad]
    if hasattr(optimizer, "train"):   # schedule-free optimizers: gradients are taken at y
        optimizer.train()
    for t in range(first, steps):
        if t in save_at:
            out.checkpoints[t] = Checkpoint(t, copy.deepcopy(model.state_dict()),
                                            copy.deepcopy(optimizer.state_dict()))
        mult = 1.0 if schedule is None else float(schedule(t))
        for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = lr * mult
        x, y = task.batch(t)
        loss = task.loss(model, x, y)
        if not math.isfinite(loss.item()):
            out.diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        before = _flat(params) if record_updates else None
        if isinstance(optimizer, optlib.SophiaG):
            optimizer.step(bs=y.numel())
            optlib.gnb_update_hessian(optimizer, model, x, step=t, every=hessian_every,
                                      generator=torch.Generator().manual_seed(t))
        else:
            optimizer.step()
        lr_now = base_lrs[0] * mult
        out.loss.append(loss.item())
        out.lr.append(lr_now)
        if record_updates:
            delta = _flat(params) - before
            out.update_ratio.append((delta.norm() / before.norm()).item())
            rms = delta.pow(2).mean().sqrt().item()
            out.update_rms.append(rms / lr_now if lr_now > 0 else float("nan"))
        if on_step is not None:
            on_step(t, model, optimizer)
    if steps in save_at and not out.diverged:
        out.checkpoints[steps] = Checkpoint(steps, copy.deepcopy(model.state_dict()),
                                            copy.deepcopy(optimizer.state_dict()))
    if hasattr(optimizer, "eval"):    # schedule-free: evaluate at the averaged weights x
        optimizer.eval()
    if evaluate and not out.diverged:
        out.val_loss = task.val_loss(model)
    out.model, out.optimizer = model, optimizer
    return out


# --- chapter 6: looking inside the optimizers beyond Adam ---------------------------------


