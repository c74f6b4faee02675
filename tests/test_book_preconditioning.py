"""optlib.book.preconditioning: the matrix quadratic, its runs, and the preconditioners read
out of AdaGrad's, Adam's and Shampoo's state."""

import math

import pytest
import torch

import optlib
from optlib.book import preconditioning as P

F64 = torch.float64


@pytest.mark.parametrize("rotated", [True, False])
def test_problem_hessian_gradient_and_condition(rotated):
    prob = P.matrix_quadratic(m=5, n=3, condition=10.0, rotated=rotated, seed=1)
    assert prob.shape == (5, 3) and prob.rotated is rotated
    H = prob.hessian()
    assert H.shape == (15, 15)
    assert P.condition_number(H) == pytest.approx(1e4, rel=1e-9)   # κ(A)² κ(B)²
    # the Hessian of the loss, by autograd, in row-major vec
    W = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    exact = torch.autograd.functional.hessian(lambda w: prob.loss(w.reshape(5, 3)), W.reshape(-1))
    torch.testing.assert_close(H, exact, rtol=1e-12, atol=1e-10)
    Wg = W.clone().requires_grad_(True)
    prob.loss(Wg).backward()
    torch.testing.assert_close(prob.gradient(W), Wg.grad, rtol=1e-12, atol=1e-12)
    assert prob.loss(prob.W_star).item() == 0.0
    off_diagonal = (H - torch.diag(H.diagonal())).abs().max().item()
    assert (off_diagonal > 1e-3) is rotated      # aligned: the Hessian is diagonal


def test_problem_is_seeded_and_validated():
    a, b = P.matrix_quadratic(seed=3), P.matrix_quadratic(seed=3)
    assert torch.equal(a.A, b.A) and torch.equal(a.W_star, b.W_star)
    assert not torch.equal(a.W_star, P.matrix_quadratic(seed=4).W_star)
    for kwargs, word in (({"m": 0}, "m must"), ({"n": 2.5}, "n must"), ({"condition": 0.5}, "condition")):
        with pytest.raises(ValueError, match=word):
            P.matrix_quadratic(**kwargs)


