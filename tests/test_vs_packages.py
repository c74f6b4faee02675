"""optlib against its authors' packages, float64, step for step: lion-pytorch (Lion),
sophia-opt (SophiaG), schedulefree (AdamWScheduleFree), pytorch-optimizer (Shampoo without
grafting, SOAP), heavyball (SOAP, a nearby variant) and bitsandbytes (Adam8bit: at least as
close to float32 Adam). Each test is skipped where its package is not installed.
"""

from __future__ import annotations

import math

import pytest
import torch
from catalogue import in_train_mode
from pairs import assert_close, make_params, run_pair
from test_quantized import _final, _run_with_one_bad_element, _spanning_gradients, _train

import optlib
import optlib.quantized

# ---- Lion: lion-pytorch ------------------------------------------------------------------


LION_SETTINGS = [
    dict(),
    dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1),
    dict(lr=0.1, betas=(0.95, 0.98), weight_decay=1.0),
    dict(lr=3e-3, betas=(0.0, 0.5), weight_decay=0.0),
]


@pytest.mark.parametrize("kwargs", LION_SETTINGS)
def test_lion_float64_parity(kwargs, float64):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    a, b, ours, theirs = run_pair(lambda ps: optlib.Lion(ps, **kwargs),
                                  lambda ps: lion_pytorch.Lion(ps, use_triton=False, **kwargs),
                                  steps=25)
    assert_close(a, b, rtol=1e-14, atol=1e-15)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(ours.state[x]["exp_avg"], theirs.state[y]["exp_avg"])


# ---- SophiaG: sophia-opt -----------------------------------------------------------------


SOPHIA_SETTINGS = [
    (dict(), 5120),
    (dict(lr=1e-2, rho=0.05, weight_decay=0.2), 64),
    (dict(lr=0.1, betas=(0.9, 0.95), rho=1.0, weight_decay=0.0, maximize=True), 4),
    (dict(lr=3e-3, betas=(0.0, 0.5), rho=0.01), 1),
]


def _hessian_refresh(every=3):
    """Every `every` steps, put fresh 'sampled-label' gradients in .grad and refresh h."""
    gen = torch.Generator().manual_seed(99)

    def between(step, ours, theirs):
        if step % every != every - 1:
            return
        for po, pt in zip(ours.param_groups[0]["params"], theirs.param_groups[0]["params"],
                          strict=True):
            g = torch.randn(po.shape, generator=gen, dtype=po.dtype)
            po.grad, pt.grad = g.clone(), g.clone()
        ours.update_hessian()
        theirs.update_hessian()
    return between


@pytest.mark.parametrize("kwargs, bs", SOPHIA_SETTINGS)
def test_sophia_float64_parity(kwargs, bs, float64):
    sophia_opt = pytest.importorskip("sophia_opt")
    a, b, ours, theirs = run_pair(lambda ps: optlib.SophiaG(ps, **kwargs),
                                  lambda ps: sophia_opt.SophiaG(ps, **kwargs),
                                  steps=25, step_kwargs=dict(bs=bs), between=_hessian_refresh())
    assert_close(a, b, rtol=1e-13, atol=1e-15)
    for x, y in zip(a, b, strict=True):
        for key in ("exp_avg", "hessian"):
            torch.testing.assert_close(ours.state[x][key], theirs.state[y][key],
                                       rtol=1e-13, atol=1e-15)


def test_sophia_complex_parameters_are_real_pairs():
    """A complex parameter steps like the real (..., 2) tensor of its parts. (The reference
    agrees in `step` but its `update_hessian` squares complex gradients, g*g instead of the
    parts' squares, so it cannot be the twin here.)"""
    sophia_opt = pytest.importorskip("sophia_opt")
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, generator=gen, dtype=torch.complex128)
    a = torch.nn.Parameter(z.clone())
    b = torch.nn.Parameter(torch.view_as_real(z).clone())
    ours, theirs = optlib.SophiaG([a], lr=0.1), sophia_opt.SophiaG([b], lr=0.1)
    for step in range(6):
        g = torch.randn(4, 3, generator=gen, dtype=torch.complex128)
        a.grad, b.grad = g.clone(), torch.view_as_real(g).clone()
        if step % 2:
            ours.update_hessian()
            theirs.update_hessian()
        ours.step(bs=8)
        theirs.step(bs=8)
    torch.testing.assert_close(torch.view_as_real(a.detach()), b.detach(), rtol=1e-13, atol=1e-15)


