"""Shampoo and SOAP: float64 parity with pytorch-optimizer, the papers' equations by hand for
a few steps, heavyball's SOAP nearby. (The contract every optimizer keeps, resume, groups,
dtypes, bad hyperparameters, is in test_contract.py.)"""

from __future__ import annotations

import warnings

import pytest
import torch
from catalogue import ENTRIES
from pairs import assert_close, drive, make_params, run_pair

import optlib

#: Shapes both references treat as we do: matrices and a tensor of order 3.
TENSORS = ((4, 5), (6, 3), (2, 3, 4))
#: Every kind SOAP handles: a vector (Adam, or a full factor with precondition_1d), a
#: scalar, a tall matrix, a tensor of order 3.
SOAP_SHAPES = ((4, 5), (6,), (2, 3, 4), (7, 3), ())
NEVER = -1     # pairs.gradient: the index of the tensor that misses its gradient now and then


def run(make_ours, make_theirs, shapes, steps=25, no_grad=NEVER, seed=0):
    return run_pair(make_ours, make_theirs, steps, shapes, torch.float64, seed, no_grad=no_grad)


def displacement(a, start):
    return torch.cat([(x.detach() - y).flatten() for x, y in zip(a, start, strict=True)])


# ---- Shampoo against pytorch-optimizer ----------------------------------------------------

SHAMPOO_SETTINGS = [
    dict(),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.3, eps=1e-3),
    dict(lr=1.0, eps=1e-8, weight_decay=1e-3),
]


@pytest.mark.parametrize("kwargs", SHAMPOO_SETTINGS)
def test_shampoo_float64_parity_with_pytorch_optimizer(kwargs, float64):
    """graft=None, momentum 0 and roots every step: pytorch-optimizer's Shampoo (which
    takes its roots by SVD, ours by eigh). The second tensor misses its gradient on every
    fourth step: both skip it."""
    po = pytest.importorskip("pytorch_optimizer")
    theirs_kwargs = {("matrix_eps" if k == "eps" else k): v for k, v in kwargs.items()}
    a, b, ours, theirs = run(lambda ps: optlib.Shampoo(ps, graft=None, **kwargs),
                             lambda ps: po.Shampoo(ps, **theirs_kwargs), TENSORS, no_grad=1)
    assert_close(a, b, rtol=1e-12, atol=1e-13)
    start = make_params(TENSORS)
    assert displacement(a, start).abs().max() > 1e-3          # and they did move


def test_shampoo_differences_from_pytorch_optimizer_are_the_documented_ones(float64):
    """Its first f - 1 steps do not move the parameters (its roots start at zero); a vector
    gets a full n x n factor there (full-matrix AdaGrad), the diagonal here."""
    po = pytest.importorskip("pytorch_optimizer")
    params = make_params(((4, 5),))
    theirs = po.Shampoo(params, preconditioning_compute_steps=3)
    start = params[0].detach().clone()
    for _ in range(2):
        params[0].grad = torch.ones_like(params[0])
        theirs.step()
    assert torch.equal(params[0], start)
    vector = make_params(((6,),))
    vector[0].grad = torch.ones_like(vector[0])
    theirs = po.Shampoo(vector)
    theirs.step()
    assert theirs.state[vector[0]]["pre_cond_0"].shape == (6, 6)
    ours = optlib.Shampoo(make_params(((6,),)))
    ours.param_groups[0]["params"][0].grad = torch.ones(6)
    ours.step()
    assert [f.shape for f in ours.state[ours.param_groups[0]["params"][0]]["factors"]] == [(6,)]


# ---- Shampoo by hand: the paper's Algorithm 1, grafting and momentum ----------------------

def root_by_svd(h, root):
    """H^(-1/root) of a symmetric positive definite matrix, by SVD (not eigh)."""
    u, s, vh = torch.linalg.svd(h)
    return u @ torch.diag(s ** (-1.0 / root)) @ vh


