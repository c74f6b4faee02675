"""Helpers for the performance appendix: memory traffic of an optimizer step, measured
bandwidth, and careful timing.

An optimizer step does a handful of arithmetic operations per parameter but must read
and write every parameter, gradient and state tensor once: it is limited by memory
bandwidth, not by arithmetic. :data:`TRAFFIC` counts the arrays each optimizer must
move at the least, so that ``bytes / bandwidth`` is a lower bound on the time of a step
(a *roofline* bound), to hold measured times against.
"""

from __future__ import annotations

import random
import re
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
                     min_time: float = 0.0, device="cpu", block: int = 1,
                     seed: int = 0, keep: str = "median") -> dict[str, float]:
    """Median seconds per call of each function in ``steps`` (with ``keep="min"``, the
    fastest round's).

    Repetitions are interleaved (``block`` calls of each function in turn, ``reps``
    rounds), so a busy moment of a shared machine slows all of them alike. Each round
    runs them in a fresh random order (seeded by ``seed``): what a function finds in the
    caches depends on what ran just before it, and a fixed or merely rotating order (which
    keeps the same neighbours) would give one function the same predecessor every time.
    Every function is called twice first (to create optimizer state and warm caches).
    ``min_time``: keep adding rounds until the total time of the slowest function reaches it.
    """
    if keep not in ("median", "min"):
        raise ValueError(f"keep must be 'median' or 'min', got {keep!r}")
    for fn in steps.values():
        for _ in range(2):
            fn()
    _sync(device)
    labels = list(steps)
    order = random.Random(seed)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    rounds = 0
    while rounds < reps or max(sum(s) for s in samples.values()) < min_time:
        for label in order.sample(labels, len(labels)):
            fn = steps[label]
            start = time.perf_counter()
            for _ in range(block):
                fn()
            _sync(device)
            samples[label].append((time.perf_counter() - start) / block)
        rounds += 1
    statistic = statistics.median if keep == "median" else min
    return {label: statistic(s) for label, s in samples.items()}


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
            for arg, value in zip(schema, values, strict=False):
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
    bandwidth measured minutes earlier can be off by a factor of two.

    Every time, the probe's included, is the *fastest* of the ``reps`` rounds, not their
    median: another program can only slow a round down, so each one's fastest round is its
    least disturbed, and the step times and the bandwidth then describe the same quiet
    moments. Medians can fall on rounds of different loads, the probe's on a busy one and
    a step's on a quiet one, which puts a step below the bound of its own bytes."""
    key = (megabytes, str(device))
    if key not in _STREAM_BUFFERS:
        _STREAM_BUFFERS[key] = torch.ones(megabytes * 2**20 // 4, device=device)
    buf = _STREAM_BUFFERS[key]
    if "stream" in steps:
        raise ValueError("the name 'stream' is reserved for the bandwidth probe")
    times = time_interleaved({**steps, "stream": lambda: buf.mul_(1.0)}, reps=reps,
                             device=device, keep="min")
    return times, 2 * buf.numel() * buf.element_size() / times.pop("stream")


def plot_step_times(xs, times: Mapping[str, list[float]], xlabel: str,
                    bound: list[float] | None = None, bound_label: str = "", ax=None,
                    ylabel: str = "ms per Adam step"):
    """Step times against ``xs`` on log-log axes, one marked line per implementation, in
    milliseconds, with a legend; optionally a lower bound (dashed grey), such as the
    roofline ``bytes / bandwidth`` at each ``x``.

    Args:
        xs: the values on the x axis (parameters, tensors, ...).
        times: ``{implementation: seconds per step at each x}``.
        xlabel: the x axis' title.
        bound: seconds per step at each x that no implementation can beat, or None.
        bound_label: the bound's entry in the legend.
        ax: the axes to draw into (default: a new figure's).
        ylabel: the y axis' title.
    """
    from optlib.book import plots

    xs = list(xs)
    for label, seconds in times.items():
        if len(seconds) != len(xs):
            raise ValueError(f"{label!r} has {len(seconds)} times for {len(xs)} xs")
    ax = plots.curves({k: (xs, [1e3 * s for s in ts]) for k, ts in times.items()}, ax=ax,
                      xlabel=xlabel, ylabel=ylabel, logx=True, logy=True, marker="o",
                      markersize=3)
    if bound is not None:
        ax.plot(xs, [1e3 * s for s in bound], color="gray", ls="--", label=bound_label)
        ax.legend()
    return ax


# ---- optlib against torch.optim: the table of benchmarks/step_time.py --------------------

#: The two shapes of the benchmark, many small tensors (per-tensor overhead) and a few
#: large ones (memory bandwidth).
SHAPES = {"200 x 5k": (200, 5_000), "20 x 500k": (20, 500_000)}


def _benchmarked():
    import optlib

    return {
        "SGD momentum": (optlib.SGD, torch.optim.SGD, dict(lr=1e-3, momentum=0.9)),
        "Adam": (optlib.Adam, torch.optim.Adam, dict(lr=1e-3)),
        "AdamW": (optlib.AdamW, torch.optim.AdamW, dict(lr=1e-3, weight_decay=1e-2)),
    }


def implementations(name: str, compiled: bool = False) -> dict[str, Callable]:
    """Constructors (params -> optimizer) of torch's for-loop, foreach and fused paths and
    of optlib's optimizer ``name``; with ``compiled``, also ``optlib.compile(...)``
    (Adam and AdamW)."""
    import optlib

    ours, theirs, kwargs = _benchmarked()[name]
    impls = {
        "torch for-loop": lambda p: theirs(p, foreach=False, **kwargs),
        "torch foreach": lambda p: theirs(p, foreach=True, **kwargs),
        "torch fused": lambda p: theirs(p, fused=True, **kwargs),
        "optlib": lambda p: ours(p, **kwargs),
    }
    if compiled and name in ("Adam", "AdamW"):
        impls["optlib compiled"] = lambda p: optlib.compile(ours(p, **kwargs))
    return impls


def step_time_table(reps: int = 40, block: int = 5, device="cpu",
                    compiled: bool = False) -> list[dict]:
    """Median time per step of every implementation, for SGD with momentum, Adam and
    AdamW on both :data:`SHAPES`, as rows ``optimizer, shape, impl, ms, ratio`` (to
    torch's foreach step), ``vs_fused`` and ``first_s`` (the first step: state
    creation, or the one-off compile). Each implementation has its own copy of the same
    parameters and gradients; the steps are timed with :func:`time_interleaved`."""
    rows = []
    for name in _benchmarked():
        for shape, (count, size) in SHAPES.items():
            optimizers, first = {}, {}
            for label, make in implementations(name, compiled).items():
                try:
                    opt = make(make_params(count, size, device=device))
                except (RuntimeError, ValueError):      # e.g. no fused kernel for this device
                    continue
                start = time.perf_counter()
                opt.step()
                _sync(device)
                first[label] = time.perf_counter() - start
                optimizers[label] = opt
            medians = time_interleaved({k: o.step for k, o in optimizers.items()}, reps=reps,
                                       device=device, block=block)
            base, fused = medians["torch foreach"], medians.get("torch fused")
            rows += [dict(optimizer=name, shape=shape, impl=label, ms=1e3 * seconds,
                          ratio=seconds / base, first_s=first[label],
                          vs_fused=None if fused is None else seconds / fused)
                     for label, seconds in medians.items()]
    return rows


def format_step_time_table(rows: list[dict]) -> str:
    """The rows of :func:`step_time_table` as a text table, optlib's rows marked against
    the bar (at most 1.05 x torch's foreach step)."""
    lines = [f"{'optimizer':<14}{'shape':<11}{'implementation':<17}{'ms/step':>9}{'vs foreach':>12}"]
    for r in rows:
        flag = ("  ok" if r["ratio"] <= 1.05 else "  SLOWER") if r["impl"] == "optlib" else ""
        lines.append(f"{r['optimizer']:<14}{r['shape']:<11}{r['impl']:<17}{r['ms']:>9.3f}"
                     f"{r['ratio']:>11.2f}x{flag}")
    worst = max(r["ratio"] for r in rows if r["impl"] == "optlib")
    lines.append(f"worst optlib / torch foreach: {worst:.3f} (bar: 1.05)")
    return "\n".join(lines)


# ---- matrix-aware optimizers: the periodic eigendecompositions, amortized ----------------

def _matrix_optimizers():
    import optlib

    return {
        "AdamW": lambda p: optlib.AdamW(p, lr=1e-3),
        "Muon": lambda p: optlib.Muon(p, lr=0.02),
        "Shampoo (f=1)": lambda p: optlib.Shampoo(p, precondition_frequency=1),
        "Shampoo (f=10)": lambda p: optlib.Shampoo(p, precondition_frequency=10),
        "SOAP (f=10)": lambda p: optlib.SOAP(p, precondition_frequency=10),
    }


def make_matrices(count: int, shape: tuple[int, int], seed: int = 0,
                  device="cpu") -> list[torch.nn.Parameter]:
    """``count`` float32 parameter matrices of ``shape`` with small random gradients (scale
    1e-3), the same for every ``seed``.

    Args:
        count: how many matrices.
        shape: (rows, columns) of each.
        seed: the generator's seed.
        device: where the parameters and gradients live.
    """
    gen = torch.Generator().manual_seed(seed)
    params = []
    for _ in range(count):
        p = torch.nn.Parameter(torch.randn(shape, generator=gen).to(device))
        p.grad = torch.randn(shape, generator=gen).mul_(1e-3).to(device)
        params.append(p)
    return params


def matrix_step_times(shape: tuple[int, int] = (512, 512), count: int = 4, reps: int = 7,
                      block: int = 10, device="cpu", seed: int = 0) -> list[dict]:
    """Median time per step of AdamW, Muon, Shampoo and SOAP on ``count`` weight matrices
    of ``shape`` (float32), interleaved (:func:`time_interleaved`) in blocks of ``block``
    steps: with ``block`` a multiple of every ``precondition_frequency`` (10), each block
    holds the same number of eigendecompositions (Shampoo's roots) and QR refreshes
    (SOAP's basis), so the median is the amortized cost per step. Rows: ``optimizer``,
    ``ms`` (per step), ``vs_adamw`` and ``first_ms`` (the first step: state creation, and
    SOAP's first eigendecomposition). Gradients stay fixed; each optimizer steps its own
    copy of the parameters."""
    rows, steps = [], {}
    for name, make in _matrix_optimizers().items():
        params = make_matrices(count, shape, seed, device)
        opt = make(params)
        start = time.perf_counter()
        opt.step()
        _sync(device)
        rows.append(dict(optimizer=name, first_ms=1e3 * (time.perf_counter() - start)))
        steps[name] = opt.step
    medians = time_interleaved(steps, reps=reps, device=device, block=block, seed=seed)
    for r in rows:
        r["ms"] = 1e3 * medians[r["optimizer"]]
        r["vs_adamw"] = medians[r["optimizer"]] / medians["AdamW"]
    return rows


def format_matrix_step_times(rows: list[dict]) -> str:
    """The rows of :func:`matrix_step_times` as a text table."""
    lines = [f"{'optimizer':<16}{'ms/step':>10}{'vs AdamW':>10}{'first step ms':>15}"]
    lines += [f"{r['optimizer']:<16}{r['ms']:>10.3f}{r['vs_adamw']:>9.1f}x{r['first_ms']:>15.1f}"
              for r in rows]
    return "\n".join(lines)


# ---- recorded reports of benchmarks/peers.py --------------------------------------------

def recorded_reports(prefix: str = "peers-", where: str = "benchmarks/results",
                     root=None) -> list:
    """The committed reports ``WHERE/PREFIX<date>*.md`` of the repository, oldest first, so
    that the last is the newest: those of ``benchmarks/peers.py`` by default,
    ``recorded_reports("gpu-check-", "notes")`` for ``benchmarks/gpu_check.py``'s.

    Their names carry the date (``peers-2026-11-27.md``), and a later report of the same
    day a suffix (``peers-2026-11-27-1130.md``); a file whose name has no date after the
    prefix is not a report. Empty where the repository is not there (optlib installed
    from a wheel).

    Args:
        prefix: the reports' names start with it, then the date (YYYY-MM-DD).
        where: their folder, relative to ``root``.
        root: the repository (default: the one this optlib was imported from).
    """
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] if root is None else Path(root)
    directory = root / where
    if not directory.is_dir():
        return []
    dated = re.compile(re.escape(prefix) + r"\d{4}-\d{2}-\d{2}")
    # by stem, so that a second report of a day (``peers-2026-01-02-1130.md``) comes after
    # the day's first (``peers-2026-01-02.md``): by name, "-" sorts before ".md"
    return sorted((p for p in directory.glob(f"{prefix}*.md") if dated.match(p.name)),
                  key=lambda p: p.stem)


