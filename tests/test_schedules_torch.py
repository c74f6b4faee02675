"""optlib.schedules' one-cycle, cyclic, warm-restart, polynomial and plateau schedules
against torch's schedulers (and transformers' formula), step for step.

Each comparison runs the real loop twice, side by side: torch's scheduler on one optimizer,
``LambdaLR(optimizer, schedule)`` (and ``LambdaMomentum``) on another, reading the lr and
momentum every step before ``optimizer.step()``; so it also checks that both count steps
alike. With a base lr that is a power of two the multiplier scales exactly and the numbers
are bit-for-bit torch's; with lr = 0.3 they agree to a few units in the last place.
"""

import math
import pickle

import pytest
import torch

import optlib
from optlib import schedules as S

hypothesis = pytest.importorskip("hypothesis")
transformers_opt = pytest.importorskip("transformers.optimization")
st = hypothesis.strategies
LR = torch.optim.lr_scheduler
EXACT_LR, ODD_LR = 0.5, 0.3


def _opt(lr, cls=torch.optim.SGD, **kwargs):
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    q = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    return cls([{"params": [p]}, {"params": [q]}], lr=lr, **kwargs)


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def side_by_side(make_torch, schedule, steps, lr, momentum_fn=None, cls=torch.optim.SGD,
                 **kwargs):
    """(torch's lrs, ours, torch's momenta, ours) for optimizer steps 0 .. steps-1."""
    ref_opt, our_opt = _opt(lr, cls, **kwargs), _opt(lr, cls, **kwargs)
    ref, ours = make_torch(ref_opt), LR.LambdaLR(our_opt, schedule)
    mom = S.LambdaMomentum(our_opt, momentum_fn) if momentum_fn is not None else None
    out = ([], [], [], [])
    for t in range(steps):
        if t:  # the loop: optimizer.step(), then the schedulers
            ref_opt.step()
            our_opt.step()
            ref.step()
            ours.step()
            if mom is not None:
                mom.step()
        out[0].append([g["lr"] for g in ref_opt.param_groups])
        out[1].append([g["lr"] for g in our_opt.param_groups])
        out[2].append(_momenta(ref_opt))
        out[3].append(_momenta(our_opt))
    return out


def assert_same(ours, ref, lr):
    """Bit-for-bit when lr is a power of two, else to a few ulps (of the peak lr)."""
    assert len(ours) == len(ref)
    for t, (a, b) in enumerate(zip(ours, ref, strict=False)):
        if lr == EXACT_LR:
            assert a == b, f"step {t}: {a} != {b}"
        else:
            for x, y in zip(a, b, strict=False):
                assert math.isclose(x, y, rel_tol=1e-13, abs_tol=1e-15 * lr), f"step {t}: {a} != {b}"


# ------------------------------------------------------------------------------ one-cycle

ONE_CYCLE = [  # total_steps, pct_start, anneal, div_factor, final_div_factor, three_phase
    (100, 0.3, "cos", 25.0, 1e4, False),
    (100, 0.3, "linear", 25.0, 1e4, False),
    (100, 0.3, "cos", 25.0, 1e4, True),
    (37, 0.25, "linear", 10.0, 100.0, True),
    (50, 0.0, "cos", 5.0, 1e3, False),      # no rise: starts at the top
    (20, 1.0, "linear", 4.0, 10.0, False),  # only the rise
    (7, 0.5, "cos", 25.0, 1e4, True),
    (1, 0.3, "cos", 25.0, 1e4, False),      # a single step: at the floor
    (60, 0.6, "linear", 25.0, 1e4, True),   # phases 1 and 2 overlap the end (torch's numbers)
]


@pytest.mark.parametrize("lr", [EXACT_LR, ODD_LR])
@pytest.mark.parametrize("cls", [torch.optim.SGD, torch.optim.Adam, optlib.AdamW],
                         ids=["SGD", "Adam", "optlib.AdamW"])
