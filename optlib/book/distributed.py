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
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn

import optlib
from optlib.book import numerics

#: Size of the toy regression problem every process builds identically.
IN_FEATURES, HIDDEN, LOCAL_BATCH = 8, 16, 16
#: The DDP and ZeRO runs' MLP: its layer widths, input to output.
WIDTHS = (IN_FEATURES, HIDDEN, HIDDEN, 1)
#: How long a collective waits for the other processes before it fails: a test that would
#: hang (one process stuck or dead) fails instead.
TIMEOUT = timedelta(seconds=120)


@dataclass
class Job:
    """One training run: ``optimizer`` names an optlib class (``"AdamW"``), ``hyper`` its
    arguments; ``zero=True`` wraps it in ``ZeroRedundancyOptimizer``; ``widths`` are the
    MLP's layer widths (see :func:`build_model`)."""

    optimizer: str
    hyper: dict = field(default_factory=dict)
    zero: bool = False
    steps: int = 5
    widths: tuple[int, ...] = WIDTHS


@dataclass
class Result:
    """What a run ends with: the parameters (rank 0's copy) and, per rank, the bytes of
    optimizer state that rank holds and how many parameter tensors it keeps state for."""

    job: Job
    params: list[torch.Tensor]
    state_bytes: list[int]
    state_tensors: list[int]
    replica_gap: float = 0.0  # largest difference between ranks' copies of the parameters


def build_model(seed: int = 0, widths: Sequence[int] = WIDTHS) -> nn.Sequential:
    """A small float64 MLP (tanh between the layers), the same on every process (DDP also
    broadcasts rank 0's weights)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers += [nn.Tanh(), nn.Linear(n_in, n_out)] if i else [nn.Linear(n_in, n_out)]
    return nn.Sequential(*layers).double()


def global_batch(step: int, world_size: int, seed: int = 0,
                 widths: Sequence[int] = WIDTHS) -> tuple[torch.Tensor, torch.Tensor]:
    """The combined batch of ``step``: ``world_size * LOCAL_BATCH`` rows; rank r takes slice r."""
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    n_in, n_out = widths[0], widths[-1]
    x = torch.randn(world_size * LOCAL_BATCH, n_in, generator=g, dtype=torch.float64)
    y = x[:, :n_out].sin() + 0.1 * torch.randn(len(x), n_out, generator=g, dtype=torch.float64)
    return x, y


def make_optimizer(job: Job, model: nn.Module) -> torch.optim.Optimizer:
    """``job``'s optimizer for ``model``: Muon gets the 2-D weights, MuonWithAdamW splits the
    model itself (:func:`optlib.muon_param_groups`), every other optimizer gets every
    parameter; schedule-free optimizers are put in training mode."""
    cls = getattr(optlib, job.optimizer)
    if job.optimizer == "MuonWithAdamW":
        return cls(model, **job.hyper)
    params = [p for p in model.parameters() if job.optimizer != "Muon" or p.ndim == 2]
    if job.zero:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        return ZeroRedundancyOptimizer(params, optimizer_class=cls, **job.hyper)
    optimizer = cls(params, **job.hyper)
    if hasattr(optimizer, "train"):
        optimizer.train()
    return optimizer


def train(model: nn.Module, optimizer, job: Job, steps: range, world_size: int,
          rank: int | None = None, seed: int = 0) -> None:
    """Take ``steps`` (step numbers) on the combined batches of ``world_size`` slices: all
    of each batch when ``rank`` is None, else slice ``rank``. SophiaG refreshes its
    Hessian estimate from every step's gradients (a check of the machinery, not of the
    estimator)."""
    rows = slice(None) if rank is None else slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    for step in steps:
        x, y = global_batch(step, world_size, seed, job.widths)
        nn.functional.mse_loss(model(x[rows]), y[rows]).backward()   # DDP/FSDP average grads
        if isinstance(optimizer, optlib.SophiaG):
            optimizer.update_hessian()
        optimizer.step()
        optimizer.zero_grad()


def _evaluation_weights(optimizer) -> None:
    """Schedule-free optimizers: switch the parameters to the averaged weights x."""
    if hasattr(optimizer, "eval"):
        optimizer.eval()


def _local(optimizer):
    """The optimizer that holds this process's state (ZeRO wraps a local one)."""
    return getattr(optimizer, "optim", optimizer)


def train_single(job: Job, world_size: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """One process, whole batches: the reference a data-parallel run must reproduce."""
    model = build_model(seed, job.widths)
    optimizer = make_optimizer(replace(job, zero=False), model)
    train(model, optimizer, job, range(job.steps), world_size, seed=seed)
    _evaluation_weights(optimizer)
    return [p.detach().clone() for p in model.parameters()]


def _init_process_group(rank: int, world_size: int, port: int) -> None:
    import torch.distributed as dist

    numerics.apply()  # the spawned process inherits the pins; oneDNN is a setting of the process
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world_size, timeout=TIMEOUT)


def _worker(rank: int, world_size: int, port: int, jobs: Sequence[Job], seed: int,
            out_dir: str) -> None:
    """What each spawned process runs: every job under DDP, results saved for the parent."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    _init_process_group(rank, world_size, port)
    try:
        results = []
        for job in jobs:
            model = DDP(build_model(seed, job.widths))
            optimizer = make_optimizer(job, model)
            train(model, optimizer, job, range(job.steps), world_size, rank, seed)
            _evaluation_weights(_local(optimizer))
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
    jobs = list(jobs)
    per_rank = _spawn(_worker, (jobs, seed), world_size)
    return [Result(job=job, params=per_rank[0][i]["params"],
                   state_bytes=[per_rank[r][i]["state_bytes"] for r in range(world_size)],
                   state_tensors=[per_rank[r][i]["state_tensors"] for r in range(world_size)],
                   replica_gap=max(max_difference(per_rank[0][i]["params"],
                                                  per_rank[r][i]["params"])
                                   for r in range(world_size)))
            for i, job in enumerate(jobs)]


def _spawn(worker, args: tuple, world_size: int) -> list:
    """Run ``worker(rank, world_size, port, *args, out_dir)`` in ``world_size`` spawned
    processes; each saves what it returns to ``out_dir/rank{r}.pt``. Returns them by rank."""
    import torch.multiprocessing as mp

    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"Invalid world_size: {world_size}")
    # gloo binds to the address the host name resolves to; on a machine whose name does not
    # resolve it warns and falls back to loopback. Name the loopback device for the children
    # (they inherit the environment at spawn time), and leave the caller's environment as it was.
    set_ifname = sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in os.environ
    if set_ifname:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            mp.spawn(worker, args=(world_size, free_port(), *args, out_dir),
                     nprocs=world_size, join=True)
            return [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(world_size)]
    finally:
        if set_ifname:
            del os.environ["GLOO_SOCKET_IFNAME"]


def max_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference between two lists of parameters."""
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))