def test_aligned_twin_is_the_same_problem_in_the_eigenbases():
    prob = P.matrix_quadratic(m=5, n=4, seed=1)
    twin = P.aligned_twin(prob)
    assert not twin.rotated
    assert torch.equal(twin.A, torch.diag(twin.A.diagonal()))
    _, Q = torch.linalg.eigh(prob.A)
    _, R = torch.linalg.eigh(prob.B)
    W = torch.randn(5, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(twin.loss(W), prob.loss(Q @ W @ R.T), rtol=1e-12, atol=0)
    # SGD is equivariant: the same losses on both; Adam is not
    sgd = lambda p: optlib.SGD(p, lr=1e-4, momentum=0.9)  # noqa: E731
    a, b = P.run(prob, sgd, 50), P.run(twin, sgd, 50)
    torch.testing.assert_close(torch.tensor(a.losses), torch.tensor(b.losses), rtol=1e-10, atol=0)
    adam = lambda p: optlib.Adam(p, lr=0.3)  # noqa: E731
    assert abs(P.run(prob, adam, 50).final / P.run(twin, adam, 50).final - 1) > 0.1


def test_run_records_relative_losses_and_stops_on_divergence():
    prob = P.matrix_quadratic(m=4, n=4, seed=0)
    out = P.run(prob, lambda p: optlib.SGD(p, lr=1e-4), steps=30)
    assert len(out.losses) == 31 and out.losses[0] == 1.0
    assert out.final == out.losses[-1] < 1.0 and not out.diverged
    # the same steps by hand
    W = torch.zeros(4, 4, dtype=F64)
    for _ in range(30):
        W = W - 1e-4 * prob.gradient(W)
    torch.testing.assert_close(out.W.detach(), W, rtol=0, atol=1e-14)
    bad = P.run(prob, lambda p: optlib.SGD(p, lr=10.0), steps=500)
    assert bad.diverged and bad.final == math.inf and len(bad.losses) < 501
    with pytest.raises(ValueError, match="steps"):
        P.run(prob, lambda p: optlib.SGD(p, lr=1e-3), steps=-1)


def test_best_lr_picks_the_lowest_final_loss():
    prob = P.matrix_quadratic(m=4, n=4, seed=0)
    family = lambda lr: lambda p: optlib.SGD(p, lr=lr)  # noqa: E731
    lrs = [1e-5, 1e-4, 1e-3]
    lr, best = P.best_lr(prob, family, lrs, steps=20)
    finals = {x: P.run(prob, family(x), 20).final for x in lrs}
    assert lr == min(finals, key=finals.get) == 1e-4 and best.final == finals[1e-4]
    with pytest.raises(ValueError, match="lrs"):
        P.best_lr(prob, family, [], steps=5)


def test_tuned_chooses_on_the_first_instance_and_reruns_on_the_others():
    family = lambda lr: lambda p: optlib.SGD(p, lr=lr)  # noqa: E731
    lrs = (1e-4, 1e-3, 1e-2)
    out = P.tuned(family, lrs, rotated=True, steps=20, seeds=(0, 3))
    lr, first = P.best_lr(P.matrix_quadratic(rotated=True, seed=0), family, lrs, 20)
    assert out.lr == lr and out.runs[0].losses == first.losses and len(out.runs) == 2
    again = P.run(P.matrix_quadratic(rotated=True, seed=3), family(lr), 20)
    assert out.runs[1].losses == again.losses != first.losses
    assert out.edge == {lrs[0]: "<", lrs[-1]: ">"}.get(lr, " ")
    lr_, edge, runs = P.tuned(family, lrs[:1], rotated=False, steps=5, seeds=(1,))
    assert (lr_, edge, len(runs)) == (lrs[0], "<", 1)       # a grid of one is at its edge
    assert P.tuned(family, (1e-9, 1e-4, 1e-3), True, 20, (0,)).edge == " "
    with pytest.raises(ValueError, match="seeds"):
        P.tuned(family, lrs, rotated=True, steps=5, seeds=())


def _last_step(make, steps=4):
    """Run ``steps`` steps and return the run, the last step's change and its gradient."""
    prob = P.matrix_quadratic(m=5, n=4, seed=2)
    out = P.run(prob, make, steps=steps - 1)
    g = prob.gradient(out.W.detach())
    before = out.W.detach().clone()
    out.W.grad = g
    out.optimizer.step()
    return out, (out.W.detach() - before).reshape(-1), g.reshape(-1)


def test_preconditioner_is_the_matrix_of_the_last_step():
    lr = 0.1
    run, delta, g = _last_step(lambda p: optlib.Adagrad(p, lr=lr))
    M = P.preconditioner(run.optimizer, run.W)
    torch.testing.assert_close(delta, -lr * M @ g, rtol=1e-12, atol=1e-15)
    run, delta, g = _last_step(lambda p: optlib.Shampoo(p, lr=lr, graft=None))
    M = P.preconditioner(run.optimizer, run.W)
    torch.testing.assert_close(delta, -lr * M @ g, rtol=1e-10, atol=1e-14)
    run, delta, _ = _last_step(lambda p: optlib.Adam(p, lr=lr))
    st = run.optimizer.state[run.W]
    m_hat = st["exp_avg"].reshape(-1) / (1 - 0.9 ** float(st["step"]))
    M = P.preconditioner(run.optimizer, run.W)
    torch.testing.assert_close(delta, -lr * M @ m_hat, rtol=1e-10, atol=1e-15)


def test_preconditioner_refuses_what_it_cannot_read():
    run = P.run(P.matrix_quadratic(m=3, n=3), lambda p: optlib.Shampoo(p, lr=0.1), steps=2)
    with pytest.raises(ValueError, match="graft=None"):
        P.preconditioner(run.optimizer, run.W)                 # Adam grafting
    run = P.run(P.matrix_quadratic(m=3, n=3), lambda p: optlib.SGD(p, lr=0.1), steps=2)
    with pytest.raises(ValueError, match="SGD"):
        P.preconditioner(run.optimizer, run.W)
    with pytest.raises(ValueError, match="not in the optimizer"):
        P.preconditioner(run.optimizer, torch.zeros(3, 3))


def test_condition_number_and_matrix_power():
    H = torch.diag(torch.tensor([1.0, 10.0, 100.0], dtype=F64))
    assert P.condition_number(H) == pytest.approx(100.0)
    assert P.condition_number(H, torch.linalg.inv(H)) == pytest.approx(1.0)
    S = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=F64)
    root = P.matrix_power(S, 0.5)
    torch.testing.assert_close(root @ root, S, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(P.matrix_power(S, -1.0), torch.linalg.inv(S), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="singular"):
        P.matrix_power(torch.zeros(2, 2, dtype=F64), -0.25)
    with pytest.raises(ValueError, match="square"):
        P.matrix_power(torch.zeros(2, 3, dtype=F64), 0.5)
