"""Adafactor and Muon against torch.optim's classes of the same name (torch 2.13)."""

from __future__ import annotations

import copy

import pytest
import torch
from catalogue import MATRICES, SHAPES
from pairs import assert_close, make_params, run_pair

import optlib

ADAFACTOR_SETTINGS = [
    dict(),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=1e-3, beta2_decay=-0.5, eps=(1e-8, 1e-2), d=2.0, maximize=True),
    dict(lr=0.05, eps=(1e-30, 0.0), weight_decay=0.01),
]


@pytest.mark.parametrize("kwargs", ADAFACTOR_SETTINGS)
def test_adafactor_float64_parity(kwargs, float64):
    shapes = SHAPES + ((3,), (1, 7), ())   # vectors, matrices, a 3-D tensor, a scalar
    a, b, _, _ = run_pair(lambda ps: optlib.Adafactor(ps, **kwargs),
                          lambda ps: torch.optim.Adafactor(ps, foreach=False, **kwargs),
                          steps=25, shapes=shapes)
    assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_adafactor_float32_parity_and_state_layout():
    a, b, ours, theirs = run_pair(lambda ps: optlib.Adafactor(ps, lr=0.05),
                                  lambda ps: torch.optim.Adafactor(ps, lr=0.05, foreach=False),
                                  steps=20, dtype=torch.float32)
    assert_close(a, b, rtol=1e-6, atol=1e-7)
    for x, y in zip(a, b, strict=True):
        s, t = ours.state[x], theirs.state[y]
        assert s.keys() == t.keys()
        for k in s:
            torch.testing.assert_close(s[k], t[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ours, theirs, shapes", [
    (lambda ps: optlib.Adafactor(ps, lr=0.05),
     lambda ps: torch.optim.Adafactor(ps, lr=0.05, foreach=False), SHAPES),
    (lambda ps: optlib.Muon(ps, lr=0.02), lambda ps: torch.optim.Muon(ps, lr=0.02), MATRICES),
], ids=["Adafactor", "Muon"])
def test_state_dict_loads_into_torch(ours, theirs, shapes, float64):
    a, b, mine, reference = run_pair(ours, theirs, steps=5, shapes=shapes)
    reference.load_state_dict(copy.deepcopy(mine.state_dict()))   # torch shares `step` tensors
    for x, y in zip(a, b, strict=True):
        x.grad = torch.ones_like(x)
        y.grad = torch.ones_like(y)
    mine.step()
    reference.step()
    assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_adafactor_state_is_factored():
    p = torch.nn.Parameter(torch.randn(30, 40))
    opt = optlib.Adafactor([p])
    p.grad = torch.randn(30, 40)
    opt.step()
    assert optlib.state_bytes(opt) == 4 * (30 + 40) + 4     # rows + columns + step


MUON_SETTINGS = [
    dict(),
    dict(lr=0.02, momentum=0.9, nesterov=False, weight_decay=0.0),
    dict(lr=0.05, weight_decay=0.01, adjust_lr_fn="match_rms_adamw", ns_steps=3),
    dict(lr=0.01, momentum=0.0, adjust_lr_fn="original", eps=1e-5,
         ns_coefficients=(2.0, -1.5, 0.5)),
]


@pytest.mark.parametrize("kwargs", MUON_SETTINGS)
def test_muon_float64_parity(kwargs, float64):
    a, b, _, _ = run_pair(lambda ps: optlib.Muon(ps, **kwargs),
                          lambda ps: torch.optim.Muon(ps, **kwargs), steps=25, shapes=MATRICES)
    assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_muon_float32_parity_and_state():
    a, b, ours, theirs = run_pair(lambda ps: optlib.Muon(ps, lr=0.02),
                                  lambda ps: torch.optim.Muon(ps, lr=0.02), steps=20,
                                  dtype=torch.float32, shapes=MATRICES)
    assert_close(a, b, rtol=1e-6, atol=1e-6)
    for x, y in zip(a, b, strict=True):
        assert ours.state[x].keys() == theirs.state[y].keys()


