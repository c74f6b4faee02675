"""optlib against torch.optim (torch 2.13; the rules of torch/optim/sgd.py, adagrad.py,
rmsprop.py, adadelta.py, adam.py, adamw.py, nadam.py, radam.py, adamax.py, _adafactor.py,
_muon.py): float64 numbers over many settings at a tight tolerance, float32, torch's
foreach path, parameter groups, complex parameters, a tensor lr, schedulers and closures,
and the constructors' keywords and implementation flags. Also the optimizers beyond
torch.optim where a setting reduces them to a torch class (Adam8bit on
small tensors, LAMB without its trust ratio, SOAP without factors, MuonWithAdamW).

(torch's own test data, ``optim_db``, drives test_vs_torch_optim_db.py: its configurations,
its error inputs, and state_dicts loaded both ways and from older formats.)
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from catalogue import ENTRIES, MUON_MATRICES, SHAPES, TORCH_FAMILY, missing_from_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pairs import TinyLM, assert_close, drive, make_params, run_pair

import optlib
import optlib.quantized
from optlib import _torch_version

# ---- the torch.optim family over its hyperparameters -------------------------------------


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


#: The classes compared over hypothesis' settings (Adafactor and Muon: over the lists below).
NAMES = [name for name in TORCH_FAMILY if name in HYPER]


def test_every_torch_class_of_the_catalogue_is_compared():
    assert set(NAMES) | {"Adafactor", "Muon"} == set(TORCH_FAMILY)


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


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_float64_parity_over_hyperparameters(name, data, float64):
    hyper = data.draw(HYPER[name])
    a, b, _, _ = run_torch_pair(*pair(name), hyper, steps=25, theirs_kwargs=dict(foreach=False))
    assert_close(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_float32_parity(name):
    a, b, _, _ = run_torch_pair(*pair(name), dict(lr=1e-2), steps=20, dtype=torch.float32,
                          theirs_kwargs=dict(foreach=False))
    assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_also_equals_torch_foreach(name, float64):
    a, b, _, _ = run_torch_pair(*pair(name), dict(lr=1e-2), steps=20, theirs_kwargs=dict(foreach=True))
    assert_close(a, b, rtol=1e-12, atol=1e-14)


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
    a, b, ours, _ = run_torch_pair(*pair(name), {"lr": 0.05}, steps=20,
                                   groups=[([0, 2], first), ([1], second)],
                                   theirs_kwargs=dict(foreach=False))
    assert_close(a, b, rtol=1e-13, atol=1e-15)
    assert len(ours.param_groups) == 2


@pytest.mark.parametrize("name", [n for n in TORCH_FAMILY if ENTRIES[n].complex])
def test_complex_parameters_match_torch(name, float64):
    kwargs = dict(lr=1e-2) if name != "SGD" else dict(lr=1e-2, momentum=0.9)
    a, b, _, _ = run_torch_pair(*pair(name), kwargs, steps=15, complex_=True,
                                theirs_kwargs=dict(foreach=False))
    assert_close(a, b, rtol=1e-13, atol=1e-15)


# ---- Adafactor and Muon ------------------------------------------------------------------


ADAFACTOR_SETTINGS = [
    dict(),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=1e-3, beta2_decay=-0.5, eps=(1e-8, 1e-2), d=2.0, maximize=True),
    dict(lr=0.05, eps=(1e-30, 0.0), weight_decay=0.01),
]


@pytest.mark.parametrize("kwargs", ADAFACTOR_SETTINGS)
def test_adafactor_float64_parity(kwargs, float64):
    shapes = SHAPES + ((3,), (1, 7), ())   # vectors, matrices, a 3-D tensor, a scalar
    a, b, _, _ = run_pair(lambda ps: optlib.Adafactor(ps, **kwargs),
                          lambda ps: torch.optim.Adafactor(ps, foreach=False, **kwargs),
                          steps=25, shapes=shapes)
    assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_adafactor_float32_parity_and_state_layout():
    a, b, ours, theirs = run_pair(lambda ps: optlib.Adafactor(ps, lr=0.05),
                                  lambda ps: torch.optim.Adafactor(ps, lr=0.05, foreach=False),
                                  steps=20, dtype=torch.float32)
    assert_close(a, b, rtol=1e-6, atol=1e-7)
    for x, y in zip(a, b, strict=True):
        s, t = ours.state[x], theirs.state[y]
        assert s.keys() == t.keys()
        for k in s:
            torch.testing.assert_close(s[k], t[k], rtol=1e-6, atol=1e-7)


#: torch.optim.Muon, the reference of optlib's Muon, is in torch from 2.9 on.
needs_torch_muon = pytest.mark.skipif(
    not _torch_version.has("torch.optim.Muon"),
    reason=f"torch.optim.Muon (the reference) needs torch >= 2.9; this is torch {torch.__version__}")

MUON_SETTINGS = [
    dict(),
    dict(lr=0.02, momentum=0.9, nesterov=False, weight_decay=0.0),
    dict(lr=0.05, weight_decay=0.01, adjust_lr_fn="match_rms_adamw", ns_steps=3),
    dict(lr=0.01, momentum=0.0, adjust_lr_fn="original", eps=1e-5,
         ns_coefficients=(2.0, -1.5, 0.5)),
]


@needs_torch_muon
@pytest.mark.parametrize("kwargs", MUON_SETTINGS)
def test_muon_float64_parity(kwargs, float64):
    a, b, _, _ = run_pair(lambda ps: optlib.Muon(ps, **kwargs),
                          lambda ps: torch.optim.Muon(ps, **kwargs), steps=25, shapes=MUON_MATRICES)
    assert_close(a, b, rtol=1e-13, atol=1e-15)


@needs_torch_muon
def test_muon_float32_parity_and_state():
    a, b, ours, theirs = run_pair(lambda ps: optlib.Muon(ps, lr=0.02),
                                  lambda ps: torch.optim.Muon(ps, lr=0.02), steps=20,
                                  dtype=torch.float32, shapes=MUON_MATRICES)
    assert_close(a, b, rtol=1e-6, atol=1e-6)
    for x, y in zip(a, b, strict=True):
        assert ours.state[x].keys() == theirs.state[y].keys()


# ---- the learning rate as a tensor -------------------------------------------------------


@pytest.mark.parametrize("name", TORCH_FAMILY)
def test_tensor_lr_gives_torchs_numbers(name, float64):
    entry = ENTRIES[name]
    a, b, _, _ = run_pair(lambda ps: entry.make(ps, lr=torch.tensor(0.01)),
                          lambda ps: entry.make_reference(ps, lr=torch.tensor(0.01)),
                          steps=5, shapes=entry.shapes)
    assert_close(a, b, rtol=1e-13, atol=1e-15)


# ---- works with the rest of torch.optim --------------------------------------------------


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
    assert_close(list(model_a.parameters()), list(model_b.parameters()), rtol=1e-13, atol=1e-15)
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


# ---- the constructor: every keyword of torch's, and what the flags do --------------------


@pytest.mark.parametrize("name", TORCH_FAMILY)
def test_constructor_takes_every_keyword_of_torchs_with_its_default(name):
    def signature(cls):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(cls.__init__).parameters.values()]

    if missing_from_torch(name):
        pytest.skip(missing_from_torch(name))
    assert signature(ENTRIES[name].cls) == signature(getattr(torch.optim, name))


@pytest.mark.parametrize("name", [n for n in TORCH_FAMILY if "foreach" in ENTRIES[n].flags])
def test_foreach_selects_nothing(name, float64):
    runs = []
    for foreach in (None, False, True):
        a = make_params(ENTRIES[name].shapes)
        drive(ENTRIES[name].make(a, foreach=foreach), a, 8, seed=1)
        runs.append(a)
    for other in runs[1:]:
        assert all(torch.equal(x, y) for x, y in zip(runs[0], other, strict=True))


@pytest.mark.parametrize("name", [n for n in TORCH_FAMILY if "fused" in ENTRIES[n].flags])
def test_fused_is_refused_with_what_to_use_instead(name):
    cls, params = ENTRIES[name].cls, make_params()
    for fused in (None, False):
        cls(params, fused=fused)
    with pytest.raises(ValueError, match=rf"fused=True is not supported by optlib\.{name}.*"
                                         rf"torch\.optim\.{name}\(\.\.\., fused=True\).*optlib\.compile"):
        cls(params, fused=True)
    # torch's own refusals of flag combinations, with its messages
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        cls(params, fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        cls(params, fused=True, differentiable=True)


@pytest.mark.parametrize("name", [n for n in TORCH_FAMILY if "capturable" in ENTRIES[n].flags])
def test_capturable_is_refused_on_the_cpu(name):
    cls = ENTRIES[name].cls
    cls(make_params(), capturable=False)
    with pytest.raises(ValueError, match=rf"capturable=True is not supported by optlib\.{name}: "
                                         "its step reads step counts on the host"):
        cls(make_params(), capturable=True)


@pytest.mark.parametrize("name", [n for n in TORCH_FAMILY if "differentiable" in ENTRIES[n].flags])
def test_differentiable_is_refused_with_what_to_use_instead(name):
    cls = ENTRIES[name].cls
    cls(make_params(), differentiable=False)
    with pytest.raises(ValueError, match=rf"differentiable=True is not supported by optlib\.{name}"
                                         rf".*torch\.optim\.{name}\(\.\.\., differentiable=True\)"):
        cls(make_params(), differentiable=True)


# ---- beyond torch.optim: settings that reduce a rule to a torch class --------------------


@pytest.mark.parametrize("kwargs", [
    dict(lr=1e-2), dict(lr=0.1, weight_decay=0.1, maximize=True),
    dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, betas=(0.5, 0.9), eps=1e-3),
])
def test_small_tensors_keep_full_precision_adam(kwargs, float64):
    a, b, _, _ = run_pair(lambda ps: optlib.Adam8bit(ps, **kwargs),
                          lambda ps: torch.optim.Adam(ps, foreach=False, **kwargs), steps=20)
    assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_first_step_equals_adam_then_tracks_it(float64):
    a, b = make_params(((64, 40),)), make_params(((64, 40),))
    ours = optlib.Adam8bit(a, lr=1e-2, min_8bit_size=0, block_size=256)
    theirs = torch.optim.Adam(b, lr=1e-2, foreach=False)
    gen = torch.Generator().manual_seed(1)
    for step in range(10):
        g = torch.randn(64, 40, generator=gen)
        a[0].grad, b[0].grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        if step == 0:   # the step used the exact moments; rounding enters the stored state
            assert_close(a, b, rtol=1e-15, atol=1e-15)
    drift = (a[0] - b[0]).abs().max().item()
    assert 0 < drift < 0.1 * 10 * 1e-2                          # < 10% of the distance moved
    st = ours.state[a[0]]
    assert st["exp_avg_code"].dtype == torch.uint8 and st["exp_avg_absmax"].numel() == 10


def test_trust_ratio_can_be_switched_off_per_group(float64):
    a, b = make_params(), make_params()
    lamb = optlib.LAMB([dict(params=a[:2]), dict(params=a[2:], trust_ratio=False)], lr=0.01)
    adam = torch.optim.Adam(b[2:], lr=0.01, eps=1e-6, foreach=False)
    lars = optlib.LARS([dict(params=a[:1], trust_ratio=False)], lr=0.1, momentum=0.0)
    for x, y in zip(a, b, strict=True):
        g = torch.randn_like(x)
        x.grad, y.grad = g.clone(), g.clone()
    before = a[0].detach().clone()
    lamb.step()
    adam.step()
    assert_close(a[2:], b[2:], rtol=1e-13, atol=1e-15)        # wd 0 and no ratio: Adam
    after_lamb = a[0].detach().clone()
    lars.step()
    torch.testing.assert_close(a[0].detach(), after_lamb - 0.1 * a[0].grad)   # plain SGD
    assert not torch.equal(before, after_lamb)


def test_soap_without_factors_is_adam_skipping_its_first_step(float64):
    """A vector (no precondition_1d) takes Adam's steps, one step late. (With eps = 0:
    SOAP adds eps to sqrt(v) before the bias correction, Adam after it.)"""
    w = torch.nn.Parameter(torch.randn(5))
    twin = torch.nn.Parameter(w.detach().clone())
    opt = optlib.SOAP([w], lr=0.01, eps=0.0, weight_decay=0.0)
    adam = torch.optim.Adam([twin], lr=0.01, betas=(0.95, 0.95), eps=0.0)
    gen = torch.Generator().manual_seed(0)
    w.grad = torch.randn(5, generator=gen)
    opt.step()
    for _ in range(6):
        g = torch.randn(5, generator=gen)
        w.grad, twin.grad = g.clone(), g.clone()
        opt.step()
        adam.step()
    torch.testing.assert_close(w.detach(), twin.detach(), rtol=1e-13, atol=1e-15)


@needs_torch_muon
def test_muon_with_adamw_equals_two_optimizers(float64):
    torch.manual_seed(0)
    m1 = TinyLM()
    m2 = TinyLM()
    m2.load_state_dict(m1.state_dict())
    both = optlib.MuonWithAdamW(m1, muon_kwargs=dict(lr=0.02), adamw_kwargs=dict(lr=3e-3))
    muon, adamw = optlib.muon_param_groups(m2)
    separate = [torch.optim.Muon(muon, lr=0.02), torch.optim.AdamW(adamw, lr=3e-3)]
    x = torch.randint(0, 11, (5,), generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for model, opts in ((m1, [both]), (m2, separate)):
            for o in opts:
                o.zero_grad()
            model(x).logsumexp(-1).sum().backward()
            for o in opts:
                o.step()
    assert_close(list(m1.parameters()), list(m2.parameters()), rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="use_muon"):
        optlib.MuonWithAdamW([dict(params=list(m1.parameters()))])
    with pytest.raises(ValueError, match="Learning rate should be >= 0"):
        optlib.MuonWithAdamW(m1, muon_kwargs=dict(lr=-1.0))
