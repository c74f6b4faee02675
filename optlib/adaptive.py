"""Per-coordinate step sizes from a running sum or average of squared gradients."""

from __future__ import annotations

import torch

from .optimizer import (
    Optimizer,
    State,
    check_flags,
    check_lr,
    l2_decay,
    require,
    step_counter,
    zeros_like_state,
)
from .sgd import require_sparse_without_decay
from .tensorlist import TensorList, pick


class Adagrad(Optimizer):
    r"""AdaGrad (Duchi, Hazan & Singer, JMLR 2011); numbers equal ``torch.optim.Adagrad``.

    .. math::
        g_t &\leftarrow \nabla \mathcal{L}(\theta_{t-1}) + \lambda\theta_{t-1},\qquad
        \eta_t = \frac{\eta}{1 + (t-1)\,\delta} \\
        s_t &\leftarrow s_{t-1} + g_t^2 \quad (s_0 = \text{initial\_accumulator\_value}) \\
        \theta_t &\leftarrow \theta_{t-1} - \eta_t\, \frac{g_t}{\sqrt{s_t} + \epsilon}

    The sum only grows, so every coordinate's step only shrinks. As in torch, the
    state exists from construction (eagerly), and ``eps`` sits outside the square root.

    A sparse gradient (``nn.Embedding(sparse=True)``) updates only the entries it holds,
    as torch's sparse path does: the same rule, applied to those entries of
    :math:`\theta` and :math:`s`. ``weight_decay`` with a sparse gradient is refused, as
    torch refuses it. ``foreach``, ``fused`` and ``differentiable``: see
    :mod:`optlib.optimizer` (``fused=True`` and ``differentiable=True`` are refused).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        lr_decay: δ: the step size at step t is η / (1 + (t − 1)δ).
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        initial_accumulator_value: the starting value s₀ of the sum of squared gradients.
        eps: ε, added to √s (outside the root).
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        maximize: ascend the objective instead of descending it (the gradient is negated).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
        fused: torch.optim's flag; True is refused (see optlib.optimizer).
    """

    supports_sparse = True

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        check_lr(lr)
        require(0.0 <= lr_decay, f"Invalid lr_decay value: {lr_decay}")
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        require(0.0 <= initial_accumulator_value,
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        require(0.0 <= eps, f"Invalid epsilon value: {eps}")
        check_flags("Adagrad", foreach=foreach, fused=fused, differentiable=differentiable)
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p].update(self.init_state(p, group))

    def init_state(self, p, group):
        v = group["initial_accumulator_value"]
        fill = complex(v, v) if torch.is_complex(p) else v
        return {"step": step_counter(), "sum": torch.full_like(p, fill, memory_format=torch.preserve_format)}

    def check_sparse(self, group):
        require_sparse_without_decay(self, group)

    def update(self, group, p: TensorList, g: TensorList, s: State):
        t = s.advance("step")
        sparse = [x.is_sparse for x in g]
        if not any(sparse):
            return self.rule(group, p, g, s.sum, t)
        dense = [not x for x in sparse]
        if any(dense):
            self.rule(group, p.select(dense), g.select(dense), s.sum.select(dense), pick(t, dense))
        # A sparse gradient: the rule on the entries it holds (duplicates summed first).
        for x, gx, acc, tx in zip(p.select(sparse), g.select(sparse), s.sum.select(sparse),
                                  pick_list(t, sparse), strict=True):
            gx = gx.coalesce()
            at = tuple(gx.indices())
            rows, sums = TensorList([x[at]]), TensorList([acc[at]])
            self.rule(group, rows, TensorList([gx.values()]), sums, tx)
            x.index_put_(at, rows[0])
            acc.index_put_(at, sums[0])

    @staticmethod
    def rule(group, p: TensorList, g: TensorList, acc: TensorList, t):
        """The rule on dense tensors (a sparse gradient's entries, or whole tensors).

        Args:
            group: the hyperparameters.
            p: the parameters, updated in place.
            g: their gradients.
            acc: the sums of squared gradients, updated in place.
            t: the step count (a number, or a PerTensor).
        """
        lr, eps = group["lr"], group["eps"]
        g = l2_decay(p, g, group["weight_decay"])            # g ← g + λθ
        lr_t = lr / (1 + (t - 1) * group["lr_decay"])        # η_t = η / (1 + (t−1)δ)
        acc.addcmul_(g, g, value=1)                          # s ← s + g²
        std = acc.sqrt().add_(eps)                           # √s + ε
        p.addcdiv_(g, std, value=-lr_t)                      # θ ← θ − η_t g/(√s+ε)


