"""Adam8bit's block-wise 8-bit moments (optlib/quantized.py): the codebooks and the
quantizer against their definitions, the chunked step against the rule written per
tensor, resume across chunks, and the accuracy against float32 Adam, including the
failures of 8-bit state that Adam8bit avoids. (bitsandbytes: test_vs_packages.py.)
"""

from __future__ import annotations

import pytest
import torch
from pairs import gradient, make_params

import optlib
import optlib.quantized
from optlib.quantized import SIGNED, UNSIGNED, boundaries, dequantize, quantize


def test_codebooks():
    for book in (SIGNED, UNSIGNED):
        assert book.numel() == 256 == book.unique().numel()
        assert torch.equal(book, book.sort().values)
        assert book.max() == 1.0 and 0.0 in book
    assert SIGNED.min() < -0.99 and UNSIGNED.min() == 0.0
    assert 1e-7 < UNSIGNED[1] < 1e-6                           # seven decades below the max


@pytest.mark.parametrize("book", [SIGNED, UNSIGNED], ids=["signed", "unsigned"])
def test_boundaries_are_the_midpoints_to_12_significant_bits(book):
    b = boundaries(book)
    mids = (book[1:].double() + book[:-1].double()) / 2
    assert ((b.double() - mids).abs() <= 2.0**-12 * mids.abs()).all()
    assert ((b.view(torch.int32) & 0xFFF) == 0).all()           # on an edge between two keys
    assert (b[1:] > b[:-1]).all()


def _scaled_values(book, gen):
    """Values in [-1, 1] (or [0, 1]) on every scale the map covers and below it, every
    boundary and its two float32 neighbours, zeros: blocks of 256, each holding a 1.0 so
    that value / absmax is the value itself."""
    x = torch.randn(60 * 255, generator=gen).clamp(-1, 1) * 10 ** (-9 * torch.rand(60 * 255, generator=gen))
    b = boundaries(book)
    edges = torch.cat([b, torch.nextafter(b, b + 1), torch.nextafter(b, b - 1), torch.zeros(8)])
    x = torch.cat([x, edges])
    if book.min() >= 0:
        x = x.abs()
    x = torch.nn.functional.pad(x, (0, -x.numel() % 255)).view(-1, 255)
    return torch.cat([torch.ones(x.shape[0], 1), x], dim=1).view(-1)


@pytest.mark.parametrize("book, divisor", [(SIGNED, False), (UNSIGNED, False), (UNSIGNED, True)],
                         ids=["signed", "unsigned", "unsigned-divisor"])
def test_quantizer_matches_its_definition(book, divisor):
    s = _scaled_values(book, torch.Generator().manual_seed(0))
    codes, absmax = quantize(s, book, 256, divisor=divisor)
    assert codes.dtype == torch.uint8 and (absmax == 1).all()
    # The definition: the number of boundaries at or below s (below, for negative s) ...
    b = boundaries(book)
    expected = torch.where(s >= 0, torch.bucketize(s, b, right=True), torch.bucketize(s, b))
    zero = int(book.abs().argmin())
    if divisor:                                                  # ... never 0 for s > 0
        expected[(expected == zero) & (s > 0)] = zero + 1
    assert torch.equal(codes.long(), expected)
    # ... which is the nearest entry, but for values within 2^-12 of a midpoint.
    nearest = (s[:, None].double() - book.double()).abs().argmin(dim=1)
    mids = (book[1:].double() + book[:-1].double()) / 2
    near_a_midpoint = ((s[:, None].double() - mids).abs() <= 2.0**-12 * mids.abs()).any(dim=1)
    differs = codes.long() != nearest
    if divisor:
        differs &= ~((nearest == zero) & (s > 0))
    assert not (differs & ~near_a_midpoint).any()
    back = dequantize(codes, absmax, book, 256, s)
    error, least = (back - s).abs(), (s - book[nearest]).abs()
    if divisor:
        least = torch.where((nearest == zero) & (s > 0), book[zero + 1] - s, least)
    assert (error <= least + 2.0**-11 * s.abs()).all()          # boundaries moved by <= 2^-12


def test_divisor_never_stores_a_positive_value_as_zero():
    x = torch.tensor([1.0, 1e-9, 1e-30, 0.0, 1e-7, 0.5])
    plain, _ = quantize(x, UNSIGNED, 256)
    kept, absmax = quantize(x, UNSIGNED, 256, divisor=True)
    assert plain.tolist()[1:5] == [0, 0, 0, 0]                  # the nearest entry is 0
    assert kept.tolist()[1:5] == [1, 1, 0, 1] and kept[5] == plain[5]
    assert dequantize(kept, absmax, UNSIGNED, 256, x)[1] == UNSIGNED[1]