def _align(rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    """Rows of cells as text columns two spaces apart, each as wide as its widest cell:
    left-aligned, or right-aligned for the column indices in ``right`` (numbers)."""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=False))).rstrip()
            for r in rows]


def _align_tables(lines: list[str]) -> list[str]:
    """Markdown pipe tables as aligned text columns (the separator row dropped)."""
    out, table = [], []

    def flush():
        if table:
            out.extend(_align(_table_rows(table)))
            table.clear()

    for line in lines:
        if line.startswith("|"):
            table.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return out


#: Shorter names of the peers in :func:`peer_table` (a printed page is 88 columns wide).
PEER_ABBREVIATIONS = {"pytorch-optimizer": "pytorch-opt"}


def is_partial(path) -> bool:
    """Whether a recorded report says, in its header, that it is partial (a ``- PARTIAL``
    bullet before the first ``##`` section: some rows re-measured, beside a full report).

    Args:
        path: the report's file.
    """
    from pathlib import Path

    for line in Path(path).read_text().splitlines():
        if line.startswith("## "):
            return False
        if line.startswith("- PARTIAL"):
            return True
    return False


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_rows(table: list[str]) -> list[list[str]]:
    """The cells of a markdown pipe table's rows, its separator row (``|---|:--|``) left out."""
    return [_cells(line) for line in table
            if not set(line.replace("|", "").strip()) <= set("-: ")]