# ---- AdamWScheduleFree: schedulefree -----------------------------------------------------


SF_SETTINGS = [
    dict(),
    dict(lr=1e-2, weight_decay=0.1, warmup_steps=5),
    dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3, r=1.0, weight_lr_power=1.0, warmup_steps=30),
    dict(lr=3e-3, betas=(0.95, 0.99), weight_decay=0.01, weight_lr_power=0.0),
]


def _eval_now_and_then(step, ours, theirs):
    """Switch both to eval and back every few steps, as a training loop that evaluates does."""
    if step % 6 == 5:
        ours.eval()
        theirs.eval()
        for po, pt in zip(ours.param_groups[0]["params"], theirs.param_groups[0]["params"],
                          strict=True):
            torch.testing.assert_close(po, pt, rtol=1e-13, atol=1e-15)
        ours.train()
        theirs.train()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kwargs", SF_SETTINGS)
def test_schedule_free_float64_parity(kwargs, foreach, float64):
    schedulefree = pytest.importorskip("schedulefree")
    a, b, ours, theirs = run_pair(
        lambda ps: in_train_mode(optlib.AdamWScheduleFree(ps, **kwargs)),
        lambda ps: in_train_mode(schedulefree.AdamWScheduleFree(ps, foreach=foreach, **kwargs)),
        steps=25, between=_eval_now_and_then)
    assert_close(a, b, rtol=1e-13, atol=1e-15)
    ours.eval()
    theirs.eval()
    assert_close(a, b, rtol=1e-13, atol=1e-15)                  # x, the averaged iterate
    for key in ("k", "weight_sum", "lr_max", "scheduled_lr"):
        assert ours.param_groups[0][key] == pytest.approx(theirs.param_groups[0][key], rel=1e-15)


def test_schedule_free_group_without_grads_advances_like_the_reference(float64):
    schedulefree = pytest.importorskip("schedulefree")
    shapes = ((3, 2), (4,))
    a, b = make_params(shapes), make_params(shapes)
    ours = in_train_mode(optlib.AdamWScheduleFree([dict(params=[a[0]]), dict(params=[a[1]])],
                                           warmup_steps=4))
    theirs = in_train_mode(schedulefree.AdamWScheduleFree([dict(params=[b[0]]), dict(params=[b[1]])],
                                                   warmup_steps=4))
    for step in range(6):
        for x, y in zip(a, b, strict=True):
            g = torch.full_like(x, 0.1 * (step + 1))
            x.grad, y.grad = g.clone(), g.clone()
        if step < 3:
            a[1].grad = b[1].grad = None                       # group 2 idle for 3 steps
        ours.step()
        theirs.step()
    assert_close(a, b, rtol=1e-13, atol=1e-15)
    assert [g["k"] for g in ours.param_groups] == [g["k"] for g in theirs.param_groups] == [6, 6]


# ---- Shampoo and SOAP: pytorch-optimizer, heavyball --------------------------------------


#: Shapes both references treat as we do: matrices and a tensor of order 3.
TENSORS = ((4, 5), (6, 3), (2, 3, 4))


#: Every kind SOAP handles: a vector (Adam, or a full factor with precondition_1d), a
#: scalar, a tall matrix, a tensor of order 3.
SOAP_SHAPES = ((4, 5), (6,), (2, 3, 4), (7, 3), ())


NEVER = -1     # pairs.gradient: the index of the tensor that misses its gradient now and then


