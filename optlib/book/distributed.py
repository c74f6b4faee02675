"""Data-parallel training with optlib's optimizers, on the real engine: ``torch.distributed``.

Chapter 8 and ``tests/test_distributed.py`` use this module to show two facts on one CPU:

* under DDP, ``world_size`` processes that each see a slice of the batch end with the same
  parameters as one process that sees the whole batch (DDP averages the gradients, and
  the mean of equal-sized slices' mean losses is the whole batch's mean loss);
* under ``ZeroRedundancyOptimizer(optimizer_class=...)`` (ZeRO stage 1) every process keeps
  the optimizer state of only its share of the parameters, with the same result;
* under FSDP2 (``fully_shard``: every parameter a ``DTensor`` split by rows) every optlib
  optimizer ends where one process ends (:func:`run_fsdp`), including those that read a
  whole tensor (LAMB, LARS, Adafactor, Muon, Shampoo, SOAP: they communicate, and
  :class:`FSDPResult`
  says how many bytes); its state saves and loads with ``torch.distributed.checkpoint``,
  resumes bit for bit and reshards from 2 processes to 1 and back;
* the bytes of optimizer state each process stores under the three schemes
  (:func:`memory_per_rank`), against the even share.

The workers are spawned (the portable start method, and the only one CUDA allows), so
the function each process runs must be importable by name: that is why it lives here
and not in a notebook cell. Processes talk over the gloo backend on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn

import optlib
from optlib.book import models, numerics
from optlib.book.compare import max_difference

#: Size of the toy regression problem every process builds identically.
IN_FEATURES, HIDDEN, LOCAL_BATCH = 8, 16, 16
#: The layer widths of the DDP and ZeRO runs' MLP, input to output.
WIDTHS = (IN_FEATURES, HIDDEN, HIDDEN, 1)
#: How long a collective waits for the other processes before it fails, so that a test
#: that would hang (one process stuck or dead) fails instead.
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
    """The book's MLP (:func:`optlib.book.models.mlp`) of these widths in float64, tanh
    between the layers, initialized with ``seed``: the same on every process (DDP also
    broadcasts rank 0's weights)."""
    return models.mlp(widths, nn.Tanh, seed=seed, dtype=torch.float64)


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
            return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False)  # our own files
                    for r in range(world_size)]
    finally:
        if set_ifname:
            del os.environ["GLOO_SOCKET_IFNAME"]


# ---- FSDP2: sharded parameters, distributed checkpoints ------------------------------------
#: The FSDP2 runs' MLP. Odd widths make FSDP2 split rows unevenly (31 = 16 + 15, 5 = 3 + 2):
#: the case where a statistic or a quantization block computed per shard goes wrong.
FSDP_WIDTHS = (16, 31, 32, 5)


@dataclass
class FSDPResult:
    """One job under FSDP2 on ``world_size`` processes.

    ``params``: the whole parameters after ``job.steps`` steps (gathered). ``state_bytes``:
    optimizer state each rank stores. ``comm``: bytes the optimizer step moves, by
    collective (``"all_gather"``: size of the gathered tensors, ``"all_reduce"``: size of
    the reduced ones) and the number of collectives (``"calls"``), on the first step.

    Checkpoints (``torch.distributed.checkpoint``, saved after ``job.steps // 2`` steps):
    ``resumed_exact``: loading it into a fresh sharded model and optimizer and training on
    gives, bit for bit, the parameters of the uninterrupted run. ``one_process_state_exact``:
    loaded into one process (an unsharded model), the optimizer state equals the gathered
    sharded state bit for bit. ``back_state_exact`` and ``back_params_exact``: saved again
    by that one process and loaded into ``world_size`` processes, the state is again the
    same, and training on ends on the uninterrupted run's parameters bit for bit.
    ``error``: what the job raised instead (``None`` when it ran).
    """

    job: Job
    params: list[torch.Tensor] = field(default_factory=list)
    state_bytes: list[int] = field(default_factory=list)
    comm: dict = field(default_factory=dict)
    resumed_exact: bool = False
    one_process_state_exact: bool = False
    back_state_exact: bool = False
    back_params_exact: bool = False
    error: str | None = None