def peer_table(rows: list[list[str]]) -> list[str]:
    """The rows of a peers report's Summary table (``optimizer | shapes | optlib | ms |
    fastest peer | ms | optlib / peer | verdict``) as narrow text tables, one per shape and
    kind of optlib's step (eager, compiled): ``†`` marks an optimizer whose
    ``optlib.compile`` falls back to the eager rule, ``*`` a peer of another kind (no
    compiled peer), and long package names are shortened (:data:`PEER_ABBREVIATIONS`)."""
    out: list[str] = []
    for shape in dict.fromkeys(r[1] for r in rows):
        count, rows_, cols = shape.split("x")
        for kind in ("eager", "compiled"):
            table = [["optimizer", "optlib", "fastest peer", "peer", "optlib/peer", ""]]
            for family, row_shape, impl, ms, peer, peer_ms, ratio, verdict in rows:
                if row_shape != shape or impl.startswith("optlib compiled") != (kind == "compiled"):
                    continue
                family += "†" if "falls back" in impl else ""
                peer = peer.replace(" (no compiled peer)", "*")
                for long, short in PEER_ABBREVIATIONS.items():
                    peer = peer.replace(long, short)
                table.append([family, ms, peer, peer_ms, ratio, verdict])
            if len(table) == 1:
                continue
            out += ["", f"{count} matrices of {rows_} x {cols}, {kind} (ms per step):"]
            out += _align(table, right=(1, 3))
    out += ["", "* no compiled peer: against the fastest peer of any kind",
            "† optlib.compile falls back to the eager rule"]
    return out


