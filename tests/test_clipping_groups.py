"""clip_grad_norm_ against torch's; param_groups on a model with every kind of layer; state_bytes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import optlib


def _params_with_grads(seed=0, scale=1.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in ((3, 4), (7,), (2, 2, 2))]
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=gen, dtype=dtype)
    params.append(nn.Parameter(torch.zeros(2, dtype=dtype)))  # no gradient: ignored
    return params


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])
def test_clip_grad_norm_equals_torch(norm_type, max_norm):
    ours, theirs = _params_with_grads(), _params_with_grads()
    n1 = optlib.clip_grad_norm_(ours, max_norm, norm_type)
    n2 = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert torch.equal(n1, n2)
    for a, b in zip(ours, theirs, strict=True):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)


def test_clip_grad_norm_returns_the_norm_before_clipping():
    params = _params_with_grads(scale=10.0)
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
    returned = optlib.clip_grad_norm_(params, 1.0)
    torch.testing.assert_close(returned, total)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
    assert after == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_nonfinite():
    ours, theirs = _params_with_grads(), _params_with_grads()
    ours[0].grad[0, 0] = theirs[0].grad[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        optlib.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    n1 = optlib.clip_grad_norm_(ours, 1.0)
    n2 = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert n1.isnan() and n2.isnan()
    assert all(torch.equal(a.grad, b.grad, ) or (a.grad.isnan().all() and b.grad.isnan().all())
               for a, b in zip(ours[:3], theirs[:3], strict=True))


def test_clip_grad_norm_single_tensor_and_empty():
    p = nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 3.0)
    assert optlib.clip_grad_norm_(p, 1.0).item() == pytest.approx(6.0)
    assert optlib.clip_grad_norm_([nn.Parameter(torch.ones(2))], 1.0).item() == 0.0


class EveryLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, idx):
        h = self.emb(idx).transpose(1, 2)
        h = self.bn(self.conv(h)).transpose(1, 2)
        return self.head(self.ln(h))


def test_param_groups_decays_matrices_only():
    model = EveryLayer()
    groups = optlib.param_groups(model, weight_decay=0.1, lr=3e-4)
    decay, no_decay = groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"emb.weight", "conv.weight", "head.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {
        "conv.bias", "bn.weight", "bn.bias", "ln.weight", "ln.bias", "head.bias"}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["lr"] == no_decay["lr"] == 3e-4
    opt = optlib.AdamW(groups)
    model(torch.randint(0, 10, (2, 5))).sum().backward()
    opt.step()  # usable as is


def test_param_groups_custom_rule_and_validation():
    model = EveryLayer()
    groups = optlib.param_groups(model, 0.1, no_decay=lambda name, p: name.startswith("emb") or p.ndim < 2)
    assert model.emb.weight in groups[1]["params"]
    with pytest.raises(ValueError, match="Invalid weight_decay value: -1"):
        optlib.param_groups(model, -1)


@pytest.mark.parametrize(("make", "per_param"), [
    (lambda p: optlib.SGD(p, lr=0.1), 0),
    (lambda p: optlib.SGD(p, lr=0.1, momentum=0.9), 4),
    (lambda p: optlib.Adam(p), 8),
    (lambda p: optlib.Adam(p, amsgrad=True), 12),
    (lambda p: optlib.AdamW(p), 8),
    (lambda p: optlib.RMSprop(p, centered=True, momentum=0.9), 12),
    (lambda p: optlib.Adagrad(p), 4),
])
def test_state_bytes_counts_state_tensors(make, per_param):
    params = [nn.Parameter(torch.randn(100, 10)), nn.Parameter(torch.randn(1000))]
    opt = make(params)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    counters = sum(v.numel() * v.element_size() for st in opt.state.values() for k, v in st.items()
                   if torch.is_tensor(v) and v.dim() == 0)
    assert optlib.state_bytes(opt) - counters == per_param * 2000
