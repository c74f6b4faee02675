"""Adam and its torch.optim relatives: AdamW, NAdam, RAdam, Adamax."""

from __future__ import annotations

import torch
from torch import Tensor

from .optimizer import (
    Optimizer,
    State,
    as_float,
    check_betas,
    check_flags,
    check_lr,
    decoupled_decay_,
    l2_decay,
    require,
    step_counter,
    zeros_like_state,
)
from .tensorlist import TensorList, choose, is_traced, per_tensor, pick

_FLAGS = ("foreach", "fused", "capturable", "differentiable")


def _check_adam_tensors(lr, betas, foreach, capturable) -> tuple:
    """torch's Adam and AdamW checks of tensor hyperparameters (its messages); the betas
    as torch keeps them (a 1-element tensor becomes a 0-dim one)."""
    if isinstance(lr, Tensor) and foreach and not capturable:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    check_betas(betas)
    floats = all(isinstance(b, float) for b in betas)
    tensors = all(isinstance(b, Tensor) for b in betas)
    require(floats or tensors, "betas must be either both floats or both Tensors")
    for i, beta in enumerate(betas if tensors else ()):
        require(capturable or not foreach,
                f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
        require(beta.numel() == 1, f"Tensor betas[{i}] must be 1-element")
    return tuple(b.reshape(()) if isinstance(b, Tensor) else b for b in betas)


class _AdamFamily(Optimizer):
    """Validation and state shared by Adam, AdamW, NAdam and RAdam (torch's messages)."""

    def __init__(self, params, lr, betas, eps, weight_decay, **options):
        check_lr(lr)
        require(0.0 <= eps, f"Invalid epsilon value: {eps}")
        check_betas(betas)
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        check_flags(type(self).__name__, **{k: options[k] for k in _FLAGS if k in options})
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **options)
        super().__init__(params, defaults)

    def init_state(self, p, group):
        return {"step": step_counter(), "exp_avg": zeros_like_state(p),
                "exp_avg_sq": zeros_like_state(p)}

    @staticmethod
    def decay_or_l2(group, p: TensorList, g: TensorList) -> TensorList:
        """Weight decay, coupled or not: θ ← θ(1 − ηλ) (decoupled) or g ← g + λθ (L2).

        Args:
            group: the hyperparameters (``lr``, ``weight_decay``, ``decoupled_weight_decay``).
            p: the parameters (decayed in place when decoupled).
            g: their gradients.
        """
        if group["decoupled_weight_decay"]:
            decoupled_decay_(p, group["lr"], group["weight_decay"])
            return g
        return l2_decay(p, g, group["weight_decay"])

    @staticmethod
    def moments(group, g: TensorList, m: TensorList, v: TensorList
                ) -> tuple[TensorList, TensorList]:
        """m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²  (torch's op order: lerp, then mul/addcmul).

        Args:
            group: the hyperparameters (``betas``).
            g: the gradients.
            m: the first moments, updated in place.
            v: the second moments, updated in place.
        """
        beta1, beta2 = map(as_float, group["betas"])
        m = m.lerp_(g, 1 - beta1)
        v = v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        return m, v


