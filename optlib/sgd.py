"""Stochastic gradient descent with momentum and Nesterov's lookahead (torch.optim's form)."""

from __future__ import annotations

from .optimizer import Optimizer, State, as_float, check_flags, check_lr, l2_decay, require
from .tensorlist import TensorList


class SGD(Optimizer):
    r"""SGD with heavy-ball or Nesterov momentum; numbers equal ``torch.optim.SGD``.

    .. math::
        g_t &\leftarrow \nabla \mathcal{L}(\theta_{t-1}) + \lambda\theta_{t-1} \\
        b_t &\leftarrow \beta b_{t-1} + (1-\tau) g_t \quad (b_1 = g_1) \\
        \theta_t &\leftarrow \theta_{t-1} - \eta\,(g_t + \beta b_t \text{ if Nesterov else } b_t)

    with learning rate :math:`\eta`, momentum :math:`\beta`, dampening :math:`\tau` and
    L2 weight decay :math:`\lambda`. This is PyTorch's form (the learning rate multiplies
    the buffer); Sutskever et al. (2013) put :math:`\eta` inside the buffer, which is the
    same sequence of parameters only while :math:`\eta` is constant.
    Nesterov: Sutskever et al., ICML 2013, in the reformulation of Bengio et al. (2012).

    Sparse gradients (``nn.Embedding(sparse=True)``) take the same rule on sparse tensors,
    as in torch (a parameter's momentum buffer is then sparse too); ``weight_decay`` with a
    sparse gradient is refused, as torch refuses it. ``foreach``, ``fused`` and
    ``differentiable``: see :mod:`optlib.optimizer` (``fused=True`` and
    ``differentiable=True`` are refused).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        momentum: β, the momentum (0: plain SGD).
        dampening: τ: the gradient enters the buffer as (1 − τ)g.
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        nesterov: use Nesterov's lookahead (needs momentum > 0 and dampening = 0).
        maximize: ascend the objective instead of descending it (the gradient is negated).
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
        fused: torch.optim's flag; True is refused (see optlib.optimizer).
    """

    supports_sparse = True

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        check_lr(lr)
        require(momentum >= 0.0, f"Invalid momentum value: {momentum}")
        require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        require(not nesterov or (momentum > 0 and dampening == 0),
                "Nesterov momentum requires a momentum and zero dampening")
        check_flags("SGD", foreach=foreach, fused=fused, differentiable=differentiable)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def init_state(self, p, group):
        # The buffer is seeded with the first gradient in `update`; zeros are placeholders.
        # Without momentum there is no state at all (torch stores none either).
        return {"momentum_buffer": p.new_zeros(p.shape)} if group["momentum"] != 0 else {}

    def check_sparse(self, group):
        require_sparse_without_decay(self, group)

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, beta, tau = group["lr"], group["momentum"], group["dampening"]
        g = l2_decay(p, g, as_float(group["weight_decay"]))      # g ← g + λθ
        if beta != 0:
            buf, new = s.momentum_buffer, s.new
            if any(new):                           # torch seeds a new buffer with g itself: b₁ = g₁
                old = [not n for n in new]
                fresh = g.select(new)
                if any(x.is_sparse for x in fresh):     # a copy of a sparse g is sparse, as in torch
                    s.replace("momentum_buffer", new, fresh.clone())
                else:
                    buf.select(new).copy_(fresh)
                if any(old):
                    buf.select(old).mul_(beta).add_(g.select(old), alpha=1 - tau)
                buf = s.momentum_buffer
            else:
                buf.mul_(beta).add_(g, alpha=1 - tau)                # b ← βb + (1−τ)g
            g = g.add(buf, alpha=beta) if group["nesterov"] else buf   # d = g + βb  or  b
        p.add_(g, alpha=-lr)                                     # θ ← θ − η d


def require_sparse_without_decay(optimizer, group) -> None:
    """torch refuses weight decay with a sparse gradient (it would make the gradient dense).

    Args:
        optimizer: the optimizer (named in the message).
        group: the group whose parameter has a sparse gradient.
    """
    if group["weight_decay"] != 0:
        raise RuntimeError(
            "weight_decay option is not compatible with sparse gradients: "
            f"{type(optimizer).__name__} got weight_decay={group['weight_decay']} for a "
            "parameter with a sparse gradient; put such parameters in a group with "
            "weight_decay=0")