@pytest.mark.parametrize("T,p,anneal,div,final,three", ONE_CYCLE)
def test_one_cycle_and_its_momentum_equal_onecyclelr(T, p, anneal, div, final, three, cls, lr):
    schedule = S.one_cycle(T, p, anneal, div, final, three)
    kwargs = {"momentum": 0.9} if cls is torch.optim.SGD else {}
    ref, ours, ref_m, our_m = side_by_side(
        lambda o: LR.OneCycleLR(o, max_lr=lr, total_steps=T, pct_start=p, anneal_strategy=anneal,
                                div_factor=div, final_div_factor=final, three_phase=three),
        schedule, T, lr, schedule.momentum(), cls, **kwargs)
    assert_same(ours, ref, lr)
    assert our_m == ref_m  # the same operations on the same numbers: bit for bit


def test_one_cycle_stays_at_its_last_value_where_torch_extrapolates_then_raises():
    T, lr = 10, EXACT_LR
    s, m = S.one_cycle(T, anneal="linear"), S.one_cycle_momentum(T, anneal="linear")
    assert [s(t) for t in range(T - 1, T + 20)] == [s(T - 1)] * 21
    assert math.isclose(s(T - 1), 1 / 25 / 1e4, rel_tol=1e-9) and m(T + 5) == m(T - 1) == 0.95
    opt = _opt(lr)
    ref = LR.OneCycleLR(opt, max_lr=lr, total_steps=T, anneal_strategy="linear")
    for _ in range(T):
        opt.step()
        ref.step()
    assert opt.param_groups[0]["lr"] < lr * s(T - 1)  # torch's step T: past the floor
    opt.step()
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        ref.step()
    # with pct_start = 1 torch's step T divides by zero; this one stays at the peak
    opt = _opt(lr)
    ref = LR.OneCycleLR(opt, max_lr=lr, total_steps=T, pct_start=1.0)
    for _ in range(T - 1):
        opt.step()
        ref.step()
    opt.step()
    with pytest.raises(ZeroDivisionError):
        ref.step()
    assert S.one_cycle(T, 1.0)(T + 3) == 1.0


def test_one_cycle_by_hand():
    # pct_start·T − 1 = 2: up from 1/10 to 1 at step 2, then down to 1/100 at step 9.
    s = S.one_cycle(10, 0.3, "linear", div_factor=10.0, final_div_factor=10.0)
    want = [0.1, 0.55, 1.0] + [1 - 0.99 * k / 7 for k in range(1, 8)] + [0.01] * 3
    assert [round(s(t), 12) for t in range(13)] == [round(w, 12) for w in want]
    c = S.one_cycle(5, 0.4, "cos", div_factor=4.0, final_div_factor=2.0, three_phase=True)
    # ends 1, 2, 4: 1/4 -> 1 at 1 -> 1/4 at 2 -> 1/8 at 4 (a cosine half-way at 3)
    assert [round(c(t), 12) for t in range(6)] == [0.25, 1.0, 0.25, 0.1875, 0.125, 0.125]
    m = S.one_cycle_momentum(5, 0.4, "cos", 0.8, 0.9, three_phase=True)
    assert [round(m(t), 12) for t in range(6)] == [0.9, 0.8, 0.9, 0.9, 0.9, 0.9]


# -------------------------------------------------------------------------------- cyclic

CYCLIC = [  # step_size_up, base_ratio, step_size_down, mode, gamma
    (4, 0.1, None, "triangular", 1.0),
    (3, 0.0, 7, "triangular", 1.0),
    (5, 0.2, None, "triangular2", 1.0),
    (2, 0.5, 1, "triangular2", 1.0),
    (6, 0.1, None, "exp_range", 0.99),
    (3, 0.05, 5, "exp_range", 0.9),
    (1, 0.0, 0, "triangular", 1.0),  # a sawtooth: no way down
]


@pytest.mark.parametrize("lr", [EXACT_LR, ODD_LR])
@pytest.mark.parametrize("cls", [torch.optim.SGD, torch.optim.AdamW], ids=["SGD", "AdamW"])
@pytest.mark.parametrize("up,b,down,mode,gamma", CYCLIC)
def test_cyclic_and_its_momentum_equal_cycliclr(up, b, down, mode, gamma, cls, lr):
    schedule = S.cyclic(up, b, down, mode, gamma)
    kwargs = {"momentum": 0.9} if cls is torch.optim.SGD else {}
    ref, ours, ref_m, our_m = side_by_side(
        lambda o: LR.CyclicLR(o, base_lr=b * lr, max_lr=lr, step_size_up=up,
                              step_size_down=down, mode=mode, gamma=gamma),
        schedule, 12 * (up + (up if down is None else down)) + 3, lr, schedule.momentum(),
        cls, **kwargs)
    assert_same(ours, ref, lr)
    assert our_m == ref_m


