"""Gradient clipping by the global norm (Pascanu et al., ICML 2013)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import Tensor

from .tensorlist import TensorList


@torch.no_grad()
def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    r"""Scale all gradients together so that their joint norm is at most ``max_norm``.

    .. math::
        N = \big\| (\|g_1\|_p, \dots, \|g_k\|_p) \big\|_p, \qquad
        g_i \leftarrow g_i \cdot \min\!\Big(1, \frac{c}{N + 10^{-6}}\Big)

    The direction of the full gradient is kept; only its length is capped. Same result
    and return value (the norm *before* clipping, a 0-dim tensor) as
    ``torch.nn.utils.clip_grad_norm_``, including its quirks: the ``1e-6`` means a
    gradient whose norm equals ``max_norm`` is still scaled by a hair, and gradients are
    multiplied even when the factor is 1 (this avoids a device-to-host sync on GPUs).

    Args:
        parameters: a tensor or an iterable of tensors whose gradients are clipped.
        max_norm: c, the largest joint norm allowed.
        norm_type: p, the norm's order (may be inf).
        error_if_nonfinite: raise if the joint norm is NaN or infinite instead of scaling by it.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        is_generator = not isinstance(parameters, (list, tuple))
        parameters = list(parameters)
        if is_generator and not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                          stacklevel=2)
    if norm_type is None or float(norm_type) != float(norm_type):
        raise ValueError(f"Invalid norm_type: {norm_type}")
    norm_type = float(norm_type)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    first_device = grads[0].device
    by_device = {}
    for g in grads:
        by_device.setdefault((g.device, g.dtype), TensorList()).append(g)
    norms = [n.to(first_device) for group in by_device.values() for n in group.norm(norm_type)]
    total = torch.linalg.vector_norm(torch.stack(norms), norm_type)     # norm of the norms
    if error_if_nonfinite and torch.logical_or(total.isnan(), total.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
            "so it cannot be clipped. To disable this error and scale the gradients by the "
            "non-finite norm anyway, set `error_if_nonfinite=False`")
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for (device, _), group in by_device.items():
        torch._foreach_mul_(group, factor.to(device))
    return total
