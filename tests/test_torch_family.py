"""optlib's torch.optim family against torch.optim (torch 2.13): numbers, state, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pairs import make_params, run_pair

import optlib

lrs = st.sampled_from([1e-3, 1e-2, 0.1, 0.5])
wds = st.sampled_from([0.0, 1e-2, 0.1])
betas = st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.9, 0.99, 0.999]))
epss = st.sampled_from([1e-8, 1e-3, 0.0])

HYPER = {
    "SGD": st.fixed_dictionaries(dict(
        lr=lrs, momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=st.sampled_from([0.0, 0.3]),
        weight_decay=wds, nesterov=st.booleans(), maximize=st.booleans())).filter(
        lambda h: not h["nesterov"] or (h["momentum"] > 0 and h["dampening"] == 0)),
    "Adagrad": st.fixed_dictionaries(dict(
        lr=lrs, lr_decay=st.sampled_from([0.0, 0.1]), weight_decay=wds,
        initial_accumulator_value=st.sampled_from([0.0, 0.5]), eps=st.sampled_from([1e-10, 1e-3]),
        maximize=st.booleans())),
    "RMSprop": st.fixed_dictionaries(dict(
        lr=st.sampled_from([1e-3, 1e-2]), alpha=st.sampled_from([0.9, 0.99]),
        eps=st.sampled_from([1e-8, 1e-3]),
        weight_decay=wds, momentum=st.sampled_from([0.0, 0.9]), centered=st.booleans(),
        maximize=st.booleans())),
    "Adadelta": st.fixed_dictionaries(dict(
        lr=st.sampled_from([0.1, 1.0]), rho=st.sampled_from([0.0, 0.9, 0.95, 1.0]),
        eps=st.sampled_from([1e-6, 1e-3]), weight_decay=wds, maximize=st.booleans())),
    "Adam": st.fixed_dictionaries(dict(
        lr=lrs, betas=betas, eps=epss, weight_decay=wds, amsgrad=st.booleans(),
        maximize=st.booleans(), decoupled_weight_decay=st.booleans())),
    "AdamW": st.fixed_dictionaries(dict(
        lr=lrs, betas=betas, eps=epss, weight_decay=wds, amsgrad=st.booleans(), maximize=st.booleans())),
    "NAdam": st.fixed_dictionaries(dict(
        lr=lrs, betas=betas, eps=st.sampled_from([1e-8, 1e-3]), weight_decay=wds,
        momentum_decay=st.sampled_from([0.0, 4e-3, 0.1]), decoupled_weight_decay=st.booleans(),
        maximize=st.booleans())),
    "RAdam": st.fixed_dictionaries(dict(
        lr=lrs, betas=betas, eps=st.sampled_from([1e-8, 1e-3]), weight_decay=wds,
        decoupled_weight_decay=st.booleans(), maximize=st.booleans())),
    "Adamax": st.fixed_dictionaries(dict(
        lr=lrs, betas=betas, eps=epss, weight_decay=wds, maximize=st.booleans())),
}
NAMES = list(HYPER)


def pair(name):
    return getattr(optlib, name), getattr(torch.optim, name)


def run_torch_pair(ours_cls, theirs_cls, kwargs, steps=20, dtype=torch.float64, groups=None,
                   complex_=False, theirs_kwargs=None):
    """pairs.run_pair for optlib's and torch's class built with the same ``kwargs`` (plus
    ``theirs_kwargs`` for torch's); ``groups``: ``[(tensor indices, group options), ...]``."""
    def factory(cls, extra):
        def make(params):
            if groups:
                params = [dict(params=[params[i] for i in idx], **options) for idx, options in groups]
            return cls(params, **kwargs, **extra)
        return make

    return run_pair(factory(ours_cls, {}), factory(theirs_cls, theirs_kwargs or {}), steps,
                    dtype=dtype, complex_=complex_)


def assert_same(a, b, rtol=1e-13, atol=1e-15):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_float64_parity_over_hyperparameters(name, data, float64):
    hyper = data.draw(HYPER[name])
    a, b, _, _ = run_torch_pair(*pair(name), hyper, steps=25, theirs_kwargs=dict(foreach=False))
    assert_same(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_float32_parity(name):
    a, b, _, _ = run_torch_pair(*pair(name), dict(lr=1e-2), steps=20, dtype=torch.float32,
                          theirs_kwargs=dict(foreach=False))
    assert_same(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_also_equals_torch_foreach(name, float64):
    a, b, _, _ = run_torch_pair(*pair(name), dict(lr=1e-2), steps=20, theirs_kwargs=dict(foreach=True))
    assert_same(a, b, rtol=1e-12, atol=1e-14)


GROUP_SETTINGS = {
    "SGD": ({"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "nesterov": True, "momentum": 0.5}),
    "Adagrad": ({"lr": 0.1}, {"lr": 0.05, "lr_decay": 0.1, "weight_decay": 0.1}),
    "RMSprop": ({"lr": 0.01, "centered": True}, {"lr": 0.001, "momentum": 0.9}),
    "Adadelta": ({"lr": 1.0, "rho": 0.95}, {"lr": 0.5, "weight_decay": 0.1, "maximize": True}),
    "Adam": ({"lr": 0.1, "amsgrad": True}, {"lr": 0.01, "weight_decay": 0.1, "betas": (0.5, 0.9)}),
    "AdamW": ({"lr": 0.1, "weight_decay": 0.5}, {"lr": 0.01, "weight_decay": 0.0}),
    "NAdam": ({"lr": 0.1}, {"lr": 0.01, "weight_decay": 0.1, "momentum_decay": 0.1}),
    "RAdam": ({"lr": 0.1, "betas": (0.9, 0.9)}, {"lr": 0.01, "decoupled_weight_decay": True,
                                                 "weight_decay": 0.1}),
    "Adamax": ({"lr": 0.1, "betas": (0.5, 0.9)}, {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
}


@pytest.mark.parametrize("name", NAMES)
def test_two_param_groups_with_different_settings(name, float64):
    first, second = GROUP_SETTINGS[name]
    kwargs = {"lr": 0.05} if name != "Adagrad" else {"lr": 0.05}
    if name == "Adagrad":  # torch's Adagrad creates state eagerly from each group's settings
        first = {k: v for k, v in first.items()}
    a, b, ours, _ = run_torch_pair(*pair(name), kwargs, steps=20, groups=[([0, 2], first), ([1], second)],
                             theirs_kwargs=dict(foreach=False))
    assert_same(a, b)
    assert len(ours.param_groups) == 2


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam",
                                  "RAdam", "Adamax"])
def test_complex_parameters_match_torch(name, float64):
    kwargs = dict(lr=1e-2) if name != "SGD" else dict(lr=1e-2, momentum=0.9)
    a, b, _, _ = run_torch_pair(*pair(name), kwargs, steps=15, complex_=True,
                                theirs_kwargs=dict(foreach=False))
    assert_same(a, b)


# ---- state_dict -------------------------------------------------------------------------

RESUME_SETTINGS = {
    "SGD": dict(lr=0.05, momentum=0.9, dampening=0.1),
    "Adagrad": dict(lr=0.05, lr_decay=0.01),
    "RMSprop": dict(lr=0.01, momentum=0.9, centered=True),
    "Adadelta": dict(lr=1.0, rho=0.95, weight_decay=0.01),
    "Adam": dict(lr=0.05, amsgrad=True, weight_decay=0.1),
    "AdamW": dict(lr=0.05),
    "NAdam": dict(lr=0.05),
    "RAdam": dict(lr=0.05),
    "Adamax": dict(lr=0.05, weight_decay=0.1),
}


def _grads(params, step):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]


def _train(opt, params, steps, start=0):
    for s in range(start, start + steps):
        for p, g in zip(params, _grads(params, s), strict=True):
            p.grad = g
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_loads_into_torch_and_continues_equal(name, float64):
    kwargs = RESUME_SETTINGS[name]
    ours_params = make_params()
    ours = getattr(optlib, name)(ours_params, **kwargs)
    _train(ours, ours_params, 8)
    torch_params = [torch.nn.Parameter(p.detach().clone()) for p in ours_params]
    theirs = getattr(torch.optim, name)(torch_params, **kwargs, foreach=False)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    _train(ours, ours_params, 8, start=8)
    _train(theirs, torch_params, 8, start=8)
    assert_same(ours_params, torch_params)


# ---- the learning rate as a tensor -------------------------------------------------------

def test_tensor_lr_is_accepted(float64):
    a, b, _, _ = run_torch_pair(optlib.Adam, torch.optim.Adam, dict(lr=torch.tensor(0.01)), steps=5,
                          theirs_kwargs=dict(foreach=False))
    assert_same(a, b)


# ---- works with the rest of torch.optim ----------------------------------------------------

def test_closure_and_scheduler(float64):
    torch.manual_seed(0)
    model_a = torch.nn.Linear(4, 1)
    model_b = copy.deepcopy(model_a)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    ours, theirs = optlib.SGD(model_a.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(
        model_b.parameters(), lr=0.1, momentum=0.9, foreach=False)
    sched_a = torch.optim.lr_scheduler.StepLR(ours, step_size=3, gamma=0.5)
    sched_b = torch.optim.lr_scheduler.StepLR(theirs, step_size=3, gamma=0.5)
    for _ in range(10):
        for model, opt, sched in ((model_a, ours, sched_a), (model_b, theirs, sched_b)):
            def closure(model=model, opt=opt):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss
            loss = opt.step(closure)
            sched.step()
        assert loss is not None
    assert_same(list(model_a.parameters()), list(model_b.parameters()))
    assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"]


def test_step_hooks_run():
    p = torch.nn.Parameter(torch.ones(2))
    opt = optlib.Adam([p], lr=0.1)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    p.grad = torch.ones(2)
    opt.step()
    assert seen == ["pre", "post"]


def test_golden_values_from_the_reference():
    """Scalar checks worked out by hand from torch.optim's documented update rules (θ0=1, g=0.5, lr=0.1)."""
    def one_step(cls, **kw):
        p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        opt = cls([p], **kw)
        p.grad = torch.tensor([0.5], dtype=torch.float64)
        opt.step()
        return p.item()

    assert one_step(optlib.Adam, lr=0.1) == pytest.approx(0.900000002, abs=1e-12)
    assert one_step(optlib.AdamW, lr=0.1, weight_decay=0.01) == pytest.approx(0.899000002, abs=1e-12)
    # Adamax: m = 0.05, u = 0.5 + 1e-8, θ = 1 − 0.1/(1 − 0.9) · 0.05/(0.5 + 1e-8)
    assert one_step(optlib.Adamax, lr=0.1) == pytest.approx(0.900000002, abs=1e-12)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the golden value assumes float64 step counters
    try:
        assert one_step(optlib.NAdam) == pytest.approx(0.9978870964855473, abs=1e-15)
    finally:
        torch.set_default_dtype(old)
