"""Data-parallel training with optlib's optimizers, on the real engine: ``torch.distributed``.

Chapter 8 and ``tests/test_distributed.py`` use this module to show two facts on one CPU:

* under DDP, ``world_size`` processes that each see a slice of the batch end with the same
  parameters as one process that sees the whole batch (DDP averages the gradients, and
  the mean of equal-sized slices' mean losses is the whole batch's mean loss);
* under ``ZeroRedundancyOptimizer(optimizer_class=...)`` (ZeRO stage 1) every process keeps
  the optimizer state of only its share of the parameters, with the same result.

The workers are spawned (the portable start method, and the only one CUDA allows), so
the function each process runs must be importable by name: that is why it lives here
and not in a notebook cell. Processes talk over the gloo backend on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import optlib
from optlib.book import numerics

#: Size of the toy regression problem every process builds identically.
IN_FEATURES, HIDDEN, LOCAL_BATCH = 8, 16, 16


@dataclass
class Job:
    """One training run: ``optimizer`` names an optlib class (``"AdamW"``), ``hyper`` its
    arguments; ``zero=True`` wraps it in ``ZeroRedundancyOptimizer``."""

    optimizer: str
    hyper: dict = field(default_factory=dict)
    zero: bool = False
    steps: int = 5


@dataclass
class Result:
    """What a run ends with: the parameters (rank 0's copy) and, per rank, the bytes of
    optimizer state that rank holds and how many parameter tensors it keeps state for."""

    job: Job
    params: list[torch.Tensor]
    state_bytes: list[int]
    state_tensors: list[int]
    replica_gap: float = 0.0  # largest difference between ranks' copies of the parameters


def build_model(seed: int = 0) -> nn.Module:
    """A small float64 MLP, the same on every process (DDP also broadcasts rank 0's weights)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(),
                         nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                         nn.Linear(HIDDEN, 1)).double()


def global_batch(step: int, world_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The combined batch of ``step``: ``world_size * LOCAL_BATCH`` rows; rank r takes slice r."""
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    x = torch.randn(world_size * LOCAL_BATCH, IN_FEATURES, generator=g, dtype=torch.float64)
    y = x[:, :1].sin() + 0.1 * torch.randn(len(x), 1, generator=g, dtype=torch.float64)
    return x, y


def _optimizer(job: Job, params):
    cls = getattr(optlib, job.optimizer)
    if job.zero:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        return ZeroRedundancyOptimizer(params, optimizer_class=cls, **job.hyper)
    return cls(params, **job.hyper)


def _local(optimizer):
    """The optimizer that holds this process's state (ZeRO wraps a local one)."""
    return getattr(optimizer, "optim", optimizer)


def train_single(job: Job, world_size: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """One process, whole batches: the reference a data-parallel run must reproduce."""
    model = build_model(seed)
    optimizer = getattr(optlib, job.optimizer)(model.parameters(), **job.hyper)
    for step in range(job.steps):
        x, y = global_batch(step, world_size, seed)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def _worker(rank: int, world_size: int, port: int, jobs: Sequence[Job], seed: int,
            out_dir: str) -> None:
    """What each spawned process runs: every job under DDP, results saved for the parent."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    numerics.apply()  # the spawned process inherits the pins; oneDNN is a setting of the process
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world_size)
    try:
        results = []
        for job in jobs:
            model = DDP(build_model(seed))
            optimizer = _optimizer(job, model.parameters())
            for step in range(job.steps):
                x, y = global_batch(step, world_size, seed)
                rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
                nn.functional.mse_loss(model(x[rows]), y[rows]).backward()  # DDP averages grads
                optimizer.step()
                optimizer.zero_grad()
            local = _local(optimizer)
            results.append(dict(params=[p.detach().clone() for p in model.parameters()],
                                state_bytes=optlib.state_bytes(local),
                                state_tensors=sum(1 for st in local.state.values() if st)))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_data_parallel(jobs: Sequence[Job], world_size: int = 2, seed: int = 0) -> list[Result]:
    """Spawn ``world_size`` CPU processes (gloo, 127.0.0.1) and run every job in them.

    Spawning costs a few seconds (each process imports torch), so one call runs a list of
    jobs. Returns one :class:`Result` per job.
    """
    import torch.multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"Invalid world_size: {world_size}")
    jobs = list(jobs)
    # gloo binds to the address the host name resolves to; on a machine whose name does not
    # resolve it warns and falls back to loopback. Name the loopback device for the children
    # (they inherit the environment at spawn time), and leave the caller's environment as it was.
    set_ifname = sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in os.environ
    if set_ifname:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            mp.spawn(_worker, args=(world_size, free_port(), jobs, seed, out_dir),
                     nprocs=world_size, join=True)
            per_rank = [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(world_size)]
    finally:
        if set_ifname:
            del os.environ["GLOO_SOCKET_IFNAME"]
    return [Result(job=job, params=per_rank[0][i]["params"],
                   state_bytes=[per_rank[r][i]["state_bytes"] for r in range(world_size)],
                   state_tensors=[per_rank[r][i]["state_tensors"] for r in range(world_size)],
                   replica_gap=max(max_difference(per_rank[0][i]["params"],
                                                  per_rank[r][i]["params"])
                                   for r in range(world_size)))
            for i, job in enumerate(jobs)]


def max_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference between two lists of parameters."""
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))
