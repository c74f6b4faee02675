"""optlib.book.checking: a right answer passes with ✓; each usual wrong answer fails with
the first mismatch and a hint that names the mistake; the reader's own errors are
reported as theirs. Lines fit in 88 characters."""

import math

import pytest
import torch

import optlib
from optlib.book import checking as C

AMSGRAD = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": True}
DAMPED = {"lr": 0.1, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.01}
CENTERED = {"lr": 0.01, "alpha": 0.9, "eps": 1e-8, "momentum": 0.9, "centered": True}


def adam_step(params, grads, state, lr, betas, eps, amsgrad=False,
              eps_at="after", max_of="v", zeros=torch.zeros_like, bias=True):
    """Adam / AMSGrad as a student writes it; the keywords after ``amsgrad`` make the
    usual mistakes."""
    b1, b2 = betas
    state["t"] = t = state.get("t", 0) + 1
    for i, (p, g) in enumerate(zip(params, grads, strict=False)):
        m = state.setdefault(("m", i), zeros(p))
        v = state.setdefault(("v", i), zeros(p))
        v_max = state.setdefault(("max", i), zeros(p))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        bc1, bc2 = (1 - b1**t, 1 - b2**t) if bias else (1.0, 1.0)
        if amsgrad and max_of == "v":
            torch.maximum(v_max, v, out=v_max)
            v_hat = v_max / bc2
        elif amsgrad and max_of == "v_hat":
            torch.maximum(v_max, v / bc2, out=v_max)
            v_hat = v_max
        else:                                   # plain Adam, or AMSGrad that forgot the max
            v_hat = v / bc2
        if eps_at == "after":
            denom = v_hat.sqrt() + eps
        elif eps_at == "inside":
            denom = (v_hat + eps).sqrt()
        else:
            denom = v_hat.sqrt()
        p -= lr * (m / bc1) / denom


def variant(name, **mistake):
    def step(params, grads, state, **hyper):
        return adam_step(params, grads, state, **hyper, **mistake)
    step.__name__ = name
    return step


def sgd_step(params, grads, state, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             damp_first=False):
    for i, (p, g) in enumerate(zip(params, grads, strict=False)):
        g = g + weight_decay * p
        if i not in state:
            state[i] = (1 - dampening) * g if damp_first else g.clone()
        else:
            state[i].mul_(momentum).add_(g, alpha=1 - dampening)
        p -= lr * state[i]


def rmsprop_step(params, grads, state, lr, alpha, eps, momentum, centered, center=True):
    for i, (p, g) in enumerate(zip(params, grads, strict=False)):
        v, a, b = state.setdefault(i, [torch.zeros_like(p) for _ in range(3)])
        v.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        a.mul_(alpha).add_(g, alpha=1 - alpha)
        denom = ((v - a * a) if center else v).sqrt() + eps
        b.mul_(momentum).add_(g / denom)
        p -= lr * b


def sgd_returning_new(params, grads, state, lr, momentum):
    bufs = state.setdefault("buf", [torch.zeros_like(p) for p in params])
    for b, g in zip(bufs, grads, strict=False):
        b.mul_(momentum).add_(g)
    return [p - lr * b for p, b in zip(params, bufs, strict=False)]


def test_correct_rules_pass(capsys):
    assert C.check_update(variant("adam"), "Adam")
    assert C.check_update(variant("amsgrad"), "Adam", hyper=AMSGRAD)
    assert C.check_update(sgd_step, "SGD", hyper=DAMPED)
    assert C.check_update(rmsprop_step, "RMSprop", hyper=CENTERED)
    assert C.check_update(sgd_returning_new, optlib.SGD)
    out = capsys.readouterr().out
    assert out.startswith("✓ adam matches optlib.Adam over 3 × 20 steps (random, near-zero")
    assert "✓ sgd_returning_new matches optlib.SGD" in out
    assert out.count("✓") == 5 and "✗" not in out
    assert max(len(line) for line in out.splitlines()) <= 88


@pytest.mark.parametrize("fn,ref,hyper,hint", [
    (variant("adam_no_eps", eps_at="nowhere"), "Adam", None, "eps is missing"),
    (variant("adam_eps_inside", eps_at="inside"), "Adam", None, "eps is inside the square"),
    (variant("amsgrad_no_eps", eps_at="nowhere"), "Adam", AMSGRAD, "eps is missing"),
    (variant("amsgrad_max_of_v_hat", max_of="v_hat"), "Adam", AMSGRAD,
     "the running max is taken of v̂"),
    (variant("amsgrad_no_max", max_of=None), "Adam", AMSGRAD, "the running max is missing"),
    (variant("adam_no_bias", bias=False), "Adam", None, "there is no bias correction"),
    (lambda *a, **k: sgd_step(*a, **k, damp_first=True), "SGD", DAMPED,
     "dampening is applied on the first step"),
    (lambda *a, **k: rmsprop_step(*a, **k, center=False), "RMSprop", CENTERED,
     "the denominator is not centered"),
    (variant("adam_float32_state", zeros=lambda p: torch.zeros(p.shape)), "Adam", None,
     "your state holds float32 tensors in a float64 check"),
])
def test_wrong_rules_fail_with_a_hint_that_names_the_mistake(capsys, fn, ref, hyper, hint):
    assert not C.check_update(fn, ref, hyper=hyper)
    out = capsys.readouterr().out
    assert out.startswith("✗ ") and "first mismatch" in out and "expected " in out
    text = " ".join(line.strip() for line in out.splitlines())
    assert hint in text
    assert "check the learning rate" not in text
    assert max(len(line) for line in out.splitlines()) <= 88


