"""Stochastic gradient descent with momentum and Nesterov's lookahead (torch.optim's form)."""

from __future__ import annotations

from .optimizer import Optimizer, State, as_float, check_lr, require
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
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        check_lr(lr)
        require(momentum >= 0.0, f"Invalid momentum value: {momentum}")
        require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        require(not nesterov or (momentum > 0 and dampening == 0),
                "Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def init_state(self, p, group):
        # The buffer is seeded with the first gradient in `update`; zeros are placeholders.
        return {"momentum_buffer": p.new_zeros(p.shape)} if group["momentum"] != 0 else {}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, beta, tau = as_float(group["lr"]), group["momentum"], group["dampening"]
        wd = group["weight_decay"]
        if group["maximize"]:
            g = -g
        if wd != 0:
            g = g.add(p, alpha=wd)                               # g ← g + λθ
        if beta != 0:
            buf, new = s.momentum_buffer, s.new
            if any(new):                           # torch seeds a new buffer with g itself: b₁ = g₁
                old = [not n for n in new]
                buf.select(new).copy_(g.select(new))
                if any(old):
                    buf.select(old).mul_(beta).add_(g.select(old), alpha=1 - tau)
            else:
                buf.mul_(beta).add_(g, alpha=1 - tau)                # b ← βb + (1−τ)g
            g = g.add(buf, alpha=beta) if group["nesterov"] else buf   # d = g + βb  or  b
        p.add_(g, alpha=-lr)                                     # θ ← θ − η d