def shard(model: nn.Sequential) -> nn.Sequential:
    """FSDP2 as it is usually applied: ``fully_shard`` on each Linear, then on the root.
    Every parameter becomes a ``DTensor`` sharded along dim 0 (rows). Needs torch 2.6 or
    later (the first with ``fully_shard`` in ``torch.distributed.fsdp``), on the CPU 2.7."""
    from optlib._torch_version import require

    require("torch.distributed.fsdp.fully_shard", "FSDP2 (optlib.book.distributed.shard)")
    if all(p.device.type == "cpu" for p in model.parameters()):
        require("torch.distributed.fsdp.fully_shard on the CPU",
                "FSDP2 (optlib.book.distributed.shard) of a model on the CPU")
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    return fully_shard(model)


@contextmanager
def _single_process_intended(no_dist: bool):
    """With ``no_dist=True`` the single process is what we asked for: silence the
    checkpoint module's warning that it is "assuming the intent" (it would reach the
    chapter's output from a spawned process)."""
    with warnings.catch_warnings():
        if no_dist:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled",
                                    category=UserWarning)
        yield


def save_checkpoint(model: nn.Module, optimizer, path, *, no_dist: bool = False) -> None:
    """Save model and optimizer state with ``torch.distributed.checkpoint`` (each process
    writes its shards; ``no_dist=True`` for a single process in a distributed program)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    with _single_process_intended(no_dist):
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=path,
                 no_dist=no_dist)


def load_checkpoint(model: nn.Module, optimizer, path, *, no_dist: bool = False) -> None:
    """Load what :func:`save_checkpoint` saved, into a model and optimizer sharded in any way
    (``torch.distributed.checkpoint`` reshards). A schedule-free optimizer must be in
    training mode: ``get_state_dict`` creates the state with a zero-gradient ``step()``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    with _single_process_intended(no_dist):
        dcp.load(state, checkpoint_id=path, no_dist=no_dist)
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])


def full_optimizer_state(model: nn.Module, optimizer) -> dict:
    """Every state tensor as a whole plain tensor, keyed ``(parameter name, state key)``
    (a collective when the model is sharded: call it on every process)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer,
                                     options=StateDictOptions(full_state_dict=True))
    return {(name, key): value for name, st in state["state"].items()
            for key, value in st.items() if isinstance(value, torch.Tensor)}


def same_state(a: dict, b: dict) -> bool:
    """Bit-for-bit equality of two :func:`full_optimizer_state` dicts."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def same_tensors(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


