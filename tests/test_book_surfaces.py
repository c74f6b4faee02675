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


def test_run_calls_hooks_after_each_step_with_their_step_kwargs():
    seen = []

    class SGDWithBatchSize(optlib.SGD):
        def step(self, closure=None, bs=None):
            self.bs = bs
            return super().step(closure)

    class Hook:
        def step_kwargs(self):
            return {"bs": 7}

        def __call__(self, t, xy, optimizer):
            seen.append((t, optimizer.bs, xy.grad.clone(), xy.detach().clone()))

    s = S.quadratic(4.0)
    path = S.run(s, lambda p: SGDWithBatchSize(p, lr=0.1), [1.0, 1.0], 3, hooks=[Hook()])
    assert [t for t, *_ in seen] == [1, 2, 3] and all(bs == 7 for _, bs, *_ in seen)
    for t, _, grad, point in seen:                       # the step's gradient, the new point
        assert torch.equal(point, path[t]) and torch.equal(grad, s.gradient(path[t - 1]))


def test_exact_hessian_hook_feeds_sophia_the_true_diagonal():
    H = torch.tensor([100.0, 1.0], dtype=torch.float64)
    s = S.diagonal_quadratic(H)
    make = lambda p: optlib.SophiaG(p, lr=0.05, betas=(0.965, 0.99), weight_decay=0.0)  # noqa: E731
    hessians = []
    path = S.run(s, make, [0.7, 1.3], 25, hooks=[
        lambda t, xy, opt: hessians.append(opt.state[xy]["hessian"].clone()),
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
