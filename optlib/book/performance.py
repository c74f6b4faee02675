"""Helpers for the performance appendix: memory traffic of an optimizer step, measured
bandwidth, and careful timing.

An optimizer step does a handful of arithmetic operations per parameter but must read
and write every parameter, gradient and state tensor once: it is limited by memory
bandwidth, not by arithmetic. :data:`TRAFFIC` counts the arrays each optimizer must
move at the least, so that ``bytes / bandwidth`` is a lower bound on the time of a step
(a *roofline* bound), to hold measured times against.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Traffic:
    """Whole arrays (of the parameters' size) one step must read and write, at the least."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    note: str = ""

    @property
    def arrays(self) -> int:
        return len(self.reads) + len(self.writes)

    def bytes_per_param(self, element_size: int = 4) -> int:
        return self.arrays * element_size


#: The least traffic of one step, per optimizer (single pass unless noted).
TRAFFIC: dict[str, Traffic] = {
    "SGD": Traffic(("θ", "g"), ("θ",)),
    "SGD momentum": Traffic(("θ", "g", "b"), ("θ", "b")),
    "Adagrad": Traffic(("θ", "g", "G"), ("θ", "G")),
    "RMSprop": Traffic(("θ", "g", "v"), ("θ", "v")),
    "Adam": Traffic(("θ", "g", "m", "v"), ("θ", "m", "v")),
    "AdamW": Traffic(("θ", "g", "m", "v"), ("θ", "m", "v")),
    "Lion": Traffic(("θ", "g", "m"), ("θ", "m")),
    "LAMB": Traffic(("θ", "g", "m", "v", "θ", "m", "v"), ("m", "v", "θ"),
                    "two passes: the per-tensor norms of θ and u are needed before θ moves"),
}


def make_params(count: int, size: int, seed: int = 0, device=None,
                dtype=torch.float32) -> list[torch.nn.Parameter]:
    """``count`` parameters of ``size`` elements each, with small random gradients."""
    if count < 1 or size < 1:
        raise ValueError(f"count and size must be positive, got count={count}, size={size}")
    g = torch.Generator().manual_seed(seed)
    params = []
    for _ in range(count):
        p = torch.nn.Parameter(torch.randn(size, generator=g, dtype=dtype).to(device))
        p.grad = torch.randn(size, generator=g, dtype=dtype).mul_(1e-3).to(device)
        params.append(p)
    return params


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(steps: Mapping[str, Callable[[], object]], reps: int = 7,
                     min_time: float = 0.0, device="cpu") -> dict[str, float]:
    """Median seconds per call of each function in ``steps``.

    Repetitions are interleaved (one call of each function in turn, ``reps`` rounds), so
    a busy moment of a shared machine slows all of them alike. Every function is called
    twice first (to create optimizer state and warm caches). ``min_time``: keep adding
    rounds until the total time of the slowest function reaches it.
    """
    for fn in steps.values():
        for _ in range(2):
            fn()
    _sync(device)
    samples: dict[str, list[float]] = {label: [] for label in steps}
    rounds = 0
    while rounds < reps or max(sum(s) for s in samples.values()) < min_time:
        for label, fn in steps.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[label].append(time.perf_counter() - start)
        rounds += 1
    return {label: statistics.median(s) for label, s in samples.items()}


def stream_bandwidth(megabytes: int = 256, reps: int = 5, device="cpu") -> dict[str, float]:
    """Bytes per second of three memory-bound operations on float32 tensors of
    ``megabytes`` each, in the manner of the STREAM benchmark (median of ``reps``):

    * ``copy``: ``b.copy_(a)``, counted as 2 arrays (read ``a``, write ``b``);
    * ``scale``: ``a.mul_(s)`` in place, 2 arrays (read and write ``a``);
    * ``add``: ``a.add_(b)`` in place, 3 arrays (read ``a`` and ``b``, write ``a``).

    A copy into a fresh destination can be slower than in-place work, because a CPU
    reads a cache line before it writes it; the fastest of the three is the best
    bandwidth a memory-bound step can reach.
    """
    n = megabytes * 2**20 // 4
    a = torch.randn(n, device=device)
    b = torch.randn(n, device=device)
    c = torch.empty_like(a)
    ops = {"copy": (lambda: c.copy_(a), 2), "scale": (lambda: a.mul_(1.0), 2),
           "add": (lambda: a.add_(b, alpha=0.0), 3)}
    seconds = time_interleaved({k: fn for k, (fn, _) in ops.items()}, reps=reps, device=device)
    return {k: arrays * n * 4 / seconds[k] for k, (_, arrays) in ops.items()}


def step_of(optimizer: torch.optim.Optimizer) -> Callable[[], object]:
    """A zero-argument function that takes one optimizer step (gradients stay as they are)."""
    return optimizer.step


def count_traffic(fn: Callable[[], object]) -> dict[str, int]:
    """Bytes that ``fn()`` reads and writes, op by op, if nothing stays in cache.

    Every ATen operator that runs is inspected (with a ``TorchDispatchMode``): each tensor
    argument counts as read once; each argument the operator mutates (``add_``'s self,
    every list of a ``_foreach_*_`` or ``_fused_adam_`` call) and each fresh output tensor
    counts as written once. So an implementation that passes over memory five times is
    charged five times, which is what separates an unfused from a fused step.
    Returns ``{"read": bytes, "written": bytes, "ops": number of operator calls}``.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    totals = {"read": 0, "written": 0, "ops": 0}

    def nbytes(x) -> int:
        return x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            totals["ops"] += 1
            schema = func._schema.arguments
            values = list(args) + [kwargs.get(a.name) for a in schema[len(args):]]
            written_ids = set()
            for arg, value in zip(schema, values):
                leaves = [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]
                totals["read"] += sum(nbytes(t) for t in leaves)
                if arg.alias_info is not None and arg.alias_info.is_write:
                    totals["written"] += sum(nbytes(t) for t in leaves)
                    written_ids.update(id(t) for t in leaves)
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and id(t) not in written_ids:
                    totals["written"] += nbytes(t)
            return out

    with Counter():
        fn()
    return totals


_STREAM_BUFFERS: dict = {}


def time_with_bandwidth(steps: Mapping[str, Callable[[], object]], reps: int = 7,
                        megabytes: int = 512, device="cpu") -> tuple[dict[str, float], float]:
    """:func:`time_interleaved` with one more contestant, the in-place scaling of a
    ``megabytes`` array, whose rate is returned as the bandwidth (bytes per second) seen
    *at the same moments* as the steps: on a shared machine, a bound computed from a
    bandwidth measured minutes earlier can be off by a factor of two."""
    key = (megabytes, str(device))
    if key not in _STREAM_BUFFERS:
        _STREAM_BUFFERS[key] = torch.ones(megabytes * 2**20 // 4, device=device)
    buf = _STREAM_BUFFERS[key]
    if "stream" in steps:
        raise ValueError("the name 'stream' is reserved for the bandwidth probe")
    times = time_interleaved({**steps, "stream": lambda: buf.mul_(1.0)}, reps=reps, device=device)
    return times, 2 * buf.numel() * buf.element_size() / times.pop("stream")