def _wrap_header(table: list[str], width: int, gap: int = 2) -> list[str]:
    """A markdown pipe table whose aligned columns (``gap`` spaces apart) would be wider
    than ``width``, with its header cells wrapped at spaces onto more header rows, the
    cells with the most room to spare first, until the columns fit or every header cell
    is as narrow as its column's data or its longest word. Other tables are unchanged."""
    import textwrap

    rows = _table_rows(table)
    if len(rows) < 2:
        return table
    header, body = rows[0], rows[1:]
    data = [max((len(r[i]) for r in body if i < len(r)), default=0)
            for i in range(len(header))]
    least = [max([data[i], *(len(w) for w in cell.split())]) for i, cell in enumerate(header)]
    widths = [max(len(cell), data[i]) for i, cell in enumerate(header)]
    if sum(widths) + gap * (len(widths) - 1) <= width:
        return table
    while sum(widths) + gap * (len(widths) - 1) > width:
        spare = [widths[i] - least[i] for i in range(len(widths))]
        if max(spare) <= 0:
            break
        widths[spare.index(max(spare))] -= 1
    pieces = [textwrap.wrap(cell, w) or [""] for cell, w in zip(header, widths, strict=True)]
    depth = max(len(p) for p in pieces)
    lines = ["| " + " | ".join(p[k] if k < len(p) else "" for p in pieces) + " |"
             for k in range(depth)]
    return lines + ["| " + " | ".join(r) + " |" for r in body]


