"""Helpers for chapters 4 (AdaGrad, RMSprop) and 5 (Adam, AdamW): measurements, not optimizers.

The optimizers are written from scratch in the chapters and used from ``optlib``; what
lives here is the bookkeeping around them:

* :func:`compare`: run from-scratch rules and library optimizers side by side in float64
  and report how far apart they end up;
* :func:`fit`: a lean training loop that accepts an optimizer *or* a from-scratch rule,
  and can scale the loss (to test scale invariance);
* :func:`run_1d`: a scalar parameter on a 1-D function, to watch step sizes;
* :func:`effective_lr`: each coordinate's step size ``lr / (sqrt(s) + eps)`` read from an
  AdaGrad or RMSprop state;
* :func:`decay_under_noise`: how much weight decay reaches a weight whose gradient is
  pure noise of a given size, under Adam + L2 and under AdamW;
* :func:`lr_wd_grid`: test error over a grid of learning rates and weight decays;
  :func:`noisy_labels` gives regularization something to do, :func:`mark_best_per_column`
  shows where the best weight decay lies for each learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Rule", "compare", "fit", "run_1d", "effective_lr", "decay_under_noise",
           "lr_wd_grid", "make_adam_l2", "make_adamw_torch", "make_adamw_paper", "noisy_labels",
           "mark_best_per_column"]

#: A from-scratch update rule: ``rule(params, grads, state, **hyper)`` changes ``params`` in
#: place; ``state`` is a dict the rule owns (empty on the first call).
Rule = Callable[..., None]


def compare(make_model: Callable[[], nn.Module], x: Tensor, y: Tensor, rule: Rule,
            optimizers: dict[str, Callable], steps: int = 20, batch_size: int = 32,
            seed: int = 0) -> dict[str, float]:
    """Train float64 copies of one model on the same minibatches: one with the from-scratch
    ``rule(params, grads, state)``, one per ``optimizers[name](params)``; return, per name,
    the largest parameter difference from the rule's copy after ``steps`` steps."""
    from .data import batches

    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    names = [None, *optimizers]
    models, opts = {}, {}
    for name in names:
        torch.manual_seed(seed)
        models[name] = make_model().double()
        opts[name] = None if name is None else optimizers[name](list(models[name].parameters()))
    state: dict = {}
    stream = batches(x.double(), y, batch_size, seed=seed)
    for _ in range(steps):
        xb, yb = next(stream)
        for name in names:
            model = models[name]
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            if opts[name] is not None:
                opts[name].step()
            else:
                params = list(model.parameters())
                with torch.no_grad():
                    rule(params, [p.grad for p in params], state)
    ref = list(models[None].parameters())
    return {name: max((a - b).abs().max().item()
                      for a, b in zip(models[name].parameters(), ref, strict=True))
            for name in optimizers}


def fit(model: nn.Module, optimizer, batches: Iterable, steps: int, *, loss_scale: float = 1.0,
        hyper: dict | None = None, schedule: Callable[[int], float] | None = None) -> list[float]:
    """Train for ``steps`` steps; return the (unscaled) minibatch losses.

    ``optimizer`` is a ``torch.optim`` optimizer or a from-scratch :data:`Rule`, called as
    ``rule(params, grads, state, **hyper)``. The gradient is that of
    ``loss_scale * cross_entropy``: for a scale-invariant method the result must not
    depend on ``loss_scale``. ``schedule(step)`` multiplies every group's initial lr
    (optimizers only). Stops early, padding with ``inf``, if the loss is not finite.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not loss_scale > 0:
        raise ValueError(f"loss_scale must be positive, got {loss_scale}")
    is_opt = isinstance(optimizer, torch.optim.Optimizer)
    if schedule is not None and not is_opt:
        raise ValueError("schedule needs a torch optimizer, not a rule")
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) if schedule else None
    params = [p for p in model.parameters() if p.requires_grad]
    state: dict = {}
    losses: list[float] = []
    it = iter(batches)
    for _ in range(steps):
        xb, yb = next(it)
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        value = loss.item()
        if not math.isfinite(value):
            losses.extend([math.inf] * (steps - len(losses)))
            break
        losses.append(value)
        (loss * loss_scale).backward()
        if is_opt:
            optimizer.step()
            if sched is not None:
                sched.step()
        else:
            with torch.no_grad():
                optimizer(params, [p.grad for p in params], state, **(hyper or {}))
    return losses


def run_1d(make_optimizer: Callable, f: Callable[[Tensor], Tensor], x0: float,
           steps: int) -> Tensor:
    """Minimize a scalar function ``f`` from ``x0``; return the ``steps + 1`` iterates (float64)."""
    x = torch.tensor([float(x0)], dtype=torch.float64, requires_grad=True)
    opt = make_optimizer([x])
    path = [float(x0)]
    for _ in range(steps):
        opt.zero_grad()
        f(x).sum().backward()
        opt.step()
        path.append(x.item())
    return torch.tensor(path, dtype=torch.float64)


def effective_lr(optimizer: torch.optim.Optimizer, seen_only: bool = False) -> Tensor:
    """Every coordinate's current step size ``lr / (sqrt(s) + eps)`` (one flat tensor), where
    ``s`` is AdaGrad's ``sum`` or RMSprop's ``square_avg``: the factor that multiplies the
    gradient in the next step (ignoring that the next gradient also enters ``s``).
    ``seen_only``: leave out coordinates whose ``s`` is still 0 (they never had a nonzero
    gradient, and their "rate" ``lr/eps`` is meaningless)."""
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            key = "sum" if "sum" in st else "square_avg" if "square_avg" in st else None
            if key is None:
                raise ValueError(
                    f"effective_lr needs an AdaGrad or RMSprop state (a 'sum' or 'square_avg' "
                    f"entry), got keys {sorted(st)}"
                )
            s_ = st[key].flatten()
            if seen_only:
                s_ = s_[s_ > 0]
            out.append(group["lr"] / (s_.sqrt() + group["eps"]))
    return torch.cat(out)


def decay_under_noise(make_optimizer: Callable, sigmas: Sequence[float], steps: int = 2000,
                      per_sigma: int = 200, seed: int = 0) -> list[float]:
    """Start ``per_sigma`` weights at 1 for each gradient scale σ and feed them gradients that
    are pure zero-mean noise of std σ (the data has nothing to say about them), so that
    only weight decay should move them on average. Return, per σ, the mean |θ| after
    ``steps`` steps. ``make_optimizer(params)`` builds the optimizer on one tensor."""
    if not sigmas:
        raise ValueError("sigmas must not be empty")
    scales = torch.tensor([float(s) for s in sigmas], dtype=torch.float64)
    scales = scales.repeat_interleave(per_sigma)
    theta = torch.ones_like(scales, requires_grad=True)
    opt = make_optimizer([theta])
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        theta.grad = scales * torch.randn(scales.shape, generator=g, dtype=torch.float64)
        opt.step()
    return theta.detach().abs().reshape(len(sigmas), per_sigma).mean(1).tolist()


def make_adam_l2(params, lr: float, wd: float):
    """``Adam`` with L2 regularization: ``wd`` is added as ``wd·θ`` to the gradient."""
    import optlib

    return optlib.Adam(params, lr=lr, weight_decay=wd)


def make_adamw_torch(params, lr: float, wd: float):
    """``AdamW`` with PyTorch's ``weight_decay``: θ shrinks by ``lr·wd`` per step."""
    import optlib

    return optlib.AdamW(params, lr=lr, weight_decay=wd)


