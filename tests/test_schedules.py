"""optlib.schedules against torch's schedulers and transformers' formulas, whole runs."""

import math
import pickle

import pytest
import torch

from optlib import schedules as S

transformers_opt = pytest.importorskip("transformers.optimization")


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=lr)


def torch_lrs(make, steps, lr=1.0):
    """The lr used by optimizer steps 0..steps-1 under a torch scheduler (canonical loop)."""
    opt = _opt(lr)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def ours(schedule, steps, lr=1.0):
    return [lr * schedule(t) for t in range(steps)]


def assert_close(a, b, rel=1e-12, abs_=1e-15):
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b, strict=False)):
        assert math.isclose(x, y, rel_tol=rel, abs_tol=abs_), f"step {t}: {x} != {y}"


LR = torch.optim.lr_scheduler


@pytest.mark.parametrize("step_size,gamma", [(1, 0.5), (7, 0.1), (30, 0.9)])
def test_step_decay_equals_steplr(step_size, gamma):
    assert_close(ours(S.step_decay(step_size, gamma), 200, 0.3),
                 torch_lrs(lambda o: LR.StepLR(o, step_size, gamma), 200, 0.3))


@pytest.mark.parametrize("gamma", [0.99, 0.9, 1.01])
def test_exponential_equals_exponentiallr(gamma):
    assert_close(ours(S.exponential(gamma), 150, 0.1),
                 torch_lrs(lambda o: LR.ExponentialLR(o, gamma), 150, 0.1), rel=1e-11)


@pytest.mark.parametrize("total,min_ratio", [(1, 0.0), (10, 0.0), (97, 0.1), (200, 1.0)])
def test_cosine_equals_cosineannealing_then_stays(total, min_ratio):
    lr = 0.5
    ref = torch_lrs(lambda o: LR.CosineAnnealingLR(o, T_max=total, eta_min=min_ratio * lr),
                    total + 1, lr)
    got = ours(S.cosine(total, min_ratio), total + 25, lr)
    assert_close(got[: total + 1], ref, rel=1e-10, abs_=1e-14)
    assert got[total:] == [min_ratio * lr] * 25


def test_linear_decay_formula():
    s = S.linear_decay(8, 0.2)
    assert_close([s(t) for t in range(12)],
                 [1 - 0.8 * t / 8 for t in range(9)] + [0.2] * 3)
    # torch's LinearLR agrees on the decay part (when the end factor is positive).
    ref = torch_lrs(lambda o: LR.LinearLR(o, 1.0, 0.2, total_iters=8), 12)
    assert_close(ours(s, 12), ref, rel=1e-12)


def hf_lrs(factory, steps, **kwargs):
    return torch_lrs(lambda o: factory(o, **kwargs), steps)


@pytest.mark.parametrize("warmup,timescale", [(0, None), (1, None), (2, None), (10, 3), (10, None)])
def test_inverse_sqrt_equals_transformers(warmup, timescale):
    ref = hf_lrs(transformers_opt.get_inverse_sqrt_schedule, 80,
                 num_warmup_steps=warmup, timescale=timescale)
    assert_close(ours(S.inverse_sqrt(warmup, timescale), 80), ref)


@pytest.mark.parametrize("warmup,total,min_ratio", [(0, 10, 0.0), (2, 6, 0.0), (5, 50, 0.1),
                                                    (10, 10, 0.3), (1, 1, 0.0)])
def test_warmup_cosine_equals_transformers(warmup, total, min_ratio):
    steps = 2 * total + 10  # far past the end: transformers' cosine rises again, so does ours
    ref = hf_lrs(transformers_opt.get_cosine_with_min_lr_schedule_with_warmup, steps,
                 num_warmup_steps=warmup, num_training_steps=total, min_lr_rate=min_ratio)
    assert_close(ours(S.warmup_cosine(warmup, total, min_ratio), steps), ref)


