"""Adafactor: Adam-like steps with a second moment stored in factored form (rows + columns)."""

from __future__ import annotations

import torch

from .optimizer import Optimizer, State, decoupled_decay_, require, step_counter
from .sharded import reduced
from .tensorlist import TensorList, is_traced, maximum, minimum, per_tensor, sub_scaled_


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear
    Memory Cost*, ICML 2018); numbers equal ``torch.optim.Adafactor`` (torch 2.13).

    For a matrix gradient :math:`G \in \mathbb{R}^{n\times m}` (of a tensor with two or
    more dimensions; leading dimensions are batch dimensions), keep only the row and
    column means of :math:`G^2`, an :math:`n + m` instead of :math:`nm` state:

    .. math::
        \hat\beta_{2,t} &= 1 - t^{\tau}, \quad \rho_t = \min(\eta, 1/\sqrt t), \quad
        \alpha_t = \max(\epsilon_2, \operatorname{RMS}(\theta_{t-1}))\,\rho_t \\
        R_t &\leftarrow \hat\beta_{2,t} R_{t-1}
            + (1-\hat\beta_{2,t})\,\operatorname{mean}_{\text{cols}}(G^2), \\
        C_t &\leftarrow \hat\beta_{2,t} C_{t-1}
            + (1-\hat\beta_{2,t})\,\operatorname{mean}_{\text{rows}}(G^2) \\
        \hat V_t &= R_t C_t / \max(\operatorname{mean}(R_t), \epsilon_1)
            \quad\text{(a rank-one fit of } E[G^2]\text{; a vector keeps the full EMA)} \\
        U_t &= G / \max(\sqrt{\hat V_t}, \epsilon_1), \qquad
        \theta_t \leftarrow \theta_{t-1}(1 - \eta\lambda)
            - \alpha_t\, U_t / \max(1, \operatorname{RMS}(U_t)/d)

    No first moment; the step is *relative* (:math:`\alpha_t` scales with the parameter's
    RMS) and clipped to RMS :math:`d`. As in torch, ``lr`` caps the relative step
    :math:`\rho_t` (the paper's constant 0.01) and scales the decoupled weight decay, and
    :math:`\epsilon_1` (default: the dtype's machine epsilon) floors the normaliser and
    :math:`\sqrt{\hat V}` instead of being added to :math:`G^2` as in the paper.

    Under FSDP2 (rows sharded) :math:`R` is sharded with the rows and :math:`C` is kept
    whole on every process; the means over rows and the RMS norms are finished across
    processes (:func:`optlib.sharded.reduced`: a few bytes per column), so the numbers
    are one process's and a checkpoint reshards exactly.

    A tensor with no elements takes its (empty) step: its step count advances, nothing
    else changes (torch raises ``ZeroDivisionError`` there). ``foreach`` is accepted and
    selects nothing (see :mod:`optlib.optimizer`).

    Non-finite gradients give torch's numbers, and torch's Adafactor does not contain
    them: an infinite entry of a matrix's gradient makes :math:`\operatorname{mean}(R)`
    infinite, so :math:`\hat V` is 0 (floored at :math:`\epsilon_1^2`) in every other row
    and their coordinates step by about :math:`\alpha\,g/\epsilon_1`, unclipped
    (:math:`\operatorname{RMS}(U)` is NaN and the clip's ``max(1, NaN)`` is 1). Skip steps
    with non-finite gradients (``clip_grad_norm_(..., error_if_nonfinite=True)`` or a
    ``GradScaler``).

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: η: caps the relative step size ρ_t = min(η, 1/√t) and scales the weight decay.
        beta2_decay: τ ≤ 0: the second-moment decay is β̂₂,t = 1 − t^τ.
        eps: (ε₁, ε₂): ε₁ floors the normaliser and √V̂ (None: the dtype's machine epsilon); ε₂
            floors the parameter RMS in the relative step.
        d: the clipping threshold on the RMS of the unscaled update (≥ 1).
        weight_decay: λ, decoupled weight decay: θ ← θ(1 − ηλ) each step.
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        maximize: ascend the objective instead of descending it (the gradient is negated).
    """

    supports_complex = False

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False):
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        require(isinstance(eps, tuple | list) and len(eps) == 2,
                f"Invalid eps: {eps!r} (expected a pair (epsilon1, epsilon2), epsilon1 may "
                "be None)")
        # torch's messages, in torch's order
        require(0.0 <= lr, f"Learning rate should be >= 0 but is: {lr}")
        require(0.0 >= beta2_decay, f"beta2_decay should be <= 0 but is: {beta2_decay}")
        require(eps[0] is None or 0.0 <= eps[0], f"epsilon1 should be >= 0 but is: {eps[0]}")
        require(0.0 <= eps[1], f"epsilon2 should be >= 0 but is: {eps[1]}")
        require(1.0 <= d, f"Clipping threshold d should be >= 1 but is: {d}")
        require(0.0 <= weight_decay, f"weight_decay should be >= 0 but is: {weight_decay}")
        require(foreach in (None, False, True), f"Invalid foreach value: {foreach!r}")
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d,
                                      weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize))

    def init_state(self, p, group):
        if p.dim() > 1:      # factor the last two dimensions
            return {"step": step_counter(),
                    # one value per row, held (for a DTensor) by the process that holds the row
                    "row_var": torch.zeros_like(p[..., :1]),
                    "col_var": p.new_zeros((*p.shape[:-2], 1, p.shape[-1]))}
        return {"step": step_counter(), "variance": p.new_zeros(p.shape)}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, d = group["lr"], group["d"]
        eps1, eps2 = group["eps"]
        t = per_tensor(s.advance("step"), len(p))
        if not all(x.numel() for x in p):      # an empty tensor: its step counts, nothing moves
            full = [x.numel() > 0 for x in p]
            p, g, s = p.select(full), g.select(full), s.select(full)
            t = [ti for ti, k in zip(t, full, strict=True) if k]
        # α = max(ε₂, RMS(θ)) · min(η, 1/√t), from θ before the decay
        alpha = [maximum(eps2, _norm(x) / x.numel() ** 0.5) * minimum(li, 1 / ti**0.5)
                 for x, ti, li in zip(p, t, per_tensor(lr, len(p)), strict=True)]
        decoupled_decay_(p, lr, group["weight_decay"])               # θ ← θ(1 − ηλ)
        # The second-moment estimate depends on each tensor's shape: one tensor at a time.
        for st, x, gx, ti, a in s.each(p, g, t, alpha):
            u = _scaled_gradient(gx, st, ti ** group["beta2_decay"], eps1)
            clip = maximum(1.0, _norm(u) / (u.numel() ** 0.5 * d))     # max(1, RMS(U)/d)
            sub_scaled_(x, u, a / clip)                              # θ ← θ − α U / clip


def _norm(x: torch.Tensor):
    """‖x‖ over the whole tensor (for a DTensor, every process's shard) as a value of the
    step: a Python float eagerly, read with ``.item()`` as torch's Adafactor reads it; a
    float64 0-dim tensor while optlib.compile traces the rule (see
    :func:`optlib.tensorlist.is_traced`)."""
    norm = reduced(x.norm(2))
    return norm.double() if torch.compiler.is_compiling() else norm.item()


def _scaled_gradient(g: torch.Tensor, state: dict, one_minus_beta2: float, eps1):
    """U = G / max(sqrt(V̂), ε₁), with V̂ factored for tensors of two or more dimensions."""
    if eps1 is None:
        eps1 = torch.finfo(g.dtype).eps
    if is_traced(one_minus_beta2):            # lerp's weight, in the gradient's dtype
        one_minus_beta2 = one_minus_beta2.to(g.dtype)
    if g.dim() > 1:
        row_var, col_var = state["row_var"], state["col_var"]
        # Means over the whole matrix: for a DTensor, `reduced` sums the pieces' shares.
        row_mean = reduced(torch.norm(g, dim=-1, keepdim=True)).square_().div_(g.size(-1))
        row_var.lerp_(row_mean, one_minus_beta2)                     # R ← β̂R + (1−β̂) mean_cols(G²)
        col_mean = reduced(torch.norm(g, dim=-2, keepdim=True)).square_().div_(g.size(-2))
        col_var.lerp_(col_mean, one_minus_beta2)                     # C ← β̂C + (1−β̂) mean_rows(G²)
        v_hat = row_var @ col_var                                    # R C ...
        v_hat.div_(reduced(row_var.mean(dim=-2, keepdim=True)).clamp_(min=eps1))  # / max(mean R, ε₁)
    else:
        state["variance"].lerp_(g * g, one_minus_beta2)
        v_hat = state["variance"].clone()
    return v_hat.clamp_(min=eps1 * eps1).rsqrt_().mul_(g)
