"""Helpers for chapters 6 (beyond Adam) and 7 (learning-rate schedules).

The experiments there train a tiny character-level transformer many times with different
optimizers and schedules, branch runs from checkpoints (warmup-stable-decay), and look
inside Adam's state (the noise of the second moment in the first steps). This module
holds the loop that does that, small enough to read:

* :class:`LMTask` draws the batch of step ``t`` from its own seeded generator, so a run
  restarted from a checkpoint at step ``t`` sees exactly the batches it would have seen;
* :func:`run` trains ``steps`` steps with ``lr = base_lr * schedule(t)`` at step ``t``
  (what ``LambdaLR`` does), records the loss, the lr and the size of every update, and
  can start from a :class:`Checkpoint`;
* :func:`second_moment_noise` measures how far Adam's bias-corrected ``v`` is from the
  true mean squared gradient after ``t`` minibatches, at fixed weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import optlib

from .data import CharDataset, digits, text

__all__ = ["LMTask", "DigitsTask", "Checkpoint", "Run", "run", "second_moment_noise",
           "matrix_params", "adafactor_update_rms", "trust_ratios", "steps_to"]


class LMTask:
    """Next-character prediction on the book's corpus with a fixed batch per step.

    ``batch(t)`` is the training batch of step ``t`` (the same for every run with the same
    ``seed``); ``val_loss(model)`` is the mean loss on ``val_batches`` fixed held-out batches,
    the same whatever ``seed`` (which only reorders the training data).
    """

    def __init__(self, block_size: int = 32, batch_size: int = 16, seed: int = 0,
                 val_batches: int = 8):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.data = CharDataset(text(), block_size=block_size)
        self.vocab_size = self.data.vocab_size
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        g = torch.Generator().manual_seed(10_000)
        self._val = [self.data.batch(batch_size, "val", generator=g) for _ in range(val_batches)]

    def batch(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1_000_003 * (self.seed + 1) + t)
        return self.data.batch(self.batch_size, "train", generator=g)

    @staticmethod
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        value = sum(self.loss(model, x, y).item() for x, y in self._val) / len(self._val)
        model.train(was_training)
        return value


class DigitsTask:
    """Classification of scikit-learn's 8×8 digits with the same interface as :class:`LMTask`:
    ``batch(t)`` is a fixed random minibatch per step (the whole training set when
    ``batch_size`` is at least its size), ``val_loss`` the loss on the held-out quarter,
    ``train_loss`` the loss on the whole training set. ``seed`` orders the minibatches;
    ``split_seed`` chooses the train/test split."""

    def __init__(self, batch_size: int = 32, seed: int = 0, flat: bool = True,
                 split_seed: int = 0):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.split = digits(seed=split_seed, flat=flat)
        self.n_train = len(self.split.x_train)
        self.batch_size = min(batch_size, self.n_train)
        self.seed = seed

    def batch(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.split.x_train, self.split.y_train
        if self.batch_size == self.n_train:
            return x, y
        g = torch.Generator().manual_seed(1_000_003 * (self.seed + 1) + t)
        idx = torch.randperm(self.n_train, generator=g)[:self.batch_size]
        return x[idx], y[idx]

    loss = staticmethod(LMTask.loss)

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        return self.loss(model, self.split.x_test, self.split.y_test).item()

    @torch.no_grad()
    def train_loss(self, model: nn.Module) -> float:
        return self.loss(model, self.split.x_train, self.split.y_train).item()

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        return (model(self.split.x_test).argmax(-1) == self.split.y_test).float().mean().item()


@dataclass
class Checkpoint:
    """Weights and optimizer state after ``step`` completed steps."""

    step: int
    model: dict
    optimizer: dict


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
        optimizer_gets_model: bool = False) -> Run:
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
    a model by its modules).
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
        before = _flat(params)
        if isinstance(optimizer, optlib.SophiaG):
            optimizer.step(bs=y.numel())
            optlib.gnb_update_hessian(optimizer, model, x, step=t, every=hessian_every,
                                      generator=torch.Generator().manual_seed(t))
        else:
            optimizer.step()
        delta = _flat(params) - before
        lr_now = base_lrs[0] * mult
        out.loss.append(loss.item())
        out.lr.append(lr_now)
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


def matrix_params(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices of the model's linear maps (not embeddings, norms or biases)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [p for p in model.parameters() if p.ndim == 2 and id(p) not in embeddings]


def second_moment_noise(task: LMTask, model: nn.Module, steps: int = 100,
                        reference: int = 200, beta2: float = 0.999,
                        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)) -> dict:
    """How well does Adam's bias-corrected second moment know E[g²] after t batches?

    The weights are held fixed (so the true E[g²] does not move). The reference
    ``v_true`` is the mean of g² over ``reference`` batches; then ``steps`` *other* batches
    are fed to Adam's rule ``v ← β₂v + (1−β₂)g²``, ``v̂ = v / (1−β₂ᵗ)``, and after each we
    record quantiles over the coordinates of the weight matrices of ``v̂_t / v_true``.
    Returns ``{"t": array, "q": array (steps, len(quantiles)), "quantiles": ...,
    "below_0.1": fraction of coordinates with v̂ < v_true/10 per t}``.
    """
    params = matrix_params(model)

    def grad(t):
        x, y = task.batch(t)
        model.zero_grad(set_to_none=True)
        task.loss(model, x, y).backward()
        return _flat(p.grad for p in params)

    v_true = sum(grad(t).pow(2) for t in range(reference)) / reference
    v = torch.zeros_like(v_true)
    q = torch.tensor(quantiles, dtype=v_true.dtype)
    rows, below = [], []
    for t in range(1, steps + 1):
        g = grad(reference + t)
        v.mul_(beta2).add_(g.pow(2), alpha=1 - beta2)
        ratio = v / (1 - beta2**t) / v_true
        rows.append(torch.quantile(ratio, q).tolist())
        below.append((ratio < 0.1).float().mean().item())
    model.zero_grad(set_to_none=True)
    return {"t": np.arange(1, steps + 1), "q": np.array(rows), "quantiles": quantiles,
            "below_0.1": np.array(below)}


# --- chapter 6: looking inside the optimizers beyond Adam ---------------------------------
@torch.no_grad()
def adafactor_update_rms(optimizer: torch.optim.Optimizer) -> list[float]:
    """RMS of Adafactor's unclipped update U = G / sqrt(V̂) of the step just taken, per
    parameter (recomputed from the state and ``.grad``, as :class:`optlib.Adafactor` does):
    the step is clipped when this exceeds the threshold ``d``."""
    out = []
    for group in optimizer.param_groups:
        eps1 = group["eps"][0]
        for p in group["params"]:
            st = optimizer.state.get(p)
            if p.grad is None or not st:
                continue
            g = p.grad
            e = torch.finfo(g.dtype).eps if eps1 is None else eps1
            if "row_var" in st:
                r, c = st["row_var"], st["col_var"]
                v_hat = (r @ c) / r.mean(dim=-2, keepdim=True).clamp(min=e)
            else:
                v_hat = st["variance"]
            u = v_hat.clamp(min=e * e).rsqrt() * g
            out.append(u.pow(2).mean().sqrt().item())
    return out


@torch.no_grad()
def trust_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Per-parameter trust ratios of the step just taken: ‖θ‖/‖u‖ for :class:`optlib.LAMB`
    (u = m̂/(√v̂ + ε) + λθ, from the state), the local lr tc·‖θ‖/(‖g‖ + λ‖θ‖ + ε) for
    :class:`optlib.LARS`; 1 where a norm is 0, as in the optimizers. ‖θ‖ is taken after the
    step, which changed it by a fraction of about lr: close enough for a plot."""
    out = []
    for group in optimizer.param_groups:
        wd = group["weight_decay"]
        for p in group["params"]:
            st = optimizer.state.get(p)
            if p.grad is None or st is None:
                continue
            w = p.norm().item()
            if isinstance(optimizer, optlib.LAMB):
                (b1, b2), t = group["betas"], float(st["step"])
                u = (st["exp_avg"] / (1 - b1**t)) / (
                    (st["exp_avg_sq"] / (1 - b2**t)).sqrt() + group["eps"]) + wd * p
                n = u.norm().item()
                out.append(w / n if w > 0 and n > 0 else 1.0)
            elif isinstance(optimizer, optlib.LARS):
                gn = p.grad.norm().item()
                ok = w > 0 and gn > 0
                out.append(group["trust_coefficient"] * w / (gn + wd * w + group["eps"])
                           if ok else 1.0)
            else:
                raise ValueError(f"optimizer must be LAMB or LARS, got {type(optimizer).__name__}")
    return out


def steps_to(losses, target: float, window: int = 25) -> int | None:
    """First step at which the mean of the last ``window`` losses is at or below ``target``."""
    x = np.asarray(losses, dtype=float)
    if len(x) < window:
        return None
    means = np.convolve(x, np.ones(window) / window, mode="valid")
    hit = np.nonzero(means <= target)[0]
    return int(hit[0]) + window if hit.size else None
