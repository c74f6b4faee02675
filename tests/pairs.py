"""Run an optlib optimizer and another implementation side by side on identical gradients,
and the small helpers the optimizer tests share (parameters, varied gradients, snapshots).

One runner, :func:`run_pair`: it takes two factories (parameter list -> optimizer), so the
other side can be torch.optim, an author's package, or the paper's equations written out.
"""

from __future__ import annotations

import copy

import torch
from catalogue import SHAPES


def make_params(shapes=SHAPES, dtype=torch.float64, seed=0, complex_=False):
    """Parameters of the given shapes, drawn from ``seed`` (complex: real and imaginary
    parts drawn one after the other)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        t = torch.randn(s, generator=gen, dtype=dtype)
        if complex_:
            t = torch.complex(t, torch.randn(s, generator=gen, dtype=dtype))
        out.append(torch.nn.Parameter(t))
    return out


def gradient(step: int, i: int, p: torch.Tensor, gen: torch.Generator, no_grad: int = 1):
    """Varied gradients: scales 0.1/1/10, sign flips, exact zeros, and no gradient at all
    for tensor ``no_grad`` on every fourth step (-1: never)."""
    if i == no_grad and step % 4 == 3:
        return None
    real = p.real.dtype if p.is_complex() else p.dtype
    g = torch.randn(p.shape, generator=gen, dtype=real) * 10.0 ** (step % 3 - 1)
    if step % 5 == 0:
        g = -g
    if step % 7 == 0 and g.numel():
        g.view(-1)[0] = 0.0
    if p.is_complex():
        g = torch.complex(g, torch.randn(p.shape, generator=gen, dtype=real))
    return g


def drive(opt, params, steps, seed, start=0, no_grad=1):
    """``steps`` steps of ``opt`` on :func:`gradient`'s varied gradients, from step ``start``."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(start, start + steps):
        for i, p in enumerate(params):
            p.grad = gradient(step, i, p, gen, no_grad)
        opt.step()


def run_pair(make_ours, make_theirs, steps=25, shapes=SHAPES, dtype=torch.float64, seed=0, *,
             complex_=False, step_kwargs=None, between=None, no_grad=1):
    """Step two optimizers on identical copies of the parameters and gradients.

    ``make_*`` take a parameter list and return an optimizer; ``between(step, ours, theirs)``
    runs after each step (for example Sophia's Hessian refresh); tensor ``no_grad`` misses
    its gradient every fourth step (-1: never). Returns both parameter lists and both
    optimizers."""
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


def assert_close(a, b, rtol=1e-12, atol=1e-14):
    """Two lists of tensors equal within the tolerances (NaNs in the same places)."""
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=rtol, atol=atol, equal_nan=True)


def assert_equal(a, b):
    """Two lists of tensors equal bit for bit."""
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def snapshot(opt, params):
    """Everything a refused call must leave as it was: parameters, state, groups."""
    return ([p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()),
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
            [len(g["params"]) for g in opt.param_groups])


def assert_unchanged(before, opt, params):
    weights, state, groups, sizes = before
    assert all(torch.equal(p, w) for p, w in zip(params, weights, strict=True))
    assert str(opt.state_dict()) == str(state)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert [len(g["params"]) for g in opt.param_groups] == sizes


class TinyLM(torch.nn.Module):
    """Embedding, two hidden matrices, a norm and a head: what Muon's groups split."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 8)
        self.hidden = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.hidden2 = torch.nn.Linear(8, 8, bias=False)
        self.head = torch.nn.Linear(8, 11)

    def forward(self, x):
        h = self.norm(torch.relu(self.hidden(self.embed(x))))
        return self.head(torch.relu(self.hidden2(h)))
