"""Two-dimensional toy problems: see an optimizer's path, not just its loss.

A :class:`Surface` is a function of a point ``xy`` (a tensor whose last dimension is 2)
with what a plot needs: a window, the minimum, the Hessian's eigenvalues where known.
:func:`run` drives any torch optimizer on it (the book's loop of toy problems,
:func:`optlib.book.train.descend`) and returns the trajectory, and
:func:`plot_trajectories` draws several trajectories over the contour lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from ..sgd import SGD


class Surface:
    """A 2-D loss ``f(xy)``: ``xy`` has shape (..., 2), the result shape (...).

    ``noise`` > 0 adds Gaussian noise of that standard deviation to every gradient that
    :func:`run` computes (a stand-in for minibatch noise), drawn from a generator seeded
    with ``seed`` at the start of each run, so runs are repeatable and every optimizer
    sees the same noise.
    """

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], minimum=None,
                 xlim=(-2.0, 2.0), ylim=(-2.0, 2.0), hessian_eigenvalues=None,
                 noise: float = 0.0, seed: int = 0):
        self.name = name
        self._fn = fn
        self.minimum = None if minimum is None else torch.as_tensor(minimum, dtype=torch.float64)
        self.xlim = tuple(xlim)
        self.ylim = tuple(ylim)
        self.hessian_eigenvalues = hessian_eigenvalues
        self.noise = float(noise)
        self.seed = seed

    def f(self, xy) -> Tensor:
        xy = torch.as_tensor(xy)
        if xy.shape[-1] != 2:
            raise ValueError(f"xy must have a last dimension of 2, got shape {tuple(xy.shape)}")
        return self._fn(xy)

    __call__ = f

    def gradient(self, xy) -> Tensor:
        """The exact gradient at ``xy`` (shape (2,), float64)."""
        p = torch.as_tensor(xy, dtype=torch.float64).detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.f(p), p)
        return g

    def hessian(self, xy) -> Tensor:
        """The exact Hessian at ``xy`` (2 × 2, float64)."""
        p = torch.as_tensor(xy, dtype=torch.float64)
        return torch.autograd.functional.hessian(self.f, p)

    def grid(self, points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The surface over its window, for contour lines: ``X``, ``Y`` and
        ``Z = f(X, Y)``, float64 arrays of ``points`` × ``points`` (x along the columns).

        Args:
            points: grid points along each axis, ends included.
        """
        xs = torch.linspace(*self.xlim, points, dtype=torch.float64)
        ys = torch.linspace(*self.ylim, points, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        with torch.no_grad():
            Z = self.f(torch.stack([X, Y], dim=-1)).numpy()
        return X.numpy(), Y.numpy(), Z

    def __repr__(self) -> str:
        return f"Surface({self.name!r})"


def _rotation(angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def _quadratic_form(condition: float, angle: float, scale: float) -> Tensor:
    if not condition >= 1.0:
        raise ValueError(f"condition must be >= 1, got {condition}")
    if not scale > 0.0:
        raise ValueError(f"scale must be positive, got {scale}")
    R = _rotation(angle)
    return R @ torch.diag(torch.tensor([scale, scale * condition], dtype=torch.float64)) @ R.T


def quadratic(condition: float = 10.0, angle: float = 0.0, scale: float = 1.0) -> Surface:
    """f(x) = ½ xᵀAx with eigenvalues ``scale`` and ``scale·condition``; the eigenvectors
    are the axes rotated by ``angle`` (radians). Gradient descent is stable for
    lr < 2 / (scale·condition)."""
    A = _quadratic_form(condition, angle, scale)

    def fn(xy):
        A_ = A.to(xy.dtype)
        return 0.5 * ((xy @ A_) * xy).sum(-1)

    return Surface(f"quadratic (κ={condition:g})", fn, minimum=[0.0, 0.0],
                   hessian_eigenvalues=(scale, scale * condition))


def diagonal_quadratic(curvatures=(100.0, 1.0), xlim=(-2.0, 2.0), ylim=(-2.0, 2.0)) -> Surface:
    """f(x, y) = ½ (h₁x² + h₂y²), the curvatures ``(h₁, h₂)`` along the axes, computed
    coordinate by coordinate (``½ Σ h ⊙ xy²``, exact where the matrix form of
    :func:`quadratic` rounds). Gradient descent is stable for lr < 2 / max(h)."""
    H = torch.as_tensor(curvatures, dtype=torch.float64).reshape(2)
    if not bool((H > 0).all()):
        raise ValueError(f"curvatures must be positive, got {tuple(H.tolist())}")

    def fn(xy):
        return 0.5 * (H.to(xy.dtype) * xy**2).sum(-1)

    h1, h2 = H.tolist()
    return Surface(f"½({h1:g}x² + {h2:g}y²)", fn, minimum=[0.0, 0.0], xlim=xlim, ylim=ylim,
                   hessian_eigenvalues=tuple(sorted((h1, h2))))


def noisy_quadratic(condition: float = 10.0, noise: float = 1.0, seed: int = 0) -> Surface:
    """:func:`quadratic` whose gradients (in :func:`run`) carry Gaussian noise of std ``noise``."""
    if not noise >= 0.0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    q = quadratic(condition)
    return Surface(f"noisy quadratic (κ={condition:g}, σ={noise:g})", q._fn, minimum=[0.0, 0.0],
                   hessian_eigenvalues=q.hessian_eigenvalues, noise=noise, seed=seed)


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Surface:
    """f(x, y) = (a − x)² + b (y − x²)²: a curved, narrow valley; minimum at (a, a²)."""

    def fn(xy):
        x, y = xy[..., 0], xy[..., 1]
        return (a - x) ** 2 + b * (y - x**2) ** 2

    # Hessian at the minimum: [[2 + 8 b a², −4 b a], [−4 b a, 2 b]].
    H = torch.tensor([[2 + 8 * b * a**2, -4 * b * a], [-4 * b * a, 2 * b]], dtype=torch.float64)
    eig = tuple(torch.linalg.eigvalsh(H).tolist())
    return Surface("Rosenbrock", fn, minimum=[a, a**2], xlim=(-2.0, 2.0), ylim=(-1.0, 3.0),
                   hessian_eigenvalues=eig)


def beale() -> Surface:
    """Beale's function: flat plateaus and steep walls; minimum 0 at (3, 0.5)."""

    def fn(xy):
        x, y = xy[..., 0], xy[..., 1]
        return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2
                + (2.625 - x + x * y**3) ** 2)

    s = Surface("Beale", fn, minimum=[3.0, 0.5], xlim=(-4.5, 4.5), ylim=(-4.5, 4.5))
    s.hessian_eigenvalues = tuple(torch.linalg.eigvalsh(s.hessian(s.minimum)).tolist())
    return s


def saddle() -> Surface:
    """f(x, y) = ½ (x² − y²): a saddle point at the origin, no minimum."""

    def fn(xy):
        return 0.5 * (xy[..., 0] ** 2 - xy[..., 1] ** 2)

    return Surface("saddle", fn, minimum=None, hessian_eigenvalues=(-1.0, 1.0))


class ExactHessian:
    """A hook of :func:`run` (of :func:`optlib.book.train.descend`) for
    :class:`optlib.SophiaG` on a surface: every step gets ``bs=1``, and after steps 0,
    ``every``, 2·``every``, ... (counted from 0) SophiaG's curvature estimate is refreshed
    with ``diagonal``, the exact diagonal of the Hessian, instead of a sampled estimate
    (``update_hessian`` squares ``.grad``, so it is handed the square root; the step's
    own gradient is put back afterwards).

    Args:
        diagonal: the Hessian's diagonal (2 non-negative numbers).
        every: steps between two refreshes (SophiaG's default k = 10).
    """

    def __init__(self, diagonal, every: int = 10):
        self.diagonal = torch.as_tensor(diagonal, dtype=torch.float64).reshape(2)
        if not bool((self.diagonal >= 0).all()):
            raise ValueError(f"diagonal must be non-negative, got {tuple(self.diagonal.tolist())}")
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every = every

    def step_kwargs(self, x: Tensor, y=None) -> dict:
        """Keyword arguments of ``optimizer.step``: a curvature estimated from one example.

        Args:
            x: the point.
            y: unused (``None`` on a surface).
        """
        return {"bs": 1}

    def __call__(self, step) -> None:
        """After a step (a :class:`optlib.book.train.Step`, whose ``x`` is the point,
        with the step's gradient in ``x.grad``).

        Args:
            step: the step just taken.
        """
        if step.t % self.every == 0:
            xy = step.x
            gradient, xy.grad = xy.grad, self.diagonal.to(xy.dtype).sqrt()
            step.optimizer.update_hessian()
            xy.grad = gradient


def run(surface: Surface, make_optimizer: Callable, start, steps: int,
        schedule: Callable[[int], float] | None = None, hooks: Sequence[Callable] = (),
        hyper: dict | None = None) -> Tensor:
    """Run ``make_optimizer([xy])`` for ``steps`` steps from ``start`` on ``surface``
    (:func:`optlib.book.train.descend`, with the surface's gradient noise); return the
    trajectory, a float64 tensor (steps + 1, 2) whose row 0 is ``start``.

    ``schedule`` is a ``step -> multiplier`` callable; each of ``hooks`` sees every step
    as a :class:`optlib.book.train.Step` whose ``x`` is the point (to record the
    optimizer's state, or :class:`ExactHessian`). With ``hyper`` (``{}`` for none),
    ``make_optimizer`` is a from-scratch rule ``rule(params, grads, state, **hyper)``, as
    in :func:`~optlib.book.train.descend`. If the loss stops being finite (divergence),
    the remaining rows are NaN.
    """
    from .train import descend

    start = torch.as_tensor(start, dtype=torch.float64).reshape(2)
    return descend(make_optimizer, start, steps, loss=surface.f, hyper=hyper,
                   schedule=schedule, hooks=hooks, noise=surface.noise,
                   seed=surface.seed).path


def loss_curve(surface: Surface, trajectory: Tensor) -> Tensor:
    """f at every point of a trajectory: shape (steps + 1,)."""
    with torch.no_grad():
        return surface.f(torch.as_tensor(trajectory, dtype=torch.float64))


def plot_trajectories(surface: Surface, trajectories: Mapping[str, Tensor], ax=None,
                      levels: int = 30, log_levels: bool = True, markers: bool = True):
    """Contour lines of ``surface`` in its window, and each trajectory as a path from
    its start (a circle) on; the minimum, if any, is a star."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.4))
    X, Y, Z = surface.grid(200)
    low, high = float(Z.min()), float(Z.max())
    if log_levels and low >= 0 and high > 0:
        floor = max(low, high * 1e-6) if low == 0 else low
        lv = np.geomspace(floor, high, levels)
    else:
        lv = np.linspace(low, high, levels)
    ax.contour(X, Y, Z, levels=lv, cmap="Greys_r", linewidths=0.6, alpha=0.7)
    for label, path in trajectories.items():
        path = torch.as_tensor(path).detach().cpu().double().numpy()
        (line,) = ax.plot(path[:, 0], path[:, 1], label=str(label), lw=1.4,
                          marker="." if markers else None, markersize=3)
        ax.plot(path[0, 0], path[0, 1], "o", color=line.get_color(), markersize=5)
    if surface.minimum is not None:
        m = surface.minimum.numpy()
        ax.plot(m[0], m[1], "*", color="black", markersize=11, label="minimum")
    ax.set_xlim(*surface.xlim)
    ax.set_ylim(*surface.ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(surface.name)
    ax.grid(False)
    ax.legend(loc="best")
    return ax


def gd_paths(surface, lr: float, starts, steps: int, momentum: float = 0.0) -> Tensor:
    """Gradient descent (``optlib.SGD``) from every row of ``starts`` (n, 2) at once: one
    run of :func:`optlib.book.train.descend` on the (n, 2) tensor of the n points.

    The gradient is that of the *sum* of ``surface.f`` over the n points; the gradient of
    a sum of independent terms with respect to one point is that point's own gradient, so
    this is n independent runs for the price of one. The gradients are exact (a surface's
    ``noise`` is not added; use ``surfaces.run`` for that). Each run diverges on its own:
    a point that overflows to a non-finite value is NaN from then on, and the loss that
    ``descend`` records (and stops on when it is not finite) is the largest finite loss
    of the n runs, so that one diverged run does not end the others.
    Returns a float64 tensor (steps + 1, n, 2).
    """
    from .train import descend

    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")

    def gradient(xy):       # every run's own gradient, also where another run's loss overflowed
        with torch.enable_grad():
            (g,) = torch.autograd.grad(surface.f(xy).sum(), xy)
        return g

    def largest_finite(xy):
        f = surface.f(xy)
        return torch.where(torch.isfinite(f), f, 0.0).max() if len(f) else f.sum()

    def freeze_diverged(step):  # at NaN, so that its overflow cannot spread to the sum
        with torch.no_grad():
            step.x[~torch.isfinite(step.x).all(-1)] = float("nan")

    starts = torch.as_tensor(starts, dtype=torch.float64).reshape(-1, 2)
    return descend(lambda params: SGD(params, lr=lr, momentum=momentum), starts, steps,
                   loss=largest_finite, gradient=gradient, hooks=[freeze_diverged]).path


def steps_to_reach(surface, make_optimizer: Callable, start, tol: float = 1e-3,
                   max_steps: int = 100_000) -> int | None:
    """The first step t with ‖x_t − x*‖ ≤ tol·‖x_0 − x*‖ (x* = ``surface.minimum``),
    for ``make_optimizer([xy])`` with exact gradients (a surface's ``noise`` is not
    added); ``None`` if ``max_steps`` steps do not get there."""
    from .train import descend

    if surface.minimum is None:
        raise ValueError(f"surface {surface.name!r} has no minimum to reach")
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    start = torch.as_tensor(start, dtype=torch.float64).reshape(2)
    target = tol * float((start - surface.minimum).norm())
    run = descend(make_optimizer, start, max_steps, loss=surface.f,
                  stop=lambda xy: float((xy - surface.minimum).norm()) <= target)
    return run.steps if run.stopped else None


def first_step(holds: Tensor) -> int | None:
    """The first step at which a condition holds along a run.

    Args:
        holds: a boolean tensor with one entry per step (``path.abs() < 1`` for the
            iterates of :func:`run_1d`, whose entry 0 is the start).

    Returns:
        The index of the first true entry, or ``None`` if there is none.
    """
    if holds.dim() != 1 or holds.dtype != torch.bool:
        raise ValueError(f"holds must be a 1-D boolean tensor, got {holds.dtype} of "
                         f"shape {tuple(holds.shape)}")
    hits = holds.nonzero()
    return int(hits[0]) if len(hits) else None


def escape_steps(paths: Tensor, coordinate: int = 1, radius: float = 1.0) -> list[int | None]:
    """For paths (steps + 1, n, 2): the first step at which ``|coordinate| > radius``, per
    run (``None`` for a run that never gets out)."""
    outside = paths[..., coordinate].abs() > radius
    return [first_step(column) for column in outside.T]


def run_1d(make_optimizer: Callable, f: Callable[[Tensor], Tensor], x0: float,
           steps: int, hooks: Sequence[Callable] = ()) -> Tensor:
    """Minimize a scalar function ``f`` from ``x0`` (:func:`optlib.book.train.descend`);
    return the ``steps + 1`` iterates (float64; NaN after a loss that is not finite).
    Each of ``hooks`` sees every step as a :class:`optlib.book.train.Step` (to record
    the optimizer's state), as in :func:`run`."""
    from .train import descend

    return descend(make_optimizer, [float(x0)], steps, loss=lambda x: f(x).sum(),
                   hooks=hooks).path[:, 0]