def test_cyclic_by_hand():
    assert [S.cyclic(2, 0.0)(t) for t in range(9)] == [0, .5, 1, .5, 0, .5, 1, .5, 0]
    tri2 = S.cyclic(2, 0.0, mode="triangular2")
    assert [tri2(t) for t in range(13)] == [0, .5, 1, .5, 0, .25, .5, .25, 0, .125, .25, .125, 0]
    exp = S.cyclic(1, 0.0, mode="exp_range", gamma=0.5)
    assert [exp(t) for t in range(5)] == [0, 0.5, 0, 0.125, 0]
    assert S.cyclic(2, 0.0, mode="triangular2")(2 * 4 * 1100 + 2) == 0.0  # no overflow
    mom = S.cyclic(2, 0.1).momentum()
    assert [round(mom(t), 12) for t in range(5)] == [0.9, 0.85, 0.8, 0.85, 0.9]


# ----------------------------------------------------------------------- warm restarts

@pytest.mark.parametrize("lr", [EXACT_LR, ODD_LR])
@pytest.mark.parametrize("T0,mult,m", [(1, 1, 0.0), (10, 1, 0.0), (7, 1, 0.1), (3, 2, 0.0),
                                       (5, 3, 0.25), (1, 2, 0.0), (4, 1, 1.0)])
def test_cosine_restarts_equal_cosineannealingwarmrestarts(T0, mult, m, lr):
    ref, ours, _, _ = side_by_side(
        lambda o: LR.CosineAnnealingWarmRestarts(o, T_0=T0, T_mult=mult, eta_min=m * lr),
        S.cosine_restarts(T0, mult, m), 400, lr)
    assert_same(ours, ref, lr)


def test_cosine_restarts_by_hand():
    s = S.cosine_restarts(2, 2)
    assert [round(s(t), 6) for t in range(8)] == [1, .5, 1, .853553, .5, .146447, 1, .96194]
    assert S.cosine_restarts(3, 1, 0.5)(3 * 10**12 + 1) == S.cosine_restarts(3, 1, 0.5)(1)


# -------------------------------------------------------------------------- polynomial

@pytest.mark.parametrize("lr", [EXACT_LR, ODD_LR])
@pytest.mark.parametrize("T,power", [(1, 1.0), (5, 1.0), (50, 0.9), (100, 2.0), (30, 0.5)])
def test_polynomial_equals_polynomiallr_past_its_end(T, power, lr):
    ref, ours, _, _ = side_by_side(lambda o: LR.PolynomialLR(o, total_iters=T, power=power),
                                   S.polynomial(T, power), T + 30, lr)
    # torch multiplies ratios step after step: its round-off grows with t (~1e-15 here)
    for t, (a, b) in enumerate(zip(ours, ref, strict=False)):
        assert all(math.isclose(x, y, rel_tol=1e-13, abs_tol=0.0) for x, y in zip(a, b, strict=False)), t
    assert ours[T:] == [[0.0, 0.0]] * 30


def test_polynomial_by_hand_and_bert():
    assert [S.polynomial(4)(t) for t in range(6)] == [1, .75, .5, .25, 0, 0]
    assert [S.polynomial(4, 2.0)(t) for t in range(6)] == [1, .5625, .25, .0625, 0, 0]
    # BERT's reference code: tf polynomial_decay(init, step, T, end=0, power=1), and
    # init·step/W instead while step < W (Devlin et al. 2019, google-research/bert).
    W, T = 10, 100
    bert = [t / W if t < W else 1.0 - min(t, T) / T for t in range(T + 5)]
    assert [S.polynomial(T, warmup_steps=W)(t) for t in range(T + 5)] == bert


@pytest.mark.parametrize("W,T,power,m", [(0, 10, 1.0, 0.0), (3, 20, 2.0, 0.0),
                                         (5, 50, 0.5, 0.1), (10, 11, 1.0, 1e-7), (4, 4, 1.0, 0.2)])
