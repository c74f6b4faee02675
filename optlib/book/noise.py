"""Gradient noise: per-example gradients, the noise of a minibatch mean, the curvature
that makes it matter, and what noise does to Adam's second moment and to weight decay."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inspect import matrix_params

__all__ = ["per_example_grads", "gradient_variance", "minibatch_noise", "predicted_noise",
           "sharpness", "decay_under_noise", "second_moment_noise"]


def per_example_grads(model: nn.Module, x: Tensor, y: Tensor,
                      loss_fn: Callable = F.cross_entropy) -> Tensor:
    """Gradient of the loss of each example separately, flattened: a tensor (N, P).

    Row ``i`` is the gradient of ``loss_fn(model(x[i:i+1]), y[i:i+1])`` with respect to
    all of the model's parameters, concatenated in ``model.parameters()`` order. Their
    mean is the full-batch gradient.
    """
    from torch.func import functional_call, grad, vmap

    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([grads[n].reshape(len(x), -1) for n in names], dim=1)


def gradient_variance(per_example: Tensor) -> float:
    """σ² = the mean over examples of ‖g_i − g‖², where ``g`` is the mean of the rows (the
    trace of the per-example covariance): the noise of one example's gradient.

    Args:
        per_example: the per-example gradients, a tensor (N, P) as from
            :func:`per_example_grads`.
    """
    return (per_example - per_example.mean(0)).pow(2).sum(1).mean().item()


def minibatch_noise(per_example: Tensor, batch_sizes: Sequence[int], samples: int = 100,
                    seed: int = 0) -> dict[int, float]:
    """Measured mean squared error E‖g_B − g‖² of minibatch gradients, per batch size.

    Each minibatch is drawn *without replacement* (as one epoch of shuffled data draws
    it); ``g`` is the mean of all rows of ``per_example``.
    """
    gen = torch.Generator().manual_seed(seed)
    n = per_example.shape[0]
    full = per_example.mean(0)
    out = {}
    for b in batch_sizes:
        if not 1 <= b <= n:
            raise ValueError(f"batch size must be in [1, {n}], got {b}")
        err = 0.0
        for _ in range(samples):
            idx = torch.randperm(n, generator=gen)[:b]
            err += (per_example[idx].mean(0) - full).pow(2).sum().item()
        out[b] = err / samples
    return out


def predicted_noise(per_example: Tensor, batch_size: int, replacement: bool = False) -> float:
    """E‖g_B − g‖² in closed form: σ²/B, times (N − B)/(N − 1) without replacement.

    σ² = mean over examples of ‖g_i − g‖² (the trace of the per-example covariance).
    """
    n = per_example.shape[0]
    sigma2 = gradient_variance(per_example)
    fpc = 1.0 if replacement else (n - batch_size) / (n - 1)
    return sigma2 / batch_size * fpc


def sharpness(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable = F.cross_entropy,
              iters: int = 30, seed: int = 0) -> float:
    """Largest eigenvalue of the Hessian of the full-batch loss, by power iteration.

    Uses Hessian-vector products (double backward), never the Hessian itself. Gradient
    descent on a quadratic with this curvature is stable only for lr < 2 / sharpness.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    lam = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum((a * a).sum() for a in v))
        v = [a / norm for a in v]
        hv = torch.autograd.grad(grads, params, v, retain_graph=True)
        lam = sum((a * b).sum() for a, b in zip(hv, v, strict=True)).item()
        v = [h.detach() for h in hv]
    return lam


def decay_under_noise(make_optimizer: Callable, sigmas: Sequence[float], steps: int = 2000,
                      per_sigma: int = 200, seed: int = 0,
                      dtype: torch.dtype = torch.float64) -> list[float]:
    """Start ``per_sigma`` weights at 1 for each gradient scale σ and feed them gradients that
    are pure zero-mean noise of std σ (the data has nothing to say about them), so that
    only weight decay should move them on average. Return, per σ, the mean ``|θ|`` after
    ``steps`` steps. σ = 0 is pure decay: the gradients are all zero.

    Args:
        make_optimizer: ``params -> optimizer``, built on one tensor.
        sigmas: the standard deviations σ of the gradients, one group of weights each.
        steps: the number of steps.
        per_sigma: the number of weights of each group.
        seed: the seed of the noise.
        dtype: the weights' and gradients' dtype.
    """
    if not sigmas:
        raise ValueError("sigmas must not be empty")
    scales = torch.tensor([float(s) for s in sigmas], dtype=dtype)
    scales = scales.repeat_interleave(per_sigma)
    theta = torch.ones_like(scales, requires_grad=True)
    opt = make_optimizer([theta])
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        theta.grad = scales * torch.randn(scales.shape, generator=g, dtype=dtype)
        opt.step()
    return theta.detach().abs().reshape(len(sigmas), per_sigma).mean(1).tolist()


def second_moment_noise(task, model: nn.Module, steps: int = 100,
                        reference: int = 200, beta2: float = 0.999,
                        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)) -> dict:
    """How well does Adam's bias-corrected second moment know E[g²] after t batches?

    The weights are held fixed (so the true E[g²] does not move). The reference
    ``v_true`` is the mean of g² over ``reference`` batches; then ``steps`` *other* batches
    are fed to Adam's rule ``v ← β₂v + (1−β₂)g²``, ``v̂ = v / (1−β₂ᵗ)``, and after each we
    record quantiles over the coordinates of the weight matrices of ``v̂_t / v_true``.
    Returns ``{"t": array, "q": array (steps, len(quantiles)), "quantiles": ...,
    "below_0.1": fraction of coordinates with v̂ < v_true/10 per t}``.
    """
    params = matrix_params(model)

    def grad(t):
        x, y = task.batch(t)
        model.zero_grad(set_to_none=True)
        task.loss(model, x, y).backward()
        return torch.cat([p.grad.reshape(-1) for p in params])

    v_true = sum(grad(t).pow(2) for t in range(reference)) / reference
    v = torch.zeros_like(v_true)
    q = torch.tensor(quantiles, dtype=v_true.dtype)
    rows, below = [], []
    for t in range(1, steps + 1):
        g = grad(reference + t)
        v.mul_(beta2).add_(g.pow(2), alpha=1 - beta2)
        ratio = v / (1 - beta2**t) / v_true
        rows.append(torch.quantile(ratio, q).tolist())
        below.append((ratio < 0.1).float().mean().item())
    model.zero_grad(set_to_none=True)
    return {"t": np.arange(1, steps + 1), "q": np.array(rows), "quantiles": quantiles,
            "below_0.1": np.array(below)}
