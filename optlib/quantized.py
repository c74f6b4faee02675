"""8-bit optimizer state: Adam whose two moments are stored as one byte per value.

Block-wise quantization (Dettmers et al., *8-bit Optimizers via Block-wise Quantization*,
ICLR 2022): a state tensor is cut into blocks of ``block_size`` values; each block keeps
one float32 scale, its largest magnitude ``absmax``, and each value the index (a byte) of
the nearest entry of a fixed 256-entry codebook for ``value / absmax`` in [-1, 1]. The
scale is per block, so one outlier only coarsens its own block of 256 values.

The codebook is *dynamic* (Dettmers, 2016), not linear. A linear code (steps of 1/127 of
the block's max) rounds every value below ~0.4% of the max to zero. That is harmless for
the first moment's direction, but fatal for Adam's second moment :math:`v`: its values span
many orders of magnitude (it is a squared gradient), and a coordinate whose :math:`v`
becomes 0 takes a step of :math:`\\eta m/\\epsilon`. The dynamic code spends its bytes like
a float: a decimal exponent (7 decades, 1e-7 to 1 of the block max) and a linear fraction
whose resolution grows with the magnitude: 64 values for [0.1, 1], 32 for [0.01, 0.1], ...
(twice as many in the unsigned code for :math:`v`, which needs no sign bit). Measured
median relative rounding error of the signed code: 0.9% between 0.1 and 1 of the block
max, doubling with each decade down (7% at 1e-4..1e-3); the unsigned code is one decade
better; only values below about 1e-7 of the block max become 0.
"""

from __future__ import annotations

import math

import torch

from .adam import Adam, _AdamFamily
from .optimizer import State, require, step_counter
from .tensorlist import TensorList


def dynamic_map(signed: bool) -> torch.Tensor:
    """The 256 sorted code values: 0, 1, and for each decade 10^-k·[0.1, 1] (k = 0..6) the
    midpoints of 2^(6-k) equal intervals (2^(7-k) when unsigned), with both signs if signed."""
    values = [0.0, 1.0]
    for k in range(7):
        count = 2 ** (6 - k) if signed else 2 ** (7 - k)
        edges = torch.linspace(0.1, 1.0, count + 1, dtype=torch.float64)
        mids = ((edges[:-1] + edges[1:]) / 2 * 10.0**-k).tolist()
        values += mids + ([-v for v in mids] if signed else [])
    return torch.tensor(sorted(values), dtype=torch.float32)


SIGNED, UNSIGNED = dynamic_map(signed=True), dynamic_map(signed=False)


def quantize(x: torch.Tensor, codebook: torch.Tensor, block_size: int = 256):
    """``x`` as (codes: uint8 of x.numel(), absmax: float32 per block): each value's code
    is the index of the codebook entry nearest to value / absmax of its block."""
    flat = x.reshape(-1)
    n = flat.numel()
    blocks = torch.nn.functional.pad(flat, (0, -n % block_size)).view(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / absmax.clamp_min(torch.finfo(x.dtype).tiny)[:, None]
    book = codebook.to(x.dtype)
    codes = torch.bucketize(scaled, (book[1:] + book[:-1]) / 2)     # nearest entry
    return codes.to(torch.uint8).view(-1)[:n], absmax.float()


def dequantize(codes: torch.Tensor, absmax: torch.Tensor, codebook: torch.Tensor,
               block_size: int, like: torch.Tensor) -> torch.Tensor:
    """The values the codes stand for, shaped and typed like ``like``."""
    n = codes.numel()
    values = codebook.to(like.dtype)[codes.long()]
    blocks = torch.nn.functional.pad(values, (0, -n % block_size)).view(-1, block_size)
    return (blocks * absmax.to(like.dtype)[:, None]).view(-1)[:n].view_as(like)


class Adam8bit(Adam):
    r"""Adam (optionally AdamW) whose moments :math:`m` and :math:`v` are stored in 8 bits,
    block-wise quantized (see the module docstring): about 2 bytes of state per parameter
    instead of 8. After Dettmers et al., ICLR 2022 (bitsandbytes' ``Adam8bit``).

    Each step dequantizes :math:`m` and :math:`v`, applies exactly :class:`optlib.Adam`'s
    rule (the same code), and quantizes them again. Tensors with fewer than
    ``min_8bit_size`` values (biases, norms) keep full-precision moments, as in
    bitsandbytes: their state is small and quantizing it buys nothing.

    Unlike bitsandbytes, whose ``Adam8bit`` decays weights in the decoupled (AdamW) way,
    ``weight_decay`` here is Adam's L2 unless ``decoupled_weight_decay=True``: the same
    arguments mean the same thing as in :class:`optlib.Adam`.
    """

    supports_complex = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 maximize=False, decoupled_weight_decay=False, block_size=256,
                 min_8bit_size=4096):
        require(isinstance(block_size, int) and block_size >= 1,
                f"Invalid block_size value: {block_size}")
        require(min_8bit_size >= 0, f"Invalid min_8bit_size value: {min_8bit_size}")
        _AdamFamily.__init__(self, params, lr, betas, eps, weight_decay, amsgrad=False,
                             maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
                             block_size=block_size, min_8bit_size=min_8bit_size)

    def init_state(self, p, group):
        if p.numel() < group["min_8bit_size"]:
            return super().init_state(p, group)
        state = {"step": step_counter()}
        for key, book in (("exp_avg", SIGNED), ("exp_avg_sq", UNSIGNED)):
            state[key + "_code"], state[key + "_absmax"] = quantize(
                torch.zeros_like(p), book, group["block_size"])
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        # torch casts every loaded state tensor to its parameter's dtype; put codes back into
        # bytes and scales into float32 (both casts are exact for these values).
        for st in self.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key + "_code" in st:
                    st[key + "_code"] = st[key + "_code"].to(torch.uint8)
                    st[key + "_absmax"] = st[key + "_absmax"].to(torch.float32)

    def update(self, group, p: TensorList, g: TensorList, s: State):
        block = group["block_size"]
        # The state Adam's rule sees: 8-bit moments dequantized, small tensors as they are.
        work = []
        for x in p:
            st = self.state[x]
            if "exp_avg_code" in st:
                st = {"step": st["step"],
                      "exp_avg": dequantize(st["exp_avg_code"], st["exp_avg_absmax"],
                                            SIGNED, block, x),
                      "exp_avg_sq": dequantize(st["exp_avg_sq_code"], st["exp_avg_sq_absmax"],
                                               UNSIGNED, block, x)}
            work.append(st)
        super().update(group, p, g, State(work, s.new))
        for x, w in zip(p, work, strict=True):
            st = self.state[x]
            if "exp_avg_code" in st:
                for key, book in (("exp_avg", SIGNED), ("exp_avg_sq", UNSIGNED)):
                    code, absmax = quantize(w[key], book, block)
                    st[key + "_code"].copy_(code)
                    st[key + "_absmax"].copy_(absmax)


def state_bytes_per_parameter(numel: int, block_size: int = 256) -> float:
    """Bytes of 8-bit Adam state per value of a quantized tensor: two codes plus two
    float32 scales per block (the step counter aside)."""
    return (2 * numel + 2 * 4 * math.ceil(numel / block_size)) / numel
