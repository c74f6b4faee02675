r"""Diagonal against Kronecker-factored preconditioning, on a problem where the difference shows.

:func:`matrix_quadratic` builds :math:`f(W) = \tfrac12 \lVert A (W - W^\star) B \rVert_F^2`
for a weight matrix :math:`W \in \mathbb{R}^{m\times n}`. Its gradient is
:math:`A^\top A (W - W^\star) B B^\top` and its Hessian, for :math:`\operatorname{vec}`
stacking the rows, the Kronecker product :math:`A^\top A \otimes B B^\top`: exactly the
structure Shampoo assumes. With ``rotated=True``, :math:`A` and :math:`B` are symmetric
with random eigenvectors, so the Hessian's eigenvectors are not the coordinate axes and a
per-coordinate (diagonal) preconditioner cannot undo its conditioning; with
``rotated=False`` they are diagonal, and so is the Hessian.

:func:`run` trains :math:`W` from zero with full-batch steps of any torch optimizer;
:func:`best_lr` picks a learning rate from a grid, and :func:`tuned` picks it on one
instance and reruns it on others; :func:`preconditioner` reads out of an
optimizer's state (AdaGrad, Adam, Shampoo) the matrix by which it multiplied the gradient,
and :func:`condition_number` says how well conditioned the Hessian is after that
multiplication.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from .sweeps import grid_edge

__all__ = ["MatrixQuadratic", "matrix_quadratic", "aligned_twin", "MatrixRun", "run", "best_lr",
           "Tuned", "tuned", "preconditioner", "condition_number", "matrix_power"]


@dataclass
class MatrixQuadratic:
    r""":math:`f(W) = \tfrac12 \lVert A (W - W^\star) B\rVert_F^2` (see :func:`matrix_quadratic`)."""

    A: Tensor
    B: Tensor
    W_star: Tensor
    rotated: bool

    def loss(self, W: Tensor) -> Tensor:
        return 0.5 * (self.A @ (W - self.W_star) @ self.B).square().sum()

    def gradient(self, W: Tensor) -> Tensor:
        r""":math:`\nabla f(W) = A^\top A\,(W - W^\star)\,B B^\top`."""
        return self.A.T @ self.A @ (W - self.W_star) @ self.B @ self.B.T

    def hessian(self) -> Tensor:
        r"""The :math:`mn \times mn` Hessian :math:`A^\top A \otimes B B^\top`, for
        :math:`\operatorname{vec}` stacking the rows of :math:`W` (``W.reshape(-1)``)."""
        return torch.kron(self.A.T @ self.A, self.B @ self.B.T)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.W_star.shape)


def matrix_quadratic(m: int = 20, n: int = 20, condition: float = 10.0, rotated: bool = True,
                     seed: int = 0, dtype: torch.dtype = torch.float64) -> MatrixQuadratic:
    r"""The problem :math:`f(W) = \tfrac12 \lVert A (W - W^\star) B\rVert_F^2`, :math:`W`
    of shape ``(m, n)``, with :math:`W^\star` standard normal.

    :math:`A` (:math:`m\times m`) and :math:`B` (:math:`n\times n`) have eigenvalues
    spaced evenly on a log scale from 1 to ``condition``, so the Hessian
    :math:`A^\top A \otimes BB^\top` has condition number ``condition**4``. With
    ``rotated`` they are :math:`Q \Lambda Q^\top` for random orthogonal :math:`Q`
    (the QR factor of a Gaussian matrix); otherwise diagonal, the eigenvalues in a random
    order along the diagonal. ``seed`` fixes :math:`Q`, the order and :math:`W^\star`.
    """
    for name, value in (("m", m), ("n", n)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not condition >= 1.0:
        raise ValueError(f"condition must be >= 1, got {condition!r}")
    g = torch.Generator().manual_seed(seed)

    def factor(k: int) -> Tensor:
        s = torch.logspace(0, math.log10(condition), k, dtype=dtype)
        if not rotated:
            return torch.diag(s[torch.randperm(k, generator=g)])
        q, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=dtype))
        return q @ torch.diag(s) @ q.T

    A, B = factor(m), factor(n)
    return MatrixQuadratic(A, B, torch.randn(m, n, generator=g, dtype=dtype), rotated)


def aligned_twin(problem: MatrixQuadratic) -> MatrixQuadratic:
    r"""The same problem written in the eigenbases of :math:`A` and :math:`B`: with
    :math:`A = Q\Lambda Q^\top` and :math:`B = P\Lambda' P^\top`, the axis-aligned problem
    :math:`(\Lambda, \Lambda', Q^\top W^\star P)`, whose :math:`W` corresponds to
    :math:`QWP^\top` in ``problem``. An optimizer that is equivariant under
    :math:`W \to QWP^\top` (SGD, Shampoo) takes the same losses on both."""
    lam_A, Q = torch.linalg.eigh(problem.A)
    lam_B, P = torch.linalg.eigh(problem.B)
    return MatrixQuadratic(torch.diag(lam_A), torch.diag(lam_B), Q.T @ problem.W_star @ P, rotated=False)


@dataclass
class MatrixRun:
    """What :func:`run` records: ``losses[t]`` is :math:`f(W_t)/f(W_0)` for ``t = 0 ..
    steps`` (shorter if the run diverged), the final ``W`` and the optimizer."""

    losses: list = field(default_factory=list)
    W: Tensor | None = None
    optimizer: torch.optim.Optimizer | None = None

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.losses[-1])

    @property
    def final(self) -> float:
        """The last relative loss (``inf`` if the run diverged)."""
        return self.losses[-1] if not self.diverged else math.inf


def run(problem: MatrixQuadratic, make_optimizer: Callable, steps: int = 200) -> MatrixRun:
    """``steps`` full-batch steps of ``make_optimizer([W])`` from :math:`W_0 = 0`
    (:func:`optlib.book.train.descend`), with the exact gradient
    (:meth:`MatrixQuadratic.gradient`, no autograd: the problem is small and the
    optimizer's own cost is what a step should take); stops at the first non-finite loss."""
    from .train import descend

    out = descend(make_optimizer, torch.zeros_like(problem.W_star), steps, loss=problem.loss,
                  gradient=problem.gradient, dtype=problem.W_star.dtype)
    f0 = out.loss[0]
    return MatrixRun([f / f0 for f in out.loss], out.point, out.optimizer)


def best_lr(problem: MatrixQuadratic, family: Callable[[float], Callable], lrs: Sequence[float],
            steps: int = 200) -> tuple[float, MatrixRun]:
    """The learning rate of ``lrs`` whose run (``family(lr)`` makes the optimizer) ends
    with the lowest loss, and that run (the first of equals; diverged runs last)."""
    if not lrs:
        raise ValueError("lrs must not be empty")
    runs = [(lr, run(problem, family(lr), steps)) for lr in lrs]
    return min(runs, key=lambda pair: pair[1].final)


class Tuned(NamedTuple):
    """What :func:`tuned` returns: the chosen learning rate, ``"<"`` or ``">"`` when it is
    the lowest or highest of the grid (``" "`` inside it), and its runs, one per seed."""

    lr: float
    edge: str
    runs: list


def tuned(family: Callable[[float], Callable], lrs: Sequence[float], rotated: bool,
          steps: int = 200, seeds: Sequence[int] = (0, 1, 2)) -> Tuned:
    """Tune on one instance, then rerun on others: the learning rate of ``lrs`` that is
    best (:func:`best_lr`) on :func:`matrix_quadratic` with ``rotated`` and the first of
    ``seeds``, and its runs on the instances of every seed (the first one's from the
    grid itself, not repeated).

    Args:
        family: ``lr -> (params -> optimizer)``.
        lrs: the grid of learning rates.
        rotated: the rotated problem (True) or the axis-aligned one.
        steps: steps per run.
        seeds: the instances; the first chooses the learning rate.
    """
    if not seeds:
        raise ValueError("seeds must not be empty")
    problem = matrix_quadratic(rotated=rotated, seed=seeds[0])
    lr, first = best_lr(problem, family, lrs, steps)
    others = [run(matrix_quadratic(rotated=rotated, seed=s), family(lr), steps) for s in seeds[1:]]
    return Tuned(lr, grid_edge(lr, lrs), [first, *others])


def preconditioner(optimizer: torch.optim.Optimizer, p: Tensor) -> Tensor:
    r"""The :math:`mn \times mn` matrix :math:`M` that ``optimizer`` applied at its last step
    to the matrix ``p``, for :math:`\operatorname{vec}` stacking rows, read from its state
    (the step was :math:`-\eta M` times the gradient, or times the bias-corrected
    momentum :math:`\hat m` for Adam):

    * :class:`optlib.Adagrad`: :math:`\operatorname{diag}(1/(\sqrt{s} + \epsilon))`,
      :math:`s = \sum g^2` (with ``lr_decay=0``);
    * :class:`optlib.Adam`: :math:`\operatorname{diag}(1/(\sqrt{\hat v} + \epsilon))`, the
      bias-corrected :math:`\hat v`;
    * :class:`optlib.Shampoo` with ``graft=None``: :math:`P_L \otimes P_R`, the inverse
      fourth roots of :math:`L` and :math:`R` it holds.

    Raises:
        ValueError: another optimizer, Shampoo with grafting, or ``p`` not a matrix.
    """
    import optlib

    st, group = optimizer.state[p], _group_of(optimizer, p)
    if isinstance(optimizer, optlib.Shampoo):
        if group["graft"] is not None or p.dim() != 2:
            raise ValueError(f"preconditioner: Shampoo with graft=None on a matrix only, got graft="
                             f"{group['graft']!r} and a tensor of shape {tuple(p.shape)}")
        P_L, P_R = st["roots"]
        return torch.kron(P_L, P_R)
    if isinstance(optimizer, optlib.Adagrad):
        d = st["sum"].sqrt().add(group["eps"])
    elif isinstance(optimizer, optlib.Adam):
        t = float(st["step"])
        d = (st["exp_avg_sq"] / (1 - group["betas"][1] ** t)).sqrt().add(group["eps"])
    else:
        raise ValueError(f"preconditioner: no rule for {type(optimizer).__name__}")
    return torch.diag(1.0 / d.reshape(-1))


def condition_number(hessian: Tensor, M: Tensor | None = None) -> float:
    r"""The condition number :math:`\lambda_\max/\lambda_\min` of the Hessian after
    preconditioning by the symmetric positive definite ``M``, that is of
    :math:`M^{1/2} H M^{1/2}` (the eigenvalues of :math:`MH`), or of ``hessian`` itself."""
    if M is not None:
        root = matrix_power(M, 0.5)
        hessian = root @ hessian @ root
    lam = torch.linalg.eigvalsh(hessian)
    return (lam[-1] / lam[0]).item()


def matrix_power(S: Tensor, power: float) -> Tensor:
    r""":math:`S^p` of a symmetric positive semi-definite ``S`` (``power`` :math:`p`), from
    its eigendecomposition :math:`S = Q \operatorname{diag}(\lambda) Q^\top`: :math:`Q
    \operatorname{diag}(\lambda^p) Q^\top`. Eigenvalues that rounding made slightly
    negative count as 0; a negative ``power`` needs ``S`` positive definite.

    Raises:
        ValueError: ``S`` is not square, or ``power`` < 0 and ``S`` is singular.
    """
    if S.dim() != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be a square matrix, got shape {tuple(S.shape)}")
    lam, q = torch.linalg.eigh(S)
    lam = lam.clamp_min(0)
    if power < 0 and not lam[0] > 0:
        raise ValueError(f"a negative power ({power}) of a singular matrix")
    return (q * lam.pow(power)) @ q.T


def _group_of(optimizer: torch.optim.Optimizer, p: Tensor) -> dict:
    for group in optimizer.param_groups:
        if any(q is p for q in group["params"]):
            return group
    raise ValueError("the parameter is not in the optimizer")
