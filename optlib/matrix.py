"""Muon: momentum whose update matrix is orthogonalised, for the 2-D weights of hidden layers."""

from __future__ import annotations

import inspect
import math
import numbers

import torch

from .adam import AdamW
from .optimizer import Optimizer, State, decoupled_decay_, require, zeros_like_state
from .sharded import shard_like, whole
from .tensorlist import TensorList

#: Keller Jordan's quintic Newton-Schulz coefficients (torch's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def zeropower_via_newtonschulz(G: torch.Tensor, coefficients=NS_COEFFICIENTS, steps: int = 5,
                               eps: float = 1e-7) -> torch.Tensor:
    r"""An approximate :math:`UV^\top` of :math:`G = USV^\top` by a quintic Newton-Schulz
    iteration :math:`X \leftarrow aX + (bA + cA^2)X`, :math:`A = XX^\top`, in bfloat16
    (as torch and the original do: the result only needs to be roughly orthogonal).

    The coefficients push every singular value of :math:`X_0 = G/\|G\|_F` (all in (0, 1])
    towards 1 fast, at the price of landing anywhere in about [0.7, 1.2] instead of on 1:
    good enough for a step direction. Tall matrices are transposed so that
    :math:`XX^\top` is the small Gram matrix.

    ``G`` may also be a stack of matrices of one shape, ``(n, rows, cols)``: each is
    orthogonalised on its own (its own norm, its own iteration), with each product one
    batched product for the whole stack (``torch.baddbmm``): on many small matrices
    several times faster than a loop over them (one call per product, not one per matrix
    and product). On the CPU with oneDNN off (the book's pinned environment) torch runs a
    stack's product as each matrix's own product, so the numbers are the loop's, bit for
    bit, when every product has at least 400 multiply-adds (both sides at least 8; below,
    torch's batched product adds in another order); with oneDNN on, a stack runs as one
    oneDNN product, whose numbers equalled the loop's in every case measured
    (``tests/test_optimizers.py``), which is not a guarantee. :class:`Muon` stacks only
    such matrices, and only on the CPU (:data:`STACK_MIN_SIDE`).

    Args:
        G: a matrix, or a stack of matrices of one shape (a 3-D tensor).
        coefficients: (a, b, c) of the iteration.
        steps: the number of iterations.
        eps: floor of ‖G‖_F in the normalisation.
    """
    require(steps < 100, "Number of steps must be less than 100 for computational efficiency")
    require(G.ndim in (2, 3), "Input tensor gradient must be a 2D matrix (or a stack of them)")
    require(len(coefficients) == 3, "Coefficients must be a tuple of exactly 3 values")
    a, b, c = coefficients
    X = G.bfloat16()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    # not in place: for a bfloat16 G, G.bfloat16() is G itself (Muon's momentum buffer)
    # ‖X‖_F of each matrix, by the kernel of a matrix alone (torch's foreach norm calls it
    # per matrix; a reduction over the last two dimensions of a stack may add in another order)
    norm = torch.stack(torch._foreach_norm(list(X))).view(-1, 1, 1) if X.ndim == 3 else X.norm()
    X = X / norm.clamp(min=eps)                       # spectral norm ≤ Frobenius norm ≤ 1
    product = torch.baddbmm if X.ndim == 3 else torch.addmm
    for _ in range(steps):
        A = X @ X.mT
        B = product(A, A, A, beta=b, alpha=c)         # bA + cA²
        X = product(X, B, X, beta=a)                  # aX + BX
    return X.mT if tall else X


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape) -> float:
    """The lr for a matrix of ``shape``: ``"original"`` (Keller Jordan) scales by
    sqrt(max(1, rows/cols)); ``"match_rms_adamw"`` (Moonshot, Liu et al. 2025) by
    0.2 sqrt(max(rows, cols)), which makes the update's RMS about AdamW's.

    Args:
        lr: the group's lr.
        adjust_lr_fn: None, "original" or "match_rms_adamw".
        shape: the matrix's shape (rows, cols).
    """
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    return lr * 0.2 * math.sqrt(max(rows, cols))


