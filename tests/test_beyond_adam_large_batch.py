"""LAMB and LARS against straightforward per-tensor transcriptions of the papers' algorithms."""

from __future__ import annotations

import pytest
import torch
from catalogue import SHAPES
from pairs import assert_close, make_params, run_pair

import optlib


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


def test_lamb_moves_every_tensor_by_lr_times_its_norm(float64):
    params = make_params()
    opt = optlib.LAMB(params, lr=0.01, weight_decay=0.1)
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.randn_like(p) * 1000.0        # the gradient's scale does not matter
    opt.step()
    for p, q in zip(params, before, strict=True):
        assert (p - q).norm().item() == pytest.approx(0.01 * q.norm().item(), rel=1e-12)


def test_trust_ratio_can_be_switched_off_per_group(float64):
    a, b = make_params(), make_params()
    lamb = optlib.LAMB([dict(params=a[:2]), dict(params=a[2:], trust_ratio=False)], lr=0.01)
    adam = torch.optim.Adam(b[2:], lr=0.01, eps=1e-6, foreach=False)
    lars = optlib.LARS([dict(params=a[:1], trust_ratio=False)], lr=0.1, momentum=0.0)
    for x, y in zip(a, b, strict=True):
        g = torch.randn_like(x)
        x.grad, y.grad = g.clone(), g.clone()
    before = a[0].detach().clone()
    lamb.step()
    adam.step()
    assert_close(a[2:], b[2:], rtol=1e-13, atol=1e-15)        # wd 0 and no ratio: Adam
    after_lamb = a[0].detach().clone()
    lars.step()
    torch.testing.assert_close(a[0].detach(), after_lamb - 0.1 * a[0].grad)   # plain SGD
    assert not torch.equal(before, after_lamb)


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
