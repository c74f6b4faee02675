"""Gradient descent and momentum on quadratics, in closed form and on grids.

The linear algebra of chapter 3: Polyak's optimal heavy ball, the exact per-step
contraction of gradient descent, heavy ball and Nesterov on a quadratic (on whole grids of
learning rates and momenta at once, for phase diagrams), and small runners whose
trajectories the closed forms predict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["quadratic_eigenvalues", "polyak_parameters", "gd_rate", "heavy_ball_rate",
           "nesterov_rate", "heavy_ball_grid", "steps_to_tolerance", "run_per_coordinate",
           "heavy_ball_path", "step_lengths"]


def quadratic_eigenvalues(condition: float, scale: float = 1.0) -> tuple[float, float]:
    """(m, L) = (scale, scale·condition): the curvatures of ``surfaces.quadratic``."""
    if condition < 1:
        raise ValueError(f"condition must be >= 1, got {condition}")
    return scale, scale * condition


def polyak_parameters(m: float, L: float) -> tuple[float, float, float]:
    """Polyak's (1964) optimal heavy ball for curvatures in [m, L]: (lr, beta, rate).

    lr = 4 / (√L + √m)²,  beta = ((√κ − 1)/(√κ + 1))²,  rate = (√κ − 1)/(√κ + 1)
    where κ = L/m and the error shrinks by ``rate`` per step (asymptotically).
    """
    if not 0 < m <= L:
        raise ValueError(f"need 0 < m <= L, got m={m}, L={L}")
    sk = math.sqrt(L / m)
    rate = (sk - 1) / (sk + 1)
    return 4.0 / (math.sqrt(L) + math.sqrt(m)) ** 2, rate ** 2, rate


def gd_rate(lr: float, eigenvalues: Sequence[float]) -> float:
    """Per-step contraction of gradient descent on a quadratic: ``max |1 − lr·λ|``."""
    return max(abs(1 - lr * lam) for lam in eigenvalues)


def _largest_root(coefficients) -> Tensor:
    """The largest modulus of the roots of z² − b z + c = 0 over the pairs ``(b, c)`` of
    ``coefficients`` (real tensors, elementwise): the per-step rate of a two-step linear
    recurrence, maximized over the eigendirections."""
    rate = None
    for b, c in coefficients:
        b = b.to(torch.complex128)
        disc = torch.sqrt(b * b - 4 * c)
        r = torch.maximum(((b + disc) / 2).abs(), ((b - disc) / 2).abs())
        rate = r if rate is None else torch.maximum(rate, r)
    return rate


def heavy_ball_rate(lr, beta, eigenvalues: Sequence[float]) -> Tensor:
    """Exact asymptotic per-step rate of heavy ball on a quadratic (works on grids).

    In an eigendirection with curvature λ the pair (θ_t, θ_{t−1}) evolves by the matrix
    [[1 + β − ηλ, −β], [1, 0]]; the rate is the largest modulus of its eigenvalues,
    the roots of z² − (1 + β − ηλ) z + β = 0, maximized over λ. ``lr`` and ``beta``
    may be tensors of any (broadcastable) shape.
    """
    lr = torch.as_tensor(lr, dtype=torch.float64)
    beta = torch.as_tensor(beta, dtype=torch.float64)
    return _largest_root((1 + beta - lr * lam, beta) for lam in eigenvalues)


def nesterov_rate(lr, beta, eigenvalues: Sequence[float]) -> Tensor:
    """Exact asymptotic per-step rate of Nesterov's momentum on a quadratic (works on grids).

    In an eigendirection with curvature λ, with a = ηλ, the iterates follow the roots of
    z² − (1 + β)(1 − a) z + β(1 − a) = 0; the rate is their largest modulus, maximized
    over λ. Stable iff every a lies in (0, 2(1 + β)/(1 + 2β)).
    """
    lr = torch.as_tensor(lr, dtype=torch.float64)
    beta = torch.as_tensor(beta, dtype=torch.float64)
    qs = [1 - lr * lam for lam in eigenvalues]           # 1 − a for every λ
    return _largest_root(((1 + beta) * q, beta * q) for q in qs)


def heavy_ball_grid(lr: Tensor, beta: Tensor, eigenvalues: Sequence[float], start: Sequence[float],
                    steps: int) -> Tensor:
    """Loss of heavy ball (PyTorch's form) on f = ½ Σ λ_i x_i², for a grid of (lr, beta).

    ``lr`` and ``beta`` broadcast to a grid shape S; returns losses of shape ``(steps+1, *S)``.
    The rule is the one of the chapter: b ← βb + g (b₁ = g₁), x ← x − η b.
    """
    lr = torch.as_tensor(lr, dtype=torch.float64)
    beta = torch.as_tensor(beta, dtype=torch.float64)
    shape = torch.broadcast_shapes(lr.shape, beta.shape)
    lam = torch.tensor(eigenvalues, dtype=torch.float64)
    x = torch.tensor(start, dtype=torch.float64).expand(*shape, len(eigenvalues)).clone()
    b = torch.zeros_like(x)
    lr, beta = lr.expand(shape).unsqueeze(-1), beta.expand(shape).unsqueeze(-1)
    losses = [0.5 * (lam * x * x).sum(-1)]
    for _ in range(steps):
        g = lam * x
        b = beta * b + g          # b₁ = g₁ because b starts at 0
        x = x - lr * b
        losses.append(0.5 * (lam * x * x).sum(-1))
    return torch.stack(losses)


def steps_to_tolerance(losses: Tensor, tol: float) -> Tensor:
    """First step at which the loss falls below ``tol`` and stays there (inf if never).

    ``losses`` has steps along dim 0 (as from :func:`heavy_ball_grid`).
    """
    below = torch.nan_to_num(losses, nan=math.inf) < tol
    # stays below from step t on  <=>  reverse cumulative product of `below` is 1
    stays = below.flip(0).cumprod(0).flip(0).bool()
    any_ = stays.any(0)
    first = stays.float().argmax(0).double()
    return torch.where(any_, first, torch.full_like(first, math.inf))


def run_per_coordinate(surface, lrs: Sequence[float], start: Sequence[float],
                       steps: int) -> Tensor:
    """Gradient descent on a 2-D surface with one learning rate per coordinate,
    θ ← θ − η ⊙ ∇f(θ); returns the trajectory (steps+1, 2) like ``surfaces.run``."""
    from .train import descend

    eta = torch.tensor(lrs, dtype=torch.float64)

    def rule(params, grads, state):
        params[0].sub_(eta * grads[0])

    return descend(rule, start, steps, loss=surface.f, hyper={}).path


def heavy_ball_path(lr: float, beta: float, curvature: float, start: float, steps: int) -> Tensor:
    """Positions θ_0..θ_steps of heavy ball (b ← βb + λθ, θ ← θ − ηb) on f = ½λθ²."""
    theta, b = float(start), 0.0
    path = [theta]
    for _ in range(steps):
        b = beta * b + curvature * theta
        theta = theta - lr * b
        path.append(theta)
    return torch.tensor(path, dtype=torch.float64)


def step_lengths(make_optimizer: Callable, steps: int,
                 schedule: Callable[[int], float] | None = None, *,
                 hyper: dict | None = None) -> Tensor:
    """Run an optimizer or a from-scratch rule on f(θ) = θ (gradient 1, float64) and
    return ``|θ_t − θ_{t−1}|`` for t = 1..steps (float64): how a method's step grows under
    a constant gradient.

    Args:
        make_optimizer: ``params -> optimizer``, or a from-scratch rule
            ``rule(params, grads, state, **hyper)`` (:func:`optlib.book.compare.is_rule`).
        steps: the number of steps.
        schedule: ``t -> multiplier`` of the learning rate of step t (a rule gets
            ``hyper["lr"]`` times it), as in :func:`optlib.book.train.descend`.
        hyper: keyword arguments of a rule.
    """
    from .compare import is_rule
    from .train import descend

    if is_rule(make_optimizer):
        hyper = dict(hyper or {})
    elif hyper is not None:
        raise ValueError("hyper is for a rule; an optimizer factory sets its own")
    run = descend(make_optimizer, [0.0], steps, loss=lambda theta: theta.sum(),
                  gradient=torch.ones_like, hyper=hyper, schedule=schedule)
    return run.path[:, 0].diff().abs()