def test_non_finite_values_stay_in_their_place():
    x = torch.randn(600, generator=torch.Generator().manual_seed(0))
    x[3], x[300], x[301] = float("nan"), float("inf"), -float("inf")
    finite = torch.where(x.isfinite(), x, 0)
    codes, absmax = quantize(x, SIGNED, 256)
    ref_codes, ref_absmax = quantize(finite, SIGNED, 256)
    assert torch.equal(absmax, ref_absmax) and torch.equal(codes, ref_codes)   # stored as 0
    v = x.abs()
    codes, absmax = quantize(v, UNSIGNED, 256, divisor=True)
    assert torch.equal(absmax, quantize(finite.abs(), UNSIGNED, 256)[1])
    back = dequantize(codes, absmax, UNSIGNED, 256, v)
    assert back[3] == absmax[0] and back[300] == back[301] == absmax[1]        # the largest


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


# ---- the chunked step is the rule written per tensor -------------------------------------


def _definition_step(x, g, st, t, lr, betas, eps, weight_decay, block):
    """One step of one 8-bit tensor, as the docstring defines it: dequantize, Adam's step
    (torch's single-tensor operations, in torch's order), quantize."""
    (beta1, beta2), x_ = betas, x.detach()
    m = dequantize(st["exp_avg_code"], st["exp_avg_absmax"], SIGNED, block, x_)
    v = dequantize(st["exp_avg_sq_code"], st["exp_avg_sq_absmax"], UNSIGNED, block, x_)
    g = g.add(x_, alpha=weight_decay)
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    x_.addcdiv_(m, v.sqrt().div_(bc2**0.5).add_(eps), value=-(lr / bc1))
    st["exp_avg_code"], st["exp_avg_absmax"] = quantize(m, SIGNED, block)
    st["exp_avg_sq_code"], st["exp_avg_sq_absmax"] = quantize(v, UNSIGNED, block, divisor=True)


@pytest.mark.parametrize("block", [8, 256])
def test_chunked_step_equals_the_definition(block, monkeypatch, float64):
    """Chunks of 3 blocks: big tensors cross chunks, small ones share them, last blocks are
    short; the second tensor misses its gradient now and then (its step count lags)."""
    monkeypatch.setattr(optlib.quantized, "CHUNK", 3 * block)
    shapes = ((3, 7), (50,), (4, 4, 4), (2 * block,), (7 * block + 5,), (1,))
    ours = make_params(shapes)
    theirs = [x.detach().clone() for x in ours]
    kwargs = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    opt = optlib.Adam8bit(ours, min_8bit_size=2, block_size=block, **kwargs)
    states = []
    for x in theirs:
        st = {}
        for key, book in (("exp_avg", SIGNED), ("exp_avg_sq", UNSIGNED)):
            st[key + "_code"], st[key + "_absmax"] = quantize(torch.zeros_like(x), book, block)
        states.append(st)
    steps = [0] * len(shapes)
    gen = torch.Generator().manual_seed(0)
    for step in range(12):
        grads = [gradient(step, i, x, gen) for i, x in enumerate(ours)]
        for x, g in zip(ours, grads, strict=True):
            x.grad = g
        opt.step()
        for i, (x, g) in enumerate(zip(theirs, grads, strict=True)):
            if g is not None and x.numel() >= 2:
                steps[i] += 1
                _definition_step(x, g, states[i], steps[i], block=block, **kwargs)
    for x, y, st in zip(ours[:-1], theirs[:-1], states[:-1], strict=True):
        assert torch.equal(x.detach(), y)
        for key, value in st.items():
            assert torch.equal(opt.state[x][key], value), key
    assert "exp_avg" in opt.state[ours[-1]]                     # below min_8bit_size