def test_warmup_polynomial_equals_transformers(W, T, power, m):
    lr = ODD_LR
    steps = T if W == T else T + 20  # transformers divides by zero at step T when W == T
    ref, ours, _, _ = side_by_side(
        lambda o: transformers_opt.get_polynomial_decay_schedule_with_warmup(
            o, W, T, lr_end=m * lr, power=power), S.warmup_polynomial(W, T, power, m), steps, lr)
    assert_same(ours, ref, lr)
    s = S.warmup_polynomial(W, T, power, m)
    assert [s(t) for t in range(T, T + 5)] == [m] * 5


def test_warmup_polynomial_with_power_one_is_warmup_linear():
    a, b = S.warmup_polynomial(7, 40), S.warmup_linear(7, 40)
    assert all(math.isclose(a(t), b(t), rel_tol=1e-14, abs_tol=1e-16) for t in range(60))


# ---------------------------------------------------------------------- reduce on plateau

def plateau_side_by_side(metrics, lr, **kw):
    """Per metric: torch's ReduceLROnPlateau.step(metric) against plateau.step(metric) +
    LambdaLR.step(); yields both optimizers' lrs, our return value and both states."""
    ours_kw = dict(kw)
    torch_kw = dict(kw)
    torch_kw["min_lr"] = kw.get("min_ratio", 0.0) * lr
    torch_kw["eps"] = kw.get("eps", 1e-8) * lr
    torch_kw.pop("min_ratio", None)
    ref_opt, our_opt = _opt(lr), _opt(lr)
    ref = LR.ReduceLROnPlateau(ref_opt, **torch_kw)
    plateau = S.ReduceOnPlateau(**ours_kw)
    sched = LR.LambdaLR(our_opt, plateau)
    for metric in metrics:
        ref_opt.step()
        our_opt.step()
        ref.step(metric)
        returned = plateau.step(metric)
        sched.step()
        yield ([g["lr"] for g in ref_opt.param_groups], [g["lr"] for g in our_opt.param_groups],
               returned, (ref.best, ref.num_bad_epochs, ref.cooldown_counter),
               (plateau.best, plateau.num_bad_epochs, plateau.cooldown_counter))


PLATEAU_CASES = [
    # a plateau, a real improvement, another plateau
    ([1.0] * 5 + [0.5] * 8 + [0.4] * 3, dict(patience=2)),
    # improvements within the relative threshold (1e-4) do not count: 1 → 0.99996 → ...
    ([1.0 - 4e-5 * k for k in range(30)], dict(patience=1, factor=0.5)),
    # ... and beyond it they do: no reduction
    ([1.0 - 2e-4 * k for k in range(30)], dict(patience=1, factor=0.5)),
    # absolute threshold; cooldown; the min_ratio floor
    ([2.0, 1.95, 1.92, 1.9] + [1.9] * 40, dict(threshold=0.05, threshold_mode="abs",
                                               patience=1, cooldown=3, factor=0.5,
                                               min_ratio=0.01)),
    # mode max (an accuracy), patience 0, relative threshold 1e-3
    ([0.5, 0.6, 0.6, 0.6005, 0.61, 0.61, 0.9, 0.9, 0.89], dict(mode="max", patience=0,
                                                              threshold=1e-3, factor=0.3)),
    ([0.5, 0.6, 0.6, 0.60005, 0.7], dict(mode="max", threshold_mode="abs", threshold=0.0,
                                         patience=0, factor=0.5, cooldown=1)),
    # eps: once a reduction changes the lr by less than eps it is skipped
    ([1.0] * 60, dict(patience=0, factor=0.5, eps=1e-3)),
    # nan never improves
    ([1.0, math.nan, math.nan, 0.5, math.nan], dict(patience=1)),
]


@pytest.mark.parametrize("lr", [EXACT_LR, ODD_LR])
@pytest.mark.parametrize("metrics,kw", PLATEAU_CASES)
def test_reduce_on_plateau_equals_reducelronplateau(metrics, kw, lr):
    rows = list(plateau_side_by_side(metrics, lr, **kw))
    assert_same([r[1] for r in rows], [r[0] for r in rows], lr)
    for _, our_lrs, returned, ref_state, our_state in rows:
        assert our_lrs[0] == lr * returned
        assert our_state[1:] == ref_state[1:] and (our_state[0] == ref_state[0]
                                                   or math.isnan(ref_state[0]))
    if "min_ratio" in kw:  # the floor is reached and kept
        assert rows[-1][2] == kw["min_ratio"]
    reductions = len({r[2] for r in rows}) - 1
    assert reductions == 0 if metrics[1] == 1.0 - 2e-4 else reductions >= 1