class Adam(_AdamFamily):
    r"""Adam (Kingma & Ba, ICLR 2015); numbers equal ``torch.optim.Adam``.

    .. math::
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat m_t &= m_t / (1-\beta_1^t), \qquad \hat v_t = v_t / (1-\beta_2^t) \\
        \theta_t &\leftarrow \theta_{t-1} - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    ``weight_decay`` adds :math:`\lambda\theta` to the gradient (L2, so it also enters
    :math:`m` and :math:`v`) unless ``decoupled_weight_decay=True``, which is AdamW.
    ``amsgrad`` (Reddi et al., ICLR 2018) divides by the running maximum of the raw
    :math:`v_t` instead. ``maximize`` ascends. ``foreach``, ``fused``, ``capturable`` and
    ``differentiable``: see :mod:`optlib.optimizer` (``fused=True``, ``capturable=True``
    and ``differentiable=True`` are refused).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂), the decay rates of the running averages of the gradient and of its
            square.
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        amsgrad: use the running maximum of v (Reddi et al.) in the denominator.
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        maximize: ascend the objective instead of descending it (the gradient is negated).
        capturable: torch.optim's flag; True is refused (see optlib.optimizer).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
        fused: torch.optim's flag; True is refused (see optlib.optimizer).
        decoupled_weight_decay: decay the weights directly, θ ← θ(1 − ηλ), instead of adding λθ
            to the gradient (AdamW's decay).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        betas = _check_adam_tensors(lr, betas, foreach, capturable)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=decoupled_weight_decay)

    def init_state(self, p, group):
        state = super().init_state(p, group)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros_like_state(p)
        return state

    def update(self, group, p: TensorList, g: TensorList, s: State):
        v_max = s.max_exp_avg_sq if group["amsgrad"] else None
        self.rule(group, p, g, s.exp_avg, s.exp_avg_sq, s.advance("step"), v_max)

    def rule(self, group, p: TensorList, g: TensorList, m: TensorList, v: TensorList, t,
             v_max: TensorList | None = None):
        """One step of the rule at step count ``t`` (counted already), on moments that a
        caller may hold elsewhere (``Adam8bit``: dequantized ones).

        Args:
            group: the hyperparameters.
            p: the parameters, updated in place.
            g: their gradients.
            m: the first moments, updated in place.
            v: the second moments, updated in place.
            t: the step count (a number, or a PerTensor).
            v_max: the running maxima of ``v`` (``amsgrad`` only), updated in place.
        """
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        g = self.decay_or_l2(group, p, g)
        m, v = self.moments(group, g, m, v)
        if group["amsgrad"]:
            v = v_max.maximum_(v)                          # v_max ← max(v_max, v), raw v
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        denom = v.sqrt().div_(bc2**0.5).add_(eps)            # √v̂ + ε
        p.addcdiv_(m, denom, value=-(lr / bc1))            # θ ← θ − η m̂/(√v̂ + ε)


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, ICLR 2019); numbers equal ``torch.optim.AdamW``.

    Adam with *decoupled* weight decay, applied to the parameter before the Adam step:

    .. math::
        \theta \leftarrow \theta\,(1 - \eta\lambda), \qquad
        \theta \leftarrow \theta - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    The gradient that enters :math:`m` and :math:`v` carries no decay term. Note that
    torch (and so optlib) multiplies :math:`\lambda` by the full learning rate
    :math:`\eta`; the paper multiplies it by the schedule multiplier only, so
    ``weight_decay`` here equals the paper's :math:`\lambda` divided by the base lr.

    As in torch, an AdamW stays AdamW: ``load_state_dict`` (of an Adam checkpoint, say)
    keeps ``decoupled_weight_decay=True`` in every group.

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂), the decay rates of the running averages of the gradient and of its
            square.
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ, decoupled weight decay: θ ← θ(1 − ηλ) each step.
        amsgrad: use the running maximum of v (Reddi et al.) in the denominator.
        maximize: ascend the objective instead of descending it (the gradient is negated).
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        capturable: torch.optim's flag; True is refused (see optlib.optimizer).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
        fused: torch.optim's flag; True is refused (see optlib.optimizer).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         foreach=foreach, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


class NAdam(_AdamFamily):
    r"""NAdam (Dozat, ICLR workshop 2016); numbers equal ``torch.optim.NAdam``.

    Adam with Nesterov momentum and a warming-up momentum schedule
    :math:`\mu_t = \beta_1 (1 - \tfrac12 0.96^{t\psi})`, :math:`\Pi_t = \prod_{i\le t}\mu_i`:

    .. math::
        \theta_t \leftarrow \theta_{t-1}
          - \eta\,\frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{\sqrt{\hat v_t}+\epsilon}
          - \eta\,\frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\,\frac{m_t}{\sqrt{\hat v_t}+\epsilon}

    ``foreach``, ``capturable`` and ``differentiable``: see :mod:`optlib.optimizer`
    (``capturable=True`` and ``differentiable=True`` are refused).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂), the decay rates of the running averages of the gradient and of its
            square.
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        momentum_decay: ψ, the momentum schedule's decay (μ_t = β₁(1 − ½·0.96^{tψ})).
        decoupled_weight_decay: decay the weights directly, θ ← θ(1 − ηλ), instead of adding λθ
            to the gradient (AdamW's decay).
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        maximize: ascend the objective instead of descending it (the gradient is negated).
        capturable: torch.optim's flag; True is refused (see optlib.optimizer).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
    """

    scalar_state_keys = ("step", "mu_product")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        require(0.0 <= momentum_decay, f"Invalid momentum_decay value: {momentum_decay}")
        super().__init__(params, lr, betas, eps, weight_decay, momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                         foreach=foreach, capturable=capturable, differentiable=differentiable)

    def init_state(self, p, group):
        return {**super().init_state(p, group), "mu_product": step_counter(1.0)}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, (beta1, beta2), eps, psi = (group["lr"], group["betas"], group["eps"],
                                        group["momentum_decay"])
        t = s.advance("step")
        bc2 = 1 - beta2**t
        g = self.decay_or_l2(group, p, g)
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))                 # μ_t
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))      # μ_{t+1}
        s.mu_product.mul_(mu)                                        # Π_t = Π_{t−1} μ_t
        prod = s.values("mu_product")
        m, v = self.moments(group, g, s.exp_avg, s.exp_avg_sq)
        denom = v.div(bc2).sqrt_().add_(eps)                         # √(v/(1−β₂ᵗ)) + ε
        p.addcdiv_(g, denom, value=-lr * (1.0 - mu) / (1.0 - prod))
        p.addcdiv_(m, denom, value=(-lr * mu_next) / (1.0 - prod * mu_next))


class RAdam(_AdamFamily):
    r"""RAdam (Liu et al., ICLR 2020); numbers equal ``torch.optim.RAdam``.

    Adam whose adaptive step is switched on only once the variance of :math:`\hat v`
    is tractable, and then scaled by the rectification term :math:`r_t`:

    .. math::
        \rho_\infty = \tfrac{2}{1-\beta_2} - 1,\quad
        \rho_t = \rho_\infty - \tfrac{2t\beta_2^t}{1-\beta_2^t},\quad
        r_t = \sqrt{\tfrac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
        \theta_t \leftarrow \theta_{t-1} - \eta\,\hat m_t \cdot
            \begin{cases} r_t \sqrt{1-\beta_2^t}/(\sqrt{v_t}+\epsilon) & \rho_t > 5 \\
                          1 & \text{otherwise (momentum SGD)} \end{cases}

    torch switches at :math:`\rho_t > 5` (the paper writes 4), i.e. from step 6 for
    :math:`\beta_2 = 0.999`. ``foreach``, ``capturable`` and ``differentiable``: see
    :mod:`optlib.optimizer` (``capturable=True`` and ``differentiable=True`` are refused).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂), the decay rates of the running averages of the gradient and of its
            square.
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        decoupled_weight_decay: decay the weights directly, θ ← θ(1 − ηλ), instead of adding λθ
            to the gradient (AdamW's decay).
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        maximize: ascend the objective instead of descending it (the gradient is negated).
        capturable: torch.optim's flag; True is refused (see optlib.optimizer).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        super().__init__(params, lr, betas, eps, weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                         foreach=foreach, capturable=capturable, differentiable=differentiable)

    def update(self, group, p: TensorList, g: TensorList, s: State):
        self.rule(group, p, g, s.exp_avg, s.exp_avg_sq, s.advance("step"))

    def rule(self, group, p: TensorList, g: TensorList, m: TensorList, v: TensorList, t):
        """One step of the rule at step count ``t`` (counted already), on moments that a
        caller may hold elsewhere.

        Args:
            group: the hyperparameters.
            p: the parameters, updated in place.
            g: their gradients.
            m: the first moments, updated in place.
            v: the second moments, updated in place.
            t: the step count (a number, or a PerTensor).
        """
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        g = self.decay_or_l2(group, p, g)
        m, v = self.moments(group, g, m, v)
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2**t) / bc2         # length of the approximated SMA

        def rectification(rho):                             # r_t
            return ((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5

        # Rectified, θ ← θ − c m/(√v + ε) with the scalar c = η r √(1−β₂ᵗ)/(1−β₁ᵗ), as
        # Adam's step: the scalars folded first, as torch's foreach RAdam folds them, then
        # three passes (32 bytes a parameter after the moments, where torch's
        # single-tensor order, m̂, η m̂, √v + ε, its reciprocal and the products each a
        # pass, moves 80); torch's numbers at round-off. Before that, momentum SGD
        # θ ← θ − η m̂ in torch's single-tensor order (its numbers bit for bit).
        rectified = rho_t > 5.0                             # v̂ is trustworthy from here on
        c = lr * choose(rectified, rectification, rho_t, 0.0) * bc2**0.5 / bc1
        if is_traced(rectified):       # optlib.compile: torch.where, tensor by tensor
            adaptive = m.div(v.sqrt().add_(eps)).mul(c)
            sgd = m.div(bc1).mul(lr)
            for x, r, a, b in zip(p, per_tensor(rectified, len(p)), adaptive, sgd, strict=True):
                x.sub_(torch.where(r, a, b))
            return
        on = per_tensor(rectified, len(p))
        if any(on):
            p.select(on).addcdiv_(m.select(on), v.select(on).sqrt().add_(eps),
                                  value=-pick(c, on))
        if not all(on):
            off = [not k for k in on]
            p.select(off).add_(m.select(off).div(pick(bc1, off)).mul(lr), alpha=-1.0)


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba, ICLR 2015, section 7.1); numbers equal ``torch.optim.Adamax``.

    Adam with the root mean square :math:`\sqrt{v}` replaced by an exponentially weighted
    infinity norm :math:`u` of the gradients (the limit :math:`p \to \infty` of an
    :math:`L^p` average), which needs no bias correction:

    .. math::
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        u_t \leftarrow \max(\beta_2 u_{t-1},\, |g_t| + \epsilon) \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,\frac{m_t}{u_t}

    As in torch, :math:`\epsilon` sits inside the maximum (the paper has none) and
    ``weight_decay`` adds :math:`\lambda\theta` to the gradient (L2, so it also enters
    :math:`m` and :math:`u`). ``maximize`` ascends. ``foreach``, ``capturable`` and
    ``differentiable``: see :mod:`optlib.optimizer` (``capturable=True`` and
    ``differentiable=True`` are refused). A NaN or infinite gradient makes its coordinate
    NaN (:math:`m/u` is then NaN or :math:`\infty/\infty`), as in torch; other coordinates
    are unaffected.

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂), the decay rates of the gradient's running average and of the infinity
            norm.
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        maximize: ascend the objective instead of descending it (the gradient is negated).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
        capturable: torch.optim's flag; True is refused (see optlib.optimizer).
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        check_lr(lr)
        require(0.0 <= eps, f"Invalid epsilon value: {eps}")
        check_betas(betas)
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        check_flags("Adamax", foreach=foreach, capturable=capturable,
                    differentiable=differentiable)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults)

    def init_state(self, p, group):
        return {"step": step_counter(), "exp_avg": zeros_like_state(p),
                "exp_inf": zeros_like_state(p)}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        t = s.advance("step")
        g = l2_decay(p, g, group["weight_decay"])                    # g ← g + λθ (L2)
        m = s.exp_avg.lerp_(g, 1 - beta1)                            # m ← β₁m + (1−β₁)g
        u = s.exp_inf.mul_(beta2).maximum_(g.abs().add_(eps))        # u ← max(β₂u, |g| + ε)
        p.addcdiv_(m, u, value=-lr / (1 - beta1**t))                 # θ ← θ − η m/((1−β₁ᵗ) u)
