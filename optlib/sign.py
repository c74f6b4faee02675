"""Sign-based updates: every coordinate moves by the same amount, only the direction is learned."""

from __future__ import annotations

from .optimizer import Optimizer, State, check_betas, check_lr, decoupled_decay_, require
from .tensorlist import TensorList


class Lion(Optimizer):
    r"""Lion, "EvoLved Sign Momentum" (Chen et al., *Symbolic Discovery of Optimization
    Algorithms*, NeurIPS 2023, Alg. 2); numbers equal the ``lion-pytorch`` package's ``Lion``.

    .. math::
        \theta &\leftarrow \theta\,(1 - \eta\lambda) \\
        c_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        \theta &\leftarrow \theta - \eta\, \operatorname{sign}(c_t) \\
        m_t &\leftarrow \beta_2 m_{t-1} + (1-\beta_2)\, g_t

    The step interpolates momentum and gradient with :math:`\beta_1` but the *stored*
    momentum uses the slower :math:`\beta_2`. Every coordinate moves by exactly
    :math:`\eta` (``sign(0) = 0``), so the update has a larger norm than Adam's: the
    authors use an lr 3-10x smaller than AdamW's and a weight decay 3-10x larger, to keep
    the effective decay :math:`\eta\lambda` the same. One state tensor (``exp_avg``): half
    of Adam's memory.

    Non-finite gradients, as in the reference: a sign step moves a coordinate by at most
    :math:`\eta`, so nothing is ever amplified, but nothing raises either. A NaN gradient
    makes :math:`c_t` NaN and ``sign(NaN) = 0``: that coordinate stops moving, and its
    momentum stays NaN, so it stays frozen. An infinite gradient makes the momentum
    infinite: the coordinate then steps by :math:`\eta` in the same direction every step.
    Where gradients can overflow, guard the step (``clip_grad_norm_(...,
    error_if_nonfinite=True)`` raises, a ``GradScaler`` skips it). Turning such
    coordinates into NaN instead would cost two more passes over memory per step (68 to
    88 bytes per float32 parameter).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂): β₁ mixes momentum and gradient for the step, β₂ updates the stored
            momentum.
        weight_decay: λ, decoupled weight decay: θ ← θ(1 − ηλ) each step.
    """

    supports_complex = False  # the reference takes the complex sign z/|z|: no real-view twin

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        check_lr(lr)
        check_betas(betas)
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    def init_state(self, p, group):
        return {"exp_avg": p.new_zeros(p.shape)}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, (beta1, beta2) = group["lr"], group["betas"]
        m = s.exp_avg
        decoupled_decay_(p, lr, group["weight_decay"])         # θ ← θ(1 − ηλ), first
        c = m.mul(beta1).add_(g, alpha=1 - beta1).sign_()      # sign(β₁m + (1−β₁)g)
        p.add_(c, alpha=-lr)
        m.mul_(beta2).add_(g, alpha=1 - beta2)                 # m ← β₂m + (1−β₂)g, after the step
