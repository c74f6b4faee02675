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
@pytest.mark.parametrize("method", ["mul_", "div_", "add_", "sub_", "mul", "div", "add"])
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


def _foreach_of(method, tensors, *args, **kwargs):
    """``torch._foreach_<method>`` on copies of ``tensors``: the result list (in place: the
    copies)."""
    copies = [x.clone() for x in tensors]
    result = getattr(torch, f"_foreach_{method}")(copies, *args, **kwargs)
    return copies if result is None else result


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_a_list_of_one_tensor_gives_the_bits_of_foreach(dtype):
    """A list of one CPU tensor calls the tensor's own operation (``tensorlist._alone``),
    which is what foreach's CPU loop calls: every method that does so gives the bits of the
    foreach call on that list, with numbers, PerTensor values and lists as arguments."""
    from optlib.tensorlist import PerTensor

    gen = torch.Generator().manual_seed(1)
    matrices = [torch.randn(40, 25, generator=gen, dtype=torch.float64).to(dtype),
                torch.tensor([0.0, -0.0, float("inf"), float("nan"), 1e-45, 3e38]).to(dtype),
                torch.tensor(0.7, dtype=dtype)]               # 0-dim: a step count, NAdam's product
    for x in matrices:
        y = torch.rand(x.shape, generator=gen, dtype=torch.float64).add_(0.5).to(dtype)
        z = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)
        cases = []
        for c in (0.9, -3.7e-5, 2, 1e300, -0.0, 1e-310):
            cases += [("mul_", "mul_", (c,), (c,), {}), ("div_", "div_", (c,), (c,), {}),
                      ("add_", "add_", (c,), (c,), {}), ("sub_", "sub_", (c,), (c,), {}),
                      ("mul", "mul", (c,), (c,), {}), ("div", "div", (c,), (c,), {}),
                      ("add", "add", (c,), (c,), {}),
                      ("mul_", "mul_", (PerTensor([c]),), ([c],), {}),
                      ("add_", "add_", (c,), (c * 0.5,), {"alpha": 0.5}, {}),
                      ("clamp_max_", "clamp_max_", (c,), (c,), {}),
                      ("addcmul_", "addcmul_", ([y], [z], c), ([y], [z], c), {}),
                      ("addcdiv_", "addcdiv_", ([y], [z], c), ([y], [z], c), {})]
        for w in (0.1, 0.999, 1 - 0.999):
            cases += [("lerp_", "lerp_", ([y], w), ([y], w), {}),
                      ("lerp", "lerp", ([y], w), ([y], w), {}),
                      ("add_", "add_", ([y],), ([y],), {"alpha": -w}),
                      ("sub_", "sub_", ([y],), ([y],), {"alpha": w}),
                      ("add", "add", ([y],), ([y],), {"alpha": w}),
                      ("addcdiv_", "addcdiv_", ([y], [z], PerTensor([w])), ([y], [z], [w]), {})]
        cases += [("mul_", "mul_", ([y],), ([y],), {}), ("div_", "div_", ([y],), ([y],), {}),
                  ("maximum_", "maximum_", ([z],), ([z],), {}),
                  ("maximum", "maximum", ([z],), ([z],), {})]
        cases += [(m, m, (), (), {}) for m in ("sqrt_", "reciprocal_", "sign_", "zero_", "sqrt",
                                               "reciprocal", "abs", "sign", "neg")]
        for method, theirs_method, ours_args, their_args, kwargs, *their_kwargs in cases:
            try:
                theirs = _foreach_of(theirs_method, [x], *their_args,
                                     **(their_kwargs[0] if their_kwargs else kwargs))
            except RuntimeError as refused:   # a number the dtype cannot hold: refused alike
                with pytest.raises(RuntimeError, match=str(refused)):
                    getattr(TensorList([x.clone()]), method)(*ours_args, **kwargs)
                continue
            ours = getattr(TensorList([x.clone()]), method)(*ours_args, **kwargs)
            assert len(ours) == 1 and ours[0].dtype == theirs[0].dtype
            assert torch.equal(_bits(ours[0]), _bits(theirs[0])), (method, ours_args, kwargs)
