"""optlib.book.checkers: a right answer passes with ✓, a wrong one fails with the first
mismatch and a useful hint."""

import math

import pytest
import torch

import optlib
from optlib.book import checkers as C


def adam_step(params, grads, state, lr, betas, eps):
    b1, b2 = betas
    state["t"] = t = state.get("t", 0) + 1
    for i, (p, g) in enumerate(zip(params, grads, strict=False)):
        m = state.setdefault(("m", i), torch.zeros_like(p))
        v = state.setdefault(("v", i), torch.zeros_like(p))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p -= lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)


def adam_without_bias_correction(params, grads, state, lr, betas, eps):
    b1, b2 = betas
    for i, (p, g) in enumerate(zip(params, grads, strict=False)):
        m = state.setdefault(("m", i), torch.zeros_like(p))
        v = state.setdefault(("v", i), torch.zeros_like(p))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p -= lr * m / (v.sqrt() + eps)


def adam_forgetting_state(params, grads, state, lr, betas, eps):
    state.clear()
    adam_step(params, grads, state, lr, betas, eps)


def sgd_returning_new(params, grads, state, lr, momentum):
    bufs = state.setdefault("buf", [torch.zeros_like(p) for p in params])
    for b, g in zip(bufs, grads, strict=False):
        b.mul_(momentum).add_(g)
    return [p - lr * b for p, b in zip(params, bufs, strict=False)]


def test_correct_rules_pass(capsys):
    assert C.check_update(adam_step, "Adam")
    assert C.check_update(sgd_returning_new, optlib.SGD)
    out = capsys.readouterr().out
    assert out.startswith("✓ adam_step matches optlib.Adam over 20 steps")
    assert "✓ sgd_returning_new matches optlib.SGD" in out


@pytest.mark.parametrize("fn,step,hint", [
    (adam_without_bias_correction, 1, "the bias correction at t = 1"),
    (adam_forgetting_state, 2, "state (buffers, moments, step count) is kept in `state`"),
])
def test_wrong_rules_fail_with_the_first_mismatch(capsys, fn, step, hint):
    assert not C.check_update(fn, "Adam")
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {fn.__name__} vs optlib.Adam: first mismatch at step {step}, tensor 0 "
                          "(shape (3, 4)), element (0, 0):")
    assert "expected " in out and ", got " in out and hint in out


def test_first_step_hint_fits_the_reference(capsys):
    """An SGD mistake gets SGD's hints (weight decay, the buffer), not Adam's."""
    def sgd_without_decay(params, grads, state, lr, momentum, weight_decay):
        for p, g in zip(params, grads, strict=False):
            p -= lr * g

    assert not C.check_update(sgd_without_decay, "SGD", hyper={"lr": 0.1, "momentum": 0.9,
                                                               "weight_decay": 0.1})
    out = capsys.readouterr().out
    assert "weight decay included" in out and "momentum buffer" in out
    assert "bias correction" not in out and "eps" not in out


def test_hints_for_sign_scale_and_no_change(capsys):
    def ascent(params, grads, state, lr):
        for p, g in zip(params, grads, strict=False):
            p += lr * g

    def double_lr(params, grads, state, lr):
        for p, g in zip(params, grads, strict=False):
            p -= 2 * lr * g

    def nothing(params, grads, state, lr):
        pass

    hyper = {"lr": 0.1}
    assert not C.check_update(ascent, "SGD", hyper=hyper)
    assert "wrong sign" in capsys.readouterr().out
    assert not C.check_update(double_lr, "SGD", hyper=hyper)
    assert "your step is 2 × the reference's" in capsys.readouterr().out
    assert not C.check_update(nothing, "SGD", hyper=hyper)
    assert "did not change the parameters" in capsys.readouterr().out


def test_check_optimizer(capsys):
    assert C.check_optimizer(torch.optim.Adam, "Adam")
    assert capsys.readouterr().out.startswith("✓ Adam matches optlib.Adam over 20 steps")
    assert not C.check_optimizer(torch.optim.AdamW, optlib.Adam, hyper={"lr": 0.01})
    out = capsys.readouterr().out
    assert out.startswith("✗ AdamW vs optlib.Adam: first mismatch at step 1")


def test_check_schedule(capsys):
    ref = optlib.schedules.warmup_cosine(10, 100)

    def mine(t):
        return t / 10 if t < 10 else 0.5 * (1 + math.cos(math.pi * (t - 10) / 90))

    def ahead(t):
        return ref(t + 1)

    def flat_after(t):
        return mine(t) if t < 60 else 0.25

    assert C.check_schedule(mine, ref)
    assert capsys.readouterr().out.startswith("✓ mine matches warmup_cosine(warmup_steps=10")
    assert not C.check_schedule(ahead, ref)
    out = capsys.readouterr().out
    assert "first mismatch at step 0: expected 0, got 0.1" in out and "one step ahead" in out
    assert not C.check_schedule(flat_after, ref)
    assert "agree up to step 59" in capsys.readouterr().out


def test_bad_reference():
    with pytest.raises(ValueError, match="reference 'Adamm' is not an optimizer"):
        C.check_update(adam_step, "Adamm")
