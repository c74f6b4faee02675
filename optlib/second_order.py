"""Second-order information on the cheap: Sophia's clipped, diagonally preconditioned step."""

from __future__ import annotations

import torch

from .optimizer import (
    Optimizer,
    State,
    check_betas,
    check_lr,
    decoupled_decay_,
    require,
    step_counter,
)
from .tensorlist import TensorList


class SophiaG(Optimizer):
    r"""SophiaG (Liu et al., *Sophia: A Scalable Stochastic Second-order Optimizer for
    Language Model Pre-training*, ICLR 2024); numbers equal the authors' ``SophiaG``
    (PyPI ``sophia-opt``).

    Every step (:meth:`step`, with ``bs`` the number of tokens or examples per batch):

    .. math::
        \theta &\leftarrow \theta\,(1 - \eta\lambda) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        \theta &\leftarrow \theta - \eta\,\operatorname{sign}(m_t)\,
            \min\!\Big(1, \frac{|m_t|}{\rho\cdot bs\cdot h + 10^{-15}}\Big)

    and every *k* steps (:meth:`update_hessian`, after a separate backward pass):
    :math:`h \leftarrow \beta_2 h + (1-\beta_2)\,\hat g\odot\hat g`. For SophiaG,
    :math:`\hat g` is the gradient of the loss at labels *sampled from the model's own
    predictions* (the Gauss-Newton-Bartlett estimator): :func:`gnb_update_hessian` does
    that pass correctly. The mean loss over a batch of ``bs`` examples makes
    :math:`bs\cdot\hat g^2` an unbiased estimate of the Gauss-Newton diagonal, which is why
    ``bs`` enters the step.

    Where :math:`h` is large the step is Newton-like, :math:`\eta\, m/(\rho\, bs\, h)`;
    where it is small or stale the clip caps it at :math:`\eta` (sign descent). Until the
    first :meth:`update_hessian`, :math:`h = 0` and every step is sign descent of size
    :math:`\eta`. The authors tune ``rho`` so that 10-50% of coordinates are not clipped.

    Non-finite gradients, as in the reference: the clip keeps every coordinate's step at
    most :math:`\eta`, so nothing is amplified. A NaN gradient makes its coordinate NaN
    (the clipped ratio is NaN). An infinite one makes :math:`m` infinite for good: the
    coordinate then steps by :math:`\eta` in the same direction every step. Guard steps
    where gradients can overflow (``clip_grad_norm_(..., error_if_nonfinite=True)``, a
    ``GradScaler``).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂): decay rates of the momentum m and of the Hessian estimate h.
        rho: ρ, which scales the Hessian term in the clip.
        weight_decay: λ, decoupled weight decay: θ ← θ(1 − ηλ) each step.
        maximize: ascend the objective instead of descending it (the gradient is negated).
    """

    def __init__(self, params, lr=1e-4, betas=(0.965, 0.99), rho=0.04, weight_decay=1e-1, *,
                 maximize=False):
        check_lr(lr)
        check_betas(betas)
        require(0.0 <= rho, f"Invalid rho parameter at index 1: {rho}")  # (sic) the reference's text
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), rho=rho,
                                      weight_decay=weight_decay, maximize=maximize))

    def init_state(self, p, group):
        return {"step": step_counter(), "exp_avg": p.new_zeros(p.shape),
                "hessian": p.new_zeros(p.shape)}

    @torch.no_grad()
    def step(self, closure=None, bs=5120):
        """One step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
            bs: the batch size the Hessian estimate was averaged over (tokens per batch
                for a language model, as in the authors' training script); the rule reads
                it as ``group["bs"]``.
        """
        require(bs > 0, f"Invalid bs value: {bs}")
        return self._step(closure, bs=bs)

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, (beta1, _), rho, bs = group["lr"], group["betas"], group["rho"], group["bs"]
        s.count("step")
        decoupled_decay_(p, lr, group["weight_decay"])               # θ ← θ(1 − ηλ)
        m = s.exp_avg.mul_(beta1).add_(g, alpha=1 - beta1)           # m ← β₁m + (1−β₁)g
        ratio = m.abs().div_(s.hessian.mul(rho * bs).add_(1e-15)).clamp_max_(1)
        p.addcmul_(m.sign(), ratio, value=-lr)                        # θ ← θ − η sign(m) min(1, |m|/(ρ bs h))

    @torch.no_grad()
    def update_hessian(self):
        """h ← β₂h + (1−β₂) ĝ⊙ĝ from the gradients now in ``.grad`` (which should come from
        the sampled-label loss; see :func:`gnb_update_hessian`)."""
        for group in self.param_groups:
            params, grads = self._gather(group)
            if params:
                s = self._prepare(group, params)
                beta2 = group["betas"][1]
                h = s.hessian
                if any(p.is_complex() for p in params):
                    h, grads = h.map(_real), TensorList(_real(x) for x in grads)
                h.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)


def _real(t):
    return torch.view_as_real(t) if t.is_complex() else t


def gnb_update_hessian(optimizer: SophiaG, model: torch.nn.Module, inputs, *, step=None,
                       every=10, max_grad_norm=None, generator=None) -> bool:
    r"""Refresh SophiaG's Hessian estimate with the Gauss-Newton-Bartlett estimator, the way
    the authors' training loop does it.

    For a classifier whose ``model(inputs)`` returns logits of shape ``(..., classes)``:
    sample labels :math:`\hat y \sim \operatorname{softmax}(\text{logits})` (from the
    *model*, not the data: that is what makes :math:`E[\hat g\hat g^\top]` the Gauss-Newton
    matrix), take the mean cross-entropy at those labels, differentiate it with respect to
    the optimizer's parameters, optionally clip that gradient's norm (the authors clip at
    1.0 here too), and call ``optimizer.update_hessian()`` with it. No ``.grad`` is changed
    (those of the training step are put back; parameters of other optimizers are not
    touched), so it may be called before or after ``optimizer.step()``.

    With ``step`` given it runs only when ``step % every == every - 1`` (the authors use
    ``every = 10``, refreshing after the 10th, 20th, ... step) and returns whether it ran.
    Pass ``bs`` = the number of sampled labels (``logits.numel() // classes``) to
    :meth:`SophiaG.step`.

    Args:
        optimizer: the SophiaG optimizer to refresh.
        model: the classifier (returns logits).
        inputs: a batch of the model's inputs.
        step: the training step (None: refresh now).
        every: refresh when step % every == every − 1.
        max_grad_norm: clip the sampled-label gradient's norm to this (None: no clipping).
        generator: the random generator for the sampled labels.
    """
    require(every >= 1, f"Invalid every value: {every}")
    if step is not None and step % every != every - 1:
        return False
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    with torch.enable_grad():
        logits = model(inputs)
        logits = logits.reshape(-1, logits.shape[-1])
        with torch.no_grad():
            probs = torch.softmax(logits.float(), dim=-1)
            y_hat = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        loss = torch.nn.functional.cross_entropy(logits, y_hat)
        # autograd.grad, not backward: no .grad of any parameter (this optimizer's or
        # another's) accumulates the sampled-label gradient
        sampled = torch.autograd.grad(loss, params, allow_unused=True)
    saved = [p.grad for p in params]
    try:
        for p, g in zip(params, sampled, strict=True):
            p.grad = g
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.update_hessian()
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
    return True