class CommunicationCounter:
    """Count what DTensor operations communicate while the ``with`` block runs: the bytes
    of the tensors they all-gather (the gathered result) and all-reduce, and the number of
    collectives. FSDP2's own gathers and reduce-scatters (forward, backward) are not
    ``DTensor`` operations and are not counted: this sees the optimizer's communication."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        self.bytes = {"all_gather": 0, "all_reduce": 0}
        self.calls = 0

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                from torch.distributed.tensor import DTensor

                if any(issubclass(t, DTensor) for t in types):
                    return NotImplemented          # let DTensor turn it into collectives first
                out = func(*args, **(kwargs or {}))
                if func.namespace == "_c10d_functional":
                    name = {"all_gather_into_tensor": "all_gather",
                            "all_reduce": "all_reduce"}.get(func._opname)
                    if name is not None:
                        counter.bytes[name] += out.numel() * out.element_size()
                        counter.calls += 1
                return out

        self._mode = _Mode()

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)

    def summary(self) -> dict:
        return {**self.bytes, "calls": self.calls}


def _fsdp_job(job: Job, rank: int, world_size: int, seed: int, where: Path) -> FSDPResult:
    """Everything :class:`FSDPResult` reports, for one job (every process runs this)."""
    import torch.distributed as dist

    from optlib.sharded import whole

    def fresh():
        model = shard(build_model(seed, job.widths))
        return model, make_optimizer(job, model)

    def run(model, optimizer, steps):
        train(model, optimizer, job, steps, world_size, rank, seed)
        _evaluation_weights(optimizer)
        return [whole(p.detach()) for p in model.parameters()]

    out = FSDPResult(job)
    half = job.steps // 2
    try:
        # Uninterrupted; the first step counted (FSDP2's own gathers and reduce-scatters
        # are not DTensor operations: what is counted is the optimizer's).
        model, optimizer = fresh()
        with CommunicationCounter() as counter:
            train(model, optimizer, job, range(1), world_size, rank, seed)
        out.comm = counter.summary()
        out.params = run(model, optimizer, range(1, job.steps))
        out.state_bytes = optlib.state_bytes(optimizer)      # this process's pieces

        # Stopped halfway, saved, loaded into a fresh sharded model, continued.
        model, optimizer = fresh()
        train(model, optimizer, job, range(half), world_size, rank, seed)
        state = full_optimizer_state(model, optimizer)
        save_checkpoint(model, optimizer, where / "sharded")
        model, optimizer = fresh()
        load_checkpoint(model, optimizer, where / "sharded")
        out.resumed_exact = same_tensors(run(model, optimizer, range(half, job.steps)), out.params)

        # Loaded into one process, saved there, loaded back into the sharded model.
        if rank == 0:
            single = build_model(seed, job.widths)
            single_optimizer = make_optimizer(job, single)
            load_checkpoint(single, single_optimizer, where / "sharded", no_dist=True)
            out.one_process_state_exact = same_state(
                full_optimizer_state(single, single_optimizer), state)
            save_checkpoint(single, single_optimizer, where / "one_process", no_dist=True)
        dist.barrier()
        model, optimizer = fresh()
        load_checkpoint(model, optimizer, where / "one_process")
        out.back_state_exact = same_state(full_optimizer_state(model, optimizer), state)
        out.back_params_exact = same_tensors(run(model, optimizer, range(half, job.steps)),
                                             out.params)
    except Exception as error:  # noqa: BLE001 (reported to the parent, which decides)
        out.error = f"{type(error).__name__}: {error}"
    return out


def _tasks_worker(rank: int, world_size: int, port: int, tasks: Sequence[tuple], seed: int,
                  out_dir: str) -> None:
    """What each spawned process runs for :func:`scaling_out`: ``(function, job)`` pairs."""
    import torch.distributed as dist

    _init_process_group(rank, world_size, port)
    try:
        results = [function(job, rank, world_size, seed, Path(out_dir) / f"task{i}")
                   for i, (function, job) in enumerate(tasks)]
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_fsdp(jobs: Sequence[Job], world_size: int = 2, seed: int = 0) -> list[FSDPResult]:
    """Spawn ``world_size`` CPU processes (gloo, 127.0.0.1) and run every job under FSDP2
    (see :class:`FSDPResult` for what is measured)."""
    return scaling_out(jobs, (), world_size=world_size, seed=seed)[0]


# ---- memory per rank: DDP, ZeRO-1, FSDP2 ---------------------------------------------------
#: The memory table's MLP, big enough for the bytes to be dominated by the weight matrices.
MEMORY_WIDTHS = (64, 256, 256, 10)
SCHEMES = ("DDP", "ZeRO-1", "FSDP2")


def _memory_job(job: Job, rank: int, world_size: int, seed: int, where: Path) -> list[dict]:
    """One step of ``job`` under each scheme: the bytes of optimizer state and of parameters
    this process stores, one dict per scheme."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from optlib.sharded import local

    rows = []
    for scheme in SCHEMES:
        model = {"DDP": DDP, "ZeRO-1": DDP, "FSDP2": shard}[scheme](build_model(seed, job.widths))
        optimizer = make_optimizer(replace(job, zero=scheme == "ZeRO-1"), model)
        train(model, optimizer, job, range(1), world_size, rank, seed)
        rows.append(dict(optimizer=job.optimizer, scheme=scheme,
                         state_bytes=optlib.state_bytes(_local(optimizer)),
                         param_bytes=sum(local(p).numel() * p.element_size()
                                         for p in model.parameters())))
    return rows


def memory_per_rank(optimizers: Sequence[str] | dict = ("AdamW",),
                    widths: Sequence[int] = MEMORY_WIDTHS, world_size: int = 2,
                    seed: int = 0) -> list[dict]:
    """Measured bytes per rank, after one step, of each optimizer's state under DDP, ZeRO-1
    (``ZeroRedundancyOptimizer``) and FSDP2, next to the theory.

    ``optimizers``: names (default hyperparameters) or a dict name → hyperparameters.
    One row per (optimizer, scheme): ``state_bytes`` and ``param_bytes`` (lists, one entry
    per rank), ``single`` (the state bytes of one process holding everything) and
    ``ideal`` = what each rank would hold if the state were split evenly: ``single`` under
    DDP (every rank keeps all of it), ``single / world_size`` under ZeRO-1 and FSDP2. ZeRO-1
    gives each rank whole tensors (a rank may hold more than its share); FSDP2 gives each
    rank a block of rows of every tensor, plus what the optimizer keeps whole on every
    rank (0-dim step counters; Adafactor's column statistics)."""
    return scaling_out((), optimizers, widths=widths, world_size=world_size, seed=seed)[1]