def test_eps_mistakes_fail_on_every_seed():
    """eps = 1e-8 is visible: inputs near zero make it matter, whatever the seed."""
    wrong = [variant("a", eps_at="inside"), variant("b", eps_at="nowhere")]
    for seed in range(5):
        for fn in wrong:
            assert not C.check_update(fn, "Adam", seed=seed, steps=5)


def test_state_not_kept_and_wrong_order(capsys):
    def adam_forgetting_state(params, grads, state, lr, betas, eps):
        state.clear()
        adam_step(params, grads, state, lr, betas, eps)

    assert not C.check_update(adam_forgetting_state, "Adam")
    out = capsys.readouterr().out
    assert "at step 2," in out and "kept in `state`" in " ".join(out.split())


def test_first_step_hint_fits_the_reference(capsys):
    """An SGD mistake gets SGD's hints (weight decay), not Adam's."""
    def sgd_without_decay(params, grads, state, lr, momentum, weight_decay):
        for p, g in zip(params, grads, strict=False):
            p -= lr * g

    assert not C.check_update(sgd_without_decay, "SGD", hyper={"lr": 0.1, "momentum": 0.9,
                                                               "weight_decay": 0.1})
    out = " ".join(capsys.readouterr().out.split())
    assert "weight_decay is not used" in out
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


def test_the_readers_errors_are_reported_as_theirs(capsys):
    def crashes(params, grads, state, lr, momentum):
        for p in params:
            p -= lr * state["buffer"]          # never created

    def too_few_parameters(params, grads, state, lr):
        pass

    def returns_one(params, grads, state, lr, momentum):
        return params[0]

    assert not C.check_update(crashes, "SGD")
    out = capsys.readouterr().out
    assert out.startswith("✗ crashes vs optlib.SGD: your code raised KeyError: 'buffer' at "
                          "step 1")
    assert "of your code: p -= lr * state[\"buffer\"]" in out and "Traceback" not in out
    assert not C.check_update(too_few_parameters, "SGD")
    out = " ".join(capsys.readouterr().out.split())
    assert "does not fit your signature (params, grads, state, lr)" in out
    assert "unexpected keyword argument 'momentum'" in out
    assert not C.check_update(returns_one, "SGD")
    assert "return None (after updating in place) or a list of 2 tensors" in \
        " ".join(capsys.readouterr().out.split())


def test_check_optimizer(capsys):
    assert C.check_optimizer(torch.optim.Adam, "Adam")
    assert capsys.readouterr().out.startswith("✓ Adam matches optlib.Adam over 3 × 20 steps")
    assert not C.check_optimizer(torch.optim.AdamW, optlib.Adam, hyper={"lr": 0.01})
    out = capsys.readouterr().out
    assert out.startswith("✗ AdamW vs optlib.Adam: first mismatch at step 1")

    class Broken(torch.optim.Optimizer):
        def __init__(self, params, lr):
            super().__init__(params, {"lr": lr})

        def step(self):
            raise RuntimeError("not written yet")

    assert not C.check_optimizer(Broken, "SGD", hyper={"lr": 0.1})
    out = capsys.readouterr().out
    assert "your code raised RuntimeError: not written yet at step 1" in out
    assert 'raise RuntimeError("not written yet")' in out


def test_mistake_sketches_equal_the_references():
    """The sketches the hints are judged by are right when no mistake is made."""
    for name, hyper in [("SGD", DAMPED), ("SGD", {"lr": 0.05, "weight_decay": 0.01,
                                                   "maximize": True, "momentum": 0.9,
                                                   "nesterov": True}),
                        ("RMSprop", CENTERED), ("Adam", AMSGRAD),
                        ("AdamW", {**C.DEFAULT_HYPER["AdamW"], "amsgrad": True}),
                        ("Lion", {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1})]:
        rule = C._MISTAKES[name][0]

        def step(params, grads, state, _rule=rule, **hyper):
            _rule(params, grads, state, **hyper)
        assert C.check_update(step, name, hyper=hyper, steps=8)


def test_check_schedule(capsys):
    ref = optlib.schedules.warmup_cosine(10, 100)

    def mine(t):
        return t / 10 if t < 10 else 0.5 * (1 + math.cos(math.pi * (t - 10) / 90))

    def ahead(t):
        return ref(t + 1)

    def flat_after(t):
        return mine(t) if t < 60 else 0.25

    def crashes_late(t):
        return mine(t) if t < 50 else 1 / 0

    assert C.check_schedule(mine, ref)
    assert capsys.readouterr().out.startswith("✓ mine matches warmup_cosine(warmup_steps=10")
    assert not C.check_schedule(ahead, ref)
    out = " ".join(capsys.readouterr().out.split())
    assert "first mismatch at step 0: expected 0, got 0.1" in out and "one step ahead" in out
    assert not C.check_schedule(flat_after, ref)
    assert "agree up to step 59" in " ".join(capsys.readouterr().out.split())
    assert not C.check_schedule(crashes_late, ref)
    out = " ".join(capsys.readouterr().out.split())
    assert "raised ZeroDivisionError: division by zero at step 50" in out
    assert "of your code: return mine(t) if t < 50 else 1 / 0" in out


def test_bad_reference():
    with pytest.raises(ValueError, match="reference 'Adamm' is not an optimizer"):
        C.check_update(adam_step, "Adamm")
