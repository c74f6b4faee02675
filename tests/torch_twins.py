"""Run an optlib optimizer and its reference side by side on identical gradients."""

from __future__ import annotations

import torch

SHAPES = ((3, 4), (5,), (2, 3, 2))


def make_params(shapes=SHAPES, dtype=torch.float64, seed=0, complex_=False):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        t = torch.randn(s, generator=gen, dtype=dtype)
        if complex_:
            t = torch.complex(t, torch.randn(s, generator=gen, dtype=dtype))
        out.append(torch.nn.Parameter(t))
    return out


def gradient(step: int, i: int, p: torch.Tensor, gen: torch.Generator, no_grad: int = 2):
    """Varied gradients: scales 0.1/1/10, sign flips, exact zeros, and no gradient at all
    for tensor ``no_grad`` on every fourth step."""
    if i == no_grad and step % 4 == 3:
        return None
    real = p.real.dtype if p.is_complex() else p.dtype
    g = torch.randn(p.shape, generator=gen, dtype=real) * 10.0 ** (step % 3 - 1)
    if step % 5 == 0:
        g = -g
    if step % 7 == 0:
        g.view(-1)[0] = 0.0
    if p.is_complex():
        g = torch.complex(g, torch.randn(p.shape, generator=gen, dtype=real))
    return g


def run_twins(make_ours, make_theirs, steps=25, shapes=SHAPES, dtype=torch.float64, seed=0, *,
              complex_=False, step_kwargs=None, between=None, no_grad=2):
    """Step two optimizers on identical copies of the parameters and gradients.

    ``make_*`` take a parameter list and return an optimizer; ``between(step, ours, theirs)``
    runs after each step (for example Sophia's Hessian refresh). Returns both parameter
    lists and both optimizers."""
    a = make_params(shapes, dtype, seed, complex_)
    b = make_params(shapes, dtype, seed, complex_)
    ours, theirs = make_ours(a), make_theirs(b)
    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            g = gradient(step, i, x, gen, no_grad)
            x.grad = None if g is None else g.clone()
            y.grad = None if g is None else g.clone()
        ours.step(**(step_kwargs or {}))
        theirs.step(**(step_kwargs or {}))
        if between is not None:
            between(step, ours, theirs)
    return a, b, ours, theirs


def run_pair(ours_cls, theirs_cls, kwargs, steps=20, dtype=torch.float64, seed=0,
             groups=None, complex_=False, theirs_kwargs=None):
    """``run_twins`` for two classes built with the same ``kwargs`` (plus ``theirs_kwargs``
    for the reference); ``groups``: ``[(tensor indices, group options), ...]``."""
    def factory(cls, extra):
        def make(params):
            if groups:
                params = [dict(params=[params[i] for i in idx], **options) for idx, options in groups]
            return cls(params, **kwargs, **extra)
        return make

    return run_twins(factory(ours_cls, {}), factory(theirs_cls, theirs_kwargs or {}), steps,
                     dtype=dtype, seed=seed, complex_=complex_)