class Muon(Optimizer):
    r"""Muon (Keller Jordan et al., *Muon: An optimizer for hidden layers in neural
    networks*, 2024; Liu et al., *Muon is Scalable for LLM Training*, 2025); numbers equal
    ``torch.optim.Muon`` (torch 2.13).

    .. math::
        B_t &\leftarrow \beta B_{t-1} + (1-\beta) G_t, \qquad
        \tilde B_t = \begin{cases} (1-\beta) G_t + \beta B_t & \text{Nesterov} \\
                                   B_t & \text{otherwise} \end{cases} \\
        O_t &= \operatorname{NS}_k(\tilde B_t) \approx UV^\top
            \text{ for } \tilde B_t = USV^\top \\
        \theta_t &\leftarrow \theta_{t-1}(1 - \eta\lambda) - \eta'\, O_t

    with :math:`\eta'` the shape-adjusted lr (:func:`~optlib.matrix.adjusted_lr`).
    Orthogonalising sets every singular value of the step to about 1, so directions that
    the gradient barely visits move as fast as its dominant ones. Only for 2-D parameters:
    embeddings, the output head, biases and norms belong to AdamW
    (:func:`muon_param_groups`, :class:`MuonWithAdamW`).

    :math:`O_t` is a function of the whole matrix, not of its rows: under FSDP2 every
    process all-gathers :math:`\tilde B_t` (in bfloat16, where the iteration starts: 2
    bytes per value), orthogonalises it and keeps its own rows of :math:`O_t`
    (:func:`optlib.sharded.whole`, :func:`optlib.sharded.shard_like`); the numbers are
    one process's. (Each process receives :math:`(w-1)/w` of every matrix and computes
    every iteration; sending each matrix to one owner and scattering the result back
    moves :math:`2(w-1)/w^2` of it per process and computes each once: the same bytes at
    :math:`w = 2`, fewer from :math:`w = 3` on.)

    Args:
        params: the 2-D parameters to optimize (or dicts of parameter groups).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        weight_decay: λ, decoupled weight decay: θ ← θ(1 − ηλ) each step.
        momentum: β, the momentum of the buffer B.
        nesterov: orthogonalise the Nesterov combination G + β(B − G) instead of B.
        ns_coefficients: (a, b, c) of the quintic Newton-Schulz iteration.
        eps: floor of ‖B̃‖_F when normalising before the iteration.
        ns_steps: the number of Newton-Schulz iterations.
        adjust_lr_fn: None or "original" (√max(1, rows/cols)), or "match_rms_adamw"
            (0.2√max(rows, cols)): how the lr is scaled per matrix shape.
    """

    supports_complex = False
    reduces_computed = True         # the Newton-Schulz products of the momentum

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=NS_COEFFICIENTS, eps=1e-7, ns_steps=5, adjust_lr_fn=None):
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        _check_muon(lr, weight_decay, momentum, ns_coefficients, ns_steps, adjust_lr_fn, eps)
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                        adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        _add_checked(self, super().add_param_group, param_group, lambda group: (
            _check_muon(*(group[k] for k in _CHECKED)), _require_2d(group["params"])))

    def init_state(self, p, group):
        return {"momentum_buffer": zeros_like_state(p)}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, beta = group["lr"], group["momentum"]
        buf = s.momentum_buffer.lerp_(g, 1 - beta)                    # B ← βB + (1−β)G
        b = g.lerp(buf, beta) if group["nesterov"] else buf           # B̃ = G + β(B − G)
        decoupled_decay_(p, lr, group["weight_decay"])                # θ ← θ(1 − ηλ)
        # Orthogonalisation and the lr adjustment depend on each matrix's shape. O is a
        # function of the whole matrix: for a shard (FSDP2) every process gathers B̃ (in
        # bfloat16, where the iteration starts anyway: the same numbers for half the bytes
        # of float32), orthogonalises it and keeps its own piece of O. Matrices of one
        # shape are orthogonalised together, as one stack (the same numbers as one by one).
        for shape, members in _same_shapes(p):
            G = [whole(b[i].bfloat16()) for i in members]
            O = zeropower_via_newtonschulz(torch.stack(G) if len(G) > 1 else G[0],
                                           group["ns_coefficients"], group["ns_steps"],
                                           group["eps"])
            alpha = -adjusted_lr(lr, group["adjust_lr_fn"], shape)
            for i, o in zip(members, O if len(G) > 1 else [O], strict=True):
                p[i].add_(shard_like(o, p[i]), alpha=alpha)


#: Matrices on the CPU whose smaller side is at least this are stacked with the others of
#: their shape. Below it a product of the iteration has under 400 multiply-adds (7³ = 343),
#: where torch's batched product takes a loop of its own that adds in another order (its
#: last bits can differ from the matrix's own product); from 8 on, it runs each matrix's
#: own product (with oneDNN off, as under the book's pins) or oneDNN's batched one. On a
#: GPU each matrix goes alone: whether cuBLAS's batched products give the bits of its
#: products of one matrix has not been measured.
STACK_MIN_SIDE = 8
#: The most values in one stack (32 MiB in bfloat16), so that many small matrices go in
#: one stack, a matrix of 2**24 values or more alone, and the iteration's memory does
#: not grow with the number of matrices.
STACK_VALUES = 2**24


