"""Adam8bit: block-wise 8-bit moments that track full-precision Adam."""

from __future__ import annotations

import pytest
import torch
from test_beyond_adam_common import (
    assert_close,
    make_params,
    one_thread,  # noqa: F401  (autouse fixture)
    run_pair,
)

import optlib
from optlib.quantized import SIGNED, UNSIGNED, dequantize, quantize


def test_codebooks():
    for book in (SIGNED, UNSIGNED):
        assert book.numel() == 256 == book.unique().numel()
        assert torch.equal(book, book.sort().values)
        assert book.max() == 1.0 and 0.0 in book
    assert SIGNED.min() < -0.99 and UNSIGNED.min() == 0.0
    assert 1e-7 < UNSIGNED[1] < 1e-6                           # seven decades below the max


def test_quantization_is_blockwise_and_fine_near_the_block_max():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=gen, dtype=torch.float64)  # a ragged last block (1000 % 256)
    x[5] = 1e4                                                  # an outlier in block 0
    codes, absmax = quantize(x, SIGNED, 256)
    assert codes.dtype == torch.uint8 and codes.numel() == 1000 and absmax.numel() == 4
    y = dequantize(codes, absmax, SIGNED, 256, x)
    rel = (y - x).abs() / x.abs()
    assert rel[256:].median() < 0.03                            # other blocks are unaffected
    big = x[256:].abs() > 0.1 * x[256:].abs().max()
    assert rel[256:][big].max() < 0.07                          # top decade: fine resolution
    zeros, _ = quantize(torch.zeros(10), UNSIGNED, 4)
    assert torch.equal(dequantize(zeros, torch.zeros(3), UNSIGNED, 4, torch.zeros(10)),
                       torch.zeros(10))


@pytest.mark.parametrize("kwargs", [
    dict(lr=1e-2), dict(lr=0.1, weight_decay=0.1, maximize=True),
    dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, betas=(0.5, 0.9), eps=1e-3),
])
def test_small_tensors_keep_full_precision_adam(kwargs, float64):
    a, b, _, _ = run_pair(lambda ps: optlib.Adam8bit(ps, **kwargs),
                          lambda ps: torch.optim.Adam(ps, foreach=False, **kwargs), steps=20)
    assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_first_step_equals_adam_then_tracks_it(float64):
    a, b = make_params(((64, 40),)), make_params(((64, 40),))
    ours = optlib.Adam8bit(a, lr=1e-2, min_8bit_size=0, block_size=256)
    theirs = torch.optim.Adam(b, lr=1e-2, foreach=False)
    gen = torch.Generator().manual_seed(1)
    for step in range(10):
        g = torch.randn(64, 40, generator=gen)
        a[0].grad, b[0].grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        if step == 0:   # the step used the exact moments; rounding enters the stored state
            assert_close(a, b, rtol=1e-15, atol=1e-15)
    drift = (a[0] - b[0]).abs().max().item()
    assert 0 < drift < 0.1 * 10 * 1e-2                          # < 10% of the distance moved
    st = ours.state[a[0]]
    assert st["exp_avg_code"].dtype == torch.uint8 and st["exp_avg_absmax"].numel() == 10


def test_state_dict_keeps_codes_in_bytes():
    a = make_params(((64, 40),), dtype=torch.float32)
    opt = optlib.Adam8bit(a, min_8bit_size=0)
    a[0].grad = torch.randn_like(a[0])
    opt.step()
    resumed = optlib.Adam8bit([torch.nn.Parameter(a[0].detach().clone())], min_8bit_size=0)
    resumed.load_state_dict(opt.state_dict())
    st = next(iter(resumed.state.values()))
    assert st["exp_avg_code"].dtype == torch.uint8 and st["exp_avg_sq_absmax"].dtype == torch.float32
    assert optlib.state_bytes(resumed) == optlib.state_bytes(opt)


def _least_squares(seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(512, 256, generator=gen)
    Y = X @ (torch.randn(256, 256, generator=gen) / 16)
    W = [torch.nn.Parameter(torch.randn(256, 256, generator=gen) / 16) for _ in range(2)]
    return X, Y, W


def _train(cls, steps=100, lr=3e-3):
    X, Y, W = _least_squares()
    opt = cls(W, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (X @ W[0] @ W[1] - Y).square().mean()
        if _ == 0:
            start = loss.item()
        loss.backward()
        opt.step()
    final = (X @ W[0] @ W[1] - Y).square().mean().item()
    return start, final, optlib.state_bytes(opt) / sum(w.numel() for w in W)


def test_tracks_fp32_adam_on_least_squares_with_two_256x256_matrices():
    start, final, per_param = _train(optlib.Adam8bit)
    _, final_fp32, per_param_fp32 = _train(optlib.Adam)
    assert final < start / 5
    assert final < 3 * final_fp32
    assert per_param <= 2.3 and per_param_fp32 > 8


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1.0), "Invalid learning rate: -1.0"),
    (dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    (dict(block_size=0), "Invalid block_size value: 0"),
    (dict(min_8bit_size=-1), "Invalid min_8bit_size value: -1"),
])
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optlib.Adam8bit(make_params(), **kwargs)