@pytest.mark.parametrize("graft", ["adam", "sgd", None])
@pytest.mark.parametrize("frequency", [1, 2])
def test_shampoo_by_hand(graft, frequency, float64):
    """Three steps on a 3 x 4 matrix and a vector, transcribed from the equations:
    L = eps I + sum G G^T, R = eps I + sum G^T G, S = L^(-1/4) G R^(-1/4), roots refreshed
    at t = 1, 1 + f, ...; grafted to ||A|| (Adam's step without its first moment, or G);
    momentum b = mu b + D; L2 weight decay in G; a vector takes AdaGrad's diagonal."""
    lr, mu, wd, eps, beta2, eps_a = 0.1, 0.5, 0.01, 1e-3, 0.999, 1e-8
    gen = torch.Generator().manual_seed(3)
    W0, w0 = torch.randn(3, 4, generator=gen), torch.randn(4, generator=gen)
    grads = [(torch.randn(3, 4, generator=gen), torch.randn(4, generator=gen)) for _ in range(3)]
    W, w = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(w0.clone())
    opt = optlib.Shampoo([W, w], lr=lr, momentum=mu, weight_decay=wd, eps=eps, graft=graft,
                         precondition_frequency=frequency)
    # by hand
    X, x = W0.clone(), w0.clone()
    L, R, h = eps * torch.eye(3), eps * torch.eye(4), torch.full((4,), eps)
    v_X, v_x, b_X, b_x = torch.zeros(3, 4), torch.zeros(4), torch.zeros(3, 4), torch.zeros(4)
    for t, (gX, gx) in enumerate(grads, start=1):
        W.grad, w.grad = gX.clone(), gx.clone()
        opt.step()
        GX, Gx = gX + wd * X, gx + wd * x
        L, R, h = L + GX @ GX.T, R + GX.T @ GX, h + Gx * Gx
        if (t - 1) % frequency == 0:
            PL, PR, px = root_by_svd(L, 4), root_by_svd(R, 4), h ** -0.5
        S_X, S_x = PL @ GX @ PR, Gx * px
        v_X, v_x = beta2 * v_X + (1 - beta2) * GX**2, beta2 * v_x + (1 - beta2) * Gx**2
        if graft == "adam":
            A_X = GX / ((v_X / (1 - beta2**t)).sqrt() + eps_a)
            A_x = Gx / ((v_x / (1 - beta2**t)).sqrt() + eps_a)
        else:
            A_X, A_x = GX, Gx
        D_X = S_X if graft is None else S_X * A_X.norm() / S_X.norm()
        D_x = S_x if graft is None else S_x * A_x.norm() / S_x.norm()
        b_X, b_x = mu * b_X + D_X, mu * b_x + D_x
        X, x = X - lr * b_X, x - lr * b_x
        torch.testing.assert_close(W.detach(), X, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(w.detach(), x, rtol=1e-12, atol=1e-14)
    state = opt.state[W]
    torch.testing.assert_close(state["factors"][0], L)
    torch.testing.assert_close(state["factors"][1], R)
    assert ("exp_avg_sq" in state) == (graft == "adam")


def test_shampoo_roots_are_inverse_fourth_roots(float64):
    """P^4 H = I for both factors of a matrix; P^6 H = I for a tensor of order 3."""
    W = torch.nn.Parameter(torch.randn(5, 3))
    T = torch.nn.Parameter(torch.randn(2, 3, 4))
    opt = optlib.Shampoo([W, T])
    drive(opt, [W, T], 4, seed=0)
    for p, power in ((W, 4), (T, 6)):
        for H, P in zip(opt.state[p]["factors"], opt.state[p]["roots"], strict=True):
            eye = torch.eye(H.shape[0])
            torch.testing.assert_close(torch.linalg.matrix_power(P, power) @ H, eye,
                                       rtol=0, atol=1e-9)


def test_shampoo_grafted_step_has_the_graft_norm(float64):
    """With graft="sgd" and no momentum, every tensor's step has the norm lr * ||G||."""
    params = make_params(((4, 5), (6,), (2, 3, 4)))
    opt = optlib.Shampoo(params, lr=0.1, graft="sgd")
    for _ in range(3):
        before = [p.detach().clone() for p in params]
        grads = [torch.randn(p.shape) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for p, q, g in zip(params, before, grads, strict=True):
            assert (p - q).norm().item() == pytest.approx(0.1 * g.norm().item(), rel=1e-12)


# ---- SOAP against pytorch-optimizer (which follows the authors' code) ---------------------

SOAP_SETTINGS = [
    (dict(), {}),
    (dict(lr=0.01, precondition_frequency=3, shampoo_beta=0.9, weight_decay=0.1), {}),
    (dict(betas=(0.9, 0.99), precondition_frequency=2, max_precond_dim=4, precondition_1d=True),
     dict(max_precondition_dim=4)),
    (dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.0, precondition_frequency=1,
          correct_bias=False), {}),
]


def _pytorch_optimizer_soap(kwargs, renamed):
    po = pytest.importorskip("pytorch_optimizer")
    theirs = {k: v for k, v in kwargs.items() if k not in ("max_precond_dim",)}
    if theirs.get("shampoo_beta", -1) < 0:
        theirs["shampoo_beta"] = None                       # the authors' -1: beta2
    theirs.update(renamed)
    return lambda ps: po.SOAP(ps, **theirs)


@pytest.mark.parametrize("kwargs, renamed", SOAP_SETTINGS)
def test_soap_float64_parity_with_pytorch_optimizer(kwargs, renamed, float64):
    make_theirs = _pytorch_optimizer_soap(kwargs, renamed)
    a, b, ours, theirs = run(lambda ps: optlib.SOAP(ps, **kwargs), make_theirs, SOAP_SHAPES)
    assert_close(a, b, rtol=1e-13, atol=1e-15)
    for x, y in zip(a, b, strict=True):
        mine, ref = ours.state[x], theirs.state[y]
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(mine[key], ref[key], rtol=1e-13, atol=1e-15)
        for key in ("GG", "Q"):
            for u, w in zip(mine[key], ref[key], strict=True):
                if u is None:
                    assert isinstance(w, list) and not w       # the identity: no factor
                else:
                    torch.testing.assert_close(u, w, rtol=1e-13, atol=1e-15)
    assert displacement(a, make_params(SOAP_SHAPES)).abs().max() > 1e-3


def test_soap_per_tensor_first_step_like_the_authors(float64):
    """A tensor whose first gradient comes at a later step only starts its basis then
    (the authors' code; pytorch-optimizer would update it at once) and its bias
    corrections count its own updates."""
    a, b = make_params(((4, 5), (3, 2)))
    opt = optlib.SOAP([a, b], lr=0.1)
    a.grad = torch.ones_like(a)
    opt.step()
    opt.step()
    assert opt.state[a]["step"].item() == 1 and b not in opt.state
    before = b.detach().clone()
    b.grad = torch.ones_like(b)
    opt.step()
    assert torch.equal(b, before) and opt.state[b]["step"].item() == 0
    assert opt.state[a]["step"].item() == 2
    opt.step()
    assert not torch.equal(b, before) and opt.state[b]["step"].item() == 1


# ---- SOAP by hand: the paper's Algorithm (as the authors' code runs it) -------------------

def test_soap_by_hand(float64):
    """Four steps on a 3 x 4 matrix with the basis refreshed after every update (f = 1):
    step 1 starts L, R and their eigenbases only; then Adam on Q_L^T G Q_R, stepped back
    with Q_L (.) Q_R^T, decoupled decay after the step, L and R updated, and the basis
    refreshed by one power iteration + QR (in float32, as the authors), the second moment
    permuted with its columns."""
    lr, (b1, b2), bs, eps, wd = 0.05, (0.9, 0.95), 0.8, 1e-8, 0.1
    gen = torch.Generator().manual_seed(5)
    W0 = torch.randn(3, 4, generator=gen)
    grads = [torch.randn(3, 4, generator=gen) for _ in range(4)]
    W = torch.nn.Parameter(W0.clone())
    opt = optlib.SOAP([W], lr=lr, betas=(b1, b2), shampoo_beta=bs, eps=eps, weight_decay=wd,
                      precondition_frequency=1)

    def eigenvectors_descending(m):
        _, q = torch.linalg.eigh(m)
        return q.flip(1)

    def refreshed(m, q, v, dim):
        power = m @ q
        order = torch.argsort(torch.diag(q.T @ m @ q), descending=True)
        v = v.index_select(dim, order)
        return torch.linalg.qr(power[:, order].float())[0].double(), v

    X = W0.clone()
    for t, G in enumerate(grads):                  # t: updates before this step
        W.grad = G.clone()
        opt.step()
        if t == 0:
            L, R = (1 - bs) * G @ G.T, (1 - bs) * G.T @ G
            QL, QR = eigenvectors_descending(L), eigenvectors_descending(R)
            m, v = torch.zeros(3, 4), torch.zeros(3, 4)
            torch.testing.assert_close(W.detach(), W0, rtol=0, atol=0)    # no update
            continue
        G_rot = QL.T @ G @ QR
        m = b1 * m + (1 - b1) * G
        v = b2 * v + (1 - b2) * G_rot**2
        N = QL @ ((QL.T @ m @ QR) / (v.sqrt() + eps)) @ QR.T
        X = X - lr * (1 - b2**t) ** 0.5 / (1 - b1**t) * N
        X = X * (1 - lr * wd)
        L, R = bs * L + (1 - bs) * G @ G.T, bs * R + (1 - bs) * G.T @ G
        QL, v = refreshed(L, QL, v, 0)
        QR, v = refreshed(R, QR, v, 1)
        torch.testing.assert_close(W.detach(), X, rtol=1e-12, atol=1e-14)
    st = opt.state[W]
    torch.testing.assert_close(st["exp_avg_sq"], v, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(st["GG"][0], L)
    assert st["step"].item() == 3


def test_soap_without_factors_is_adam_skipping_its_first_step(float64):
    """A vector (no precondition_1d) takes Adam's steps, one step late. (With eps = 0:
    SOAP adds eps to sqrt(v) before the bias correction, Adam after it.)"""
    w = torch.nn.Parameter(torch.randn(5))
    twin = torch.nn.Parameter(w.detach().clone())
    opt = optlib.SOAP([w], lr=0.01, eps=0.0, weight_decay=0.0)
    adam = torch.optim.Adam([twin], lr=0.01, betas=(0.95, 0.95), eps=0.0)
    gen = torch.Generator().manual_seed(0)
    w.grad = torch.randn(5, generator=gen)
    opt.step()
    for _ in range(6):
        g = torch.randn(5, generator=gen)
        w.grad, twin.grad = g.clone(), g.clone()
        opt.step()
        adam.step()
    torch.testing.assert_close(w.detach(), twin.detach(), rtol=1e-13, atol=1e-15)


# ---- heavyball's SOAP: a different variant, close -----------------------------------------

def test_heavyball_soap_is_a_nearby_variant(float64, monkeypatch):
    """heavyball 3.2.1 with the same hyperparameters (and merge_dims off, float64 storage)
    ends within 25% of our displacement over 25 steps, not equal: the differences listed
    in SOAP's docstring (bias-corrected shampoo_beta, no skipped first step, ...)."""
    heavyball = pytest.importorskip("heavyball")
    monkeypatch.setattr(heavyball.utils, "compile_mode", None)    # eager: no 20 s of compiling
    shapes = ((4, 5), (7, 3))
    kw = dict(lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, eps=1e-8, weight_decay=0.01,
              precondition_frequency=10, max_precond_dim=10000)
    a, b, _, _ = run(lambda ps: optlib.SOAP(ps, **kw),
                     lambda ps: heavyball.SOAP(ps, merge_dims=False, storage_dtype="float64",
                                               compile_step=False, **kw), shapes)
    start = make_params(shapes)
    for x, y, z in zip(a, b, start, strict=True):
        gap = ((x - y).norm() / (x - z).norm()).item()
        assert 1e-6 < gap < 0.25


def test_defaults_are_the_documented_ones():
    shampoo = optlib.Shampoo(make_params()).defaults
    assert {k: shampoo[k] for k in ("lr", "momentum", "weight_decay", "precondition_frequency",
                                    "eps", "graft")} == dict(
        lr=1e-3, momentum=0.0, weight_decay=0.0, precondition_frequency=1, eps=1e-6, graft="adam")
    soap = optlib.SOAP(make_params()).defaults
    assert {k: soap[k] for k in ("lr", "betas", "shampoo_beta", "eps", "weight_decay",
                                 "precondition_frequency", "max_precond_dim")} == dict(
        lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
        precondition_frequency=10, max_precond_dim=10000)


def test_state_bytes_match_the_layout():
    """Shampoo (Adam graft, no momentum) on a 6 x 4 matrix and a 5-vector, float32: factors
    and roots 2 (36 + 16), v 24, counter; the vector's diagonal factor, root and v 3 x 5.
    SOAP: m, v (2 x 24), GG and Q 2 (36 + 16); the vector m, v only."""
    def one_step(opt, params):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        return optlib.state_bytes(opt)

    params = make_params(((6, 4), (5,)), dtype=torch.float32)
    assert one_step(optlib.Shampoo(params), params) == 4 * (2 * 52 + 24 + 15) + 2 * 4
    params = make_params(((6, 4), (5,)), dtype=torch.float32)
    assert one_step(optlib.SOAP(params), params) == 4 * (2 * 24 + 2 * 52 + 10) + 2 * 4


# ---- optlib.compile --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Shampoo", "SOAP"])
def test_compile_gives_the_eager_numbers(name):
    """Both rules choose per tensor, in Python, when to refresh their roots or basis: they
    do not trace into one graph, and optlib.compile falls back to the eager rule after one
    warning. Either way the numbers are the eager ones."""
    entry = ENTRIES[name]
    variant = next(iter(entry.variants.values()))

    def make(params):
        return entry.make(params, **variant)

    shapes = ((4, 5), (3,))
    compiled, eager = optlib.compile(make(make_params(shapes))), make(make_params(shapes))
    gen = torch.Generator().manual_seed(1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(5):
            grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
            for opt in (compiled, eager):
                for p, g in zip(opt.param_groups[0]["params"], grads, strict=True):
                    p.grad = g.clone()
                opt.step()
    ours = [w for w in record if "optlib.compile" in str(w.message)]
    assert len(ours) == (compiled.update.failure is not None) <= 1
    for a, b in zip(compiled.param_groups[0]["params"], eager.param_groups[0]["params"],
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# ---- the cost of a step --------------------------------------------------------------------

def test_matrix_step_times_rows():
    from optlib.book import performance as perf

    rows = perf.matrix_step_times(shape=(6, 4), count=2, reps=1, block=10)
    assert [r["optimizer"] for r in rows] == list(perf._matrix_optimizers())
    for r in rows:
        assert r["ms"] > 0 and r["first_ms"] > 0
    assert next(r for r in rows if r["optimizer"] == "AdamW")["vs_adamw"] == 1.0
    text = perf.format_matrix_step_times(rows)
    assert text.splitlines()[0].split() == ["optimizer", "ms/step", "vs", "AdamW", "first",
                                            "step", "ms"]
    assert len(text.splitlines()) == len(rows) + 1


def test_shampoo_graft_and_momentum_may_be_switched_on_later(float64):
    """A group that starts with graft=None and no momentum and switches both on (by hand,
    or by a scheduler that raises momentum) gets its buffers then, as zeros."""
    params = make_params(((4, 5), (3,)))
    opt = optlib.Shampoo(params, graft=None)
    drive(opt, params, 2, seed=0)
    assert "exp_avg_sq" not in opt.state[params[0]]
    opt.param_groups[0].update(graft="adam", momentum=0.5)
    drive(opt, params, 2, seed=1)
    for p in params:
        assert {"exp_avg_sq", "momentum_buffer"} <= set(opt.state[p])
        assert torch.isfinite(p).all()
