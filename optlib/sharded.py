"""Parameters that may be shards: what a rule needs when a tensor is a ``DTensor``.

Under FSDP2 (``torch.distributed.fsdp.fully_shard``) every parameter, gradient and state
tensor is a ``DTensor``: each process holds a piece (by default a block of rows, dim 0)
and elementwise arithmetic runs on the pieces with no communication. That is all most
rules do, so they need nothing. A rule that reads a *whole* tensor needs one of these:

* :func:`reduced`: finish a reduction over a sharded dimension (a norm, a sum, a mean:
  each process has computed its piece's share, ``DTensor`` marks the result *partial*);
  one all-reduce, after which every process holds the whole result;
* :func:`norms`: the 2-norm of each tensor over all its elements (LAMB, LARS, Adafactor),
  one all-reduce for the whole list;
* :func:`whole` and :func:`shard_like`: the whole tensor on every process (an
  all-gather), and the piece of a whole result that this process holds (Muon's
  Newton-Schulz iteration, Shampoo's and SOAP's Kronecker factors are functions of the
  whole matrix).

On a plain tensor each is the identity (and :func:`norms` is ``torch._foreach_norm``),
so the numbers of a rule without sharding do not change.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from torch.distributed.tensor import DTensor, Replicate, distribute_tensor
except ImportError:  # a torch built without torch.distributed: nothing is ever sharded
    DTensor = ()


def is_sharded(x) -> bool:
    """Whether ``x`` is a ``DTensor`` (a piece of a tensor spread over processes).

    Args:
        x: any object.
    """
    return isinstance(x, DTensor)


def reduced(x: Tensor) -> Tensor:
    """``x`` with its pending reductions done: a ``DTensor`` whose placement is *partial*
    (each process holds its share of a sum, mean or norm) becomes the whole value on every
    process (one all-reduce); any other tensor is returned as it is.

    Args:
        x: a tensor or a DTensor.
    """
    if is_sharded(x) and any(p.is_partial() for p in x.placements):
        return x.redistribute(placements=[Replicate() if p.is_partial() else p
                                          for p in x.placements])
    return x


def norms(tensors: list[Tensor]) -> Tensor:
    """The 2-norm of each tensor over all its elements, as one 1-D tensor (entries in order).

    No value goes to Python (no ``.item()``, no ``.tolist()``), so this works on the
    ``meta`` device and costs no host synchronisation on an accelerator; for ``DTensor``
    inputs the per-process partial norms travel in one all-reduce.

    Args:
        tensors: tensors or DTensors.
    """
    return reduced(torch.stack(torch._foreach_norm(list(tensors))))  # a plain list for torch.compile


def whole(x: Tensor) -> Tensor:
    """The whole tensor, as a plain tensor, on every process (an all-gather for a sharded
    ``DTensor``); a plain tensor is returned as it is.

    Args:
        x: a tensor or a DTensor.
    """
    return x.full_tensor() if is_sharded(x) else x


def shard_like(value: Tensor, like: Tensor) -> Tensor:
    """The piece of ``value`` (a whole tensor, the same on every process) that ``like``
    holds, laid out as ``like`` is; ``value`` itself when ``like`` is a plain tensor or
    ``value`` is already a piece (a ``DTensor``). No communication: each process cuts its
    own piece.

    Args:
        value: the whole tensor, the same on every process.
        like: the tensor (or DTensor) whose piece and layout to take.
    """
    if is_sharded(like) and not is_sharded(value):
        return distribute_tensor(value, like.device_mesh, like.placements, src_data_rank=None)
    return value


def local(x: Tensor) -> Tensor:
    """What this process stores of ``x``: its piece of a ``DTensor``, or ``x`` itself.

    Args:
        x: a tensor or a DTensor.
    """
    return x.to_local() if is_sharded(x) else x
