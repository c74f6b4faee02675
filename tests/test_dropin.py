"""optlib as a drop-in for torch.optim: loading checkpoints, sparse gradients, refused calls
that change nothing, copies, modes, non-finite gradients and argument checks.

(What every optimizer does with sparse and non-finite gradients and bad hyperparameters is in
test_contract.py; the checks driven by torch's optim_db in test_vs_torch_optim_db.py; every
keyword of torch's constructors and what the implementation flags do in test_vs_torch.py.)
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from catalogue import ENTRIES, MATRICES, SHAPES, TORCH_FAMILY
from pairs import assert_unchanged, drive, make_params, snapshot

import optlib


def train(opt, params, steps, seed=0):
    """``steps`` steps on pairs.gradient's varied gradients, every tensor given one."""
    drive(opt, params, steps, seed, no_grad=-1)


# ---- 1-4: checkpoints and state_dict ------------------------------------------------------

NEWER_KEYS = ("maximize", "foreach", "differentiable", "decoupled_weight_decay", "capturable",
              "fused")


@pytest.mark.parametrize("name", TORCH_FAMILY)
def test_checkpoint_of_an_older_torch_loads_and_steps(name, float64):
    """Group keys added after a checkpoint was written take the constructor's defaults, and
    a step saved as a Python number becomes a tensor (torch's __setstate__)."""
    entry = ENTRIES[name]
    params = make_params(entry.shapes)
    opt = entry.make(params)
    train(opt, params, 3)
    old = copy.deepcopy(opt.state_dict())
    for group in old["param_groups"]:
        for key in NEWER_KEYS:
            group.pop(key, None)
    for st in old["state"].values():
        if "step" in st:
            st["step"] = st["step"].item()
    fresh = entry.make(params)
    fresh.load_state_dict(old)
    assert fresh.param_groups[0].keys() == opt.param_groups[0].keys()
    train(fresh, params, 2)
    assert all(isinstance(st["step"], torch.Tensor) and st["step"].item() == 5
               for st in fresh.state.values() if "step" in st)


def _one_step(opt, p):
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    return p.item()


@pytest.mark.parametrize("library", [optlib, torch.optim])
def test_adamw_stays_adamw_when_loading_an_adam_checkpoint(library):
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    adamw = library.AdamW([p], lr=0.1, weight_decay=0.01)
    adamw.load_state_dict(library.Adam([torch.nn.Parameter(torch.ones(1))], lr=0.1,
                                       weight_decay=0.01).state_dict())
    assert adamw.param_groups[0]["decoupled_weight_decay"] is True
    assert _one_step(adamw, p) == pytest.approx(0.899000002, abs=1e-9)   # decoupled decay


def test_adamw_checkpoint_without_the_decoupled_key_loads():
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    state = optlib.AdamW([p], lr=0.1, weight_decay=0.01).state_dict()
    del state["param_groups"][0]["decoupled_weight_decay"]
    adamw = optlib.AdamW([p], lr=0.1, weight_decay=0.01)
    adamw.load_state_dict(state)
    assert _one_step(adamw, p) == pytest.approx(0.899000002, abs=1e-9)


@pytest.mark.parametrize("library", [optlib, torch.optim])
def test_load_pre_hook_changes_are_kept(library):
    p = torch.nn.Parameter(torch.ones(3))
    opt = library.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    for _ in range(3):
        opt.step()

    def hook(optimizer, state_dict):
        state_dict = copy.deepcopy(state_dict)
        state_dict["state"][0]["step"] = torch.tensor(100.0)
        return state_dict

    opt.register_load_state_dict_pre_hook(hook)
    opt.load_state_dict(opt.state_dict())
    assert opt.state[p]["step"].item() == 100.0


def test_loading_does_not_alias_the_dicts_step_counters():
    p = torch.nn.Parameter(torch.ones(3))
    opt = optlib.Adam([p], lr=0.1)
    train(opt, [p], 2)
    saved = opt.state_dict()
    step = saved["state"][0]["step"].item()
    other = optlib.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    other.load_state_dict(saved)
    train(other, other.param_groups[0]["params"], 3)
    assert saved["state"][0]["step"].item() == step


