"""Which torch a feature needs, said where the feature is used.

``pyproject.toml`` declares the oldest torch under which the unit tests pass and every
chapter runs with its claims holding (notes/torch-versions.md). A reader may still have an
older torch (installed without dependency checks, or a machine's own build): what works
there works, and what needs a newer torch says which, through :func:`require`, instead of
failing with an ``AttributeError`` or ``ImportError`` deep inside torch.
"""

from __future__ import annotations

import re

import torch

#: The first torch with each feature that optlib (or its tests) calls, checked in the
#: wheels' sources: ``torch.compiler.is_compiling`` (every step calls it) from 2.3,
#: ``torch.optim.Adafactor`` (the tests' reference of optlib's Adafactor) from 2.5,
#: FSDP2's public ``torch.distributed.fsdp.fully_shard`` from 2.6 and on the CPU (gloo, as
#: the book runs it) from 2.7 (2.6 calls ``record_event`` on a CPU stream that lacks it),
#: ``torch.optim.Muon`` (the tests' reference of optlib's Muon) from 2.9.
FIRST = {
    "torch.compiler.is_compiling": (2, 3),
    "torch.optim.Adafactor": (2, 5),
    "torch.distributed.fsdp.fully_shard": (2, 6),
    "torch.distributed.fsdp.fully_shard on the CPU": (2, 7),
    "torch.optim.Muon": (2, 9),
}


class TorchTooOld(RuntimeError):
    """A feature was asked of a torch older than the first one that has it."""


def parse(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a torch version string (``"2.6.0+cu124"`` gives ``(2, 6)``).

    Args:
        version: a version as ``torch.__version__`` spells it.
    """
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if match is None:
        raise ValueError(f"not a torch version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def has(feature: str, version: str | None = None) -> bool:
    """Whether this torch (or ``version``) is at least the first with ``feature``.

    Args:
        feature: a key of :data:`FIRST`.
        version: a torch version string; default ``torch.__version__``.
    """
    return parse(version or torch.__version__) >= FIRST[feature]


def require(feature: str, purpose: str, version: str | None = None) -> None:
    """Raise :class:`TorchTooOld`, naming the feature, what needs it and the torch that has
    it, when this torch (or ``version``) is older.

    Args:
        feature: a key of :data:`FIRST`.
        purpose: what in optlib needs it (said in the message).
        version: a torch version string; default ``torch.__version__``.
    """
    if not has(feature, version):
        first = ".".join(map(str, FIRST[feature]))
        raise TorchTooOld(f"{purpose} needs {feature}, which torch has from {first} on; "
                          f"this is torch {version or torch.__version__}: "
                          f"pip install 'torch>={first}'")
