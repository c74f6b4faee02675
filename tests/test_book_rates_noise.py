"""optlib.book.rates and optlib.book.noise: the measurements behind chapters 2 and 3, checked against
brute force (enumeration, simulation with optlib.SGD, dense Hessians)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import optlib
import optlib.book as book


def test_polyak_parameters_give_equal_rates_in_every_direction():
    eta, beta, rate = book.rates.polyak_parameters(1.0, 100.0)
    assert eta == pytest.approx(4 / 121)
    assert beta == pytest.approx((9 / 11) ** 2)
    assert rate == pytest.approx(9 / 11)
    for lam in (1.0, 10.0, 55.0, 100.0):
        assert book.rates.heavy_ball_rate(eta, beta, [lam]).item() == pytest.approx(rate, rel=1e-6)


@pytest.mark.parametrize("lr,beta", [(0.01, 0.0), (0.015, 0.5), (0.03, 0.9), (0.019, 0.3)])
def test_heavy_ball_grid_equals_optlib_sgd_and_rate_matches(lr, beta):
    eig = [1.0, 100.0]
    losses = book.rates.heavy_ball_grid(lr, beta, eig, [1.0, -0.5], steps=400)
    x = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    opt = optlib.SGD([x], lr=lr, momentum=beta)
    lam = torch.tensor(eig, dtype=torch.float64)
    for t in range(1, 401):
        opt.zero_grad()
        (0.5 * (lam * x * x).sum()).backward()
        opt.step()
        if t % 100 == 0:
            ref = 0.5 * (lam * x.detach() ** 2).sum()
            assert losses[t].item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-300)
    # the loss goes like rate^(2t) times an oscillating factor: compare window maxima
    measured = (losses[350:401].max() / losses[150:201].max()).item() ** (1 / 400)
    assert measured == pytest.approx(book.rates.heavy_ball_rate(lr, beta, eig).item(), abs=0.005)


@pytest.mark.parametrize("lr,beta", [(0.02, 0.6), (0.025, 0.6), (0.01, 0.9)])
def test_nesterov_rate_matches_optlib_sgd_nesterov(lr, beta):
    eig = [1.0, 50.0]
    lam = torch.tensor(eig, dtype=torch.float64)
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = optlib.SGD([x], lr=lr, momentum=beta, nesterov=True)
    norms = []
    for _ in range(400):
        opt.zero_grad()
        (0.5 * (lam * x * x).sum()).backward()
        opt.step()
        norms.append(x.detach().norm().item())
    measured = (max(norms[-50:]) / max(norms[-250:-200])) ** (1 / 200)
    assert measured == pytest.approx(book.rates.nesterov_rate(lr, beta, eig).item(), abs=0.01)


def test_nesterov_stability_boundary():
    beta = 0.6
    edge = 2 * (1 + beta) / (1 + 2 * beta)
    assert book.rates.nesterov_rate(0.99 * edge, beta, [1.0]).item() < 1
    assert book.rates.nesterov_rate(1.01 * edge, beta, [1.0]).item() > 1
    assert book.rates.heavy_ball_rate(0.99 * 2 * (1 + beta), beta, [1.0]).item() < 1
    assert book.rates.heavy_ball_rate(1.01 * 2 * (1 + beta), beta, [1.0]).item() > 1


def test_predicted_noise_equals_enumeration_without_replacement():
    gen = torch.Generator().manual_seed(0)
    G = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    g = G.mean(0)
    for b in (1, 2, 3, 7):
        subsets = list(itertools.combinations(range(7), b))
        exact = sum((G[list(s)].mean(0) - g).pow(2).sum().item() for s in subsets) / len(subsets)
        assert book.noise.predicted_noise(G, b) == pytest.approx(exact, rel=1e-12, abs=1e-15)
    # with replacement: sigma^2 / b, sigma^2 the summed variance of the coordinates
    sigma2 = G.var(0, correction=0).sum().item()
    assert book.noise.gradient_variance(G) == pytest.approx(sigma2, rel=1e-12)
    assert book.noise.predicted_noise(G, 3, replacement=True) == pytest.approx(sigma2 / 3)


def test_minibatch_noise_is_close_to_prediction_and_checks_batch_size():
    gen = torch.Generator().manual_seed(1)
    G = torch.randn(200, 5, generator=gen, dtype=torch.float64)
    measured = book.noise.minibatch_noise(G, [10], samples=2000, seed=0)[10]
    assert measured == pytest.approx(book.noise.predicted_noise(G, 10), rel=0.1)
    with pytest.raises(ValueError, match="batch size"):
        book.noise.minibatch_noise(G, [0])


def test_per_example_grads_mean_is_the_full_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    G = book.noise.per_example_grads(model, x, y)
    assert G.shape == (9, sum(p.numel() for p in model.parameters()))
    F.cross_entropy(model(x), y).backward()
    full = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(G.mean(0), full, rtol=1e-12, atol=1e-12)
    model.zero_grad()
    F.cross_entropy(model(x[4:5]), y[4:5]).backward()
    torch.testing.assert_close(G[4], torch.cat([p.grad.flatten() for p in model.parameters()]))


def test_sharpness_of_least_squares_is_the_top_hessian_eigenvalue():
    torch.manual_seed(0)
    x = torch.randn(50, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    y = torch.randn(50, 1, dtype=torch.float64)
    model = torch.nn.Linear(4, 1, bias=False).double()
    hessian = 2 * x.T @ x / 50                        # of mean squared error
    top = torch.linalg.eigvalsh(hessian)[-1].item()
    assert book.noise.sharpness(model, x, y, loss_fn=F.mse_loss, iters=200) == pytest.approx(top, rel=1e-6)


def test_steps_to_tolerance():
    losses = torch.tensor([[1.0, 1.0], [0.1, 2.0], [1e-3, 0.5], [1e-7, 0.4], [1e-9, float("nan")]])
    steps = book.rates.steps_to_tolerance(losses, 1e-2)
    assert steps[0].item() == 2
    assert math.isinf(steps[1].item())
    # dipping below and coming back up does not count
    bounce = torch.tensor([1.0, 1e-3, 1.0, 1e-3, 1e-4])
    assert book.rates.steps_to_tolerance(bounce, 1e-2).item() == 3


def test_heavy_ball_path_follows_the_rule():
    path = book.rates.heavy_ball_path(0.1, 0.9, curvature=2.0, start=1.0, steps=3)
    theta, b = 1.0, 0.0
    for t in range(1, 4):
        b = 0.9 * b + 2.0 * theta
        theta -= 0.1 * b
        assert path[t].item() == pytest.approx(theta)


def test_bad_arguments():
    with pytest.raises(ValueError, match="condition"):
        book.rates.quadratic_eigenvalues(0.5)
    with pytest.raises(ValueError, match="m="):
        book.rates.polyak_parameters(2.0, 1.0)
