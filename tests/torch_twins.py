"""Run an optlib optimizer and its torch.optim twin side by side on identical gradients."""

from __future__ import annotations

import torch

SHAPES = ((3, 4), (5,), (2, 3, 2))


def make_params(dtype=torch.float64, seed=0, shapes=SHAPES, complex_=False):
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        t = torch.randn(s, generator=g, dtype=dtype)
        if complex_:
            t = torch.complex(t, torch.randn(s, generator=g, dtype=dtype))
        out.append(torch.nn.Parameter(t))
    return out


def gradient(step: int, i: int, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    """Varied gradients: random scale and sign, exact zeros, and None now and then."""
    if i == 2 and step % 4 == 3:       # the third tensor has no gradient on some steps
        return None
    g = torch.randn(p.shape, generator=gen, dtype=p.real.dtype if p.is_complex() else p.dtype)
    g *= 10.0 ** (step % 3 - 1)       # scales 0.1, 1, 10
    if step % 5 == 0:
        g = -g
    if step % 7 == 0:
        g[..., 0] = 0.0
    if p.is_complex():
        g = torch.complex(g, torch.randn(p.shape, generator=gen, dtype=g.dtype))
    return g


def run_pair(ours_cls, theirs_cls, kwargs, steps=20, dtype=torch.float64, seed=0,
             groups=None, complex_=False, theirs_kwargs=None):
    """Step both optimizers `steps` times; return both parameter lists and optimizers."""
    a, b = make_params(dtype, seed, complex_=complex_), make_params(dtype, seed, complex_=complex_)
    if groups:
        pa = [dict(params=[a[i] for i in idx], **extra) for idx, extra in groups]
        pb = [dict(params=[b[i] for i in idx], **extra) for idx, extra in groups]
    else:
        pa, pb = a, b
    ours = ours_cls(pa, **kwargs)
    theirs = theirs_cls(pb, **kwargs, **(theirs_kwargs or {}))
    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            g = gradient(step, i, x, gen)
            x.grad = None if g is None else g.clone()
            y.grad = None if g is None else g.clone()
        ours.step()
        theirs.step()
    return a, b, ours, theirs