@pytest.mark.parametrize("warmup,total", [(0, 10), (2, 6), (5, 50), (10, 10), (1, 1)])
def test_warmup_linear_equals_transformers(warmup, total):
    ref = hf_lrs(transformers_opt.get_linear_schedule_with_warmup, total + 20,
                 num_warmup_steps=warmup, num_training_steps=total)
    assert_close(ours(S.warmup_linear(warmup, total), total + 20), ref)


@pytest.mark.parametrize("decay", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("w,s,d,m", [(3, 5, 7, 0.0), (0, 0, 10, 0.1), (4, 0, 0, 0.2), (1, 2, 1, 0.5)])
def test_wsd_equals_transformers(decay, w, s, d, m):
    n = w + s + d + 10
    ref = hf_lrs(transformers_opt.get_wsd_schedule, n, num_warmup_steps=w, num_stable_steps=s,
                 num_decay_steps=d, min_lr_ratio=m, decay_type=decay)
    assert_close(ours(S.wsd(w, s, d, m, decay), n), ref)


def test_golden_values_from_reference():
    # By hand from the formulas of transformers' schedules (W=2, T=6) and of Noam's
    # (Vaswani et al. 2017, d=512, W=4000).
    lin = S.warmup_linear(2, 6)
    assert [round(lin(t), 6) for t in range(8)] == [0, .5, 1, .75, .5, .25, 0, 0]
    cos = S.warmup_cosine(2, 6)
    assert [round(cos(t), 6) for t in range(8)] == [0, .5, 1, .853553, .5, .146447, 0, .146447]
    inv = S.inverse_sqrt(2)
    assert [round(inv(t), 6) for t in range(8)] == [
        0, .5, 1, .816497, .707107, .632456, .57735, .534522]
    noam = S.noam(512, 4000)
    for s, v in [(1, 1.74693e-7), (100, 1.74693e-5), (4000, 6.98771e-4), (8000, 4.94106e-4),
                 (16000, 3.49386e-4)]:
        assert math.isclose(noam(s - 1), v, rel_tol=1e-5)


def test_noam_is_scaled_inverse_sqrt():
    # Noam = (d·W)^-1/2 · min(s/W, sqrt(W/s)) with s = t + 1.
    d, W = 64, 50
    n, inv = S.noam(d, W), S.inverse_sqrt(W, timescale=W)
    for t in range(W, 300):
        assert math.isclose(n(t), (d * W) ** -0.5 * inv(t + 1), rel_tol=1e-12)


def test_constant():
    assert [S.constant()(t) for t in (0, 1, 10**9)] == [1.0, 1.0, 1.0]


ALL = [S.constant(), S.step_decay(10, 0.5), S.exponential(0.99), S.cosine(100, 0.1),
       S.linear_decay(100), S.inverse_sqrt(10), S.noam(64, 10), S.warmup_cosine(10, 100),
       S.warmup_linear(10, 100), S.wsd(10, 50, 40, 0.1, "1-sqrt"),
       S.one_cycle(100), S.one_cycle(50, 0.25, "linear", 10.0, 100.0, True),
       S.one_cycle_momentum(100), S.cyclic(5, 0.1), S.cyclic(3, 0.0, 2, "exp_range", 0.9),
       S.cyclic_momentum(4), S.cosine_restarts(10, 2, 0.1), S.polynomial(100, 0.9),
       S.polynomial(100, 1.0, 10), S.warmup_polynomial(10, 100, 2.0, 0.01)]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_picklable_readable_and_lambdalr_state_dict(schedule):
    clone = pickle.loads(pickle.dumps(schedule))
    assert clone == schedule and repr(clone) == repr(schedule)
    assert repr(schedule).startswith(type(schedule).__name__ + "(")
    assert eval(repr(schedule), vars(S)) == schedule  # the repr is the constructor call
    assert type(schedule)(**vars(schedule)) == schedule
    opt = _opt(0.1)
    sched = LR.LambdaLR(opt, schedule)
    for _ in range(15):
        opt.step()
        sched.step()
    sched2 = LR.LambdaLR(_opt(0.1), type(schedule)(**vars(schedule)))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 15 and sched2.lr_lambdas[0] == schedule


@pytest.mark.parametrize("call,match", [
    (lambda: S.step_decay(0), "step_size must be a positive integer, got 0"),
    (lambda: S.step_decay(2.5), "step_size must be a positive integer, got 2.5"),
    (lambda: S.step_decay(3, gamma=0), "gamma must be positive, got 0"),
    (lambda: S.exponential(-0.5), "gamma must be positive, got -0.5"),
    (lambda: S.cosine(0), "total_steps must be a positive integer, got 0"),
    (lambda: S.cosine(-5), "total_steps must be a positive integer, got -5"),
    (lambda: S.cosine(10, min_ratio=1.5), r"min_ratio must be in \[0, 1\], got 1.5"),
    (lambda: S.linear_decay(10, min_ratio=-0.1), r"min_ratio must be in \[0, 1\], got -0.1"),
    (lambda: S.inverse_sqrt(-1), "warmup_steps must be an integer >= 0, got -1"),
    (lambda: S.inverse_sqrt(10, timescale=0), "timescale must be positive, got 0"),
    (lambda: S.noam(0, 10), "d_model must be a positive integer, got 0"),
    (lambda: S.noam(512, 0), "warmup_steps must be a positive integer, got 0"),
    (lambda: S.warmup_cosine(20, 10), r"warmup_steps \(20\) must not exceed total_steps \(10\)"),
    (lambda: S.warmup_linear(11, 10), r"warmup_steps \(11\) must not exceed total_steps \(10\)"),
    (lambda: S.warmup_linear(5, 0), "total_steps must be a positive integer, got 0"),
    (lambda: S.wsd(1, 1, 1, decay="exp"), "decay must be one of 'linear', 'cosine', '1-sqrt'; got 'exp'"),
    (lambda: S.wsd(1, -1, 1), "stable_steps must be an integer >= 0, got -1"),
    (lambda: S.wsd(1, 1, 1, min_ratio=2), r"min_ratio must be in \[0, 1\], got 2"),
    (lambda: S.cosine(10)(-1), "step must be a non-negative integer, got -1"),
])
def test_bad_arguments_raise_valueerror_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(w=st.integers(0, 30), extra=st.integers(0, 60),
                  m=st.sampled_from([0.0, 0.05, 0.5, 1.0]))
def test_warmup_schedules_equal_transformers_for_random_lengths(w, extra, m):
    total = max(1, w + extra)
    n = 2 * total + 3
    hyp = [transformers_opt._get_cosine_schedule_with_warmup_lr_lambda(
        t, num_warmup_steps=w, num_training_steps=total, num_cycles=0.5, min_lr_rate=m)
        for t in range(n)]
    assert_close(ours(S.warmup_cosine(w, total, m), n), hyp)
    lin = [transformers_opt._get_linear_schedule_with_warmup_lr_lambda(
        t, num_warmup_steps=w, num_training_steps=total) for t in range(n)]
    assert_close(ours(S.warmup_linear(w, total), n), lin)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(w=st.integers(0, 20), s=st.integers(0, 20), d=st.integers(0, 20),
                  m=st.sampled_from([0.0, 0.1, 1.0]), decay=st.sampled_from(["linear", "cosine", "1-sqrt"]))
def test_wsd_equals_transformers_for_random_lengths(w, s, d, m, decay):
    n = w + s + d + 5
    ref = [transformers_opt._get_wsd_scheduler_lambda(
        t, num_warmup_steps=w, num_stable_steps=s, num_decay_steps=d, warmup_type="linear",
        decay_type=decay, min_lr_ratio=m, num_cycles=0.5) for t in range(n)]
    assert_close(ours(S.wsd(w, s, d, m, decay), n), ref)
