"""Layer-wise trust ratios for large-batch training: LARS (SGD) and LAMB (Adam).

Both scale each tensor's step by ``||θ|| / ||update||``, so every layer moves by about
the same *fraction* of its weights whatever the scale of its gradient: the fix You et al.
found for the layers whose weights and gradients differ by orders of magnitude, which
otherwise cap the learning rate (and so the batch size) of the whole network.

The norms are of whole tensors (:func:`optlib.sharded.norms`): under FSDP2 each process
adds its shard's share and one all-reduce per step and rule gives every process the
layer's norms (8 bytes per tensor in float64).

Non-finite gradients: a NaN or infinite gradient makes the norms, and so the ratio, NaN
or 0, never 1: a tensor whose update holds a NaN becomes NaN (every coordinate, since the
ratio is shared), and no finite coordinate takes a larger step because of it.
"""

from __future__ import annotations

import torch

from .adam import _AdamFamily
from .optimizer import Optimizer, State, check_lr, l2_decay, require
from .sharded import is_sharded, norms
from .tensorlist import TensorList, is_traced


def trust_ratio(w: torch.Tensor, u: torch.Tensor, ratio=lambda w, u: w / u,
                scale=1.0) -> TensorList:
    """Per tensor ``ratio(||θ||, ||u||)`` from the norms (1-D tensors, one entry per tensor,
    from :func:`optlib.sharded.norms`: whole-tensor norms, also for shards), and 1 where
    either norm is 0: a tensor with zero weights (a zero-initialised bias) or a zero update
    still takes a plain step instead of none or an infinite one.

    The ratios stay tensors (0-dim, one per tensor), never Python numbers: no host
    synchronisation, and the rule runs on the ``meta`` device and on ``DTensor`` shards.
    They are float64, so that ``ratio * lr`` rounds as a product of Python floats;
    ``scale`` (the learning rate) multiplies them here, in one operation on the stacked
    ratios rather than in a foreach call over as many 0-dim tensors (a product of two
    float64 numbers either way, so the same bits; 1.4 ms of LARS's 12.9 ms step on 200
    tensors went to those 200 products), eagerly and under optlib.compile alike.

    Args:
        w: the norms ‖θ‖, one entry per tensor.
        u: the norms ‖u‖ of the updates, one per tensor.
        ratio: (‖θ‖, ‖u‖) → the ratio where neither norm is 0.
        scale: a factor of every ratio (a number, or a 0-dim tensor under optlib.compile).
    """
    r = torch.where((w == 0) | (u == 0), torch.ones_like(w), ratio(w, u)).double()
    if is_traced(scale) or scale != 1:      # (a traced lr is never compared in Python)
        r = r * scale
    return TensorList(r.unbind())


def lamb_direction(p: TensorList, m: TensorList, v: TensorList, t, betas, eps: float,
                   weight_decay: float) -> TensorList:
    r"""LAMB's direction :math:`u = \hat m/(\sqrt{\hat v} + \epsilon) + \lambda\theta`
    before the trust ratio (You et al. 2020, Alg. 2): Adam's bias-corrected ratio with the
    decay added to it. A new TensorList; ``m`` and ``v`` are not changed.

    Computed as :math:`r = c\, m/(\sqrt{v} + \epsilon\sqrt{b_2})` with
    :math:`b_k = 1-\beta_k^t` and :math:`c = \sqrt{b_2}/b_1` (the same number:
    :math:`\sqrt{\hat v} + \epsilon = (\sqrt v + \epsilon\sqrt{b_2})/\sqrt{b_2}`),
    in five passes over each tensor where the equation's order takes six, and with one new
    array per tensor instead of two: the denominator, into which :math:`m` is divided in
    place (``_divide_into``). On 20 matrices of 2 MB the two new arrays were mapped
    afresh at every step, page faults included (counted: 379 faults and 0.83 ms for two
    such divisions side by side, 69 and 0.26 ms for one). Rounded differently from the
    equation's order, by a few units of the last place.

    Args:
        p: the parameters θ.
        m: the first moments.
        v: the second moments.
        t: the step count (a number, or one per tensor).
        betas: (β₁, β₂), for the bias corrections.
        eps: ε, added to √v̂.
        weight_decay: λ.
    """
    beta1, beta2 = betas
    bc1, root_bc2 = 1 - beta1**t, (1 - beta2**t) ** 0.5
    u = _divide_into(m, v.sqrt().add_(eps * root_bc2))             # m / (√v + ε√b₂)
    u.mul_(root_bc2 / bc1)                                         # r = m̂ / (√v̂ + ε)
    if weight_decay != 0:
        u.add_(p, alpha=weight_decay)                              # u = r + λθ
    return u


