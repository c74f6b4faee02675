"""optlib.book.curvature: training to a target loss, whole Hessians, critical points of any
index, and random symmetric matrices, checked against closed forms and brute force."""

import math

import pytest
import torch
import torch.nn.functional as F

import optlib
from optlib.book import curvature


def _problem(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    y = (x[:, 0] > 0).long()
    return x, y


def test_train_to_loss_stops_at_the_first_check_below_the_target():
    x, y = _problem()
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    opt = optlib.SGD(model.parameters(), lr=0.5)
    steps = curvature.train_to_loss(model, opt, x, y, batch_size=16, target=0.3, check_every=3)
    assert steps is not None and steps % 3 == 0
    with torch.no_grad():
        assert F.cross_entropy(model(x), y).item() <= 0.3


def test_train_to_loss_takes_no_step_when_already_below_and_reports_failures():
    x, y = _problem()
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    opt = optlib.SGD(model.parameters(), lr=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    assert curvature.train_to_loss(model, opt, x, y, 16, target=10.0) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert curvature.train_to_loss(model, opt, x, y, 16, target=0.0, max_steps=7) is None
    diverging = optlib.SGD(model.parameters(), lr=1e30)
    squares = lambda out, _: out.pow(2).sum()   # each step multiplies the weights by about 1e30
    assert curvature.train_to_loss(model, diverging, x, y, 16, target=1e-3, check_every=1,
                                   max_steps=1000, loss_fn=squares) is None
    with pytest.raises(ValueError, match="batch_size"):
        curvature.train_to_loss(model, opt, x, y, 0, target=0.1)
    with pytest.raises(ValueError, match="check_every"):
        curvature.train_to_loss(model, opt, x, y, 4, target=0.1, check_every=0)


def test_hessian_of_a_quadratic_and_of_a_product():
    A = torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64)
    H = curvature.hessian(lambda v: 0.5 * v @ A @ v, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(H, A)
    # f = x y has the Hessian [[0, 1], [1, 0]] everywhere: a saddle of index 1/2.
    H = curvature.hessian(lambda v: v[0] * v[1], torch.tensor([0.3, -2.0], dtype=torch.float64))
    assert torch.equal(H, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    assert curvature.index(H) == 0.5


def test_index_counts_negative_eigenvalues():
    assert curvature.index(torch.diag(torch.tensor([1.0, 2.0, 3.0]))) == 0.0
    assert curvature.index(torch.diag(torch.tensor([-1.0, 2.0, -3.0, 4.0]))) == 0.5
    assert curvature.index(torch.diag(torch.tensor([-1e-9, 1.0])), tol=1e-6) == 0.0


def test_all_positive_fraction_is_one_half_for_n_1_and_falls_fast():
    fractions = curvature.all_positive_fraction([1, 2, 3], samples=20_000, seed=0)
    assert fractions[1] == pytest.approx(0.5, abs=0.02)
    # n = 2: P(both eigenvalues > 0) = (2 - sqrt(2)) / 4 for this ensemble.
    assert fractions[2] == pytest.approx((2 - math.sqrt(2)) / 4, abs=0.01)
    assert fractions[3] < fractions[2] / 2 < fractions[1] / 4
    with pytest.raises(ValueError, match="samples"):
        curvature.all_positive_fraction([2], samples=0)
    with pytest.raises(ValueError, match="sizes"):
        curvature.all_positive_fraction([0])