def run(make_ours, make_theirs, shapes, steps=25, no_grad=NEVER, seed=0):
    return run_pair(make_ours, make_theirs, steps, shapes, torch.float64, seed, no_grad=no_grad)


def displacement(a, start):
    return torch.cat([(x.detach() - y).flatten() for x, y in zip(a, start, strict=True)])


SHAMPOO_SETTINGS = [
    dict(),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.3, eps=1e-3),
    dict(lr=1.0, eps=1e-8, weight_decay=1e-3),
]


@pytest.mark.parametrize("kwargs", SHAMPOO_SETTINGS)
def test_shampoo_float64_parity_with_pytorch_optimizer(kwargs, float64):
    """graft=None, momentum 0 and roots every step: pytorch-optimizer's Shampoo (which
    takes its roots by SVD, ours by eigh). The second tensor misses its gradient on every
    fourth step: both skip it."""
    po = pytest.importorskip("pytorch_optimizer")
    theirs_kwargs = {("matrix_eps" if k == "eps" else k): v for k, v in kwargs.items()}
    a, b, ours, theirs = run(lambda ps: optlib.Shampoo(ps, graft=None, **kwargs),
                             lambda ps: po.Shampoo(ps, **theirs_kwargs), TENSORS, no_grad=1)
    assert_close(a, b, rtol=1e-12, atol=1e-13)
    start = make_params(TENSORS)
    assert displacement(a, start).abs().max() > 1e-3          # and they did move


def test_shampoo_differences_from_pytorch_optimizer_are_the_documented_ones(float64):
    """Its first f - 1 steps do not move the parameters (its roots start at zero); a vector
    gets a full n x n factor there (full-matrix AdaGrad), the diagonal here."""
    po = pytest.importorskip("pytorch_optimizer")
    params = make_params(((4, 5),))
    theirs = po.Shampoo(params, preconditioning_compute_steps=3)
    start = params[0].detach().clone()
    for _ in range(2):
        params[0].grad = torch.ones_like(params[0])
        theirs.step()
    assert torch.equal(params[0], start)
    vector = make_params(((6,),))
    vector[0].grad = torch.ones_like(vector[0])
    theirs = po.Shampoo(vector)
    theirs.step()
    assert theirs.state[vector[0]]["pre_cond_0"].shape == (6, 6)
    ours = optlib.Shampoo(make_params(((6,),)))
    ours.param_groups[0]["params"][0].grad = torch.ones(6)
    ours.step()
    assert [f.shape for f in ours.state[ours.param_groups[0]["params"][0]]["factors"]] == [(6,)]


SOAP_SETTINGS = [
    (dict(), {}),
    (dict(lr=0.01, precondition_frequency=3, shampoo_beta=0.9, weight_decay=0.1), {}),
    (dict(betas=(0.9, 0.99), precondition_frequency=2, max_precond_dim=4, precondition_1d=True),
     dict(max_precondition_dim=4)),
    (dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.0, precondition_frequency=1,
          correct_bias=False), {}),
]


def _pytorch_optimizer_soap(kwargs, renamed):
    po = pytest.importorskip("pytorch_optimizer")
    theirs = {k: v for k, v in kwargs.items() if k not in ("max_precond_dim",)}
    if theirs.get("shampoo_beta", -1) < 0:
        theirs["shampoo_beta"] = None                       # the authors' -1: beta2
    theirs.update(renamed)
    return lambda ps: po.SOAP(ps, **theirs)


