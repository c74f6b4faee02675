"""optlib against the papers' equations, written out here one tensor at a time: LAMB
(You et al. 2020, Alg. 2), LARS (You, Gitman & Ginsburg 2017, Alg. 1), Shampoo (Gupta,
Koren & Singer 2018, Alg. 1, with grafting and momentum), SOAP (Vyas et al. 2024, Alg. 3,
as the authors' code runs it), and single steps worked out by hand (Adam, AdamW, Adamax,
NAdam as torch.optim's documentation states them; Lion, Chen et al. 2023; LARS's local lr).
"""

from __future__ import annotations

import pytest
import torch
from catalogue import SHAPES
from pairs import assert_close, run_pair

import optlib
import optlib.quantized

# ---- LAMB and LARS -----------------------------------------------------------------------


class PaperLAMB(torch.optim.Optimizer):
    """You et al. 2020, Alg. 2, one tensor at a time, as the paper states it."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                st["t"] += 1
                t, g = st["t"], p.grad
                st["m"] = b1 * st["m"] + (1 - b1) * g
                st["v"] = b2 * st["v"] + (1 - b2) * g * g
                r = (st["m"] / (1 - b1**t)) / ((st["v"] / (1 - b2**t)).sqrt() + group["eps"])
                u = r + group["weight_decay"] * p
                pn, un = p.norm(), u.norm()
                ratio = pn / un if pn > 0 and un > 0 else 1.0
                p -= group["lr"] * ratio * u


class PaperLARS(torch.optim.Optimizer):
    """You, Gitman & Ginsburg 2017, Alg. 1, one tensor at a time, as the paper states it."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001,
                 eps=1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                pn, gn = p.norm(), g.norm()
                local = (group["trust_coefficient"] * pn / (gn + wd * pn + group["eps"])
                         if pn > 0 and gn > 0 else 1.0)
                v = self.state[p].setdefault("v", torch.zeros_like(p))
                v.mul_(group["momentum"]).add_(group["lr"] * local * (g + wd * p))
                p -= v


LAMB_SETTINGS = [
    dict(),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=0.1, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.01),
    dict(lr=3e-3, betas=(0.0, 0.99), eps=1e-12, weight_decay=1.0),
]


LARS_SETTINGS = [
    dict(lr=0.1),
    dict(lr=1.0, momentum=0.0, weight_decay=1e-3),
    dict(lr=5.0, momentum=0.5, weight_decay=0.1, trust_coefficient=0.02, eps=0.0),
    dict(lr=0.3, momentum=0.99, weight_decay=5e-4, trust_coefficient=1e-3, eps=1e-3),
]


SHAPES_WITH_ZEROS = SHAPES + ((3,),)   # the last one starts at 0, like a bias


def _with_zero_bias(params):
    with torch.no_grad():
        params[-1].zero_()
    return params


@pytest.mark.parametrize("ours, paper, kwargs",
                         [(optlib.LAMB, PaperLAMB, kw) for kw in LAMB_SETTINGS]
                         + [(optlib.LARS, PaperLARS, kw) for kw in LARS_SETTINGS])
def test_lamb_and_lars_float64_equal_the_paper(ours, paper, kwargs, float64):
    a, b, _, _ = run_pair(lambda ps: ours(_with_zero_bias(ps), **kwargs),
                          lambda ps: paper(_with_zero_bias(ps), **kwargs),
                          steps=25, shapes=SHAPES_WITH_ZEROS)
    assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_lars_local_lr_golden_value(float64):
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))        # ‖θ‖ = 5
    opt = optlib.LARS([p], lr=2.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01,
                      eps=0.0)
    p.grad = torch.tensor([0.0, 2.0])                         # ‖g‖ = 2
    opt.step()
    local = 0.01 * 5 / (2 + 0.1 * 5)
    expected = torch.tensor([3.0, 4.0]) - 2.0 * local * (torch.tensor([0.0, 2.0])
                                                         + 0.1 * torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(p.detach(), expected, rtol=1e-15, atol=1e-15)


# ---- Shampoo and SOAP by hand ------------------------------------------------------------


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


# ---- single steps by hand ----------------------------------------------------------------


def test_golden_values_by_hand():
    """Scalar checks worked out by hand from torch.optim's documented update rules (θ0=1, g=0.5, lr=0.1)."""
    def one_step(cls, **kw):
        p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        opt = cls([p], **kw)
        p.grad = torch.tensor([0.5], dtype=torch.float64)
        opt.step()
        return p.item()

    assert one_step(optlib.Adam, lr=0.1) == pytest.approx(0.900000002, abs=1e-12)
    assert one_step(optlib.AdamW, lr=0.1, weight_decay=0.01) == pytest.approx(0.899000002, abs=1e-12)
    # Adamax: m = 0.05, u = 0.5 + 1e-8, θ = 1 − 0.1/(1 − 0.9) · 0.05/(0.5 + 1e-8)
    assert one_step(optlib.Adamax, lr=0.1) == pytest.approx(0.900000002, abs=1e-12)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the golden value assumes float64 step counters
    try:
        assert one_step(optlib.NAdam) == pytest.approx(0.9978870964855473, abs=1e-15)
    finally:
        torch.set_default_dtype(old)


def test_lion_golden_value_and_memory():
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = optlib.Lion([p], lr=1e-4, weight_decay=0.1)
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    assert p.item() == pytest.approx(0.99989, abs=1e-15)    # by hand: 1·(1 − ηλ) − η·sign(c)
    assert optlib.state_bytes(opt) == 8                       # one float64 moment