def _divide_into(x: TensorList, y: TensorList) -> TensorList:
    """x / y elementwise, written into ``y`` (a new list the caller hands over) where the
    group is one plain tensor (the eager step's chunk of a large tensor, see
    :func:`optlib.optimizer.eager_chunks`): no second array. Otherwise ``x.div(y)``, one
    foreach call (small tensors, traced and sharded ones). The same quotients either way.

    Args:
        x: the dividends.
        y: the divisors, overwritten where the quotient goes into them.
    """
    if len(y) == 1 and not torch.compiler.is_compiling() and not is_sharded(y[0]):
        torch.div(x[0], y[0], out=y[0])
        return y
    return x.div(y)


def lars_local_lr(w: torch.Tensor, g: torch.Tensor, trust_coefficient: float,
                  weight_decay: float, eps: float, scale=1.0) -> TensorList:
    """LARS's local learning rate ℓ = tc‖θ‖/(‖g‖ + λ‖θ‖ + ε) per tensor, 1 where a norm is
    0 (You, Gitman & Ginsburg 2017, Alg. 1), from the norms (see :func:`trust_ratio`).

    Args:
        w: the norms ‖θ‖, one entry per tensor.
        g: the norms ‖g‖ of the gradients, one per tensor.
        trust_coefficient: tc.
        weight_decay: λ.
        eps: ε.
        scale: a factor of every ℓ (the learning rate; see :func:`trust_ratio`).
    """
    tc, wd = trust_coefficient, weight_decay
    return trust_ratio(w, g, lambda w, gn: tc * w / (gn + wd * w + eps), scale)


class LAMB(_AdamFamily):
    r"""LAMB (You et al., *Large Batch Optimization for Deep Learning: Training BERT in
    76 minutes*, ICLR 2020, Alg. 2), exactly as in the paper:

    .. math::
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        r_t &= \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}, \qquad
        u_t = r_t + \lambda\theta_{t-1} \\
        \theta_t &\leftarrow \theta_{t-1} - \eta\,\frac{\|\theta_{t-1}\|}{\|u_t\|}\, u_t
        \quad\text{(per tensor; the ratio is 1 when either norm is 0)}

    that is AdamW's direction (Adam's :math:`r_t`, with the decay added to it) rescaled
    per tensor so that its norm is :math:`\eta\|\theta\|`.

    Popular implementations differ, and none of that is done here: NVIDIA's FusedLAMB and
    timm's ``Lamb`` clip the *global* gradient norm to 1.0 inside the step (use
    :func:`optlib.clip_grad_norm_` before ``step()`` for that); timm applies the ratio
    only to tensors whose weight decay is non-zero (so biases and norms, put in a
    ``weight_decay=0`` group, take plain AdamW steps); ``trust_clip`` variants clamp the
    ratio to at most 1, the first paper version clamped :math:`\|\theta\|` to 10 and
    DeepSpeed clamps the ratio to [0.01, 10]; the paper's v3 and some code drop the bias
    correction.

    ``trust_ratio=False`` (for example in the group of biases and norms) replaces the ratio
    by 1 for that group's tensors: plain AdamW-direction steps of size :math:`\eta`, as
    timm and NVIDIA do for parameters without weight decay.

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂), the decay rates of the running averages of the gradient and of its
            square.
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ: λθ is added to Adam's direction before the trust ratio.
        trust_ratio: scale each tensor's step by ‖θ‖/‖u‖ (False: plain AdamW-direction steps).
    """

    reduces_computed = True         # the norm of its direction u

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, *,
                 trust_ratio=True):
        # Adam's validation (torch's messages) and state (step, exp_avg, exp_avg_sq).
        super().__init__(params, lr, betas, eps, weight_decay, trust_ratio=trust_ratio)

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, t = group["lr"], s.advance("step")
        m, v = self.moments(group, g, s.exp_avg, s.exp_avg_sq)     # Adam's moments
        u = lamb_direction(p, m, v, t, group["betas"], group["eps"], group["weight_decay"])
        # η‖θ‖/‖u‖ (lr multiplies the stacked ratios: see trust_ratio)
        step = trust_ratio(norms(p), norms(u), scale=lr) if group["trust_ratio"] else lr
        p.sub_(u.mul_(step))                                       # θ ← θ − η (‖θ‖/‖u‖) u


