"""Looking inside training: per-coordinate step sizes, how much of its initial weights a
model keeps, trust ratios, Adafactor's update, layer-by-layer gradients, the roughness of
a loss curve, where a loss comes from.

The optimizers' internals are read through the core's own functions
(``optlib.factored``, ``optlib.large_batch``), not re-derived here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["effective_lr", "matrix_params", "projection", "adafactor_update_rms", "trust_ratio",
           "trust_ratios", "gradient_norms", "norm_gains", "roughness", "shards",
           "state_bytes_per_param", "loss_breakdown"]


def effective_lr(optimizer: torch.optim.Optimizer, seen_only: bool = False, *,
                 param: Tensor | None = None) -> Tensor:
    """Every coordinate's current step size ``lr / (sqrt(s) + eps)`` (one flat tensor), where
    ``s`` is AdaGrad's ``sum`` or RMSprop's ``square_avg``: the factor that multiplies the
    gradient in the next step (ignoring that the next gradient also enters ``s``).
    ``seen_only``: leave out coordinates whose ``s`` is still 0 (they never had a nonzero
    gradient, and their "rate" ``lr/eps`` is meaningless). ``param``: the rates of that
    one parameter of the optimizer only, in its shape (not with ``seen_only``)."""
    if param is not None and seen_only:
        raise ValueError("give param or seen_only, not both")
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if param is not None and p is not param:
                continue
            st = optimizer.state.get(p, {})
            key = "sum" if "sum" in st else "square_avg" if "square_avg" in st else None
            if key is None:
                raise ValueError(
                    f"effective_lr needs an AdaGrad or RMSprop state (a 'sum' or 'square_avg' "
                    f"entry), got keys {sorted(st)}"
                )
            if param is not None:
                return group["lr"] / (st[key].sqrt() + group["eps"])
            s_ = st[key].flatten()
            if seen_only:
                s_ = s_[s_ > 0]
            out.append(group["lr"] / (s_.sqrt() + group["eps"]))
    if param is not None:
        raise ValueError("param is not a parameter of the optimizer")
    return torch.cat(out)


def matrix_params(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices of the model's linear maps (not embeddings, norms or biases)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [p for p in model.parameters() if p.ndim == 2 and id(p) not in embeddings]


@torch.no_grad()
def projection(model: nn.Module, onto: nn.Module) -> float:
    """⟨θ, θ₀⟩ / ⟨θ₀, θ₀⟩ over the weight matrices (:func:`matrix_params`): the projection
    of ``model``'s weights on those of ``onto`` (the same model at its initialization, say),
    as a multiple of them. 1 at the start; weight decay alone shrinks it as (1 − ηλ)ᵀ.

    Args:
        model: the model (after training, say).
        onto: a model of the same shapes (at its initialization, say).
    """
    end, start = matrix_params(model), matrix_params(onto)
    if [p.shape for p in end] != [p.shape for p in start]:
        raise ValueError("model and onto must have weight matrices of the same shapes")
    return (sum((a * b).sum() for a, b in zip(end, start, strict=True))
            / sum((a * a).sum() for a in start)).item()


@torch.no_grad()
def adafactor_update_rms(optimizer: torch.optim.Optimizer) -> list[float]:
    """RMS of Adafactor's unclipped update U = G / sqrt(V̂) of the step just taken, per
    parameter: the step is clipped when this exceeds the threshold ``d``.

    U is computed by the optimizer's own function (``optlib.factored._scaled_gradient``)
    from the state and ``.grad``, with a zero weight for the new gradient, so the state
    the step left is used as it is and stays unchanged.

    Args:
        optimizer: an :class:`optlib.Adafactor` that has taken a step.
    """
    from optlib.factored import _scaled_gradient

    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if p.grad is None or not st:
                continue
            u = _scaled_gradient(p.grad, st, 0.0, group["eps"][0])
            out.append(u.pow(2).mean().sqrt().item())
    return out


def _ratio(w: float, u: float, ratio=None) -> float:
    """The core's per-tensor ratio (``optlib.large_batch.trust_ratio``) of two norms,
    in float64 (so that it equals the same arithmetic on Python floats)."""
    from optlib.large_batch import trust_ratio as core

    w_, u_ = (torch.tensor([float(v)], dtype=torch.float64) for v in (w, u))
    r = core(w_, u_) if ratio is None else core(w_, u_, ratio)
    return float(r[0])


def trust_ratio(p_norm: Tensor | float, u_norm: Tensor | float) -> float:
    """LAMB's ratio ‖θ‖/‖u‖ for one tensor, 1 when either norm is 0 (You et al., 2020).

    Args:
        p_norm: the norm of the weights.
        u_norm: the norm of the update.
    """
    return _ratio(p_norm, u_norm)


@torch.no_grad()
def trust_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Per-parameter trust ratios of the step just taken: ‖θ‖/‖u‖ for :class:`optlib.LAMB`
    (u = m̂/(√v̂ + ε) + λθ, from the state), the local lr tc·‖θ‖/(‖g‖ + λ‖θ‖ + ε) for
    :class:`optlib.LARS`; 1 where a norm is 0, as in the optimizers: the core's own
    functions (``optlib.large_batch.lamb_direction``, ``lars_local_lr`` and
    ``trust_ratio``) compute them. ‖θ‖ is taken after the step, which changed it by a
    fraction of about lr: close enough for a plot.

    Args:
        optimizer: a LAMB or LARS optimizer that has taken a step.
    """
    from optlib import LAMB, LARS
    from optlib.large_batch import lamb_direction, lars_local_lr, trust_ratio
    from optlib.tensorlist import TensorList

    def norm(x: Tensor) -> Tensor:       # as the core takes norms: float64, one per tensor
        return torch.tensor([x.norm().item()], dtype=torch.float64)

    out = []
    for group in optimizer.param_groups:
        wd = group["weight_decay"]
        for p in group["params"]:
            st = optimizer.state.get(p)
            if p.grad is None or st is None:
                continue
            if isinstance(optimizer, LAMB):
                u = lamb_direction(TensorList([p]), TensorList([st["exp_avg"]]),
                                   TensorList([st["exp_avg_sq"]]), float(st["step"]),
                                   group["betas"], group["eps"], wd)
                (ratio,) = trust_ratio(norm(p), norm(u[0]))
            elif isinstance(optimizer, LARS):
                (ratio,) = lars_local_lr(norm(p), norm(p.grad), group["trust_coefficient"], wd,
                                         group["eps"])
            else:
                raise ValueError(f"optimizer must be LAMB or LARS, got {type(optimizer).__name__}")
            out.append(float(ratio))
    return out


