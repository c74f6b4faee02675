"""optlib.book.surfaces (many gradient-descent paths at once, steps to reach, escapes),
book.models.mlp's init_scale and book.inspect.gradient_norms, checked against closed forms."""

import math

import pytest
import torch
from torch import nn

import optlib
import optlib.book as book
from optlib.book import surfaces as S


def test_gd_paths_equal_independent_runs():
    # The summed loss gives every row its own gradient: each row equals a separate run.
    surface = S.rosenbrock()
    starts = [[-1.5, 2.0], [0.5, -0.5], [1.2, 1.0]]
    batch = S.gd_paths(surface, 1e-3, starts, steps=50)
    assert batch.shape == (51, 3, 2) and batch.dtype == torch.float64
    for i, start in enumerate(starts):
        single = S.run(surface, lambda p: optlib.SGD(p, lr=1e-3), start, steps=50)
        torch.testing.assert_close(batch[:, i], single, rtol=0, atol=1e-12)


def test_gd_paths_on_a_quadratic_follow_the_closed_form():
    q = S.quadratic(condition=10.0, angle=0.3)
    A = q.hessian(torch.zeros(2))
    lr, x0 = 0.15, torch.tensor([1.0, -2.0], dtype=torch.float64)
    paths = S.gd_paths(q, lr, x0[None], steps=20)[:, 0]
    M = torch.eye(2, dtype=torch.float64) - lr * A
    expected = torch.stack([torch.linalg.matrix_power(M, t) @ x0 for t in range(21)])
    torch.testing.assert_close(paths, expected, rtol=0, atol=1e-12)


def test_gd_paths_marks_a_diverged_run_nan_and_keeps_the_others():
    q = S.quadratic(condition=1.0)                      # L = 1: lr 2.5 diverges from anywhere but 0
    paths = S.gd_paths(q, 2.5, [[1.0, 1.0], [0.0, 0.0]], steps=2000)
    assert torch.isnan(paths[-1, 0]).all()
    assert (paths[-1, 1] == 0).all()


def test_steps_to_reach_matches_the_contraction_rate():
    # κ = 1, lr = 1/L: one step lands on the minimum.
    assert S.steps_to_reach(S.quadratic(1.0), lambda p: optlib.SGD(p, lr=1.0), [1.0, 1.0]) == 1
    # Along the flat axis only: distance (1 − lr·μ)^t.
    kappa, tol = 20.0, 1e-3
    n = S.steps_to_reach(S.quadratic(kappa), lambda p: optlib.SGD(p, lr=1 / kappa), [1.0, 0.0], tol=tol)
    assert n == math.ceil(math.log(tol) / math.log(1 - 1 / kappa))
    # Past 2/L it never gets there.
    assert S.steps_to_reach(S.quadratic(kappa), lambda p: optlib.SGD(p, lr=2.1 / kappa),
                            [1.0, 1.0], max_steps=500) is None


def test_first_step():
    # SGD with lr 1/2 on x²/2 halves x: from 30, |x| < 1 first at step 5 (30/32).
    path = S.run_1d(lambda p: optlib.SGD(p, lr=0.5), lambda x: x**2 / 2, 30.0, steps=8)
    assert S.first_step(path.abs() < 1) == 5
    assert S.first_step(path.abs() < 1e-3) is None
    assert S.first_step(torch.tensor([True])) == 0
    with pytest.raises(ValueError, match="holds must be a 1-D boolean tensor"):
        S.first_step(path.abs())
    with pytest.raises(ValueError, match="holds must be a 1-D boolean tensor"):
        S.first_step(torch.ones(2, 2, dtype=torch.bool))


def test_escape_steps():
    paths = S.gd_paths(S.saddle(), 0.1, [[1.0, 1e-3], [1.0, 0.0]], steps=200)
    escaped, never = S.escape_steps(paths)
    assert escaped == math.floor(math.log(1e3) / math.log(1.1)) + 1
    assert never is None


def test_mlp_init_scale_shapes_and_scale():
    model = book.models.mlp((100, 200, 200, 200, 7), activation="tanh", init_scale=2.0, seed=0,
                            dtype=torch.float64)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(100, 200), (200, 200), (200, 200),
                                                                 (200, 7)]
    assert all(isinstance(m, nn.Tanh) for m in model[1:-1:2])
    assert all(m.weight.dtype == torch.float64 and (m.bias == 0).all() for m in linears)
    # std ≈ scale / sqrt(fan_in) for hidden layers, 1 / sqrt(fan_in) for the read-out
    assert linears[1].weight.std().item() == pytest.approx(2.0 / math.sqrt(200), rel=0.02)
    assert linears[-1].weight.std().item() == pytest.approx(1.0 / math.sqrt(200), rel=0.1)
    same = book.models.mlp((100, 200, 200, 200, 7), activation="tanh", init_scale=2.0, seed=0,
                           dtype=torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=False))


def test_gradient_norms_match_autograd():
    torch.manual_seed(0)
    x, y = torch.randn(32, 8, dtype=torch.float64), torch.randint(0, 3, (32,))
    model = book.models.mlp((8, 16, 16, 16, 16, 3), init_scale=1.0, seed=1, dtype=torch.float64)
    norms = book.inspect.gradient_norms(model, x, y)
    assert len(norms["signal"]) == len(norms["weight"]) == 4
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert norms["weight"] == [m.weight.grad.norm().item() for m in linears[:-1]]
    # The last hidden output's gradient, by hand: W_outᵀ (softmax − onehot) / N.
    p = torch.softmax(model(x), dim=-1)
    delta = (p - nn.functional.one_hot(y, 3)) / len(x)
    assert norms["signal"][-1] == pytest.approx((delta @ linears[-1].weight).norm().item(), rel=1e-12)


@pytest.mark.parametrize("call, name", [
    (lambda: S.gd_paths(S.saddle(), 0.0, [[1.0, 0.0]], 3), "lr"),
    (lambda: S.gd_paths(S.saddle(), 0.1, [[1.0, 0.0]], -1), "steps"),
    (lambda: S.steps_to_reach(S.saddle(), lambda p: optlib.SGD(p, lr=0.1), [1.0, 0.0]), "minimum"),
    (lambda: S.steps_to_reach(S.quadratic(), lambda p: optlib.SGD(p, lr=0.1), [1.0, 0.0], tol=2.0), "tol"),
    (lambda: book.models.mlp(activation="gelu"), "activation"),
    (lambda: book.models.mlp((64,)), "sizes"),
    (lambda: book.models.mlp(init_scale=-1.0), "init_scale"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