def make_adamw_paper(params, lr: float, wd: float):
    """``AdamW`` in the paper's parametrization: θ shrinks by ``wd`` per step (times the
    schedule multiplier), whatever the learning rate; PyTorch's ``weight_decay = wd / lr``."""
    import optlib

    return optlib.AdamW(params, lr=lr, weight_decay=wd / lr)


def lr_wd_grid(make_optimizer: Callable, lrs: Sequence[float], wds: Sequence[float], data,
               make_model: Callable[[int], nn.Module], steps: int = 600, batch_size: int = 32,
               seeds: Sequence[int] = (0,), schedule: Callable[[int], float] | None = None
               ) -> tuple[Tensor, Tensor]:
    """Test error and test loss (each averaged over ``seeds``) for every (wd, lr) pair:
    two tensors of shape (len(wds), len(lrs)), rows = weight decays.

    ``make_optimizer(params, lr, wd)`` builds the optimizer, ``make_model(seed)`` the model;
    ``data`` is a :class:`~optlib.book.data.Split`. A run whose loss stops being finite
    counts as error 1 (and loss ``inf``)."""
    from .data import batches

    err = torch.zeros(len(wds), len(lrs), dtype=torch.float64)
    test_loss = torch.zeros_like(err)
    for i, wd in enumerate(wds):
        for j, lr in enumerate(lrs):
            for seed in seeds:
                model = make_model(seed)
                opt = make_optimizer(model.parameters(), lr, wd)
                losses = fit(model, opt, batches(data.x_train, data.y_train, batch_size, seed=seed),
                             steps, schedule=schedule)
                with torch.no_grad():
                    out = model(data.x_test)
                    if math.isfinite(losses[-1]) and torch.isfinite(out).all():
                        err[i, j] += (out.argmax(1) != data.y_test).double().mean()
                        test_loss[i, j] += F.cross_entropy(out, data.y_test).item()
                    else:
                        err[i, j] += 1.0
                        test_loss[i, j] += math.inf
    return err / len(seeds), test_loss / len(seeds)


def noisy_labels(y: Tensor, fraction: float, num_classes: int = 10, seed: int = 0) -> Tensor:
    """A copy of ``y`` in which a random ``fraction`` of the entries is replaced by a label
    drawn uniformly from ``num_classes`` (so about ``fraction·(1 − 1/num_classes)`` end up
    wrong): training labels that a network can memorize but should not."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(y), generator=g) < fraction
    return torch.where(flip, torch.randint(0, num_classes, (len(y),), generator=g), y)


def mark_best_per_column(ax, values) -> list[int]:
    """Outline, in a heatmap drawn by ``plots.heatmap``, the smallest value of each column
    (the best weight decay for each learning rate); return those rows."""
    from matplotlib.patches import Rectangle

    grid = torch.as_tensor(values, dtype=torch.float64)
    rows = [int(torch.nan_to_num(grid[:, j], nan=math.inf).argmin()) for j in range(grid.shape[1])]
    for j, i in enumerate(rows):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    return rows
