"""Shared checks for the optimizers beyond Adam (helpers, plus the generic contract tests)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_twins as twins
from catalogue import ENTRIES

import optlib

SHAPES = ((4, 5), (6,), (2, 3, 4))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors on a shared CPU: torch's intra-op thread pool only adds waiting (on a
    loaded 2-core machine a 2x3 softmax took 4 ms instead of 4 us). Import this fixture."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
MATRICES = ((4, 5), (6, 3), (5, 5))


def make_params(shapes=SHAPES, dtype=torch.float64, seed=0):
    return twins.make_params(shapes, dtype, seed)


def gradient(step: int, i: int, p: torch.Tensor, gen: torch.Generator):
    """torch_twins' varied gradients, with the second tensor's gradient missing now and then."""
    return twins.gradient(step, i, p, gen, no_grad=1)


def run_pair(make_ours, make_theirs, steps=25, shapes=SHAPES, dtype=torch.float64, seed=0,
             step_kwargs=None, between=None):
    """Step optlib's and the reference optimizer on identical gradients (torch_twins.run_twins)."""
    return twins.run_twins(make_ours, make_theirs, steps, shapes, dtype, seed,
                           step_kwargs=step_kwargs, between=between, no_grad=1)


def assert_close(a, b, rtol=1e-12, atol=1e-14):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=rtol, atol=atol)


def drive(opt, params, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for i, p in enumerate(params):
            g = gradient(step, i, p, gen)
            p.grad = g
        opt.step()


# ---- the contract every optimizer of this family keeps -----------------------------------

#: The optimizers beyond torch.optim's Adam family, from the one catalogue (tests/catalogue.py):
#: name -> (factory, parameter shapes).
FACTORIES = {name: (entry.make, entry.shapes) for name, entry in ENTRIES.items()
             if not entry.torch_name or name in ("Adafactor", "Muon")}
NAMES = [n for n in FACTORIES if hasattr(optlib, n)]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_is_bit_exact(name):
    make, shapes = FACTORIES[name]
    a = make_params(shapes)
    opt = make(a)
    drive(opt, a, 7, seed=1)
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    resumed = make(b)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    drive(opt, a, 6, seed=2)
    drive(resumed, b, 6, seed=2)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradients_refused_and_weights_untouched(name):
    make, shapes = FACTORIES[name]
    a = make_params(shapes)
    opt = make(a)
    before = [x.detach().clone() for x in a]
    for x in a:
        x.grad = torch.ones_like(x)
    a[0].grad = torch.ones_like(a[0]).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    for x, y in zip(a, before, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_without_grad_are_skipped(name):
    make, shapes = FACTORIES[name]
    a = make_params(shapes)
    opt = make(a)
    before = a[0].detach().clone()
    for x in a[1:]:
        x.grad = torch.ones_like(x)
    opt.step()
    assert torch.equal(a[0], before)
    assert len(opt.state.get(a[0], {})) == 0


@pytest.mark.parametrize("name", NAMES)
def test_float32_runs_and_keeps_dtype(name):
    make, shapes = FACTORIES[name]
    a = make_params(shapes, dtype=torch.float32)
    opt = make(a)
    drive(opt, a, 5, seed=3)
    for x in a:
        assert x.dtype == torch.float32 and torch.isfinite(x).all()


@pytest.mark.parametrize("name", [n for n in NAMES if not ENTRIES[n].complex])
def test_complex_parameters_refused(name):
    make, _ = FACTORIES[name]
    p = torch.nn.Parameter(torch.randn(3, 3, dtype=torch.complex64))
    opt = make([p])
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="complex"):
        opt.step()