def test_sgd_without_momentum_keeps_no_state_like_torch():
    a, b = make_params(), make_params()
    ours, theirs = optlib.SGD(a, lr=0.1), torch.optim.SGD(b, lr=0.1)
    train(ours, a, 2)
    train(theirs, b, 2)
    assert len(ours.state) == 0
    assert ours.state_dict()["state"] == theirs.state_dict()["state"] == {}
    with_momentum = optlib.SGD(a, lr=0.1, momentum=0.9)
    train(with_momentum, a, 1)
    assert set(with_momentum.state_dict()["state"]) == {0, 1, 2}


# ---- 6: sparse gradients ------------------------------------------------------------------

SPARSE = [
    ("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.1, maximize=True)),
    ("SGD", dict(lr=0.1, momentum=0.9)), ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=torch.tensor(0.05), momentum=0.5, maximize=True)),
    ("Adagrad", dict(lr=0.1)), ("Adagrad", dict(lr=0.1, lr_decay=0.3, maximize=True)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.2, eps=1e-3)),
    ("Adagrad", dict(lr=0.1, eps=0.0)),        # rows never touched have s = 0: no 0/0
]


class _Bag(torch.nn.Module):
    """An embedding with sparse gradients and a dense layer: the usual mix."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(12, 3, sparse=True)
        self.dense = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.dense(self.embed(x)).tanh().sum()


def _sparse_run(make, seed=0, steps=10):
    torch.manual_seed(seed)
    model = _Bag().double()
    opt = make(model)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        opt.zero_grad()
        idx = torch.randint(0, 12, (7,), generator=gen)     # repeated rows: uncoalesced grads
        model(idx).backward()
        assert model.embed.weight.grad.is_sparse
        opt.step()
    return model, opt


@pytest.mark.parametrize(("name", "kwargs"), SPARSE)
def test_sparse_gradients_give_torchs_numbers(name, kwargs):
    ours, mine = _sparse_run(lambda m: getattr(optlib, name)(m.parameters(), **kwargs))
    ref, theirs = _sparse_run(lambda m: getattr(torch.optim, name)(m.parameters(), **kwargs))
    for x, y in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)
    assert torch.isfinite(ours.embed.weight).all()
    for x, y in zip(ours.parameters(), ref.parameters(), strict=True):
        for key, value in theirs.state[y].items():      # the same state, layout included
            assert mine.state[x][key].layout == value.layout
            torch.testing.assert_close(mine.state[x][key].to_dense(), value.to_dense(),
                                       rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", [n for n, e in ENTRIES.items() if e.sparse])
def test_sparse_gradients_with_weight_decay_are_refused_and_nothing_changes(name):
    model = _Bag().double()
    opt = getattr(optlib, name)([dict(params=model.dense.parameters()),
                                 dict(params=model.embed.parameters(), weight_decay=0.1)],
                                lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    model(torch.tensor([1, 2, 2])).backward()
    params = list(model.dense.parameters()) + list(model.embed.parameters())
    before = snapshot(opt, params)
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse "
                                           "gradients.*weight_decay=0.1"):
        opt.step()
    assert_unchanged(before, opt, params)
    with pytest.raises(RuntimeError):        # torch refuses too (after changing the first group)
        getattr(torch.optim, name)(model.parameters(), lr=0.1, weight_decay=0.1).step()


def test_sparse_gradients_of_complex_parameters_are_refused():
    p = torch.nn.Parameter(torch.randn(4, 2, dtype=torch.complex128))
    p.grad = torch.ones_like(p).to_sparse()
    with pytest.raises(RuntimeError, match="sparse gradients of complex parameters"):
        optlib.SGD([p], lr=0.1).step()


# ---- 7: betas -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("betas", [(torch.tensor(0.9), 0.999), (0.9, torch.tensor(0.999)),
                                   (0, 0.999)])
def test_mixed_betas_are_refused_like_torch(name, betas):
    for cls in (getattr(optlib, name), getattr(torch.optim, name)):
        with pytest.raises(ValueError, match="betas must be either both floats or both Tensors"):
            cls(make_params(), betas=betas)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_tensor_betas_give_torchs_numbers(name, float64):
    def run(cls):
        params = make_params()
        train(cls(params, lr=0.05, betas=(torch.tensor(0.8), torch.tensor([0.99]))), params, 8)
        return params

    for x, y in zip(run(getattr(optlib, name)), run(getattr(torch.optim, name)), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)


# ---- 8-11: a refused call changes nothing ---------------------------------------------------

def _muon_with_adamw(params):
    return ENTRIES["MuonWithAdamW"].make(params)


@pytest.mark.parametrize("make", [lambda ps: optlib.Muon(ps[:1], lr=0.02), _muon_with_adamw],
                         ids=["Muon", "MuonWithAdamW"])
def test_refused_param_group_is_not_added(make):
    params = make_params(((4, 5), (3,)))
    opt = make(params)
    before = snapshot(opt, params)
    extra = dict(params=[torch.nn.Parameter(torch.randn(6))])
    if isinstance(opt, optlib.MuonWithAdamW):
        extra["use_muon"] = True
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        opt.add_param_group(extra)
    assert_unchanged(before, opt, params)
    for p in params + extra["params"]:
        p.grad = torch.ones_like(p)
    opt.step()                                   # the 1-D tensor is not stepped
    assert torch.equal(extra["params"][0].grad, torch.ones(6))


def test_complex_tensor_in_a_muon_group_is_refused_before_any_change():
    weight = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.complex128))
    bias = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    real = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64))
    opt = optlib.MuonWithAdamW([dict(params=[real, weight], use_muon=True),
                                dict(params=[bias], use_muon=False)])
    for p in (weight, bias, real):
        p.grad = torch.ones_like(p)
    before = snapshot(opt, [real, weight, bias])
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        opt.step()
    assert_unchanged(before, opt, [real, weight, bias])


@pytest.mark.parametrize("eps", [None, "x", 0.0, -1e-7, True, math.nan])
def test_muon_eps_is_validated(eps):
    with pytest.raises(ValueError, match="Invalid eps value"):
        optlib.Muon(make_params(MATRICES), eps=eps)
    with pytest.raises(ValueError, match="Invalid eps value"):
        optlib.MuonWithAdamW([dict(params=make_params(MATRICES), use_muon=True)],
                             muon_kwargs=dict(eps=eps))
    opt = optlib.Muon(make_params(MATRICES))
    with pytest.raises(ValueError, match="Invalid eps value"):
        opt.add_param_group(dict(params=make_params(((3, 3),)), eps=eps))
    assert len(opt.param_groups) == 1


def test_muon_all_zero_gradient_stays_finite():
    params = make_params(MATRICES)
    opt = optlib.Muon(params, lr=0.02)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert all(torch.isfinite(p).all() for p in params)


def test_adafactor_steps_a_tensor_with_no_elements(float64):
    shapes = ((3, 4), (0, 5), (5,), (0,))
    params, twins = make_params(shapes), make_params(((3, 4), (5,)))
    ours, theirs = optlib.Adafactor(params), torch.optim.Adafactor(twins, foreach=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        twins[0].grad, twins[1].grad = params[0].grad.clone(), params[2].grad.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(params[0], twins[0], rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(params[2], twins[1], rtol=1e-13, atol=1e-15)
    assert [ours.state[p]["step"].item() for p in params] == [4.0] * 4


# ---- 12: MuonWithAdamW under copies and schedulers -------------------------------------------

def _pickled(opt):
    return pickle.loads(pickle.dumps(opt))


@pytest.mark.parametrize("copier", [copy.deepcopy, _pickled], ids=["deepcopy", "pickle"])
def test_muon_with_adamw_survives_copies(copier, float64):
    params = make_params(SHAPES)
    opt = _muon_with_adamw(params)
    train(opt, params, 3)
    clone = copier({"params": params, "opt": opt})
    train(opt, params, 3, seed=5)
    train(clone["opt"], clone["params"], 3, seed=5)
    for x, y in zip(params, clone["params"], strict=True):
        assert torch.equal(x, y)
    extra = torch.nn.Parameter(torch.randn(2, 2))
    clone["opt"].add_param_group(dict(params=[extra], use_muon=False))
    assert clone["opt"].param_groups[-1]["betas"] == (0.9, 0.999)       # AdamW's defaults
    assert "momentum" not in clone["opt"].param_groups[-1]


def test_muon_with_adamw_defaults_and_momentum_schedulers():
    params = make_params(SHAPES)
    opt = _muon_with_adamw(params)
    assert opt.defaults["momentum"] == 0.95 and opt.adamw_defaults["betas"] == (0.9, 0.999)
    for make in (lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10),
                 lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.01, max_lr=0.1)):
        sched = make(opt)
        train(opt, params, 1)
        sched.step()
    muon, adamw = opt.param_groups
    assert muon["momentum"] != 0.95 and adamw["betas"] == (0.9, 0.999)


# ---- 13: schedule-free modes ------------------------------------------------------------------

def test_schedule_free_group_added_later_takes_the_optimizers_mode(float64):
    first, second = make_params(((3, 2),), seed=0), make_params(((4,),), seed=1)
    opt = optlib.AdamWScheduleFree(first, lr=0.1)
    opt.train()
    opt.add_param_group(dict(params=second))
    assert [g["train_mode"] for g in opt.param_groups] == [True, True]
    train(opt, first + second, 3)
    opt.eval()
    x = second[0].detach().clone()
    opt.train()
    opt.eval()
    assert torch.allclose(second[0], x, rtol=0, atol=1e-15)    # eval/train cycles do not move it
    opt.add_param_group(dict(params=make_params(((2,),), seed=2), train_mode=True))
    assert opt.param_groups[-1]["train_mode"] is False         # eval, like the others


def test_schedule_free_step_checks_every_group():
    opt = optlib.AdamWScheduleFree(make_params(((3,),)), lr=0.1)
    opt.add_param_group(dict(params=make_params(((2,),), seed=1)))
    opt.train()
    opt.param_groups[1]["train_mode"] = False      # as a loaded state_dict could have it
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


# ---- 15: non-finite gradients (the rule for every optimizer: test_contract.py) ----------------

def test_lion_nan_freezes_its_coordinate_as_documented():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = optlib.Lion([p], lr=0.1)
    for grad in ([1.0, math.nan, -1.0], [1.0, 1.0, -1.0]):
        p.grad = torch.tensor(grad, dtype=torch.float64)
        opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.8, 1.0, 1.2], dtype=torch.float64))
    assert torch.isnan(opt.state[p]["exp_avg"][1])


def test_lamb_finite_coordinates_take_no_larger_step_when_the_update_holds_a_nan():
    p = torch.nn.Parameter(torch.ones(100, dtype=torch.float64))
    opt = optlib.LAMB([p], lr=0.01)
    p.grad = torch.ones(100, dtype=torch.float64)
    p.grad[0] = math.nan
    opt.step()
    assert torch.isnan(p).all()         # the trust ratio is NaN, not 1: nothing moves 10x


# ---- 16: argument checks ---------------------------------------------------------------------

@pytest.mark.parametrize(("call", "message"), [
    (lambda: optlib.schedules.exponential(math.inf), "gamma must be finite"),
    (lambda: optlib.schedules.step_decay(3, math.inf), "gamma must be finite"),
    (lambda: optlib.schedules.inverse_sqrt(10, timescale=math.inf), "timescale must be finite"),
    (lambda: optlib.param_groups(torch.nn.Linear(2, 2), math.nan), "Invalid weight_decay value"),
    (lambda: optlib.param_groups(torch.nn.Linear(2, 2), math.inf), "Invalid weight_decay value"),
])
def test_non_finite_and_mistyped_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("kwargs", [dict(end_lr=math.inf), dict(start_lr=math.inf, end_lr=math.inf),
                                    dict(end_lr=math.nan)])
def test_lr_range_test_refuses_non_finite_lrs(kwargs):
    model = torch.nn.Linear(2, 1)
    opt = optlib.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="_lr must be"):
        optlib.lr_range_test(model, torch.nn.functional.mse_loss,
                             [(torch.randn(4, 2), torch.randn(4, 1))], opt, **kwargs)


def test_schedules_overflow_to_infinity_instead_of_raising():
    assert optlib.schedules.exponential(1.5)(10**6) == math.inf
    assert optlib.schedules.step_decay(1, 2.0)(5000) == math.inf
    assert optlib.schedules.exponential(0.5)(10**6) == 0.0


def test_schedules_take_integer_tensors_and_numpy_integers():
    s = optlib.schedules.cosine(10)
    assert s(torch.tensor(5)) == s(np.int64(5)) == s(5)
    for bad in (torch.tensor(5.0), torch.tensor([1, 2]), 5.0, True, -1):
        with pytest.raises(ValueError, match="step must be a non-negative integer"):
            s(bad)
