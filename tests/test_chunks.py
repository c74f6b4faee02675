"""The eager step runs a group's rule over chunks of its tensors (``optlib.optimizer.eager_chunks``):
the same numbers, bit for bit, as one call over the whole group."""

from __future__ import annotations

import copy

import pytest
import torch
from catalogue import ENTRIES
from pairs import assert_equal

import optlib
from optlib.optimizer import eager_chunks

# every catalogue entry with its own hyperparameters and with each variant
SETTINGS = [pytest.param(entry, overrides, id=ident)
            for entry in ENTRIES.values() for ident, overrides in entry.settings()]


def _optimizers(opt):
    """The optlib optimizers inside ``opt`` (MuonWithAdamW holds two)."""
    inner = [v for v in vars(opt).values() if isinstance(v, optlib.Optimizer)]
    return [opt, *inner]


@pytest.mark.parametrize(("entry", "overrides"), SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_step_gives_the_whole_group_numbers(entry, overrides, dtype):
    """Every optimizer of the catalogue and every variant, in float32 and float64: one call
    per group (limit None) against every tensor a chunk of its own (limit 1 byte) and
    chunks of a few tensors (limit 90 bytes: in float32 the tensors of the catalogue's
    shapes, 24 to 100 bytes, then make chunks of one and two), over seven steps in which
    one tensor has no gradient every third step (step counts then differ from tensor to tensor) and with a
    state_dict round trip after the fourth; parameters and state equal bit for bit."""
    shapes = list(entry.shapes) * 2
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    runs = []
    for limit in (None, 1, 90):
        params = [torch.nn.Parameter(x.clone()) for x in start]
        opt = entry.make(params, **overrides)
        for o in _optimizers(opt):
            o.eager_chunk_bytes = limit if o.eager_chunk_bytes is not None else None
        runs.append((opt, params))
    gen = torch.Generator().manual_seed(1)
    for step in range(7):
        grads = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
        for opt, params in runs:
            if step == 4:
                opt.load_state_dict(copy.deepcopy(opt.state_dict()))
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                p.grad = None if (i == 1 and step % 3 == 2) else g.clone()
            opt.step()
    (whole, a), *chunked = runs
    for opt, b in chunked:
        assert_equal(a, b)
        ours, theirs = whole.state_dict()["state"], opt.state_dict()["state"]
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert _same(ours[key], theirs[key]), key


def _same(x, y) -> bool:
    """Equal bit for bit, through dicts and lists of tensors (Shampoo keeps lists)."""
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple):
        return len(x) == len(y) and all(map(_same, x, y))
    return x == y


def test_eager_chunks_cut_by_bytes():
    """A tensor at the limit alone; smaller ones together up to four times the limit; the
    whole group (None) when that makes one chunk or the limit is None."""
    t = [torch.zeros(n) for n in (10, 10, 300, 10, 10, 10)]     # 40, 40, 1200, 40 ... bytes
    assert eager_chunks(t, None) == [None]
    assert eager_chunks(t, 10_000) == [None]
    assert eager_chunks(t, 1000) == [slice(0, 2), slice(2, 3), slice(3, 6)]
    assert eager_chunks(t, 41) == [slice(0, 2), slice(2, 3), slice(3, 6)]
    assert eager_chunks(t[3:] * 2, 41) == [slice(0, 5), slice(5, 6)]      # closed at 164
    assert eager_chunks(t, 1) == [slice(i, i + 1) for i in range(6)]
    assert eager_chunks(t[:1], 1) == [None]
    assert eager_chunks([], 1) == [None]
