"""optlib.lr_range_test: the sweep, the smoothing, the stop, the suggestion, and that the
model and optimizer come back bitwise unchanged. Compared with torch-lr-finder."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import optlib
from optlib.lr_range import moving_average, moving_average_delay, steepest_lr


def _data(n=256, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (x[:, :3].sum(1) > 0).long()
    return x, y


def _model(seed=0, d=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 2)).double()


def _batches(x, y, bs=32):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]


def scripted(losses):
    """A 'model' whose loss is a given sequence: loss_fn returns y, the scripted value."""
    model = nn.Linear(1, 1).double()
    batches = [(torch.zeros(1, 1, dtype=torch.float64), torch.tensor(float(v), dtype=torch.float64))
               for v in losses]
    return model, (lambda out, y: out.sum() * 0 + y), batches


def test_same_sweep_and_losses_as_torch_lr_finder():
    lr_finder = pytest.importorskip("torch_lr_finder")
    x, y = _data()
    batches = _batches(x, y)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    n = 30

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ours = optlib.lr_range_test(model, nn.functional.cross_entropy, batches, opt,
                                start_lr=1e-4, end_lr=1.0, num_steps=n, smooth=0.0,
                                diverge_factor=1e9)

    finder = lr_finder.LRFinder(model, opt, nn.CrossEntropyLoss())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it reads get_lr(), which torch now warns about
        finder.range_test(loader, start_lr=1e-4, end_lr=1.0, num_iter=n, smooth_f=0.0,
                          diverge_th=1e9)
    finder.reset()

    assert len(ours.lrs) == n and ours.lrs == finder.history["lr"]
    np.testing.assert_allclose(ours.raw_losses, finder.history["loss"], rtol=1e-12)
    assert ours.losses == ours.raw_losses  # smooth=0: no smoothing


def test_geometric_sweep_starts_at_start_lr_and_ends_at_end_lr():
    model, loss_fn, batches = scripted([1.0] * 50)
    r = optlib.lr_range_test(model, loss_fn, batches, torch.optim.SGD(model.parameters(), lr=1),
                             start_lr=1e-6, end_lr=1.0, num_steps=50)
    assert r.lrs[0] == 1e-6 and math.isclose(r.lrs[-1], 1.0, rel_tol=1e-12)
    ratios = np.diff(np.log(r.lrs))
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    assert not r.diverged


def test_bias_corrected_smoothing_and_early_stop():
    raw = [2.0, 1.8, 1.5, 1.0, 0.6, 0.5, 0.5, 0.7, 3.0, 9.0, 40.0, 50.0, 60.0]
    model, loss_fn, batches = scripted(raw)
    beta = 0.6
    r = optlib.lr_range_test(model, loss_fn, batches, torch.optim.SGD(model.parameters(), lr=1),
                             num_steps=len(raw), smooth=beta, diverge_factor=4.0)
    # fastai's AvgSmoothLoss: val = lerp(loss, val, beta); reported val / (1 - beta^count).
    val, expected, best = 0.0, [], math.inf
    for i, loss in enumerate(raw):
        val = beta * val + (1 - beta) * loss
        expected.append(val / (1 - beta ** (i + 1)))
        if expected[-1] > 4 * best:
            break
        best = min(best, expected[-1])
    assert r.diverged and len(r.losses) == len(expected) < len(raw)
    np.testing.assert_allclose(r.losses, expected, rtol=1e-12)
    assert r.raw_losses == raw[: len(expected)]
    assert list(moving_average(r.raw_losses, beta)) == r.losses    # the sweep's own average
    assert r.min_loss_lr_over_10 == r.lrs[int(np.argmin(expected))] / 10


def test_stops_on_nan_loss():
    model, loss_fn, batches = scripted([1.0, 0.9, float("nan"), 0.5, 0.4])
    r = optlib.lr_range_test(model, loss_fn, batches, torch.optim.SGD(model.parameters(), lr=1),
                             num_steps=5)
    assert r.diverged and len(r.lrs) == 3 and math.isnan(r.losses[-1])


def test_suggestion_is_the_steepest_descent_of_the_smoothed_curve():
    lrs = np.geomspace(1e-6, 1.0, 100)
    # A loss falling fastest (per unit of log lr) at lr = 1e-3.
    losses = 2.0 - np.tanh(np.log(lrs / 1e-3))
    assert math.isclose(steepest_lr(lrs, losses), 1e-3, rel_tol=0.08)
    # trimming: a steep drop in the first 10% is ignored (the average has not settled)
    losses2 = losses.copy()
    losses2[:5] += 100
    assert math.isclose(steepest_lr(lrs, losses2), 1e-3, rel_tol=0.08)
    assert steepest_lr(lrs[:2], losses[:2]) is None


def test_suggestion_on_a_real_model_is_inside_the_falling_part():
    x, y = _data(512)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    r = optlib.lr_range_test(model, nn.functional.cross_entropy, _batches(x, y), opt,
                             start_lr=1e-5, end_lr=100.0, num_steps=60)
    i = r.lrs.index(r.suggested_lr)
    assert r.losses[i] < r.losses[0]
    assert 1e-5 < r.suggested_lr < 100.0 and r.min_loss_lr_over_10 > 0


def _snapshot(model, opt):
    return (copy.deepcopy(model.state_dict()),
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [m.training for m in model.modules()],
            copy.deepcopy(opt.state_dict()), torch.get_rng_state())


def _assert_same(a, b):
    (ms1, g1, t1, os1, rng1), (ms2, g2, t2, os2, rng2) = a, b
    assert ms1.keys() == ms2.keys()
    for k in ms1:
        assert torch.equal(ms1[k], ms2[k]), k
    for x, y in zip(g1, g2, strict=True):
        assert (x is None and y is None) or torch.equal(x, y)
    assert t1 == t2
    assert os1["param_groups"] == os2["param_groups"]
    assert os1["state"].keys() == os2["state"].keys()
    for k in os1["state"]:
        for name, v in os1["state"][k].items():
            w = os2["state"][k][name]
            assert torch.equal(v, w) and v.dtype == w.dtype, (k, name)
    assert torch.equal(rng1, rng2)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.Adam(ps, lr=3e-3, weight_decay=1e-4),
    lambda ps: optlib.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    lambda ps: optlib.AdamW(ps, lr=1e-3),
])
def test_model_and_optimizer_restored_bitwise(make):
    x, y = _data()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(16, 2)).double()
    decay = [model[0].weight, model[4].weight]
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    opt = make([{"params": decay}, {"params": rest, "lr": 1e-4}])
    for xb, yb in _batches(x, y)[:3]:  # some optimizer state and gradients to preserve
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    model.eval()  # a mode to preserve (the test trains in train mode)
    before = _snapshot(model, opt)
    r = optlib.lr_range_test(model, nn.functional.cross_entropy, _batches(x, y), opt,
                             start_lr=1e-4, end_lr=1e4, num_steps=40)
    assert r.diverged  # the sweep reached lrs that blow up, and still nothing leaked
    _assert_same(before, _snapshot(model, opt))
    # and training continues exactly as it would have without the test
    assert [g["lr"] for g in opt.param_groups] == [before[3]["param_groups"][0]["lr"], 1e-4]


def test_fresh_optimizer_stays_fresh():
    x, y = _data()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    optlib.lr_range_test(model, nn.functional.cross_entropy, _batches(x, y), opt, num_steps=10)
    assert len(opt.state) == 0 and all(p.grad is None for p in model.parameters())


def test_one_shot_iterator_ends_the_sweep():
    x, y = _data(64)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    r = optlib.lr_range_test(model, nn.functional.cross_entropy, iter(_batches(x, y, 16)), opt,
                             num_steps=10)
    assert len(r.lrs) == 4
    r = optlib.lr_range_test(model, nn.functional.cross_entropy, _batches(x, y, 16), opt,
                             num_steps=10)  # a list is cycled
    assert len(r.lrs) == 10


def test_silent_under_pytest(capsys):
    model, loss_fn, batches = scripted([1.0] * 5)
    optlib.lr_range_test(model, loss_fn, batches, torch.optim.SGD(model.parameters(), lr=1),
                         num_steps=5)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs,match", [
    (dict(start_lr=0), "start_lr must be positive, got 0"),
    (dict(start_lr=1.0, end_lr=0.5), r"end_lr must be greater than start_lr \(1.0\), got 0.5"),
    (dict(num_steps=1), "num_steps must be an integer >= 2, got 1"),
    (dict(smooth=1.0), r"smooth must be in \[0, 1\), got 1.0"),
    (dict(diverge_factor=1.0), "diverge_factor must be greater than 1, got 1.0"),
])
def test_bad_arguments(kwargs, match):
    model, loss_fn, batches = scripted([1.0] * 5)
    opt = torch.optim.SGD(model.parameters(), lr=1)
    with pytest.raises(ValueError, match=match):
        optlib.lr_range_test(model, loss_fn, batches, opt, **kwargs)


# ---- the opt-in lag correction ---------------------------------------------------------
def test_moving_average_delay():
    """Mean age of the bias-corrected average's inputs: 0 at the first step, β/(1-β) in
    the limit, and i/2 without decay (β → 1 would be the plain mean)."""
    assert moving_average_delay(0, 0.98) == 0.0
    assert math.isclose(moving_average_delay(10_000, 0.98), 0.98 / 0.02, rel_tol=1e-9)
    assert moving_average_delay(7, 0.0) == 0.0
    k = np.arange(5.0)
    assert math.isclose(moving_average_delay(4, 0.5), (k * 0.5**k).sum() / (0.5**k).sum())
    with pytest.raises(ValueError, match="smooth"):
        moving_average_delay(3, 1.0)


def test_moving_average_by_hand():
    assert list(moving_average([1.0, 3.0], 0.5)) == [1.0, (0.25 + 1.5) / 0.75]
    assert list(moving_average([2.0, 7.0, -1.0], 0.0)) == [2.0, 7.0, -1.0]   # β = 0: raw
    grows = [4.0]
    averages = moving_average(grows, 0.9)
    assert next(averages) == 4.0
    grows.append(4.0)                   # it follows a list that grows
    assert math.isclose(next(averages), 4.0, rel_tol=1e-15)
    with pytest.raises(ValueError, match=r"smooth must be in \[0, 1\), got 1.0"):
        list(moving_average([1.0], 1.0))


def test_smoothed_linear_curve_lags_by_the_delay():
    """On a loss linear in the step the smoothed value of step i is the raw value of step
    i - d_i exactly: the delay is what the correction moves back by."""
    raw = [5.0 - 0.01 * i for i in range(60)]
    model, loss_fn, batches = scripted(raw)
    r = optlib.lr_range_test(model, loss_fn, batches, torch.optim.SGD(model.parameters(), lr=1),
                             num_steps=60, smooth=0.9)
    for i, s in enumerate(r.losses):
        assert math.isclose(s, 5.0 - 0.01 * (i - moving_average_delay(i, 0.9)), rel_tol=1e-12)



def test_a_sharp_fall_shows_up_less_late_than_the_delay():
    """The delay bounds how late the smoothed curve's steepest point is: a fall much
    sharper than the average's window is late by less than the delay, never more."""
    n, beta = 200, 0.95
    lrs = np.geomspace(1e-6, 1.0, n)
    for width in (2.0, 8.0, 60.0):
        raw = 2.0 - np.tanh((np.arange(n) - 100) / width)           # steepest fall at step 100
        smoothed, avg = [], 0.0
        for i, v in enumerate(raw):
            avg = beta * avg + (1 - beta) * v
            smoothed.append(avg / (1 - beta ** (i + 1)))
        late = int(np.argmin(np.abs(lrs - steepest_lr(lrs, smoothed)))) - 100
        assert 0 <= late <= moving_average_delay(100 + late, beta) + 1, width
