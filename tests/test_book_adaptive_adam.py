"""optlib.book.adaptive_adam: the measurements behind chapters 4 and 5."""

import math

import pytest
import torch

import optlib
import optlib.book as book
from optlib.book import adaptive_adam as aa
from optlib.book import data, models


def sgd_rule(params, grads, state, lr=0.1):
    for p, g in zip(params, grads, strict=False):
        p.sub_(lr * g)


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def test_compare_finds_equal_and_different_rules(digits):
    gaps = aa.compare(lambda: models.mlp((64, 8, 10)), digits.x_train, digits.y_train, sgd_rule,
                      {"same": lambda p: optlib.SGD(p, lr=0.1), "other": lambda p: optlib.SGD(p, lr=0.2)},
                      steps=5)
    assert gaps["same"] < 1e-14
    assert gaps["other"] > 1e-4


def test_fit_accepts_rules_and_optimizers_alike(digits):
    losses = {}
    makers = {"rule": lambda net: sgd_rule, "opt": lambda net: optlib.SGD(net.parameters(), lr=0.1)}
    for name, make in makers.items():
        torch.manual_seed(0)
        net = models.mlp((64, 8, 10))
        losses[name] = aa.fit(net, make(net), data.batches(digits.x_train, digits.y_train, 16), 10)
    assert losses["rule"] == pytest.approx(losses["opt"], rel=1e-5)   # float32: p - lr*g vs p.add_(g, -lr)


def test_fit_loss_scale_leaves_adam_nearly_unchanged(digits):
    runs = []
    for scale in (1.0, 1e-3):
        torch.manual_seed(0)
        net = models.mlp((64, 8, 10))
        runs.append(aa.fit(net, optlib.Adam(net.parameters(), lr=1e-3),
                           data.batches(digits.x_train, digits.y_train, 16), 20, loss_scale=scale))
    assert max(abs(a - b) for a, b in zip(*runs, strict=False)) < 1e-4


def test_fit_refuses_bad_input(digits):
    net = models.mlp((64, 8, 10))
    stream = data.batches(digits.x_train, digits.y_train, 16)
    with pytest.raises(ValueError, match="loss_scale"):
        aa.fit(net, sgd_rule, stream, 1, loss_scale=0.0)
    with pytest.raises(ValueError, match="steps"):
        aa.fit(net, sgd_rule, stream, -1)
    with pytest.raises(ValueError, match="schedule"):
        aa.fit(net, sgd_rule, stream, 1, schedule=lambda t: 1.0)


def test_run_1d_matches_gradient_descent():
    path = book.surfaces.run_1d(lambda p: optlib.SGD(p, lr=0.25), lambda x: x**2, 1.0, 3)
    assert torch.allclose(path, torch.tensor([1.0, 0.5, 0.25, 0.125], dtype=torch.float64))


def test_effective_lr_reads_adagrad_and_rmsprop_and_refuses_adam():
    x = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = optlib.Adagrad([x], lr=0.1)
    x.grad = torch.tensor([2.0, 0.0])
    opt.step()
    rates = book.inspect.effective_lr(opt)
    assert rates[0].item() == pytest.approx(0.1 / (2.0 + 1e-10))
    assert book.inspect.effective_lr(opt, seen_only=True).numel() == 1
    y = torch.zeros(3, requires_grad=True)
    rms = optlib.RMSprop([y], lr=0.01)
    y.grad = torch.ones(3)
    rms.step()
    assert torch.allclose(book.inspect.effective_lr(rms), torch.full((3,), 0.01 / (0.1 + 1e-8)))
    adam = optlib.Adam([y])
    adam.step()
    with pytest.raises(ValueError, match="AdaGrad or RMSprop"):
        book.inspect.effective_lr(adam)


def test_decay_under_noise_adamw_is_the_closed_form():
    shrink = book.noise.decay_under_noise(lambda p: optlib.AdamW(p, lr=1e-2, weight_decay=1.0), [0.01, 10.0],
                                  steps=100, per_sigma=20)
    for value in shrink:
        assert value == pytest.approx((1 - 1e-2) ** 100, rel=0.05)


def test_paper_parametrization_is_weight_decay_over_lr():
    p = torch.ones(1, requires_grad=True)
    opt = book.optimizers.make_adamw_paper([p], lr=1e-3, wd=1e-2)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(10.0)
    p.grad = torch.zeros(1)
    opt.step()
    assert p.item() == pytest.approx(1 - 1e-2)


def test_noisy_labels():
    y = torch.arange(1000) % 10
    noisy = book.data.noisy_labels(y, 0.3, seed=1)
    wrong = (noisy != y).float().mean().item()
    assert 0.22 < wrong < 0.32
    assert torch.equal(noisy, book.data.noisy_labels(y, 0.3, seed=1))
    assert torch.equal(book.data.noisy_labels(y, 0.0), y)
    with pytest.raises(ValueError, match="fraction"):
        book.data.noisy_labels(y, 1.5)


def test_lr_wd_grid_shape_and_range(digits):
    err, loss = book.sweeps.lr_wd_grid(book.optimizers.make_adam_l2, [1e-3, 1e-2], [0.0, 1e-3, 1e-2], digits,
                              lambda s: models.mlp((64, 8, 10), seed=s), steps=5)
    assert err.shape == loss.shape == (3, 2)
    assert ((0 <= err) & (err <= 1)).all()
    assert all(math.isfinite(v) for v in loss.flatten().tolist())