def test_reduce_on_plateau_by_hand():
    p = S.ReduceOnPlateau(factor=0.5, patience=1)
    assert [p.step(x) for x in [1, 1, 1, 0.5, 0.5, 0.5]] == [1, 1, .5, .5, .5, .25]
    assert p(0) == p(10**6) == 0.25
    p = S.ReduceOnPlateau(factor=0.5, patience=0, cooldown=2)
    assert [p.step(x) for x in [1, 2, 2, 2, 2, 2]] == [1, .5, .5, .5, .25, .25]
    assert p.step(torch.tensor(0.1)) == 0.25  # a 0-dim tensor is a metric too


def test_reduce_on_plateau_state_travels_with_lambdalr():
    plateau = S.ReduceOnPlateau(factor=0.5, patience=1, cooldown=1)
    opt = _opt(0.1)
    sched = LR.LambdaLR(opt, plateau)
    for x in [3.0, 2.0, 2.0, 2.0, 2.0]:
        opt.step()
        plateau.step(x)
        sched.step()
    saved = pickle.loads(pickle.dumps(sched.state_dict()))
    fresh = S.ReduceOnPlateau(factor=0.5, patience=1, cooldown=1)
    opt2 = _opt(0.1)
    sched2 = LR.LambdaLR(opt2, fresh)
    sched2.load_state_dict(saved)
    assert fresh == plateau and fresh.multiplier == 0.5 and fresh.best == 2.0
    for x in [2.0, 2.0, 1.0, 1.0, 1.0]:
        assert fresh.step(x) == plateau.step(x)
    assert repr(fresh) == repr(S.ReduceOnPlateau(factor=0.5, patience=1, cooldown=1))


# ------------------------------------------------------------------------ LambdaMomentum

def test_lambda_momentum_writes_momentum_or_beta1_per_group():
    T = 20
    sgd = _opt(0.1, momentum=0.5, nesterov=False)
    adam = _opt(0.1, optlib.Adam, betas=(0.9, 0.98))
    one = S.one_cycle_momentum(T)
    per_group = [one, S.cyclic_momentum(3)]
    ms = S.LambdaMomentum(sgd, one)
    ma = S.LambdaMomentum(adam, per_group)
    for t in range(T):
        assert [g["momentum"] for g in sgd.param_groups] == [one(t)] * 2
        assert [g["betas"] for g in adam.param_groups] == [(f(t), 0.98) for f in per_group]
        ms.step()
        ma.step()
    state = ma.state_dict()
    again = S.LambdaMomentum(_opt(0.1, optlib.Adam), per_group)
    again.load_state_dict(state)
    assert again.last_step == T
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1 .*; Adagrad has neither"):
        S.LambdaMomentum(_opt(0.1, torch.optim.Adagrad), one)
    with pytest.raises(ValueError, match="Expected 2 momentum_fns, but got 1"):
        S.LambdaMomentum(sgd, [one])


