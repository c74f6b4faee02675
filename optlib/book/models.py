"""Tiny models that train in seconds on a CPU: an MLP, a small CNN, a tiny transformer."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .train import cross_entropy


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Initialize with ``seed`` without disturbing the global random stream (None: use it)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def mlp(sizes=(64, 128, 10), activation=nn.ReLU, seed: int | None = None, *,
        layernorm: bool = False, init_scale: float | None = None,
        dtype: torch.dtype | None = None) -> nn.Sequential:
    """Linear layers of the given widths with ``activation()`` between them (none after the last).

    Args:
        sizes: the widths, input first (at least two).
        activation: a module class or a name in ``ACTIVATIONS``.
        seed: initialize with this seed without touching the global random stream
            (``None``: draw from it).
        layernorm: hidden layers are Linear → LayerNorm → activation.
        init_scale: redraw the hidden weights from N(0, init_scale² / fan_in) with biases 0
            and the read-out from N(0, 1 / fan_in) (1 is LeCun's initialization, √2 with
            ReLU He et al.'s); ``None`` keeps torch's default initialization.
        dtype: the parameters' dtype (float64 keeps gradients of 1e-30 measurable).
    """
    sizes = tuple(sizes)
    if len(sizes) < 2 or any(not (isinstance(s, int) and s >= 1) for s in sizes):
        raise ValueError(f"sizes must be at least two positive integers, got {sizes!r}")
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        activation = ACTIVATIONS[activation]
    if init_scale is not None and not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    layers: list[nn.Module] = []
    with _seeded(seed):
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                if layernorm:
                    layers.append(nn.LayerNorm(b))
                layers.append(activation())
    model = nn.Sequential(*layers)
    if init_scale is not None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        linears = [m for m in model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for i, layer in enumerate(linears):
                scale = 1.0 if i == len(linears) - 1 else init_scale
                layer.weight.normal_(0.0, scale / math.sqrt(layer.in_features),
                                     generator=generator)
                layer.bias.zero_()
    return model if dtype is None else model.to(dtype)


def small_cnn(num_classes: int = 10, width: int = 16, seed: int | None = None) -> nn.Sequential:
    """Two 3×3 convolutions (8×8 → 4×4 → 2×2) and a linear head, for (N, 1, 8, 8) digits."""
    with _seeded(seed):
        return nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 2 * 2, num_classes),
        )


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    Args:
        d_model: the width.
        n_heads: attention heads (``d_model`` must be a multiple).
        qk_norm: normalize each head's queries and keys with a LayerNorm over the head's
            dimension before the dot product (QK-norm: Dehghani et al. 2023, "Scaling
            Vision Transformers to 22 Billion Parameters"; Wortsman et al. 2024, "Small-scale
            proxies for large-scale Transformer training instabilities"). Off, the block
            has no such layers and computes exactly what it computed before the option.
    """

    def __init__(self, d_model: int, n_heads: int, qk_norm: bool = False):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))
        self.qk_norm = qk_norm
        if qk_norm:     # created last and drawing no random numbers: other weights unchanged
            self.q_norm = nn.LayerNorm(d_model // n_heads)
            self.k_norm = nn.LayerNorm(d_model // n_heads)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self._qkv(x)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))

    @torch.no_grad()
    def attention_logits(self, x: Tensor) -> Tensor:
        """The attention logits q·k/√d_head of each head before the causal mask, (B, H, T, T).

        Args:
            x: the block's input, (B, T, d_model).
        """
        q, k, _ = self._qkv(x)
        return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


class TinyTransformer(nn.Module):
    """A causal character-level transformer (GPT-style, pre-norm, learned positions).

    ``forward(idx)`` maps token ids (B, T) with T ≤ ``block_size`` to logits (B, T, V);
    ``loss(idx, targets)`` is the mean next-token cross-entropy.

    Args:
        vocab_size: the number of tokens.
        block_size: the longest sequence.
        d_model: the width.
        n_layers: the number of blocks.
        n_heads: attention heads per block.
        seed: initialize with this seed without touching the global random stream.
        qk_norm: QK-norm in every block (:class:`Block`); off by default.
    """

    def __init__(self, vocab_size: int, block_size: int = 64, d_model: int = 64,
                 n_layers: int = 2, n_heads: int = 4, seed: int | None = None,
                 qk_norm: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.block_size = block_size
        with _seeded(seed):
            self.tok = nn.Embedding(vocab_size, d_model)
            self.pos = nn.Embedding(block_size, d_model)
            self.blocks = nn.ModuleList(Block(d_model, n_heads, qk_norm=qk_norm)
                                        for _ in range(n_layers))
            self.ln = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}")
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    @torch.no_grad()
    def max_attention_logits(self, idx: Tensor) -> list[float]:
        """The largest attention logit (in absolute value, over heads and the causal
        positions) of each block on the batch ``idx``: what grows before attention
        collapses onto one token.

        Args:
            idx: token ids (B, T).
        """
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        out = []
        for block in self.blocks:
            out.append(block.attention_logits(x).abs().masked_fill(~causal, 0).max().item())
            x = block(x)
        return out

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        return cross_entropy(self(idx), targets)

    @torch.no_grad()
    def generate(self, idx: Tensor, n: int, generator: torch.Generator | None = None,
                 temperature: float = 1.0) -> Tensor:
        """Append ``n`` sampled tokens to ``idx`` (B, T)."""
        for _ in range(n):
            logits = self(idx[:, -self.block_size:])[:, -1] / temperature
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


def tiny_transformer(vocab_size: int, block_size: int = 32, d_model: int = 64,
                     n_layers: int = 2, n_heads: int = 4, seed: int | None = 0,
                     qk_norm: bool = False) -> TinyTransformer:
    """The book's tiny transformer (chapters 6, 7, 9): a :class:`TinyTransformer` with the
    sizes used there, initialized with ``seed``.

    Args:
        vocab_size: the number of tokens (``LMTask.vocab_size``).
        block_size: the longest sequence.
        d_model: the width.
        n_layers: the number of blocks.
        n_heads: attention heads per block.
        seed: the initialization's seed.
        qk_norm: normalize queries and keys per head (:class:`Block`); off by default,
            which leaves the model and its numbers as they were.
    """
    return TinyTransformer(vocab_size, block_size=block_size, d_model=d_model,
                           n_layers=n_layers, n_heads=n_heads, seed=seed, qk_norm=qk_norm)