def scaling_out(jobs: Sequence[Job] = (), memory: Sequence[str] | dict = (),
                widths: Sequence[int] = MEMORY_WIDTHS, world_size: int = 2,
                seed: int = 0) -> tuple[list[FSDPResult], list[dict]]:
    """:func:`run_fsdp` of ``jobs`` and :func:`memory_per_rank` of ``memory`` (on an MLP of
    ``widths``) in one set of spawned processes (spawning costs seconds)."""
    hyper = memory if isinstance(memory, dict) else dict.fromkeys(memory, {})
    memory_jobs = [Job(name, h, widths=tuple(widths)) for name, h in hyper.items()]
    jobs = list(jobs)
    tasks = [(_fsdp_job, job) for job in jobs] + [(_memory_job, job) for job in memory_jobs]
    per_rank = _spawn(_tasks_worker, (tasks, seed), world_size)
    results = per_rank[0][:len(jobs)]
    for i, result in enumerate(results):
        result.state_bytes = [per_rank[r][i].state_bytes for r in range(world_size)]
    rows = []
    for k, job in enumerate(memory_jobs):
        model = build_model(seed, job.widths)
        optimizer = make_optimizer(job, model)
        train(model, optimizer, job, range(1), world_size, seed=seed)
        single = optlib.state_bytes(optimizer)
        for s, row in enumerate(per_rank[0][len(jobs) + k]):
            rows.append(dict(row, single=single,
                             ideal=single if row["scheme"] == "DDP" else single / world_size,
                             state_bytes=[per_rank[r][len(jobs) + k][s]["state_bytes"]
                                          for r in range(world_size)],
                             param_bytes=[per_rank[r][len(jobs) + k][s]["param_bytes"]
                                          for r in range(world_size)]))
    return results, rows


def memory_table(rows: Sequence[dict]) -> str:
    """:func:`memory_per_rank`'s rows as a text table (bytes per rank, and the ratio of the
    largest rank's state to the even share), at most 88 characters a line."""
    lines = [f"{'optimizer':<11}{'scheme':<8}{'state bytes per rank':>22}{'even share':>12}"
             f"{'max/share':>11}{'param bytes per rank':>22}"]
    for r in rows:
        lines.append(f"{r['optimizer']:<11}{r['scheme']:<8}{str(r['state_bytes']):>22}"
                     f"{r['ideal']:>12.0f}{max(r['state_bytes']) / max(r['ideal'], 1):>11.2f}"
                     f"{str(r['param_bytes']):>22}")
    return "\n".join(lines)


def fsdp_table(results: Sequence[FSDPResult], seed: int = 0) -> str:
    """:func:`run_fsdp`'s results as a text table: the largest difference from one process on
    the combined batches (:func:`train_single`; a difference below 1e-12 is printed as
    round-off, ``book.report.gap``), state bytes per rank, what the optimizer step
    communicates (bytes gathered, bytes reduced, number of collectives), and whether the
    checkpoint checks held (resume, one process, back: ✓ or ✗ each), at most 88 characters a line."""
    from optlib.book.report import gap

    lines = [f"{'optimizer':<11}{'max |θ - θ_single|':>20}{'state bytes/rank':>17}"
             f"{'gathered B':>11}{'reduced B':>10}{'calls':>7}{'checkpoints':>12}"]
    for r in results:
        if r.error is not None:
            lines.append(f"{r.job.optimizer:<11}refused: {r.error.splitlines()[0].split('. ')[0]}")
            continue
        difference = max_difference(r.params, train_single(r.job, len(r.state_bytes), seed))
        checks = "".join("✓" if ok else "✗" for ok in (
            r.resumed_exact, r.one_process_state_exact, r.back_state_exact, r.back_params_exact))
        lines.append(f"{r.job.optimizer:<11}{gap(difference):>20}{str(r.state_bytes):>17}"
                     f"{r.comm['all_gather']:>11}{r.comm['all_reduce']:>10}{r.comm['calls']:>7}"
                     f"{checks:>12}")
    return "\n".join(lines)