@pytest.mark.parametrize("call,match", [
    (lambda: S.one_cycle(0), "Expected positive integer total_steps, but got 0"),
    (lambda: S.one_cycle(2.5), "Expected positive integer total_steps, but got 2.5"),
    (lambda: S.one_cycle(10, pct_start=1.5), "Expected float between 0 and 1 pct_start, but got 1.5"),
    (lambda: S.one_cycle(10, anneal="exp"), "anneal must be one of 'cos' or 'linear', instead got 'exp'"),
    (lambda: S.one_cycle(10, div_factor=0), "div_factor must be positive, got 0"),
    (lambda: S.one_cycle(10, final_div_factor=-1.0), "final_div_factor must be positive, got -1.0"),
    (lambda: S.one_cycle(10, pct_start=0.1), r"pct_start \* total_steps must not be 1 .* "
                                             r"got pct_start=0.1, total_steps=10"),
    (lambda: S.one_cycle(10, three_phase=1), "three_phase must be True or False, got 1"),
    (lambda: S.one_cycle_momentum(10, base_momentum=1.0), r"base_momentum must be in \[0, 1\), got 1.0"),
    (lambda: S.cyclic(0, 0.1), "step_size_up must be a positive integer, got 0"),
    (lambda: S.cyclic(4, 1.5), r"base_ratio must be in \[0, 1\], got 1.5"),
    (lambda: S.cyclic(4, 0.1, step_size_down=-1), "step_size_down must be an integer >= 0, got -1"),
    (lambda: S.cyclic(4, 0.1, mode="cosine"),
     "mode must be one of 'triangular', 'triangular2', 'exp_range'; got 'cosine'"),
    (lambda: S.cyclic(4, 0.1, mode="exp_range", gamma=1.1), r"gamma must be in \(0, 1\], got 1.1"),
    (lambda: S.cyclic_momentum(4, max_momentum=-0.1), r"max_momentum must be in \[0, 1\), got -0.1"),
    (lambda: S.cosine_restarts(0), "Expected positive integer first_period, but got 0"),
    (lambda: S.cosine_restarts(10, 0), "Expected integer period_mult >= 1, but got 0"),
    (lambda: S.cosine_restarts(10, 1.5), "Expected integer period_mult >= 1, but got 1.5"),
    (lambda: S.cosine_restarts(10, min_ratio=2.0), r"min_ratio must be in \[0, 1\], got 2.0"),
    (lambda: S.polynomial(0), "total_steps must be a positive integer, got 0"),
    (lambda: S.polynomial(10, power=0), "power must be positive, got 0"),
    (lambda: S.polynomial(10, warmup_steps=11), r"warmup_steps \(11\) must not exceed total_steps \(10\)"),
    (lambda: S.warmup_polynomial(5, 3), r"warmup_steps \(5\) must not exceed total_steps \(3\)"),
    (lambda: S.warmup_polynomial(1, 3, power=-1.0), "power must be positive, got -1.0"),
    (lambda: S.warmup_polynomial(1, 3, min_ratio=-0.5), r"min_ratio must be in \[0, 1\], got -0.5"),
    (lambda: S.ReduceOnPlateau(mode="avg"), "mode 'avg' is unknown!"),
    (lambda: S.ReduceOnPlateau(threshold_mode="pct"), "threshold_mode 'pct' is unknown!"),
    (lambda: S.ReduceOnPlateau(factor=1.0), "Factor should be < 1.0 .*got factor=1.0"),
    (lambda: S.ReduceOnPlateau(factor=-0.5), "Factor should be < 1.0 .*got factor=-0.5"),
    (lambda: S.ReduceOnPlateau(patience=-1), "patience must be an integer >= 0, got -1"),
    (lambda: S.ReduceOnPlateau(cooldown=1.5), "cooldown must be an integer >= 0, got 1.5"),
    (lambda: S.ReduceOnPlateau(threshold=-1e-4), "threshold must be a finite number >= 0, got -0.0001"),
    (lambda: S.ReduceOnPlateau(min_ratio=1.5), r"min_ratio must be in \[0, 1\], got 1.5"),
    (lambda: S.ReduceOnPlateau(eps=math.inf), "eps must be a finite number >= 0, got inf"),
    (lambda: S.cyclic(4, 0.1)(-1), "step must be a non-negative integer, got -1"),
    (lambda: S.ReduceOnPlateau()(2.0), "step must be a non-negative integer, got 2.0"),
])
def test_bad_arguments_raise_valueerror_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------- properties (hypothesis)

SETTINGS = hypothesis.settings(max_examples=60, deadline=None)


@SETTINGS
@hypothesis.given(T=st.integers(1, 80), p=st.floats(0.0, 1.0), anneal=st.sampled_from(["cos", "linear"]),
                  div=st.sampled_from([1.0, 3.0, 25.0, 1e3]), final=st.sampled_from([1.0, 7.0, 1e4]),
                  three=st.booleans())
def test_one_cycle_equals_onecyclelr_for_random_arguments(T, p, anneal, div, final, three):
    hypothesis.assume(float(p * T) - 1 != 0.0)
    schedule = S.one_cycle(T, p, anneal, div, final, three)
    ref, ours, ref_m, our_m = side_by_side(
        lambda o: LR.OneCycleLR(o, max_lr=EXACT_LR, total_steps=T, pct_start=p,
                                anneal_strategy=anneal, div_factor=div, final_div_factor=final,
                                three_phase=three),
        schedule, T, EXACT_LR, schedule.momentum(), momentum=0.9)
    assert ours == ref and our_m == ref_m
    assert [schedule(t) for t in range(T, T + 3)] == [schedule(T - 1)] * 3