def test_a_group_mixing_float32_and_float64_steps_each_as_alone():
    """torch's optimizers accept a group whose parameters differ in dtype; each tensor's step
    is then the step it takes in a group of its own dtype."""
    gen = torch.Generator().manual_seed(3)
    shapes = ((64, 80), (300,), (40, 40))
    dtypes = (torch.float32, torch.float64, torch.float32)
    base = [torch.randn(s, generator=gen, dtype=d) for s, d in zip(shapes, dtypes, strict=True)]
    mixed = [torch.nn.Parameter(x.clone()) for x in base]
    alone = [torch.nn.Parameter(x.clone()) for x in base]
    opts = [optlib.Adam8bit(mixed, lr=1e-2, min_8bit_size=0)]
    opts += [optlib.Adam8bit([x], lr=1e-2, min_8bit_size=0) for x in alone]
    for _ in range(4):
        grads = [torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in base]
        for a, b, g in zip(mixed, alone, grads, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        for opt in opts:
            opt.step()
    for a, b, own in zip(mixed, alone, opts[1:], strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
        for key, value in opts[0].state[a].items():
            assert torch.equal(value, own.state[b][key]), key


def test_state_dict_resume_is_bit_exact_across_chunks(monkeypatch):
    monkeypatch.setattr(optlib.quantized, "CHUNK", 512)
    shapes = ((40, 30), (300,), (7, 9))

    def run(resume_at=None):
        params = make_params(shapes, dtype=torch.float32)
        opt = optlib.Adam8bit(params, lr=1e-2, min_8bit_size=0, block_size=64)
        gen = torch.Generator().manual_seed(2)
        for step in range(8):
            for i, x in enumerate(params):
                x.grad = gradient(step, i, x, gen)
            opt.step()
            if step == resume_at:
                saved = opt.state_dict()
                params = [torch.nn.Parameter(x.detach().clone()) for x in params]
                opt = optlib.Adam8bit(params, lr=1e-2, min_8bit_size=0, block_size=64)
                opt.load_state_dict(saved)
        return params, opt

    (a, opt_a), (b, opt_b) = run(), run(resume_at=3)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
        for key, value in opt_a.state[x].items():
            assert torch.equal(value, opt_b.state[y][key]) and value.dtype == opt_b.state[y][key].dtype


def test_non_contiguous_parameter_steps_like_a_contiguous_one():
    base = torch.randn(64, 40, generator=torch.Generator().manual_seed(0))
    a, b = torch.nn.Parameter(base.t().contiguous().t()), torch.nn.Parameter(base.clone())
    assert not a.is_contiguous()
    opts = [optlib.Adam8bit([x], lr=1e-2, min_8bit_size=0) for x in (a, b)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        g = torch.randn(64, 40, generator=gen)
        a.grad, b.grad = g.t().contiguous().t(), g.clone()
        for opt in opts:
            opt.step()
    assert torch.equal(a, b) and not a.is_contiguous()


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


# ---- accuracy, and the failures of 8-bit state that Adam8bit avoids ----------------------


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
    return start, final, optlib.state_bytes(opt) / sum(w.numel() for w in W), W


def test_tracks_fp32_adam_on_least_squares_with_two_256x256_matrices():
    start, final, per_param, _ = _train(optlib.Adam8bit)
    _, final_fp32, per_param_fp32, _ = _train(optlib.Adam)
    assert final < start / 5
    assert final < 3 * final_fp32
    assert per_param <= 2.3 and per_param_fp32 > 8


def _largest_steps(make, grads):
    """Each coordinate's largest step over a run on ``grads`` (from zero)."""
    p = torch.nn.Parameter(torch.zeros_like(grads[0]))
    opt, largest = make([p]), torch.zeros_like(grads[0])
    for g in grads:
        before = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        largest = torch.maximum(largest, (p.detach() - before).abs())
    return largest


def _spanning_gradients(decades, steps=100, n=256 * 16, seed=0):
    """Gradients whose magnitudes inside each block of 256 span ``decades`` decades (each
    coordinate keeps its scale, the noise changes every step)."""
    gen = torch.Generator().manual_seed(seed)
    scale = 10.0 ** (-decades * torch.rand(n, generator=gen))
    return [torch.randn(n, generator=gen) * scale for _ in range(steps)]


@pytest.mark.parametrize("decades", [3.5, 5.0, 7.0])
def test_gradients_spanning_decades_in_a_block_never_step_far_beyond_adam(decades):
    grads = _spanning_gradients(decades)
    adam = _largest_steps(lambda ps: torch.optim.Adam(ps, lr=1e-3), grads)
    ours = _largest_steps(lambda ps: optlib.Adam8bit(ps, lr=1e-3, min_8bit_size=0), grads)
    assert (ours <= 2.5 * adam).all()                           # bitsandbytes: up to 1e4 times


def _run_with_one_bad_element(make, bad, steps=20, at=5):
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 128, generator=torch.Generator().manual_seed(1)))
    opt = make([p])
    for step in range(steps):
        p.grad = torch.randn(64, 128, generator=gen)
        if step == at:
            p.grad[1, 3] = bad                                  # in block 0 (rows 0 and 1)
        opt.step()
    return p.detach(), opt.state[p]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_gradient_element_spoils_only_its_own_parameter(bad):
    """As in torch's Adam, the parameter of a NaN/inf gradient element becomes NaN; the
    other 255 values of its block go on nearly as if that element had been 0, and every
    other block exactly so."""
    ours, state = _run_with_one_bad_element(lambda ps: optlib.Adam8bit(ps, lr=1e-2), bad)
    adam, _ = _run_with_one_bad_element(lambda ps: torch.optim.Adam(ps, lr=1e-2), bad)
    zero, _ = _run_with_one_bad_element(lambda ps: optlib.Adam8bit(ps, lr=1e-2), 0.0)
    assert torch.equal(ours.isnan(), adam.isnan()) and ours.isnan().sum() == 1
    assert all(state[k].isfinite().all() for k in ("exp_avg_absmax", "exp_avg_sq_absmax"))
    ours, zero = ours.view(-1), zero.view(-1)
    assert torch.equal(ours[256:], zero[256:])
    mates = torch.arange(256) != 1 * 128 + 3
    start = torch.randn(64, 128, generator=torch.Generator().manual_seed(1)).view(-1)
    moved = (zero[:256] - start[:256]).abs()[mates]
    assert (ours[:256] - zero[:256]).abs()[mates].max() < 0.05 * moved.median()


def _final(make, grads):
    p = torch.nn.Parameter(torch.zeros_like(grads[0]))
    opt = make([p])
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()