def pick_list(t, mask) -> list:
    """The per-tensor values of ``t`` where ``mask`` holds, as a list.

    Args:
        t: a number (shared by every tensor) or a PerTensor.
        mask: per tensor, whether to keep its value.
    """
    chosen = pick(t, mask)
    return list(chosen) if isinstance(chosen, tuple) else [chosen] * sum(mask)


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton, 2012, lecture 6.5); numbers equal ``torch.optim.RMSprop``.

    .. math::
        v_t &\leftarrow \alpha v_{t-1} + (1-\alpha) g_t^2,\qquad
        \bar g_t \leftarrow \alpha \bar g_{t-1} + (1-\alpha) g_t \ \text{(centered)} \\
        d_t &= \sqrt{v_t - \bar g_t^2 \text{ (centered) or } v_t} + \epsilon \\
        b_t &\leftarrow \beta b_{t-1} + g_t / d_t \ \ (b_0 = 0),\qquad
        \theta_t \leftarrow \theta_{t-1} - \eta\, b_t \quad (\text{or } \eta\, g_t/d_t \text{ if } \beta=0)

    No bias correction: :math:`v` starts at 0, so the first steps are large
    (:math:`g/\sqrt{(1-\alpha)g^2} = 10\,\mathrm{sign}(g)` for :math:`\alpha=0.99`).
    ``foreach``, ``capturable`` and ``differentiable``: see :mod:`optlib.optimizer`
    (``capturable=True`` and ``differentiable=True`` are refused).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        alpha: α, the decay rate of the running average of g².
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        momentum: β, the momentum of the buffer b (0: no buffer).
        centered: divide by the estimated standard deviation, √(v − ḡ²), instead of √v.
        capturable: torch.optim's flag; True is refused (see optlib.optimizer).
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        maximize: ascend the objective instead of descending it (the gradient is negated).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        check_lr(lr)
        require(0.0 <= eps, f"Invalid epsilon value: {eps}")
        require(0.0 <= momentum, f"Invalid momentum value: {momentum}")
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        require(0.0 <= alpha, f"Invalid alpha value: {alpha}")
        check_flags("RMSprop", foreach=foreach, capturable=capturable,
                    differentiable=differentiable)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, capturable=capturable,
                        foreach=foreach, maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults)

    def init_state(self, p, group):
        state = {"step": step_counter(), "square_avg": zeros_like_state(p)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = zeros_like_state(p)
        if group["centered"]:
            state["grad_avg"] = zeros_like_state(p)
        return state

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, alpha, eps, beta = group["lr"], group["alpha"], group["eps"], group["momentum"]
        s.count("step")
        g = l2_decay(p, g, group["weight_decay"])                    # g ← g + λθ
        v = s.square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)     # v ← αv + (1−α)g²
        if group["centered"]:
            g_avg = s.grad_avg.lerp_(g, 1 - alpha)                   # ḡ ← αḡ + (1−α)g
            denom = v.addcmul(g_avg, g_avg, value=-1).sqrt_()        # √(v − ḡ²)
        else:
            denom = v.sqrt()
        denom.add_(eps)                                              # ε outside the root
        if beta > 0:
            buf = s.momentum_buffer.mul_(beta).addcdiv_(g, denom)      # b ← βb + g/d
            p.add_(buf, alpha=-lr)
        else:
            p.addcdiv_(g, denom, value=-lr)                          # θ ← θ − η g/d


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012, arXiv:1212.5701); numbers equal ``torch.optim.Adadelta``.

    .. math::
        v_t &\leftarrow \rho\, v_{t-1} + (1-\rho)\, g_t^2 \\
        u_t &= \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        a_t &\leftarrow \rho\, a_{t-1} + (1-\rho)\, u_t^2 \\
        \theta_t &\leftarrow \theta_{t-1} - \eta\, u_t

    RMSprop's denominator (with :math:`\epsilon` inside the root), and in the numerator
    the root mean square :math:`\sqrt{a_{t-1}+\epsilon}` of the recent *updates* in place
    of a learning rate, so that the update has the units of :math:`\theta` (Zeiler's
    argument). :math:`v_0 = a_0 = 0`: the first update is
    :math:`\sqrt{\epsilon}\, g / \sqrt{(1-\rho) g^2 + \epsilon}`, at most
    :math:`\sqrt{\epsilon/(1-\rho)}` per coordinate, and the steps grow from there.
    :math:`\eta` (``lr``, default 1 as in the paper and in torch) only scales the update
    and is not fed back into :math:`a`. ``weight_decay`` adds :math:`\lambda\theta_{t-1}`
    to :math:`g_t`; ``maximize`` negates :math:`g_t` first. ``foreach``, ``capturable``
    and ``differentiable``: see :mod:`optlib.optimizer` (``capturable=True`` and
    ``differentiable=True`` are refused).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: η, which only scales the update (default 1, as in the paper).
        rho: ρ, the decay rate of both running averages.
        eps: ε, inside both square roots.
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        capturable: torch.optim's flag; True is refused (see optlib.optimizer).
        maximize: ascend the objective instead of descending it (the gradient is negated).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        check_lr(lr)
        require(0.0 <= rho <= 1.0, f"Invalid rho value: {rho}")
        require(0.0 <= eps, f"Invalid epsilon value: {eps}")
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        check_flags("Adadelta", foreach=foreach, capturable=capturable,
                    differentiable=differentiable)
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, defaults)

    def init_state(self, p, group):
        return {"step": step_counter(), "square_avg": zeros_like_state(p),
                "acc_delta": zeros_like_state(p)}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, rho, eps = group["lr"], group["rho"], group["eps"]
        s.count("step")
        g = l2_decay(p, g, group["weight_decay"])                        # g ← g + λθ
        v = s.square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)         # v ← ρv + (1−ρ)g²
        a = s.acc_delta
        u = a.add(eps).sqrt_().div_(v.add(eps).sqrt_()).mul_(g)          # u = √(a+ε)/√(v+ε) g
        a.mul_(rho).addcmul_(u, u, value=1 - rho)                        # a ← ρa + (1−ρ)u²
        p.add_(u, alpha=-lr)                                             # θ ← θ − ηu
