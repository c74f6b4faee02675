"""optlib.book.surfaces: the functions, their minima and Hessians, run() and the plot."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import optlib  # noqa: E402
from optlib import book  # noqa: E402
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


def test_grid_covers_the_window_with_x_along_the_columns():
    s = S.rosenbrock()
    X, Y, Z = s.grid(5)
    assert X.shape == Y.shape == Z.shape == (5, 5) and Z.dtype == "float64"
    assert (X[0, 0], X[0, -1], Y[0, 0], Y[-1, 0]) == (*s.xlim, *s.ylim)
    assert Z[1, 3] == s.f(torch.tensor([X[1, 3], Y[1, 3]], dtype=torch.float64)).item()


def test_quadratic_eigen_and_rotation():
    s = S.quadratic(condition=25.0, angle=math.pi / 6, scale=2.0)
    assert s.hessian_eigenvalues == (2.0, 50.0)
    H = s.hessian(torch.tensor([0.3, -0.2]))
    assert torch.allclose(torch.linalg.eigvalsh(H), torch.tensor([2.0, 50.0], dtype=torch.float64))
    v = torch.tensor([-math.sin(math.pi / 6), math.cos(math.pi / 6)], dtype=torch.float64)
    assert torch.allclose(H @ v, 50.0 * v)  # the steep direction is the rotated y axis
    assert torch.allclose(torch.linalg.eigvalsh(S.saddle().hessian(torch.zeros(2))),
                          torch.tensor([-1.0, 1.0], dtype=torch.float64))


def test_run_is_descend_on_the_surface_with_its_noise():
    # the loop itself (schedule, divergence, hooks, noise) is tested in test_book_train.py
    s = S.noisy_quadratic(noise=0.5, seed=3)
    make = lambda p: torch.optim.SGD(p, lr=0.05)  # noqa: E731
    decay = lambda t: 0.9**t  # noqa: E731
    path = S.run(s, make, torch.tensor([1.0, 1.0]), 30, schedule=decay)    # a float32 start
    same = book.train.descend(make, [1.0, 1.0], 30, loss=s.f, noise=0.5, seed=3, schedule=decay)
    assert path.shape == (31, 2) and path.dtype == torch.float64
    assert torch.equal(path, same.path) and torch.equal(path, S.run(s, make, [1.0, 1.0], 30,
                                                                       schedule=decay))
    assert not torch.allclose(path, S.run(S.quadratic(10.0), make, [1.0, 1.0], 30, schedule=decay))
    loss = S.loss_curve(s, path)
    assert loss.shape == (31,) and loss.tolist() == pytest.approx(same.loss, rel=1e-15)


def test_run_takes_a_rule_with_its_hyper():
    # a from-scratch rule on the surface is descend's rule on it, as a factory is
    def gd(params, grads, state, lr):
        params[0].sub_(lr * grads[0])

    s = S.rosenbrock()
    path = S.run(s, gd, [-1.5, 2.0], 20, hyper={"lr": 1e-3})
    same = S.run(s, lambda p: torch.optim.SGD(p, lr=1e-3), [-1.5, 2.0], 20)
    assert path.shape == (21, 2) and torch.allclose(path, same, rtol=0, atol=1e-15)
    assert torch.equal(path, book.train.descend(gd, [-1.5, 2.0], 20, loss=s.f,
                                                hyper={"lr": 1e-3}).path)


def test_diagonal_quadratic_is_half_the_weighted_squares():
    s = S.diagonal_quadratic((100.0, 1.0))
    H = torch.tensor([100.0, 1.0], dtype=torch.float64)
    xy = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.f(xy), torch.stack([0.5 * (H * p**2).sum() for p in xy]))
    assert torch.equal(s.hessian(torch.tensor([0.3, -0.2])), torch.diag(H))
    assert s.hessian_eigenvalues == (1.0, 100.0) and s.name == "½(100x² + 1y²)"
    # gradient descent is stable below 2 / max(h) and diverges above it
    assert S.loss_curve(s, S.run(s, lambda p: optlib.SGD(p, lr=0.019), [1.0, 1.0], 200))[-1] < 0.1
    assert S.loss_curve(s, S.run(s, lambda p: optlib.SGD(p, lr=0.021), [1.0, 1.0], 200))[-1] > 1e3
    with pytest.raises(ValueError, match="curvatures"):
        S.diagonal_quadratic((1.0, 0.0))


def test_exact_hessian_hook_feeds_sophia_the_true_diagonal():
    H = torch.tensor([100.0, 1.0], dtype=torch.float64)
    s = S.diagonal_quadratic(H)
    make = lambda p: optlib.SophiaG(p, lr=0.05, betas=(0.965, 0.99), weight_decay=0.0)  # noqa: E731
    hessians = []
    path = S.run(s, make, [0.7, 1.3], 25, hooks=[
        lambda step: hessians.append(step.optimizer.state[step.x]["hessian"].clone()),
        S.ExactHessian(H, every=10)])
    # by hand: step with bs = 1; after steps 1, 11, 21 refresh h with the exact diagonal
    xy = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    opt, h = make([xy]), torch.zeros(2, dtype=torch.float64)
    for t in range(25):
        opt.zero_grad()
        s.f(xy).backward()
        opt.step(bs=1)
        assert torch.equal(xy.detach(), path[t + 1])
        assert torch.equal(hessians[t], opt.state[xy]["hessian"])
        if t % 10 == 0:
            h = 0.99 * h + 0.01 * H                     # update_hessian: β₂h + (1 − β₂)g²
            g, xy.grad = xy.grad, H.sqrt()
            opt.update_hessian()
            torch.testing.assert_close(opt.state[xy]["hessian"], h, rtol=1e-14, atol=0)
            xy.grad = g
    assert torch.equal(hessians[-1], opt.state[xy]["hessian"])   # refreshed 3 times
    for bad, word in ((dict(diagonal=(-1.0, 1.0)), "diagonal"), (dict(diagonal=H, every=0), "every")):
        with pytest.raises(ValueError, match=word):
            S.ExactHessian(**bad)


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