def test_tensor_lr_like_torch(float64):
    for ours, theirs, shapes in ((optlib.Muon, torch.optim.Muon, MATRICES),
                                 (optlib.Adafactor, torch.optim.Adafactor, SHAPES)):
        a, b, _, _ = run_pair(lambda ps, cls=ours: cls(ps, lr=torch.tensor(0.01)),
                              lambda ps, cls=theirs: cls(ps, lr=torch.tensor(0.01)),
                              steps=5, shapes=shapes)
        assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_newton_schulz_orthogonalises():
    g = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    o = optlib.matrix.zeropower_via_newtonschulz(g).float()
    s = torch.linalg.svdvals(o)
    assert 0.6 < s.min() and s.max() < 1.3                 # all singular values near 1
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 2


def test_muon_refuses_non_matrices_and_points_to_adamw():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters.*AdamW"):
        optlib.Muon([torch.nn.Parameter(torch.zeros(3))])
    opt = optlib.Muon(make_params(MATRICES))
    with pytest.raises(ValueError, match="AdamW"):
        opt.add_param_group(dict(params=[torch.nn.Parameter(torch.zeros(2, 2, 2))]))


class _TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 8)
        self.hidden = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.hidden2 = torch.nn.Linear(8, 8, bias=False)
        self.head = torch.nn.Linear(8, 11)

    def forward(self, x):
        h = self.norm(torch.relu(self.hidden(self.embed(x))))
        return self.head(torch.relu(self.hidden2(h)))


def test_muon_param_groups_split():
    model = _TinyLM()
    muon, adamw = optlib.muon_param_groups(model)
    assert {id(p) for p in muon} == {id(model.hidden.weight), id(model.hidden2.weight)}
    assert len(muon) + len(adamw) == len(list(model.parameters()))
    assert id(model.embed.weight) in {id(p) for p in adamw}
    assert id(model.head.weight) in {id(p) for p in adamw}


def test_muon_with_adamw_equals_two_optimizers(float64):
    torch.manual_seed(0)
    m1 = _TinyLM()
    m2 = _TinyLM()
    m2.load_state_dict(m1.state_dict())
    both = optlib.MuonWithAdamW(m1, muon_kwargs=dict(lr=0.02), adamw_kwargs=dict(lr=3e-3))
    muon, adamw = optlib.muon_param_groups(m2)
    separate = [torch.optim.Muon(muon, lr=0.02), torch.optim.AdamW(adamw, lr=3e-3)]
    x = torch.randint(0, 11, (5,), generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for model, opts in ((m1, [both]), (m2, separate)):
            for o in opts:
                o.zero_grad()
            model(x).logsumexp(-1).sum().backward()
            for o in opts:
                o.step()
    assert_close(list(m1.parameters()), list(m2.parameters()), rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="use_muon"):
        optlib.MuonWithAdamW([dict(params=list(m1.parameters()))])
    with pytest.raises(ValueError, match="Learning rate should be >= 0"):
        optlib.MuonWithAdamW(m1, muon_kwargs=dict(lr=-1.0))


def test_newton_schulz_leaves_a_bfloat16_input_unchanged():
    # G.bfloat16() is G itself for a bfloat16 G: the normalisation must not write into it
    # (for Muon with bfloat16 weights and nesterov=False, G is the momentum buffer)
    G = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)).bfloat16()
    before = G.clone()
    optlib.matrix.zeropower_via_newtonschulz(G)
    assert torch.equal(G, before)
    w = torch.nn.Parameter(torch.randn(8, 4).bfloat16())
    opt = optlib.Muon([w], lr=0.02, nesterov=False)
    w.grad = torch.randn(8, 4).bfloat16()
    opt.step()
    # b = lerp(0, g, 1 − β) on the first step, as torch.optim.Muon; not rescaled by the iteration
    assert torch.equal(opt.state[w]["momentum_buffer"], torch.zeros_like(w.grad).lerp_(w.grad, 0.05))