@SETTINGS
@hypothesis.given(up=st.integers(1, 12), down=st.one_of(st.none(), st.integers(0, 12)),
                  b=st.sampled_from([0.0, 0.01, 0.3, 1.0]),
                  mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
                  gamma=st.sampled_from([1.0, 0.999, 0.9, 0.5]))
def test_cyclic_equals_cycliclr_for_random_arguments(up, down, b, mode, gamma):
    schedule = S.cyclic(up, b, down, mode, gamma)
    ref, ours, ref_m, our_m = side_by_side(
        lambda o: LR.CyclicLR(o, base_lr=b * EXACT_LR, max_lr=EXACT_LR, step_size_up=up,
                              step_size_down=down, mode=mode, gamma=gamma),
        schedule, 150, EXACT_LR, schedule.momentum(), momentum=0.9)
    assert ours == ref and our_m == ref_m


@SETTINGS
@hypothesis.given(T0=st.integers(1, 15), mult=st.integers(1, 4), m=st.sampled_from([0.0, 0.05, 0.5, 1.0]))
def test_cosine_restarts_equal_torch_for_random_arguments(T0, mult, m):
    ref, ours, _, _ = side_by_side(
        lambda o: LR.CosineAnnealingWarmRestarts(o, T_0=T0, T_mult=mult, eta_min=m * EXACT_LR),
        S.cosine_restarts(T0, mult, m), 200, EXACT_LR)
    assert ours == ref


@SETTINGS
@hypothesis.given(metrics=st.lists(st.sampled_from([1.0, 0.99995, 0.9999, 0.99, 0.9, 0.5, 2.0]),
                                   min_size=1, max_size=60),
                  mode=st.sampled_from(["min", "max"]), threshold_mode=st.sampled_from(["rel", "abs"]),
                  threshold=st.sampled_from([0.0, 1e-4, 1e-2]), patience=st.integers(0, 4),
                  cooldown=st.integers(0, 3), factor=st.sampled_from([0.0, 0.1, 0.5, 0.9]),
                  min_ratio=st.sampled_from([0.0, 0.01, 0.3]))
def test_reduce_on_plateau_equals_torch_for_random_metrics(metrics, mode, threshold_mode, threshold,
                                                           patience, cooldown, factor, min_ratio):
    kw = dict(mode=mode, threshold_mode=threshold_mode, threshold=threshold, patience=patience,
              cooldown=cooldown, factor=factor, min_ratio=min_ratio)
    for ref_lrs, our_lrs, returned, ref_state, our_state in plateau_side_by_side(metrics, EXACT_LR, **kw):
        assert our_lrs == ref_lrs and our_state == ref_state and our_lrs[0] == EXACT_LR * returned


@SETTINGS
@hypothesis.given(T=st.integers(1, 60), power=st.sampled_from([0.25, 0.9, 1.0, 2.0, 3.5]),
                  W=st.integers(0, 60), m=st.sampled_from([0.0, 1e-7, 0.1, 0.9]))
def test_polynomials_equal_torch_and_transformers_for_random_arguments(T, power, W, m):
    ref, ours, _, _ = side_by_side(lambda o: LR.PolynomialLR(o, total_iters=T, power=power),
                                   S.polynomial(T, power), T + 5, EXACT_LR)
    for a, b in zip(ours, ref, strict=False):
        assert all(math.isclose(x, y, rel_tol=1e-13, abs_tol=0.0) for x, y in zip(a, b, strict=False))
    W = min(W, T)
    s = S.warmup_polynomial(W, T, power, m)
    for t in range(T + 5):
        if W == T and t == T:
            continue  # transformers divides by zero there
        hf = transformers_opt._get_polynomial_decay_schedule_with_warmup_lr_lambda(
            t, num_warmup_steps=W, num_training_steps=T, lr_end=m * EXACT_LR, power=power,
            lr_init=EXACT_LR)
        assert math.isclose(s(t), hf, rel_tol=1e-13, abs_tol=1e-16), t
