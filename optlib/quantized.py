r"""8-bit optimizer state: Adam whose two moments are stored as one byte per value.

Block-wise quantization (Dettmers et al., *8-bit Optimizers via Block-wise Quantization*,
ICLR 2022), with the block size and the two maps of bitsandbytes' ``Adam8bit``.

**Blocks.** A state tensor is read in its logical (row-major) order and cut into blocks of
``block_size`` values (256); a tensor's last block may be shorter, and no block spans two
tensors. Each block keeps one float32 scale, the largest magnitude among its values,
``absmax``, and each value the index (a byte) of a codebook entry for ``value / absmax``,
which lies in [-1, 1]. The scale is per block, so one outlier only coarsens its own block
of 256 values.

**Maps.** The codebooks are *dynamic* (Dettmers, 2016), not linear. A linear code (steps of
1/127 of the block's max) rounds every value below ~0.4% of the max to zero. That is
harmless for the first moment's direction, but fatal for Adam's second moment :math:`v`:
its values span many orders of magnitude (it is a squared gradient), and a coordinate whose
:math:`v` becomes 0 takes a step of :math:`\eta m/\epsilon`. The dynamic code spends its
bytes like a float: a decimal exponent (7 decades, 1e-7 to 1 of the block max) and a linear
fraction whose resolution grows with the magnitude: 64 values for [0.1, 1], 32 for
[0.01, 0.1], ... (twice as many in the unsigned code for :math:`v`, which needs no sign
bit). Measured median relative rounding error of the signed code: 1.1% between 0.1 and 1 of
the block max, doubling with each decade down (8% at 1e-4..1e-3, 31% at 1e-6..1e-5); the
unsigned code is one decade better.

**Rounding.** A value gets the nearest entry, where the boundary between two neighbouring
entries is their midpoint rounded to 12 significant bits (a value exactly on a boundary
goes to the entry farther from zero). A boundary moves by at most 2^-12 (0.025%) of its
value, a tenth or less of the gap between two entries, and the code of a float32 value
becomes a function of its leading 20 bits (sign, exponent and 11 bits of the fraction):
quantizing is a division, a shift and a lookup in a table of 2^20 codes
(:func:`code_table`), not a search among 255 midpoints.

With ``divisor=True`` (Adam's :math:`v`, whose square root divides the step) a positive
value is never stored as 0: below the smallest entry (3.25e-7 of the block max) it is
stored as that entry. Stored as 0 it would make its coordinate step
:math:`\eta\hat m/\epsilon`, thousands of times Adam's step; stored too large it only
makes the step smaller.

bitsandbytes' CPU kernel (0.50) rounds like this in the top three decades; below about
1e-5 of the block max it stores every value, zeros included, as the entry near 1.6e-5
(:math:`v`) or 2.1e-5 (:math:`m`): it never divides by a zero :math:`v`, but it moves
coordinates whose gradient is always 0, and it loses the four lowest decades of the map.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .adam import Adam, _AdamFamily
from .optimizer import State, require, step_counter
from .sharded import is_sharded, local
from .tensorlist import PerTensor, TensorList, per_tensor


def dynamic_map(signed: bool) -> torch.Tensor:
    """The 256 sorted code values: 0, 1, and for each decade 10^-k·[0.1, 1] (k = 0..6) the
    midpoints of 2^(6-k) equal intervals (2^(7-k) when unsigned), with both signs if signed.

    Args:
        signed: with negative entries (for m) or without (for v).
    """
    values = [0.0, 1.0]
    for k in range(7):
        count = 2 ** (6 - k) if signed else 2 ** (7 - k)
        edges = torch.linspace(0.1, 1.0, count + 1, dtype=torch.float64)
        mids = ((edges[:-1] + edges[1:]) / 2 * 10.0**-k).tolist()
        values += mids + ([-v for v in mids] if signed else [])
    return torch.tensor(sorted(values), dtype=torch.float32)


SIGNED, UNSIGNED = dynamic_map(signed=True), dynamic_map(signed=False)

#: A scaled float32 value's code depends on its leading KEY_BITS bits: sign, exponent and
#: the fraction's first 11 bits.
KEY_BITS = 20
_SHIFT = 32 - KEY_BITS
_KEY_MASK = (1 << KEY_BITS) - 1


def boundaries(codebook: Tensor) -> Tensor:
    """The 255 decision boundaries: the midpoints of neighbouring entries, each rounded to
    the nearest float32 whose last 12 bits are 0 (12 significant bits), so that it lies on
    an edge between two keys of :func:`code_table`.

    Args:
        codebook: the 256 sorted entries.
    """
    book = codebook.double()
    mids = ((book[1:] + book[:-1]) / 2).float()
    step = torch.ldexp(torch.ones_like(mids), torch.frexp(mids).exponent - KEY_BITS + 8)
    return (mids / step).round() * step     # 12 significant bits, exact in float32


def _key_values(device=None) -> Tensor:
    """For every key, the float32 of smallest magnitude with those leading bits (±0 for the
    two zero keys; inf or NaN for the keys of non-finite values)."""
    keys = torch.arange(1 << KEY_BITS, dtype=torch.int32, device=device)
    magnitude = ((keys & (_KEY_MASK >> 1)) << _SHIFT).view(torch.float32)
    return torch.where(keys >> (KEY_BITS - 1) == 1, -magnitude, magnitude)


_TABLES: dict = {}


def code_table(codebook: Tensor, divisor: bool = False) -> Tensor:
    """The code (uint8) of every key, the leading ``KEY_BITS`` bits of a float32 ``s``:
    the number of :func:`boundaries` at or below ``s`` (below, for negative ``s``). With
    ``divisor``, a positive ``s`` never gets the code of 0, and a non-finite one (from a
    non-finite gradient) gets the largest entry; otherwise a non-finite ``s`` gets 0.
    Built once per codebook and device (a fraction of a second) and kept.

    Args:
        codebook: the 256 sorted entries.
        divisor: for a divisor (v): positive values never get the code of 0.
    """
    key = (codebook.cpu().numpy().tobytes(), divisor, codebook.device)
    if key not in _TABLES:
        require(codebook.numel() == 256 and bool((codebook[1:] > codebook[:-1]).all()),
                "codebook: expected 256 increasing values")
        bounds = boundaries(codebook.cpu())
        s = _key_values()
        codes = torch.where(s >= 0, torch.bucketize(s, bounds, right=True),
                            torch.bucketize(s, bounds, right=False))
        zero = int(codebook.abs().argmin())
        finite = torch.isfinite(s)
        if divisor:
            codes[(codes == zero) & (s > 0) & finite] = min(zero + 1, 255)
            codes[~finite] = int(codebook.abs().argmax())
        else:
            codes[~finite] = zero
        _TABLES[key] = codes.to(torch.uint8).to(codebook.device)
    return _TABLES[key]


def block_absmax(blocks: Tensor, nonnegative: bool = False) -> Tensor:
    """The largest magnitude among each row's finite values (0 for none), as float32;
    ``nonnegative``: the rows hold no negative values, so their max is enough.

    Args:
        blocks: one block per row.
        nonnegative: the blocks hold no negative values.
    """
    absmax = blocks.amax(dim=1)
    if not nonnegative:
        absmax = torch.maximum(absmax, blocks.amin(dim=1).neg_())
    if not torch.isfinite(absmax).all():      # rare: a NaN or inf from a non-finite gradient
        absmax = torch.where(blocks.isfinite(), blocks, 0).abs().amax(dim=1)
    return absmax.float()


def quantize_blocks(blocks: Tensor, table: Tensor, codes: Tensor, absmax: Tensor,
                    divisor: bool = False) -> None:
    """Write the codes of ``blocks`` (one block per row; overwritten, it is scratch) into
    ``codes`` and the blocks' scales into ``absmax``. ``divisor``: the values are
    nonnegative (Adam's v) and ``table`` is the codebook's ``divisor`` table.

    Args:
        blocks: one block per row (overwritten: scratch).
        table: the code table (code_table).
        codes: where the codes go (uint8).
        absmax: where the scales go (float32, one per block).
        divisor: the values are nonnegative and table is a divisor table.
    """
    absmax.copy_(block_absmax(blocks, nonnegative=divisor))
    scaled = blocks.div_(absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None].to(blocks.dtype))
    if scaled.dtype != torch.float32:
        scaled = scaled.float()
    key = scaled.view(torch.int32).view(-1).bitwise_right_shift_(_SHIFT)
    key.bitwise_and_(_KEY_MASK)                 # the sign bit, without its extension
    torch.index_select(table, 0, key, out=codes)


def dequantize_blocks(codes: Tensor, absmax: Tensor, values: Tensor, out: Tensor,
                      key: Tensor) -> None:
    """Write ``values[code] * absmax`` of each block into ``out`` (one block per row);
    ``values`` is the codebook in ``out``'s dtype, ``key`` int32 scratch.

    Args:
        codes: the codes (uint8).
        absmax: the scales, one per block.
        values: the codebook in out's dtype.
        out: where the values go, one block per row.
        key: int32 scratch.
    """
    key.copy_(codes)
    torch.index_select(values, 0, key, out=out.view(-1))
    out.mul_(absmax[:, None].to(out.dtype))


def _blocks(x: Tensor, block_size: int) -> Tensor:
    """A copy of ``x``, flattened and zero-padded to whole blocks, one block per row."""
    blocks = x.new_zeros(-(-x.numel() // block_size), block_size)
    blocks.view(-1)[: x.numel()] = x.reshape(-1)
    return blocks


def quantize(x: Tensor, codebook: Tensor, block_size: int = 256, *, divisor: bool = False):
    """``x`` as (codes: uint8 of x.numel(), absmax: float32 per block): each value's code is
    the index of the codebook entry nearest to value / absmax of its block (module
    docstring). ``divisor``: ``x`` holds no negative values, and a positive one is never
    stored as 0 (:func:`code_table`).

    Args:
        x: the values.
        codebook: the 256 sorted entries.
        block_size: values per block.
        divisor: x holds no negative values, and a positive one is never stored as 0.
    """
    require(not divisor or not bool((x < 0).any()), "quantize: divisor=True needs x >= 0")
    blocks = _blocks(x, block_size)
    codes = torch.empty(blocks.numel(), dtype=torch.uint8, device=x.device)
    absmax = torch.empty(blocks.shape[0], dtype=torch.float32, device=x.device)
    quantize_blocks(blocks, code_table(codebook.to(x.device), divisor), codes, absmax, divisor)
    return codes[: x.numel()], absmax


def _row_blocks(x: Tensor, block_size: int, fill=0) -> Tensor:
    """``x`` (rows along dim 0) as blocks that never cross a row: each row, flattened, is
    padded with ``fill`` to whole blocks of ``block_size``; one block per row of the result."""
    rows = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    per_row = -(-rows.shape[1] // block_size)
    out = rows.new_full((rows.shape[0], per_row * block_size), fill)
    out[:, :rows.shape[1]] = rows
    return out.view(-1, block_size)


def quantize_rows(x: Tensor, codebook: Tensor, block_size: int = 256, *, divisor: bool = False):
    """:func:`quantize` with blocks that never cross a row (dim 0): each row is cut into
    blocks of ``block_size`` values, the last one shorter. Returns codes shaped like ``x``
    (uint8) and scales of shape (rows, blocks per row): both split along dim 0 exactly as
    ``x`` is, which is what a tensor sharded by rows (FSDP2) needs.

    Args:
        x: the values (at least 1-D).
        codebook: the 256 sorted entries.
        block_size: values per block.
        divisor: x holds no negative values, and a positive one is never stored as 0.
    """
    blocks = _row_blocks(x, block_size)
    codes = torch.empty(blocks.numel(), dtype=torch.uint8, device=x.device)
    absmax = torch.empty(blocks.shape[0], dtype=torch.float32, device=x.device)
    quantize_blocks(blocks, code_table(codebook.to(x.device), divisor), codes, absmax, divisor)
    row = x[0].numel() if x.shape[0] else 0
    per_row = -(-row // block_size)
    codes = codes.view(x.shape[0], per_row * block_size)[:, :row].reshape(x.shape)
    return codes, absmax.view(x.shape[0], per_row)


def dequantize_rows(codes: Tensor, absmax: Tensor, codebook: Tensor, block_size: int,
                    like: Tensor) -> Tensor:
    """The values that :func:`quantize_rows`' codes stand for, shaped and typed like ``like``.

    Args:
        codes: the codes, shaped like like.
        absmax: the scales (rows × blocks per row).
        codebook: the 256 sorted entries.
        block_size: values per block.
        like: the tensor whose shape and dtype the result takes.
    """
    zero = int(codebook.abs().argmin())
    padded = _row_blocks(codes, block_size, fill=zero)
    out = torch.empty(padded.shape, dtype=like.dtype, device=like.device)
    key = torch.empty(padded.numel(), dtype=torch.int32, device=like.device)
    dequantize_blocks(padded.view(-1), absmax.reshape(-1), codebook.to(like), out, key)
    rows = like.shape[0]
    row = like[0].numel() if rows else 0
    return out.view(rows, padded.numel() // max(rows, 1))[:, :row].reshape(like.shape)


def dequantize(codes: Tensor, absmax: Tensor, codebook: Tensor,
               block_size: int, like: Tensor) -> Tensor:
    """The values the codes stand for, shaped and typed like ``like``.

    Args:
        codes: the codes (flat).
        absmax: the scales, one per block.
        codebook: the 256 sorted entries.
        block_size: values per block.
        like: the tensor whose shape and dtype the result takes.
    """
    n = codes.numel()
    padded = torch.nn.functional.pad(codes, (0, -n % block_size))
    out = torch.empty(padded.numel(), dtype=like.dtype, device=like.device)
    key = torch.empty(padded.numel(), dtype=torch.int32, device=like.device)
    dequantize_blocks(padded, absmax, codebook.to(like), out.view(-1, block_size), key)
    return out[:n].view_as(like)


#: Values per chunk: the step works through a group's 8-bit tensors a chunk at a time, so
#: that its buffers (two float ones and an int32 one of CHUNK values: 48 MB in float32) stay
#: bounded whatever the model's size. Chunks are large because each costs some 30 calls
#: into torch, 20 of them multi-threaded, and on a loaded machine every multi-threaded call
#: waits for its slowest thread: on 2 busy cores a 4096 x 1024 step took about twice as
#: long with chunks of 2^20 values as with 2^22 (in one process, interleaved), though on
#: one thread 2^20 cost some 30% less CPU time (its buffers fit the caches better).
CHUNK = 1 << 22


def _chunks(sizes: list[int], block: int):
    """Pieces ``(tensor index, start, stop)`` of the tensors of ``sizes``, grouped into
    chunks of at most max(CHUNK // block, 1) blocks; every piece starts on a block."""
    capacity = max(CHUNK // block, 1) * block
    chunk, used = [], 0
    for i, n in enumerate(sizes):
        start = 0
        while start < n:
            stop = min(n, start + capacity - used)
            chunk.append((i, start, stop))
            used += -(-(stop - start) // block) * block
            start = stop
            if used >= capacity:
                yield chunk
                chunk, used = [], 0
    if chunk:
        yield chunk


class Adam8bit(Adam):
    r"""Adam (optionally AdamW) whose moments :math:`m` and :math:`v` are stored in 8 bits,
    block-wise quantized (see the module docstring): about 2 bytes of state per parameter
    instead of 8. After Dettmers et al., ICLR 2022 (bitsandbytes' ``Adam8bit``).

    Each step dequantizes :math:`m` and :math:`v`, applies exactly :class:`optlib.Adam`'s
    rule (the same code, ``Adam.rule``), and quantizes them again:

    .. math::
        m, v &\leftarrow \mathrm{dq}(c_m, a_m),\ \mathrm{dq}(c_v, a_v), \qquad
        \mathrm{dq}(c, a)_i = \mathrm{map}[c_i]\cdot a_{\lfloor i/256 \rfloor} \\
        m &\leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2,
        \qquad \theta \leftarrow \theta - \eta\, \hat m/(\sqrt{\hat v} + \epsilon) \\
        a_b &= \max_{i \in b} |x_i|, \qquad c_i = \text{the map entry nearest to } x_i / a_b
        \quad (x = m \text{ with the signed map, } x = v \text{ with the unsigned one})

    The step works through the 8-bit tensors of a group in chunks of about 4 million values
    (several small tensors in one chunk, a large one in several), so that its buffers stay
    bounded (48 MB). Tensors with fewer than ``min_8bit_size`` values (biases, norms)
    keep full-precision moments, as in bitsandbytes: their state is small and quantizing
    it buys nothing.

    Limits, all per block of 256 values (``tests/test_quantized.py`` checks each):

    * :math:`m` below 2.75e-7 of its block's largest :math:`|m|` is stored as 0 (that
      coordinate then steps less). Each decade down from the block max doubles the
      relative rounding error of :math:`m` and :math:`v` (module docstring).
    * :math:`v` below 3.25e-7 of its block's largest is stored as 3.25e-7 of it, never as 0:
      a coordinate whose gradients are more than about 1,750 times smaller (RMS) than the
      largest in its block steps less than Adam would, not more. Rounding elsewhere can
      make a step larger than Adam's by up to about 2x where a block's gradients span 3.5
      or more decades (the coarse lower decades of both maps).
    * A value that decays without new large gradients (:math:`v` shrinks by 0.1% a step
      with :math:`\beta_2 = 0.999`) moves by less than the map's resolution and is rounded
      back to the same code, while its block's scale (exact) follows the block's largest.
    * A NaN or infinite gradient element makes its parameter NaN, as in torch's Adam and
      bitsandbytes, and goes no further: the block's scale ignores non-finite values, the
      coordinate's :math:`m` is stored as 0 and its :math:`v` as the block's largest, and
      the other values of the block go on. (A finite gradient whose square overflows,
      above 1.8e19 in float32, is beyond this: Adam freezes that coordinate, here it moves.)

    **Sharded parameters (FSDP2).** A ``DTensor`` parameter holds a block of rows on each
    process, so blocks that run on across rows (the default) would straddle processes,
    and a process's blocks would depend on how the tensor is split. With
    ``row_blocks=True`` a block never crosses a row (the first dimension): each row,
    flattened, is cut into blocks of ``block_size`` values, the last one shorter. The
    blocks are then the same whatever the split: a sharded parameter's codes are sharded
    like it and its scales (rows × blocks per row) too, every process quantizes its own
    rows without communication, the numbers equal one process's with ``row_blocks=True``,
    and a distributed checkpoint reshards exactly. The state stays near 2 bytes per
    parameter when rows are long (2 + 8/``block_size`` when a row is a multiple of the
    block, 2 + 8/row when it is shorter than one). ``DTensor`` parameters are refused
    without ``row_blocks=True``; a sharded vector keeps full-precision moments (a
    vector's blocks would cross shards).

    Unlike bitsandbytes, whose ``Adam8bit`` decays weights in the decoupled (AdamW) way,
    ``weight_decay`` here is Adam's L2 unless ``decoupled_weight_decay=True``: the same
    arguments mean the same thing as in :class:`optlib.Adam`.

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂), the decay rates of the running averages of the gradient and of its
            square.
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        maximize: ascend the objective instead of descending it (the gradient is negated).
        decoupled_weight_decay: decay the weights directly, θ ← θ(1 − ηλ), instead of adding λθ
            to the gradient (AdamW's decay).
        block_size: the number of values per quantization block (256, as bitsandbytes).
        min_8bit_size: tensors with fewer values keep full-precision moments.
        row_blocks: cut blocks that never cross a row (needed for DTensor parameters).
    """

    supports_complex = False
    #: One call per group: the rule packs its tensors into buffers of ``CHUNK`` values itself.
    eager_chunk_bytes = None

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 maximize=False, decoupled_weight_decay=False, block_size=256,
                 min_8bit_size=4096, row_blocks=False):
        require(isinstance(block_size, int) and not isinstance(block_size, bool)
                and block_size >= 1, f"Invalid block_size value: {block_size}")
        require(min_8bit_size >= 0, f"Invalid min_8bit_size value: {min_8bit_size}")
        require(isinstance(row_blocks, bool), f"Invalid row_blocks value: {row_blocks!r}")
        _AdamFamily.__init__(self, params, lr, betas, eps, weight_decay, amsgrad=False,
                             maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
                             block_size=block_size, min_8bit_size=min_8bit_size,
                             row_blocks=row_blocks)

    #: (state key, codebook, divisor) of the two moments
    MOMENTS = (("exp_avg", SIGNED, False), ("exp_avg_sq", UNSIGNED, True))

    def init_state(self, p, group):
        if p.numel() < group["min_8bit_size"] or (is_sharded(p) and p.dim() < 2):
            return super().init_state(p, group)
        if group.get("row_blocks", False) and p.dim() >= 2:
            return self._row_state(p, group)
        require(not is_sharded(p),
                "Adam8bit quantizes DTensor (sharded, FSDP2) parameters only with "
                "row_blocks=True (blocks that never cross a row, so that each process "
                "holds whole blocks): Adam8bit(..., row_blocks=True)")
        state = {"step": step_counter()}
        for key, book, divisor in self.MOMENTS:
            state[key + "_code"], state[key + "_absmax"] = quantize(
                torch.zeros_like(p), book, group["block_size"], divisor=divisor)
        return state

    def _row_state(self, p, group):
        """Codes shaped like ``p`` and scales (rows × blocks per row), sharded like ``p``."""
        state = {"step": step_counter()}
        for key, book, divisor in self.MOMENTS:
            codes, absmax = quantize_rows(torch.zeros_like(local(p)), book, group["block_size"],
                                          divisor=divisor)
            if is_sharded(p):
                from torch.distributed.tensor import DTensor

                codes = DTensor.from_local(codes, p.device_mesh, p.placements, run_check=False,
                                           shape=p.shape, stride=p.stride())
                absmax = DTensor.from_local(absmax, p.device_mesh, p.placements, run_check=False,
                                            shape=(p.shape[0], absmax.shape[1]),
                                            stride=(absmax.shape[1], 1))
            state[key + "_code"], state[key + "_absmax"] = codes, absmax
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:          # checkpoints from before row_blocks existed
            group.setdefault("row_blocks", False)
        # torch casts every loaded state tensor to its parameter's dtype; put codes back into
        # bytes and scales into float32 (both casts are exact for these values).
        for st in self.state.values():
            for key, _, _ in self.MOMENTS:
                if key + "_code" in st:
                    st[key + "_code"] = st[key + "_code"].to(torch.uint8)
                    st[key + "_absmax"] = st[key + "_absmax"].to(torch.float32)

    def update(self, group, p: TensorList, g: TensorList, s: State):
        quantized = ["exp_avg_code" in st for st in s.states]
        rows = [q and st["exp_avg_code"].shape == x.shape and st["exp_avg_absmax"].dim() == 2
                for q, st, x in zip(quantized, s.states, p, strict=True)]
        flat = [q and not r for q, r in zip(quantized, rows, strict=True)]
        if not all(quantized):                  # small tensors: Adam with its own state
            full = [not q for q in quantized]
            super().update(group, p.select(full), g.select(full), s.select(full))
        for kind in _same_device_and_dtype(p, flat):  # one chunk buffer per dtype and device
            self.update_8bit(group, p.select(kind), g.select(kind), s.select(kind))
        if any(rows):
            self.update_rows(group, p.select(rows), g.select(rows), s.select(rows))

    def update_rows(self, group, p: TensorList, g: TensorList, s: State):
        """Adam's rule on moments quantized in row blocks (``row_blocks=True``), one tensor
        at a time, on this process's rows (no communication)."""
        block = group["block_size"]
        t = per_tensor(s.advance("step"), len(p))
        for st, x, gx, ti in s.each(p, g, t):
            xl, gl = local(x), local(gx)
            codes = {k: local(st[k + "_code"]) for k, _, _ in self.MOMENTS}
            scales = {k: local(st[k + "_absmax"]) for k, _, _ in self.MOMENTS}
            m, v = (dequantize_rows(codes[k], scales[k], book, block, xl)
                    for k, book, _ in self.MOMENTS)
            self.rule(group, TensorList([xl]), TensorList([gl]), TensorList([m]), TensorList([v]),
                      ti)
            for (k, book, divisor), value in zip(self.MOMENTS, (m, v), strict=True):
                c, a = quantize_rows(value, book, block, divisor=divisor)
                codes[k].copy_(c)
                scales[k].copy_(a)

    def update_8bit(self, group, p: TensorList, g: TensorList, s: State):
        """Adam's rule on dequantized moments, a chunk of values at a time (:func:`_chunks`)."""
        block, sizes = group["block_size"], [x.numel() for x in p]
        t = per_tensor(s.advance("step"), len(p))
        flat_p = [x.view(-1) if x.is_contiguous() else x.contiguous().view(-1) for x in p]
        flat_g = [x.reshape(-1) for x in g]
        size = max(CHUNK // block, 1) * block
        key = torch.empty(size, dtype=torch.int32, device=p[0].device)
        moments = [_Moment(name, book, divisor, s.states, size, p[0])
                   for name, book, divisor in self.MOMENTS]
        for pieces in _chunks(sizes, block):
            chunk = _Chunk(pieces, sizes, block)
            m, v = (chunk.dequantize(moment, key) for moment in moments)
            self.rule(group, TensorList(chunk.of(flat_p)), TensorList(chunk.of(flat_g)),
                      TensorList(chunk.cut(m)), TensorList(chunk.cut(v)),
                      PerTensor.of(chunk.pick(t)))
            for moment in moments:
                chunk.quantize(moment)
        for x, f in zip(p, flat_p, strict=True):
            if f.data_ptr() != x.data_ptr():    # a non-contiguous parameter: copy back
                x.copy_(f.view(x.shape))


def _same_device_and_dtype(p: TensorList, mask: list[bool]) -> list[list[bool]]:
    """Masks that split the tensors selected by ``mask`` by device and dtype (a group may mix
    float32 and float64 parameters, as torch's optimizers allow)."""
    kinds: dict = {}
    for i, (x, m) in enumerate(zip(p, mask, strict=True)):
        if m:
            kinds.setdefault((x.device, x.dtype), set()).add(i)
    return [[i in kind for i in range(len(mask))] for kind in kinds.values()]


class _Moment:
    """One moment of a group's 8-bit tensors: their codes and scales (the state's own
    tensors), the codebook in the work dtype, the code of 0, the code table, and a float
    buffer of ``size`` values for one chunk."""

    def __init__(self, name, codebook, divisor, states, size, like: Tensor):
        self.codes = [st[name + "_code"] for st in states]
        self.absmax = [st[name + "_absmax"] for st in states]
        self.values = codebook.to(like)
        self.zero = int(codebook.abs().argmin())
        self.table, self.divisor = code_table(codebook.to(like.device), divisor), divisor
        self.buffer = torch.empty(size, dtype=like.dtype, device=like.device)


class _Chunk:
    """Pieces ``(tensor index, start, stop)`` of a group's 8-bit tensors that one pass
    handles, each starting on a block boundary. In the chunk's buffers each piece fills
    whole blocks: a tensor's short last block is padded with zeros."""

    def __init__(self, pieces, sizes: list[int], block: int):
        self.pieces, self.block = pieces, block
        self.whole = [a == 0 and b == sizes[i] for i, a, b in pieces]
        blocks = [-(-(b - a) // block) for _, a, b in pieces]
        self.blocks, self.size = blocks, sum(blocks) * block
        self.layout = [n for (_, a, b), nb in zip(pieces, blocks, strict=True)
                       for n in (b - a, nb * block - (b - a))]
        #: one piece of whole blocks: the state's own codes and scales serve, no copy
        self.direct = len(pieces) == 1 and self.layout[1] == 0
        self.gathered = {}

    def cut(self, buffer: Tensor) -> list[Tensor]:
        """Each piece's values in a buffer of the chunk's layout."""
        return list(buffer[:self.size].split(self.layout)[::2])

    def of(self, tensors: list[Tensor]) -> list[Tensor]:
        """Each piece's slice of its (flat) tensor."""
        return [tensors[i] if whole else tensors[i][a:b]
                for (i, a, b), whole in zip(self.pieces, self.whole, strict=True)]

    def of_blocks(self, tensors: list[Tensor]) -> list[Tensor]:
        """Each piece's slice of its tensor's per-block values (scales)."""
        block = self.block
        return [tensors[i] if whole else tensors[i][a // block:-(-b // block)]
                for (i, a, b), whole in zip(self.pieces, self.whole, strict=True)]

    def pick(self, values: list) -> list:
        """Each piece's entry of a per-tensor list."""
        return [values[i] for i, _, _ in self.pieces]

    def dequantize(self, moment: _Moment, key: Tensor) -> Tensor:
        """The chunk's values of ``moment``, dequantized into its buffer (``key``: scratch)."""
        codes, absmax = self.of(moment.codes), self.of_blocks(moment.absmax)
        if self.direct:
            codes, absmax = codes[0], absmax[0]
        else:
            buffer = torch.full((self.size,), moment.zero, dtype=torch.uint8, device=key.device)
            torch._foreach_copy_(self.cut(buffer), codes)    # padding keeps the code of 0
            codes, absmax = buffer, torch.cat(absmax)
        self.gathered[moment] = codes, absmax
        values = moment.buffer[:self.size]
        dequantize_blocks(codes, absmax, moment.values, values.view(-1, self.block),
                          key[:self.size])
        return values

    def quantize(self, moment: _Moment) -> None:
        """Quantize the chunk's values of ``moment`` (its buffer, overwritten) into the state."""
        codes, absmax = self.gathered.pop(moment)
        quantize_blocks(moment.buffer[:self.size].view(-1, self.block), moment.table, codes,
                        absmax, moment.divisor)
        if not self.direct:
            torch._foreach_copy_(self.of(moment.codes), self.cut(codes))
            torch._foreach_copy_(self.of_blocks(moment.absmax), list(absmax.split(self.blocks)))


def state_bytes_per_parameter(numel: int, block_size: int = 256) -> float:
    """Bytes of 8-bit Adam state per value of a quantized tensor: two codes plus two
    float32 scales per block (the step counter aside).

    Args:
        numel: the tensor's number of values.
        block_size: values per block.
    """
    return (2 * numel + 2 * 4 * math.ceil(numel / block_size)) / numel
