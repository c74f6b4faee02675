"""How much memory an optimizer's state holds."""

from __future__ import annotations

import torch

from .sharded import local


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        value = local(value)          # a DTensor: the piece this process stores
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in ``optimizer.state``: every tensor in it (moments, buffers, counters,
    quantization codes and scales). Parameters and gradients are not counted. Under FSDP2
    (``DTensor`` state) it counts what this process stores: its pieces.

    Args:
        optimizer: any torch.optim optimizer.
    """
    return sum(_tensor_bytes(st) for st in optimizer.state.values())