def gradient_norms(model: nn.Sequential, x: Tensor, y: Tensor,
                   loss_fn: Callable = nn.functional.cross_entropy) -> dict[str, list[float]]:
    """One forward and backward pass of ``loss_fn(model(x), y)``; per hidden layer, from
    the input side on:

    * ``"signal"``: ‖∂L/∂h_l‖, the gradient with respect to the layer's output h_l
      (what backpropagation hands down, the quantity that vanishes or explodes);
    * ``"weight"``: ‖∂L/∂W_l‖, the gradient the optimizer actually sees for W_l.

    Norms are Frobenius norms over the whole batch. The model's ``.grad`` fields are
    left as this pass set them.
    """
    model.zero_grad()
    outputs = []
    h = x
    for module in model:
        h = module(h)
        if not isinstance(module, nn.Linear):  # an activation: the output of a hidden layer
            h.retain_grad()
            outputs.append(h)
    loss_fn(h, y).backward()
    linears = [m for m in model if isinstance(m, nn.Linear)][:-1]  # hidden layers only
    return {
        "signal": [float(o.grad.norm()) for o in outputs],
        "weight": [float(m.weight.grad.norm()) for m in linears],
    }


def norm_gains(model: nn.Module) -> list[float]:
    """The mean gain (weight) of every LayerNorm in ``model``, in order."""
    return [m.weight.mean().item() for m in model.modules() if isinstance(m, nn.LayerNorm)]


def roughness(losses: Sequence[float], last: int = 100) -> float:
    """Mean absolute change of the loss from one step to the next over the last ``last``
    steps: near 0 for a curve that has settled, large for one that bounces."""
    tail = [float(v) for v in losses[-last:]]
    if len(tail) < 2:
        return math.nan
    return sum(abs(b - a) for a, b in zip(tail[:-1], tail[1:], strict=False)) / (len(tail) - 1)


def shards(t: Tensor, n: int) -> list[Tensor]:
    """Flatten ``t`` and cut it into ``n`` contiguous pieces, as FSDP shards a flat parameter
    (the pieces ignore row boundaries: a shard may hold part of a row)."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return list(t.detach().reshape(-1).tensor_split(n))


def state_bytes_per_param(make_optimizer, model: nn.Module) -> float:
    """Bytes of optimizer state per parameter once every tensor has taken one step.

    ``make_optimizer(params)`` builds the optimizer; it steps on a copy of ``model`` with
    gradients of ones, so ``model`` itself is left alone.
    """
    import copy

    from optlib.memory import state_bytes

    clone = copy.deepcopy(model)
    params = [p for p in clone.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer = make_optimizer(params)
    optimizer.step()
    return state_bytes(optimizer) / sum(p.numel() for p in params)


@torch.no_grad()
def loss_breakdown(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Where a classifier's mean cross-entropy comes from, to reconcile it with accuracy.

    Per example, :math:`\\ell_i = -\\log p_{y_i}(x_i)`. Returns ``mean`` (the usual loss),
    ``median``, ``accuracy``, ``wrong_share`` (the fraction of :math:`\\sum_i \\ell_i`
    carried by misclassified examples) and ``wrong_mean`` (their mean loss; 0 when none is
    wrong). A confident mistake costs without bound while accuracy counts it once, so a
    network can have a high mean loss and a high accuracy at once: then ``wrong_share``
    is near 1 and ``wrong_mean`` large."""
    logits = model(x)
    per = nn.functional.cross_entropy(logits, y, reduction="none")
    wrong = logits.argmax(1) != y
    total = per.sum().item()
    return dict(mean=per.mean().item(), median=per.median().item(),
                accuracy=1.0 - wrong.float().mean().item(),
                wrong_share=per[wrong].sum().item() / total if total > 0 else 0.0,
                wrong_mean=per[wrong].mean().item() if wrong.any() else 0.0)
