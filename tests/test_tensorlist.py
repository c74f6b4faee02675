"""TensorList hands foreach a number as a 0-dim tensor where that gives the same bits
(``optlib.tensorlist._scalar``): every method, dtype and kind of tensor gives the bits of
the foreach call with a Python number, as before."""

from __future__ import annotations

import pytest
import torch

from optlib.tensorlist import TensorList

NUMBERS = (0.9, 0.999, 1 - 0.999, 1e-8, -3.7e-5, 2, 1 / 3, 1e300, -0.0, 7.123456789012345,
           1e-310)


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["mul_", "div_", "add_", "mul", "div", "add"])
def test_a_number_gives_the_bits_of_foreach_with_a_number(dtype, method):
    """Each method with a number against ``torch._foreach_*`` with the same Python number:
    the same dtype and bits (NaN payloads, signed zeros, overflow and subnormals
    included), on matrices and vectors, and on 0-dim tensors (step counts), alone and
    mixed with the others."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, generator=gen, dtype=torch.float64).mul(10.0 ** e).to(dtype)
          for n, e in (((7,), -30), ((40, 25), 0), ((33,), 25))]
    xs.append(torch.tensor([0.0, -0.0, float("inf"), float("nan"), 1e-45, 3e38]).to(dtype))
    scalars = [torch.tensor(v, dtype=dtype) for v in (1.0, 0.1, 7.0)]
    for tensors in (xs, scalars, xs + scalars):
        for c in NUMBERS:
            ours = getattr(TensorList(x.clone() for x in tensors), method)(c)
            theirs = [x.clone() for x in tensors]
            result = getattr(torch, f"_foreach_{method}")(theirs, c)
            theirs = theirs if result is None else result
            for x, y in zip(ours, theirs, strict=True):
                assert x.dtype == y.dtype
                assert torch.equal(_bits(x), _bits(y)), (c, x, y)


def test_alpha_and_integer_lists_are_unchanged():
    """add_ with alpha multiplies the number first, as before; integer tensors keep the
    number (no 0-dim float tensor that would change their dtype)."""
    x = TensorList([torch.ones(3)])
    x.add_(2.0, alpha=0.5)
    assert torch.equal(x[0], torch.full((3,), 2.0))
    n = TensorList([torch.arange(3)])
    assert n.mul(2)[0].dtype == torch.int64