def _wrap(lines: list[str], width: int, fixed: frozenset = frozenset()) -> list[str]:
    """Prose rewrapped to ``width`` columns: a paragraph or a bullet (``- ``, its
    continuation lines indented) becomes one logical line, then wrapped; code blocks,
    tables and the lines whose indices are in ``fixed`` keep their lines, wrapped only
    where longer than ``width``."""
    import textwrap

    out: list[str] = []
    paragraph: list[str] = []
    code = False

    def flush():
        if paragraph:
            first = paragraph[0]
            indent = first[:len(first) - len(first.lstrip())]
            text = indent + " ".join(p.strip() for p in paragraph)
            bullet = first.lstrip().startswith("- ")
            out.extend(textwrap.wrap(text, width,
                                     subsequent_indent=indent + ("  " if bullet else ""),
                                     break_on_hyphens=False, break_long_words=False) or [""])
            paragraph.clear()

    for i, line in enumerate(lines):
        if line.startswith("```"):
            flush()
            code = not code
            out.append(line)
        elif code or i in fixed or line.startswith(("|", "#")) or not line.strip():
            flush()
            if len(line) > width:
                out.extend(textwrap.wrap(line, width, subsequent_indent="    ",
                                         break_on_hyphens=False))
            else:
                out.append(line)
        elif line.lstrip().startswith("- ") or not paragraph:
            flush()
            paragraph.append(line)
        else:
            paragraph.append(line)
    flush()
    return out


def summarize_report(path, sections=("Summary", "Where optlib is slower, and why",
                                     "optlib.compile's fallbacks"), align: bool = True,
                     width: int | None = None, details: bool = True) -> str:
    """A recorded report's header (date, machine, versions, settings) and the named
    ``sections`` (``## ...`` headings; the long table of all timings left out by default),
    with its tables as aligned text columns (``align``). With ``width``, every line fits
    in ``width`` columns: prose is rewrapped, and a peers report's Summary table is
    printed as narrow tables, one per shape (:func:`peer_table`). Without ``details``,
    nested bullets (a reason's measurements, row by row) are left out."""
    from pathlib import Path

    lines = Path(path).read_text().splitlines()
    keep, current = [], None
    for line in lines:
        if line.startswith("## "):
            current = line[3:].strip()
        if not details and line.startswith("  - "):
            continue
        if current is None or current in sections:
            keep.append(line)
    while keep and not keep[-1].strip():
        keep.pop()
    if width is None:
        return "\n".join(_align_tables(keep) if align else keep)
    narrow, fixed, table = [], set(), []
    for line in [*keep, ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            rows = _table_rows(table)
            if rows[0][:3] == ["optimizer", "shapes", "optlib"] and len(rows[0]) == 8:
                block = peer_table(rows[1:])[1:]
            else:
                block = _align_tables(_wrap_header(table, width)) if align else table
            fixed.update(range(len(narrow), len(narrow) + len(block)))
            narrow += block
            table = []
        narrow.append(line)
    return "\n".join(_wrap(narrow[:-1], width, frozenset(fixed)))