def _same_shapes(params):
    """``(shape, indices)``: the indices of the parameters to orthogonalise together, those
    of one shape and device (in order of first appearance) in stacks of at most
    :data:`STACK_VALUES` values; a matrix with a side under :data:`STACK_MIN_SIDE`, or not
    on the CPU, alone."""
    by_shape: dict[tuple, list[int]] = {}
    for i, x in enumerate(params):
        stacked = x.device.type == "cpu" and min(x.shape) >= STACK_MIN_SIDE
        by_shape.setdefault((tuple(x.shape), x.device) if stacked else i, []).append(i)
    for indices in by_shape.values():
        shape = tuple(params[indices[0]].shape)
        per_stack = max(1, STACK_VALUES // math.prod(shape))
        for start in range(0, len(indices), per_stack):
            yield shape, indices[start:start + per_stack]


def _require_2d(params):
    for p in params:
        require(p.ndim == 2,
                f"Muon only supports 2D parameters whereas we found a parameter with size: "
                f"{p.size()}. Optimize embeddings, the output head, biases and norms with "
                "AdamW instead: see optlib.muon_param_groups and optlib.MuonWithAdamW")


def _validated(cls, kwargs: dict) -> Optimizer:
    """An instance of ``cls`` with hyperparameters ``kwargs``, checked by its constructor."""
    accepted = inspect.signature(cls.__init__).parameters
    hyper = {k: v for k, v in kwargs.items() if k in accepted and k != "params"}
    return cls([torch.zeros(1, 1)], **hyper)


_CHECKED = ("lr", "weight_decay", "momentum", "ns_coefficients", "ns_steps", "adjust_lr_fn",
            "eps")


def _check_muon(lr, weight_decay, momentum, ns_coefficients, ns_steps, adjust_lr_fn, eps):
    # torch's messages; torch checks ns_steps and ns_coefficients only when stepping, and
    # eps not at all (eps <= 0 turns an all-zero gradient into NaN): we check them at once
    require(0.0 <= lr, f"Learning rate should be >= 0 but is: {lr}")
    require(0.0 <= momentum, f"momentum should be >= 0 but is: {momentum}")
    require(0.0 <= weight_decay, f"weight decay should be >= 0 but is: {weight_decay}")
    require(adjust_lr_fn in (None, "original", "match_rms_adamw"),
            f"Adjust learning rate function {adjust_lr_fn} is not supported")
    require(isinstance(ns_steps, int) and not isinstance(ns_steps, bool) and 0 <= ns_steps,
            f"Invalid ns_steps value: {ns_steps!r} (expected an integer >= 0)")
    require(ns_steps < 100, "Number of steps must be less than 100 for computational efficiency")
    require(len(ns_coefficients) == 3, "Coefficients must be a tuple of exactly 3 values")
    require(isinstance(eps, numbers.Real) and not isinstance(eps, bool) and eps > 0,
            f"Invalid eps value: {eps!r} (expected a number > 0: Muon divides the update "
            "by max(||B||_F, eps), and eps <= 0 turns an all-zero gradient into NaN)")


def _add_checked(optimizer, add, param_group, check) -> None:
    """``add(param_group)``, then ``check(group)`` on the group as added; a group that fails
    the check is taken out again, so a refused ``add_param_group`` changes nothing."""
    count = len(optimizer.param_groups)
    add(param_group)
    try:
        check(optimizer.param_groups[-1])
    except Exception:
        del optimizer.param_groups[count:]
        raise


def muon_param_groups(model: torch.nn.Module, head: torch.nn.Module | None = None):
    """Split a model's parameters the way Muon is used in practice.

    Returns ``(muon_params, adamw_params)``: the 2-D weights of hidden layers go to Muon;
    everything else to AdamW: parameters of ``nn.Embedding`` modules (a lookup table, not a
    linear map of the activations), the output head (``head``, by default the last
    ``nn.Linear`` registered in the model, which maps to logits), biases and norm scales
    (fewer than 2 dimensions), and tensors of more than 2 dimensions (convolutions;
    Muon variants that flatten them exist, torch's refuses them). A weight tied between
    the embedding and the head is listed once, with AdamW.

    Args:
        model: the model to split.
        head: the output head (default: the last nn.Linear).
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if head is None and linears:
        head = linears[-1]
    to_adamw = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                for p in m.parameters()}
    if head is not None:
        to_adamw |= {id(p) for p in head.parameters()}
    muon, adamw, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (muon if p.ndim == 2 and id(p) not in to_adamw else adamw).append(p)
    return muon, adamw


class MuonWithAdamW(Optimizer):
    """Muon for the hidden 2-D weights and AdamW for the rest, as one optimizer.

    ``MuonWithAdamW(model)`` splits the model with :func:`muon_param_groups`; or pass
    groups yourself, each with ``use_muon=True`` or ``False``. Muon groups take Muon's
    hyperparameters (``muon_kwargs``, defaults torch's: lr 1e-3, weight decay 0.1, ...),
    AdamW groups AdamW's (``adamw_kwargs``); a group's own keys win. Each group is stepped
    by exactly :class:`Muon`'s or :class:`AdamW`'s rule (the same code), so the numbers
    equal those of two separate optimizers, while schedulers, ``state_dict`` and
    ``zero_grad`` see one. A typical choice (Keller Jordan's speedruns) is Muon lr 0.02
    with AdamW lr 3e-4 to 8e-3 for the rest.

    ``defaults`` holds Muon's hyperparameters (AdamW's are in ``adamw_defaults``), so
    schedulers that look for a momentum there (``OneCycleLR``, ``CyclicLR`` with
    ``cycle_momentum=True``) accept the optimizer: they then cycle the ``momentum`` of
    every group, which Muon groups use and AdamW groups ignore (their ``betas`` stay as
    set). ``copy.deepcopy`` and pickling keep both families' defaults. A group refused by
    ``add_param_group`` (a tensor that is not 2-D in a Muon group, a bad hyperparameter)
    is not added; a complex parameter in a Muon group is refused before any step changes.
    Non-finite gradients: as in torch's Muon and AdamW (their numbers); a NaN or inf in a
    Muon group's gradient makes that whole matrix NaN (orthogonalising mixes every entry).

    Args:
        params: a model (split with muon_param_groups), or parameter groups each with
            use_muon=True or False.
        muon_kwargs: Muon's hyperparameters for the Muon groups (torch's defaults otherwise).
        adamw_kwargs: AdamW's hyperparameters for the other groups.
    """

    reduces_computed = True         # in its Muon groups (see Muon)

    def __init__(self, params, muon_kwargs=None, adamw_kwargs=None):
        if isinstance(params, torch.nn.Module):
            muon, adamw = muon_param_groups(params)
            params = [dict(params=muon, use_muon=True), dict(params=adamw, use_muon=False)]
            params = [group for group in params if group["params"]]
        # One instance of each family (on a dummy tensor): its constructor validates the
        # hyperparameters, its defaults fill the groups, its rule steps them.
        muon_rule = _validated(Muon, muon_kwargs or {})
        self.adamw_defaults = dict(_validated(AdamW, adamw_kwargs or {}).defaults)
        super().__init__(params, dict(muon_rule.defaults))

    def __getstate__(self):
        # torch keeps defaults, state and param_groups; AdamW's defaults are needed too
        return {**super().__getstate__(), "adamw_defaults": self.adamw_defaults}

    def _family(self, use_muon: bool) -> tuple[type, dict]:
        if use_muon:   # (torch's __setstate__ adds "differentiable" to defaults; Muon has none)
            return Muon, {k: v for k, v in self.defaults.items() if k != "differentiable"}
        return AdamW, self.adamw_defaults

    def _group_fill(self, group, defaults):
        return self._family(group["use_muon"])[1] if "use_muon" in group else {}

    def add_param_group(self, param_group):
        require(param_group.get("use_muon") in (True, False),
                "Invalid param_group: each group needs use_muon=True or use_muon=False")
        use_muon = param_group["use_muon"]
        cls, family = self._family(use_muon)
        group = {**family, **param_group}
        _validated(cls, {k: group[k] for k in family})
        muon_defaults = self.defaults
        self.defaults = family          # torch fills a group's missing keys from self.defaults
        try:
            _add_checked(self, super().add_param_group, group,
                         lambda added: _require_2d(added["params"]) if use_muon else None)
        finally:
            self.defaults = muon_defaults

    def _gather(self, group):
        if group["use_muon"] and any(p.is_complex() for p in group["params"]
                                     if p.grad is not None):
            raise RuntimeError("Muon does not support complex parameters")
        return super()._gather(group)

    def init_state(self, p, group):
        return _RULES[group["use_muon"]].init_state(p, group)

    def update(self, group, p, g, s):
        _RULES[group["use_muon"]].update(group, p, g, s)


#: The rules MuonWithAdamW steps its groups with (they read only the group they are given).
_RULES = {True: Muon([torch.zeros(1, 1)]), False: AdamW([torch.zeros(1)])}
