"""Adafactor: Adam-like steps with a second moment stored in factored form (rows + columns)."""

from __future__ import annotations

import torch

from .optimizer import Optimizer, State, decoupled_decay_, require, step_counter
from .sharded import is_sharded, reduced
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

    Eagerly, the CPU tensors of one shape are stepped together: their statistics are
    computed on one stack of their gradients, with each tensor's own numbers, bit for bit
    (``tests/test_optimizers.py``): one operation per statistic for all of them instead of
    one per tensor, which is what a step of many small matrices costs.

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
    reduces_computed = True         # the row and column means of g²

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
        alpha = [maximum(eps2, n / x.numel() ** 0.5) * minimum(li, 1 / ti**0.5)
                 for x, n, ti, li in zip(p, _norms(p), t, per_tensor(lr, len(p)), strict=True)]
        decoupled_decay_(p, lr, group["weight_decay"])               # θ ← θ(1 − ηλ)
        # The second-moment estimate depends on each tensor's shape: the tensors of one
        # shape (and step count) together, as one stack (the same numbers as one by one).
        for members in _stacks(p, t):
            u = _scaled_gradients([g[i] for i in members], [s.states[i] for i in members],
                                  t[members[0]] ** group["beta2_decay"], eps1)
            if len(members) > 1:     # each matrix's norm, one reduction for the stack
                us, norms = list(u.unbind(0)), u.reshape(len(u), -1).norm(dim=1).tolist()
            else:
                us, norms = [u], _norms([u])
            for i, ui, n in zip(members, us, norms, strict=True):
                clip = maximum(1.0, n / (ui.numel() ** 0.5 * d))     # max(1, RMS(U)/d)
                sub_scaled_(p[i], ui, alpha[i] / clip)               # θ ← θ − α U / clip


# The most values in one stack of same-shaped tensors: 4 MiB of float32, the size of the
# eager step's chunks of small tensors (optlib.optimizer.eager_chunks), so that a stack
# holds at most a chunk's copy even when the rule is called on a whole group.
_STACK_VALUES = 2**20


def _stacks(xs: list, t: list) -> list[list[int]]:
    """The indices of the tensors whose scaled gradients are computed together, as one
    stack: CPU tensors of one shape, dtype and step count (in order of first appearance),
    at most ``_STACK_VALUES`` values a stack. Each tensor alone while optlib.compile
    traces the rule (Inductor fuses each tensor's operations itself), for a DTensor (its
    means are finished across processes one tensor at a time) and on a GPU (whether a
    stack's reductions give each matrix's bits there has not been measured)."""
    if torch.compiler.is_compiling():
        return [[i] for i in range(len(xs))]
    by_key: dict = {}
    for i, (x, ti) in enumerate(zip(xs, t, strict=True)):
        key = i if is_sharded(x) or not x.is_cpu else (x.shape, x.dtype, ti)
        by_key.setdefault(key, []).append(i)
    stacks = []
    for indices in by_key.values():
        per_stack = max(1, _STACK_VALUES // max(1, xs[indices[0]].numel()))
        stacks += [indices[k:k + per_stack] for k in range(0, len(indices), per_stack)]
    return stacks


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Tensors of one shape as one tensor with a new first dimension; one tensor is
    returned as it is (no copy, no new dimension)."""
    return torch.stack(tensors) if len(tensors) > 1 else tensors[0]


def _norms(xs: list[torch.Tensor]) -> list:
    """‖x‖ of each tensor over all its elements (for a DTensor, every process's shard) as
    values of the step: Python floats eagerly (one foreach norm, read at once; each the
    bits of ``x.norm(2).item()``, as torch's Adafactor reads it), float64 0-dim tensors
    while optlib.compile traces the rule (see :func:`optlib.tensorlist.is_traced`)."""
    if torch.compiler.is_compiling():
        return [reduced(x.norm(2)).double() for x in xs]
    if not xs or any(is_sharded(x) for x in xs):
        return [reduced(x.norm(2)).item() for x in xs]
    return torch.stack(torch._foreach_norm(xs)).tolist()


def _scaled_gradients(gs: list[torch.Tensor], states: list[dict], one_minus_beta2, eps1):
    """U = G / max(sqrt(V̂), ε₁), with V̂ factored for tensors of two or more dimensions,
    for tensors of one shape: stacked (a new first dimension) when there are several, the
    tensor's own shape for one. Each tensor's numbers are those of the tensor alone: the
    reductions run over the last two dimensions, row by row and column by column as for
    one matrix, and R C is an outer product (one rounding per entry, as ``R @ C``)."""
    first = gs[0]
    if eps1 is None:
        eps1 = torch.finfo(first.dtype).eps
    if is_traced(one_minus_beta2):            # lerp's weight, in the gradient's dtype
        one_minus_beta2 = one_minus_beta2.to(first.dtype)
    g = _stack(gs)
    if first.dim() > 1:
        row_vars = TensorList(st["row_var"] for st in states)
        col_vars = TensorList(st["col_var"] for st in states)
        # Means over the whole matrix: for a DTensor, `reduced` sums the pieces' shares.
        row_mean = reduced(torch.norm(g, dim=-1, keepdim=True)).square_().div_(g.size(-1))
        _lerp_(row_vars, row_mean, one_minus_beta2)                   # R ← β̂R + (1−β̂) mean_cols(G²)
        col_mean = reduced(torch.norm(g, dim=-2, keepdim=True)).square_().div_(g.size(-2))
        _lerp_(col_vars, col_mean, one_minus_beta2)                   # C ← β̂C + (1−β̂) mean_rows(G²)
        row_var, col_var = _stack(row_vars), _stack(col_vars)
        v_hat = row_var * col_var                                     # R C ...
        v_hat.div_(reduced(row_var.mean(dim=-2, keepdim=True)).clamp_(min=eps1))  # / max(mean R, ε₁)
    else:
        variances = TensorList(st["variance"] for st in states)
        _lerp_(variances, g * g, one_minus_beta2)
        v_hat = _stack(variances) if len(states) > 1 else variances[0].clone()
    v_hat.clamp_(min=eps1 * eps1)
    if len(gs) > 1:   # tensor by tensor: bfloat16's rsqrt rounds by the position in the tensor
        torch._foreach_rsqrt_(list(v_hat.unbind(0)))
    else:
        v_hat.rsqrt_()
    return v_hat.mul_(g)


def _scaled_gradient(g: torch.Tensor, state: dict, one_minus_beta2, eps1) -> torch.Tensor:
    """U = G / max(sqrt(V̂), ε₁) of one tensor (:func:`_scaled_gradients` of one; the book's
    ``book.inspect.adafactor_update_rms`` calls it)."""
    return _scaled_gradients([g], [state], one_minus_beta2, eps1)


def _lerp_(targets: TensorList, end: torch.Tensor, weight) -> None:
    """targets ← lerp(targets, end, weight), ``end`` stacked as :func:`_stack` stacks."""
    if len(targets) > 1:
        targets.lerp_(list(end.unbind(0)), weight)
    else:
        targets[0].lerp_(end, weight)
