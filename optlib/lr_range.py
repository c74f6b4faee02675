"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", §3.3): train briefly while the learning rate grows geometrically, watch the loss.

The loss first barely moves (lr too small), then falls quickly, then turns up and
explodes (lr too large). A good learning rate sits on the fast-falling part.
:func:`~optlib.lr_range_test` runs the sweep on a copy of the training state and puts the model
and the optimizer back exactly as it found them.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ._progress import progress as _progress

__all__ = ["LRRangeResult", "lr_range_test", "moving_average", "moving_average_delay",
           "steepest_lr"]


@dataclass
class LRRangeResult:
    """What :func:`~optlib.lr_range_test` measured.

    ``lrs[i]``: the learning rate of step i; ``raw_losses[i]``: the minibatch loss computed
    just before that step (so it shows the effect of the steps before it);
    ``losses[i]``: its bias-corrected moving average; ``diverged``: the sweep stopped
    early because the smoothed loss exploded or stopped being finite.
    ``suggested_lr``: see :func:`steepest_lr`; ``min_loss_lr_over_10``: a tenth of the
    lr at the lowest smoothed loss (the fastai "minimum" rule).

    The smoothed curve lags the raw one (:func:`moving_average_delay`): its steepest point,
    hence ``suggested_lr``, sits up to that many steps' worth of lr above where the raw
    loss fell fastest.
    """

    lrs: list
    losses: list
    raw_losses: list
    suggested_lr: float | None
    min_loss_lr_over_10: float | None
    diverged: bool

    def plot(self, ax=None, suggestion: bool = True):
        """Smoothed loss against lr (log axis), with the suggestion marked (needs matplotlib)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        ax.plot(self.lrs, self.losses, label="smoothed loss")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        if suggestion and self.suggested_lr is not None:
            ax.axvline(self.suggested_lr, color="gray", linestyle="--",
                       label=f"steepest descent: {self.suggested_lr:.2g}")
            ax.legend()
        return ax


def moving_average(values: Iterable[float], smooth: float) -> Iterator[float]:
    r"""The bias-corrected exponential moving average of fastai, value by value:

    .. math:: a_i = \beta a_{i-1} + (1-\beta)\ell_i, \quad a_{-1} = 0, \qquad
        \bar\ell_i = a_i / (1-\beta^{i+1})

    (``smooth`` = β; 0 gives the values back). It yields :math:`\bar\ell_i` as soon as
    :math:`\ell_i` is there, so it can follow a list that grows (the range test's own
    losses), or re-smooth a finished sweep's ``raw_losses`` with another β.

    Args:
        values: the raw values :math:`\ell_0, \ell_1, \ldots`.
        smooth: β, the average's decay.
    """
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    average = 0.0
    for i, value in enumerate(values):
        average = smooth * average + (1.0 - smooth) * value
        yield average / (1.0 - smooth ** (i + 1))


def moving_average_delay(i: int, smooth: float) -> float:
    r"""How many steps the bias-corrected moving average of step ``i`` (0-based) lags
    the raw values: the mean age of the values it averages,

    .. math:: d_i = \frac{\sum_{k=0}^{i} k\,\beta^k}{\sum_{k=0}^{i} \beta^k}
        \;\to\; \frac{\beta}{1-\beta} \quad (i \to \infty)

    (``smooth`` = β; 49 steps for fastai's 0.98). On a raw curve that is linear in the
    step, the average at step i equals the raw value at step :math:`i - d_i` exactly. A
    feature of the raw curve (the steepest fall) shows up in the average between 0 and
    :math:`d_i` steps late: late by about :math:`d_i` when it spreads over many more steps
    than :math:`d_i`, by less when it is sharper. In a geometric sweep of ``N`` steps from
    ``start_lr`` to ``end_lr`` a delay of d steps is a factor
    :math:`(\text{end\_lr}/\text{start\_lr})^{d/(N-1)}` in lr.

    Args:
        i: the step (0-based).
        smooth: β, the average's decay.
    """
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    k = np.arange(int(i) + 1, dtype=float)
    w = smooth ** k
    return float((k * w).sum() / w.sum())


def steepest_lr(lrs, losses, skip_start: int | None = None, skip_end: int = 5) -> float | None:
    """The lr where the smoothed loss falls fastest per unit of log(lr).

    Rule: drop the first ``skip_start`` points (default ``len // 10``; the moving
    average has not settled yet) and the last ``skip_end`` (where it blows up); take
    d loss / d log(lr) by ``numpy.gradient`` (central differences) on what is left and
    return the lr at its minimum. Trimming is relaxed when too few points are left
    (fewer than 3 gives ``None``). Non-finite losses end the curve. This is
    torch-lr-finder's suggestion (skip_start=10, skip_end=5 for 100 steps).

    Args:
        lrs: the learning rates of the sweep.
        losses: the (smoothed) losses at them.
        skip_start: points dropped at the start (default: a tenth of them).
        skip_end: points dropped at the end.
    """
    lrs = np.asarray(lrs, dtype=float)
    losses = np.asarray(losses, dtype=float)
    finite = np.isfinite(losses)
    n = len(losses) if finite.all() else int(np.argmin(finite))
    start = n // 10 if skip_start is None else skip_start
    end = n - skip_end
    if end - start < 3:
        start, end = 0, n
    if end - start < 3:
        return None
    x, y = np.log(lrs[start:end]), losses[start:end]
    return float(lrs[start + int(np.argmin(np.gradient(y, x)))])


def _batch_stream(batches: Iterable):
    """Yield batches forever: a re-iterable (a list, a DataLoader) is restarted when it
    runs out; a one-shot iterator simply ends the sweep when exhausted."""
    while True:
        it = iter(batches)
        empty = True
        for b in it:
            empty = False
            yield b
        if empty or it is batches:
            return


def lr_range_test(model: torch.nn.Module, loss_fn: Callable, batches: Iterable,
                  optimizer: torch.optim.Optimizer, start_lr: float = 1e-7, end_lr: float = 10.0,
                  num_steps: int = 100, smooth: float = 0.98, diverge_factor: float = 4.0,
                  progress: bool | None = None) -> LRRangeResult:
    r"""Leslie Smith's learning-rate range test with a geometric sweep.

    Step i (0 ≤ i < ``num_steps``) trains on the next ``(x, y)`` of ``batches`` with
    every param group's lr set to

    .. math:: \eta_i = \eta_{start}\,(\eta_{end}/\eta_{start})^{i/(N-1)}

    (the first at ``start_lr``, the last at ``end_lr``), recording the loss
    ``loss_fn(model(x), y)`` computed before the step. The curve is smoothed with the
    bias-corrected exponential moving average of fastai,
    :math:`a_i = \beta a_{i-1} + (1-\beta)\ell_i`, :math:`\bar\ell_i = a_i / (1-\beta^{i+1})`
    (``smooth`` = β; 0 means no smoothing). The sweep stops early once the smoothed loss
    exceeds ``diverge_factor`` × its best value so far or is not finite (that point is
    kept). ``batches`` is restarted when it runs out if it can be (a list, a DataLoader).

    Afterwards the model (parameters, buffers, ``.grad``, train/eval mode), the optimizer
    (state and every group's hyperparameters, lr included) and torch's CPU random state
    are exactly as before (bitwise). Works with any ``torch.optim.Optimizer``.

    Returns an :class:`~optlib.lr_range.LRRangeResult`; ``suggested_lr`` follows
    :func:`~optlib.lr_range.steepest_lr`.

    Args:
        model: the model to train.
        loss_fn: (output, target) → the loss.
        batches: an iterable of (x, y) batches (restarted when it runs out, if it can be).
        optimizer: the optimizer whose groups' lr is swept.
        start_lr: the first lr.
        end_lr: the last lr.
        num_steps: N, the number of steps (and lrs).
        smooth: β of the moving average (0: none).
        diverge_factor: stop once the smoothed loss exceeds this factor times its best value so
            far.
        progress: draw a progress bar (None: unless OPTLIB_PROGRESS says otherwise or tests are
            running).
    """
    if isinstance(start_lr, bool) or not isinstance(start_lr, numbers.Real) or not start_lr > 0:
        raise ValueError(f"start_lr must be positive, got {start_lr!r}")
    if isinstance(start_lr, bool) or not math.isfinite(start_lr):
        raise ValueError(f"start_lr must be finite, got {start_lr!r}")
    if isinstance(end_lr, bool) or not isinstance(end_lr, numbers.Real) or not end_lr > start_lr:
        raise ValueError(f"end_lr must be greater than start_lr ({start_lr}), got {end_lr!r}")
    if not math.isfinite(end_lr):
        raise ValueError(f"end_lr must be finite, got {end_lr!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    if not diverge_factor > 1.0:
        raise ValueError(f"diverge_factor must be greater than 1, got {diverge_factor!r}")

    # Everything the sweep changes, saved by value.
    model_state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    grads = {p: (None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()}
    modes = {m: m.training for m in model.modules()}
    optim_state = copy.deepcopy(optimizer.state_dict())
    rng_state = torch.get_rng_state()

    ratio = end_lr / start_lr
    lrs, raw, smoothed = [], [], []
    averages = moving_average(raw, smooth)      # reads raw as the sweep appends to it
    best, diverged = math.inf, False
    try:
        model.train()
        stream = _batch_stream(batches)
        for i in _progress(range(num_steps), total=num_steps, desc="lr range test",
                           enabled=progress):
            try:
                x, y = next(stream)
            except StopIteration:
                break
            lr = start_lr * ratio ** (i / (num_steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            lrs.append(lr)
            raw.append(loss.item())
            s = next(averages)
            smoothed.append(s)
            if not math.isfinite(s) or s > diverge_factor * best:
                diverged = True
                break
            best = min(best, s)
    finally:
        with torch.no_grad():
            model.load_state_dict(model_state)
            for p, g in grads.items():
                p.grad = g
        for m, training in modes.items():
            m.training = training
        optimizer.load_state_dict(optim_state)
        torch.set_rng_state(rng_state)

    finite = [(lr, s) for lr, s in zip(lrs, smoothed, strict=False) if math.isfinite(s)]
    min_over_10 = min(finite, key=lambda pair: pair[1])[0] / 10 if finite else None
    return LRRangeResult(lrs=lrs, losses=smoothed, raw_losses=raw,
                         suggested_lr=steepest_lr(lrs, smoothed),
                         min_loss_lr_over_10=min_over_10, diverged=diverged)
