"""optlib.book.surfaces: the functions, their minima and Hessians, run() and the plot."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import optlib  # noqa: E402
from optlib.book import surfaces as S  # noqa: E402

ALL = [S.quadratic(10.0, 0.5), S.rosenbrock(), S.beale(), S.saddle(), S.noisy_quadratic()]


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.name)
def test_shapes_and_minimum(s):
    xy = torch.randn(4, 3, 2, dtype=torch.float64)
    assert s.f(xy).shape == (4, 3)
    if s.minimum is not None:
        assert torch.allclose(s.gradient(s.minimum), torch.zeros(2, dtype=torch.float64), atol=1e-12)
        eig = torch.linalg.eigvalsh(s.hessian(s.minimum))
        assert torch.allclose(eig, torch.tensor(s.hessian_eigenvalues, dtype=torch.float64))


def test_quadratic_eigen_and_rotation():
    s = S.quadratic(condition=25.0, angle=math.pi / 6, scale=2.0)
    assert s.hessian_eigenvalues == (2.0, 50.0)
    H = s.hessian(torch.tensor([0.3, -0.2]))
    assert torch.allclose(torch.linalg.eigvalsh(H), torch.tensor([2.0, 50.0], dtype=torch.float64))
    v = torch.tensor([-math.sin(math.pi / 6), math.cos(math.pi / 6)], dtype=torch.float64)
    assert torch.allclose(H @ v, 50.0 * v)  # the steep direction is the rotated y axis
    assert torch.allclose(torch.linalg.eigvalsh(S.saddle().hessian(torch.zeros(2))),
                          torch.tensor([-1.0, 1.0], dtype=torch.float64))


def test_run_equals_manual_gradient_descent():
    s = S.quadratic(4.0)
    lr = 0.1
    path = S.run(s, lambda p: optlib.SGD(p, lr=lr), [1.0, 1.0], 10)
    assert path.shape == (11, 2) and path.dtype == torch.float64
    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    for t in range(10):
        x = x - lr * torch.tensor([1.0, 4.0], dtype=torch.float64) * x
        assert torch.allclose(path[t + 1], x, rtol=1e-14)
    loss = S.loss_curve(s, path)
    assert loss.shape == (11,) and (loss.diff() < 0).all()


def test_run_with_schedule_and_divergence():
    s = S.quadratic(10.0)
    # lr above 2/L = 0.2 diverges; a schedule of 0 keeps the point still.
    still = S.run(s, lambda p: torch.optim.SGD(p, lr=1.0), [1.0, 1.0], 5, schedule=lambda t: 0.0)
    assert torch.equal(still, torch.ones(6, 2, dtype=torch.float64))
    blow = S.run(s, lambda p: torch.optim.SGD(p, lr=1e150), [1.0, 1.0], 20)
    assert torch.isnan(blow[-1]).all() and torch.isfinite(blow[0]).all()


def test_noisy_quadratic_is_deterministic_and_noisy():
    s = S.noisy_quadratic(noise=0.5, seed=3)
    make = lambda p: torch.optim.SGD(p, lr=0.05)
    a, b = S.run(s, make, [1.0, 1.0], 30), S.run(s, make, [1.0, 1.0], 30)
    assert torch.equal(a, b)
    clean = S.run(S.quadratic(10.0), make, [1.0, 1.0], 30)
    assert not torch.allclose(a, clean)


def test_lbfgs_closure_works():
    path = S.run(S.rosenbrock(), lambda p: torch.optim.LBFGS(p, lr=1, max_iter=20), [-1.0, 1.0], 5)
    assert torch.allclose(path[-1], torch.tensor([1.0, 1.0], dtype=torch.float64), atol=1e-4)


def test_plot_and_errors():
    s = S.rosenbrock()
    path = S.run(s, lambda p: optlib.Adam(p, lr=0.05), [-1.5, 2.0], 20)
    ax = S.plot_trajectories(s, {"Adam": path})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["Adam", "minimum"] and ax.get_title() == "Rosenbrock"
    S.plot_trajectories(S.saddle(), {"x": path})  # negative values: linear levels
    plt.close("all")
    with pytest.raises(ValueError, match="condition must be >= 1, got 0.5"):
        S.quadratic(0.5)
    with pytest.raises(ValueError, match=r"last dimension of 2, got shape \(3,\)"):
        s.f(torch.zeros(3))
    with pytest.raises(ValueError, match="steps must be a non-negative integer, got -1"):
        S.run(s, lambda p: optlib.SGD(p, lr=0.1), [0.0, 0.0], -1)