@pytest.mark.parametrize("kwargs, renamed", SOAP_SETTINGS)
def test_soap_float64_parity_with_pytorch_optimizer(kwargs, renamed, float64):
    make_theirs = _pytorch_optimizer_soap(kwargs, renamed)
    a, b, ours, theirs = run(lambda ps: optlib.SOAP(ps, **kwargs), make_theirs, SOAP_SHAPES)
    assert_close(a, b, rtol=1e-13, atol=1e-15)
    for x, y in zip(a, b, strict=True):
        mine, ref = ours.state[x], theirs.state[y]
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(mine[key], ref[key], rtol=1e-13, atol=1e-15)
        for key in ("GG", "Q"):
            for u, w in zip(mine[key], ref[key], strict=True):
                if u is None:
                    assert isinstance(w, list) and not w       # the identity: no factor
                else:
                    torch.testing.assert_close(u, w, rtol=1e-13, atol=1e-15)
    assert displacement(a, make_params(SOAP_SHAPES)).abs().max() > 1e-3


def test_heavyball_soap_is_a_nearby_variant(float64, monkeypatch):
    """heavyball 3.2.1 with the same hyperparameters (and merge_dims off, float64 storage)
    ends within 25% of our displacement over 25 steps, not equal: the differences listed
    in SOAP's docstring (bias-corrected shampoo_beta, no skipped first step, ...)."""
    heavyball = pytest.importorskip("heavyball")
    monkeypatch.setattr(heavyball.utils, "compile_mode", None)    # eager: no 20 s of compiling
    shapes = ((4, 5), (7, 3))
    kw = dict(lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, eps=1e-8, weight_decay=0.01,
              precondition_frequency=10, max_precond_dim=10000)
    a, b, _, _ = run(lambda ps: optlib.SOAP(ps, **kw),
                     lambda ps: heavyball.SOAP(ps, merge_dims=False, storage_dtype="float64",
                                               compile_step=False, **kw), shapes)
    start = make_params(shapes)
    for x, y, z in zip(a, b, start, strict=True):
        gap = ((x - y).norm() / (x - z).norm()).item()
        assert 1e-6 < gap < 0.25


# ---- Adam8bit: bitsandbytes --------------------------------------------------------------


def test_at_least_as_good_as_bitsandbytes_on_the_same_inputs():
    """bitsandbytes' Adam8bit (its CPU kernels) on the same gradients: closer to fp32
    Adam on the least-squares problem and on gradients spanning decades in a block; no
    drift of coordinates whose gradient is 0 (bitsandbytes' CPU kernel stores values
    below about 1e-5 of the block max as about 1e-5 of it, zeros included); one NaN
    parameter for one NaN gradient element, as bitsandbytes."""
    bnb = pytest.importorskip("bitsandbytes")

    def theirs(ps, **kw):
        return bnb.optim.Adam8bit(ps, min_8bit_size=0, **kw)

    def ours(ps, **kw):
        return optlib.Adam8bit(ps, min_8bit_size=0, **kw)

    def distance(a, b):
        return math.sqrt(sum((x - y).square().sum().item() for x, y in zip(a, b, strict=True)))

    *_, w_fp32 = _train(optlib.Adam, steps=50)
    assert distance(_train(ours, steps=50)[-1], w_fp32) <= distance(_train(theirs, steps=50)[-1], w_fp32)
    for decades in (2.0, 3.5):
        grads = _spanning_gradients(decades, steps=60)
        adam = _final(lambda ps: torch.optim.Adam(ps, lr=1e-3), grads)
        assert (distance([_final(lambda ps: ours(ps, lr=1e-3), grads)], [adam])
                < distance([_final(lambda ps: theirs(ps, lr=1e-3), grads)], [adam]))
    grads = [g.index_fill(0, torch.arange(0, 4096, 7), 0.0) for g in _spanning_gradients(1.0, steps=30)]
    still = torch.arange(0, 4096, 7)
    assert (_final(lambda ps: ours(ps, lr=1e-3), grads)[still] == 0).all()
    assert (_final(lambda ps: theirs(ps, lr=1e-3), grads)[still] != 0).any()
    for make in (ours, theirs):
        p, _ = _run_with_one_bad_element(lambda ps, make=make: make(ps, lr=1e-2), float("nan"), steps=8, at=2)
        assert p.isnan().sum() == 1
