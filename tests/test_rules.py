"""Rules that depend only on their inputs (optlib.optimizer): the base step hands every rule
its hyperparameters read-only, the learning rate as a number and the gradient already
negated under ``maximize``; a rule changes tensors only, never its group or the optimizer.
"""

from __future__ import annotations

import copy

import pytest
import torch
from catalogue import ENTRIES

import optlib
from optlib.optimizer import Hyper, decoupled_decay_, l2_decay, zeros_like_state


def _params(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def _grads(params, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


#: group entries that AdamWScheduleFree's step_values keeps in the group (as the authors'
#: package does), outside the rule
BOOKKEEPING = {"k", "weight_sum", "lr_max", "scheduled_lr"}


@pytest.mark.parametrize("name", ENTRIES)
def test_a_step_changes_no_group_entry_and_no_optimizer_attribute(name):
    entry = ENTRIES[name]
    params = _params(entry.shapes)
    opt = entry.make(params)
    for step in range(2):
        groups = [{k: copy.copy(v) for k, v in g.items() if k not in BOOKKEEPING}
                  for g in opt.param_groups]
        attributes = dict(vars(opt))
        _grads(params, step)
        opt.step()
        assert [{k: v for k, v in g.items() if k not in BOOKKEEPING}
                for g in opt.param_groups] == groups
        assert vars(opt).keys() == attributes.keys()
        assert all(vars(opt)[k] is v for k, v in attributes.items()
                   if k not in ("state", "param_groups"))


class Recording(optlib.SGD):
    """SGD that records what its rule is handed."""

    seen: list

    def update(self, group, p, g, s):
        self.seen.append((group, [x.clone() for x in g]))
        super().update(group, p, g, s)


def test_the_rule_gets_a_read_only_view_with_lr_a_number_and_maximize_applied():
    p = torch.nn.Parameter(torch.ones(3))
    opt = Recording([p], lr=torch.tensor(0.5), maximize=True)
    opt.seen = []
    p.grad = torch.tensor([1.0, -2.0, 3.0])
    opt.step()
    (group, (g,)), = opt.seen
    assert isinstance(group, Hyper)
    assert type(group["lr"]) is float and group["lr"] == 0.5      # the tensor's value
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)     # the group keeps its tensor
    torch.testing.assert_close(g, torch.tensor([-1.0, 2.0, -3.0]))  # maximize: negated
    torch.testing.assert_close(p.detach(), torch.tensor([1.5, 0.0, 2.5]))
    with pytest.raises(TypeError):
        group["lr"] = 1.0
    assert dict(group).keys() == opt.param_groups[0].keys()


def test_hyper_lays_the_step_values_over_the_group():
    group = {"lr": torch.tensor(0.1), "params": [], "betas": (0.9, 0.99)}
    hyper = Hyper(group, {"lr": 0.1, "bs": 64})
    assert hyper["lr"] == 0.1 and hyper["bs"] == 64 and hyper["betas"] == (0.9, 0.99)
    assert list(hyper) == ["lr", "params", "betas", "bs"] and len(hyper) == 4
    assert "bs" not in group


def test_sophia_batch_size_reaches_the_rule_not_the_optimizer():
    """``bs`` scales the Hessian term: two steps with different ``bs`` after a Hessian
    update differ, and the optimizer keeps no attribute for it."""
    results = []
    for bs in (1, 10_000):
        p = torch.nn.Parameter(torch.ones(4))
        opt = optlib.SophiaG([p], lr=0.1, rho=0.04, weight_decay=0.0)
        p.grad = torch.full((4,), 0.5)
        opt.update_hessian()
        opt.step(bs=bs)
        results.append(p.detach().clone())
        assert not hasattr(opt, "_bs")
    assert not torch.equal(*results)
    with pytest.raises(ValueError, match="Invalid bs value"):
        opt.step(bs=0)


def test_shared_helpers():
    x = torch.randn(3, 4).t()                       # non-contiguous: strides are kept
    z = zeros_like_state(x)
    assert z.stride() == x.stride() and not z.any()
    p, g = optlib.TensorList([torch.ones(2)]), optlib.TensorList([torch.full((2,), 3.0)])
    assert l2_decay(p, g, 0.0) is g
    torch.testing.assert_close(l2_decay(p, g, 0.5)[0], torch.full((2,), 3.5))
    decoupled_decay_(p, 0.1, 0.0)
    torch.testing.assert_close(p[0], torch.ones(2))
    decoupled_decay_(p, 0.1, 2.0)
    torch.testing.assert_close(p[0], torch.full((2,), 0.8))


def test_out_of_place_lerp_is_foreachs_bit_for_bit_and_leaves_its_operand():
    # TensorList.lerp copies and steps in place (torch 2.10's DTensor refuses the
    # out-of-place _foreach_lerp): Muon's Nesterov step must keep torch's numbers
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(5, 3, generator=gen, dtype=torch.float64).t(),
         torch.randn(7, generator=gen)]
    b = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in a]
    before = [t.clone() for t in a]
    out = optlib.TensorList(a).lerp(b, 0.95)
    for got, want, t, t0 in zip(out, torch._foreach_lerp(a, b, 0.95), a, before, strict=True):
        assert got.dtype == want.dtype and got.stride() == want.stride()
        assert torch.equal(got, want) and torch.equal(t, t0)