class LARS(Optimizer):
    r"""LARS (You, Gitman & Ginsburg, *Large Batch Training of Convolutional Networks*,
    arXiv:1708.03888, 2017, Alg. 1), exactly as in the paper:

    .. math::
        \ell &= \text{tc}\,\frac{\|\theta\|}{\|g\| + \lambda\|\theta\| + \epsilon}
            \quad\text{(per tensor; 1 when } \|\theta\| \text{ or } \|g\| \text{ is 0)} \\
        v &\leftarrow \beta v + \eta\,\ell\,(g + \lambda\theta) \quad (v_0 = 0), \qquad
        \theta \leftarrow \theta - v

    with trust coefficient tc, momentum :math:`\beta` and weight decay :math:`\lambda`.
    The learning rate sits *inside* the momentum buffer, as in the paper (so changing
    :math:`\eta` does not rescale the momentum already accumulated).

    Popular implementations differ: timm's ``Lars`` applies the ratio only to tensors
    whose weight decay is non-zero (biases and norms in a ``weight_decay=0`` group take
    plain SGD steps), puts the lr outside the buffer (torch-SGD momentum, seeded with
    the first gradient); LARC (``trust_clip``) gives each tensor the step size
    :math:`\min(\ell, \eta)` instead of :math:`\ell\eta`;
    pytorch-optimizer skips every tensor with one dimension; the paper also decays
    :math:`\eta` polynomially (power 2), which here is a schedule's job.

    ``trust_ratio=False`` (for example in the group of biases and norms) sets
    :math:`\ell = 1` for that group: plain momentum steps, as timm does for parameters
    without weight decay.

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        momentum: β, the momentum of the buffer v.
        weight_decay: λ: λθ is added to the gradient.
        trust_coefficient: tc, which multiplies the local ratio ℓ.
        eps: ε, in the denominator of ℓ.
        trust_ratio: use the local ratio ℓ (False: ℓ = 1, plain momentum steps).
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001,
                 eps=1e-8, *, trust_ratio=True):
        check_lr(lr)
        require(0.0 <= momentum, f"Invalid momentum value: {momentum}")
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        require(0.0 <= trust_coefficient, f"Invalid trust_coefficient value: {trust_coefficient}")
        require(0.0 <= eps, f"Invalid epsilon value: {eps}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps,
                                      trust_ratio=trust_ratio))

    def init_state(self, p, group):
        return {"momentum_buffer": p.new_zeros(p.shape)}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
        step = lr                                                   # η ℓ (ℓ = 1 without ratio)
        if group["trust_ratio"]:                                    # ℓ = tc‖θ‖/(‖g‖+λ‖θ‖+ε)
            step = lars_local_lr(norms(p), norms(g), group["trust_coefficient"], wd,
                                 group["eps"], scale=lr)             # (η ℓ: see trust_ratio)
        d = l2_decay(p, g, wd)                                      # g + λθ
        d = d.mul(step) if d is g else d.mul_(step)                 # η ℓ (g + λθ), in place if new
        s.momentum_buffer.mul_(beta).add_(d)                        # v ← βv + η ℓ (g + λθ)
        p.sub_(s.momentum_buffer)                                   # θ ← θ − v
