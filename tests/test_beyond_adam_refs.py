"""Lion, SophiaG and schedule-free AdamW against their authors' packages."""

from __future__ import annotations

import pytest
import torch
from pairs import assert_close, make_params, run_pair

import optlib

# ---- Lion -------------------------------------------------------------------------------

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


def test_lion_golden_value_and_memory():
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = optlib.Lion([p], lr=1e-4, weight_decay=0.1)
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    assert p.item() == pytest.approx(0.99989, abs=1e-15)    # by hand: 1·(1 − ηλ) − η·sign(c)
    assert optlib.state_bytes(opt) == 8                       # one float64 moment


# ---- SophiaG ----------------------------------------------------------------------------

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


def test_sophia_before_any_hessian_is_sign_descent(float64):
    p = torch.nn.Parameter(torch.zeros(5))
    opt = optlib.SophiaG([p], lr=0.1, weight_decay=0.0)
    p.grad = torch.tensor([3.0, -1e-3, 0.0, 2.0, -5.0])
    opt.step()
    torch.testing.assert_close(p.detach(), -0.1 * torch.sign(p.grad))


def test_sophia_refuses_a_batch_size_of_zero():
    with pytest.raises(ValueError, match="Invalid bs value: 0"):
        optlib.SophiaG(make_params()).step(bs=0)


def _classifier(seed=0, classes=3, features=4):
    torch.manual_seed(seed)
    return torch.nn.Linear(features, classes, bias=False)


def test_gnb_samples_labels_from_the_model_and_restores_grads(float64):
    model = _classifier()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    opt = optlib.SophiaG(model.parameters(), betas=(0.9, 0.5))
    model.weight.grad = torch.full_like(model.weight, 7.0)         # the training step's grads
    assert optlib.gnb_update_hessian(opt, model, x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(model.weight.grad, torch.full_like(model.weight, 7.0))
    # the same computation by hand
    logits = x @ model.weight.T
    y_hat = torch.multinomial(torch.softmax(logits, -1), 1,
                              generator=torch.Generator().manual_seed(2)).squeeze(-1)
    g, = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y_hat), model.weight)
    torch.testing.assert_close(opt.state[model.weight]["hessian"], 0.5 * g * g)
    # clipping applies to the sampled gradient
    clipped = optlib.SophiaG(model.parameters(), betas=(0.9, 0.5))
    optlib.gnb_update_hessian(clipped, model, x, max_grad_norm=1e-3,
                              generator=torch.Generator().manual_seed(2))
    g_clipped = g * min(1.0, 1e-3 / (g.norm().item() + 1e-6))
    torch.testing.assert_close(clipped.state[model.weight]["hessian"], 0.5 * g_clipped**2)
    # the authors' schedule: refresh after steps k-1, 2k-1, ...
    ran = [optlib.gnb_update_hessian(opt, model, x, step=t, every=10) for t in range(20)]
    assert [t for t, r in enumerate(ran) if r] == [9, 19]


def test_gnb_leaves_other_optimizers_gradients_alone(float64):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    opt = optlib.SophiaG(model[2].parameters())          # the first layer belongs to another
    model[0].weight.grad = torch.ones_like(model[0].weight)
    optlib.gnb_update_hessian(opt, model, torch.randn(6, 4))
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[0].bias.grad is None and model[2].weight.grad is None
    assert opt.state[model[2].weight]["hessian"].abs().sum() > 0


def test_gnb_estimates_the_gauss_newton_diagonal(float64):
    """E[B ĝ⊙ĝ] is the diagonal of the Gauss-Newton matrix of the mean loss; for a linear
    softmax classifier that is mean_i x_id² p_ic (1 − p_ic)."""
    model = _classifier(seed=3)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(4))
    beta2, draws = 0.999, 2000          # an average of ~1500 draws, effectively
    opt = optlib.SophiaG(model.parameters(), betas=(0.9, beta2))
    gen = torch.Generator().manual_seed(5)
    for _ in range(draws):
        optlib.gnb_update_hessian(opt, model, x, generator=gen)
    estimate = len(x) * opt.state[model.weight]["hessian"] / (1 - beta2**draws)
    probs = torch.softmax(x @ model.weight.detach().T, -1)
    exact = ((probs * (1 - probs)).T @ (x * x)) / len(x)
    torch.testing.assert_close(estimate.sum(), exact.sum(), rtol=0.05, atol=0)
    torch.testing.assert_close(estimate, exact, rtol=0.2, atol=0.02 * exact.max().item())


# ---- AdamWScheduleFree ------------------------------------------------------------------

SF_SETTINGS = [
    dict(),
    dict(lr=1e-2, weight_decay=0.1, warmup_steps=5),
    dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3, r=1.0, weight_lr_power=1.0, warmup_steps=30),
    dict(lr=3e-3, betas=(0.95, 0.99), weight_decay=0.01, weight_lr_power=0.0),
]


def _train(opt):
    opt.train()
    return opt


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
        lambda ps: _train(optlib.AdamWScheduleFree(ps, **kwargs)),
        lambda ps: _train(schedulefree.AdamWScheduleFree(ps, foreach=foreach, **kwargs)),
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
    ours = _train(optlib.AdamWScheduleFree([dict(params=[a[0]]), dict(params=[a[1]])],
                                           warmup_steps=4))
    theirs = _train(schedulefree.AdamWScheduleFree([dict(params=[b[0]]), dict(params=[b[1]])],
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


def test_schedule_free_refuses_steps_in_eval_mode():
    opt = optlib.AdamWScheduleFree(make_params())
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
        opt.step()                                             # a new optimizer is in eval mode
    opt.train()
    opt.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


def test_schedule_free_eval_train_round_trip(float64):
    params = make_params()
    opt = _train(optlib.AdamWScheduleFree(params, lr=0.1))
    for _ in range(3):                   # after one step x = y = z: take a few
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    y = [p.detach().clone() for p in params]
    opt.eval()
    assert not all(torch.equal(p, q) for p, q in zip(params, y, strict=True))
    opt.train()
    assert_close(params, y, rtol=1e-14, atol=1e-15)
