"""optlib's optimizers against the implementations a user would otherwise pick: step time.

    python benchmarks/peers.py [--optimizers Lion LAMB ...] [--shapes 200x100x50 20x1000x500]
                               [--repeats 5] [--reps 5] [--block 1] [--threads 1]
                               [--no-compile] [--json part.json] [--report out.md]
    python benchmarks/peers.py --merge part1.json part2.json --report out.md

Peers, where installed: ``torch.optim`` (for-loop, foreach and fused paths, where torch
has the optimizer), ``bitsandbytes`` (8-bit Adam), ``lion-pytorch`` (Lion), ``schedulefree``
(schedule-free AdamW), ``sophia-opt`` (the authors' SophiaG), ``pytorch-optimizer`` (LAMB,
LARS, Adafactor, Lion, schedule-free AdamW, RAdam, Muon, Shampoo, SOAP) and ``heavyball``
(SGD, AdamW, NAdam, RMSprop, schedule-free AdamW, Muon, SOAP; eager with its
``compile_mode`` off, and compiled, its default). A missing package is left out and named
in the report.

Shapes are ``COUNTxROWSxCOLS``: many small matrices (``200x100x50``, per-tensor overhead
matters) and few large ones (``20x1000x500``, memory bandwidth matters). For one optimizer
and one shape, every implementation steps its own copy of the same float32 parameters and
gradients (gradients fixed), after a first step (state creation, or a compile: reported).
One *run* times ``reps`` rounds of ``block`` steps of each implementation, in a fresh random
order each round (``optlib.book.performance.time_interleaved``), and keeps each one's median;
the run is repeated ``repeats`` times in the same process. The ratio of optlib to its
fastest peer of the same kind (eager against eager; compiled against compiled or fused) is
computed in each run, and the report gives its median over the runs and its range
(min-max). Bar: at most 1.0, with ratios up to 1.05 counted as within the spread.

For each eager implementation the report also gives what one step runs, counted by
``optlib.book.performance.count_traffic``: ATen operator calls and bytes read and written
per parameter, the usual reasons for a slower step (more passes over memory, or more
calls). For every implementation it gives the time per step spent inside ATen operators
and compiled graphs, measured with ``torch.profiler`` (:func:`time_in_operators`): the
rest of a step is host time (Python, gathering lists, guards), a reason no byte count
shows. A diagnostic row (not a contestant), "optlib, one call per group", times optlib's
eager rule called once over each whole group, as optlib's step did before it called the
rule over cache-sized chunks of the group (``optlib.optimizer.eager_chunks``): what the
chunks gain, in the same run. Shampoo has a second one, "optlib, graft=None": optlib's
Shampoo without its default Adam grafting, the rule of pytorch-optimizer's Shampoo.

Where optlib is slower, the report gives a reason per row: a written one (:data:`CAUSES`,
:class:`Cause`) quotes the run's own numbers and is attached only where they still show
what it says (its premise: the bytes, the calls, where the time goes), so that a reason
written for an older rule is not attached to a row whose cause changed; elsewhere the row
says what the run measured (:func:`measured_reason`) and which written reason no longer
holds.

Only ``step()`` is timed: SophiaG's Hessian estimate and schedule-free's train/eval
switches are outside it. Compiling takes minutes (``--no-compile`` leaves it out); parts
run separately can be merged into one report (``--merge``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import inspect
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from optlib.book.performance import (  # noqa: E402
    count_traffic,
    make_matrices,
    time_interleaved,
)

DEFAULT_SHAPES = ("200x100x50", "20x1000x500")
PEER_PACKAGES = ("bitsandbytes", "lion-pytorch", "schedulefree", "sophia-opt",
                 "pytorch-optimizer", "heavyball")
#: Ratios up to this count as "as fast" (the run-to-run spread of a shared machine).
TOLERANCE = 1.05


@dataclass
class Impl:
    """One contestant: ``label``, ``kind`` (``"eager"`` or ``"compiled"``: a compiled graph or
    a fused kernel), ``make(params) -> optimizer``, and ``ours`` for optlib's own."""

    label: str
    kind: str
    make: Callable
    ours: bool = False
    step: Callable | None = None      # optional: how to call a step, given the optimizer


#: The kind of a row that is timed beside the contestants but compared with nothing.
DIAGNOSTIC = "diagnostic"
#: The diagnostic row: optlib's eager rule once over each whole group (no chunks).
ONE_CALL = "optlib, one call per group"
#: Shampoo's diagnostic row: optlib's Shampoo without grafting (``graft=None``), the rule
#: of pytorch-optimizer's Shampoo, which has no grafting (the same numbers where the roots
#: are refreshed every step; here both refresh every 10 steps, at different steps).
NO_GRAFT = "optlib, graft=None"


# ---- the contestants --------------------------------------------------------------------

def _module(name):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return __import__(name)
    except Exception:  # noqa: BLE001 - a peer that fails to import is a missing peer
        return None


@contextlib.contextmanager
def _heavyball_eager(heavyball):
    """heavyball compiles its fused functions at call time unless ``utils.compile_mode`` is
    None (read at every call): the eager peer runs its step with it set to None."""
    old = heavyball.utils.compile_mode
    heavyball.utils.compile_mode = None
    try:
        yield
    finally:
        heavyball.utils.compile_mode = old


def _heavyball(cls, **kwargs) -> list[Impl]:
    heavyball = _module("heavyball")
    if heavyball is None:
        return []

    def make(params):
        opt = getattr(heavyball, cls)(params, **kwargs)
        opt.peers_grads = [(p, p.grad) for p in params]
        return opt

    def step(opt):
        for p, g in opt.peers_grads:      # heavyball sets p.grad = None after its step
            p.grad = g
        opt.step()

    def eager_step(opt):
        with _heavyball_eager(heavyball):
            step(opt)

    return [Impl("heavyball", "eager", make, step=eager_step),
            Impl("heavyball compiled", "compiled", make, step=step)]


def _torch(cls, fused: bool, **kwargs) -> list[Impl]:
    impls = [Impl("torch for-loop", "eager", lambda p: cls(p, foreach=False, **kwargs)),
             Impl("torch foreach", "eager", lambda p: cls(p, foreach=True, **kwargs))]
    if fused:
        impls.append(Impl("torch fused", "compiled", lambda p: cls(p, fused=True, **kwargs)))
    return impls


def _pytorch_optimizer(cls, muon=False, **kwargs) -> list[Impl]:
    po = _module("pytorch_optimizer")
    if po is None:
        return []
    cls = getattr(po, cls)
    wrap = (lambda p: [dict(params=p, use_muon=True)]) if muon else (lambda p: p)
    if "foreach" not in inspect.signature(cls.__init__).parameters:
        return [Impl("pytorch-optimizer", "eager", lambda p: cls(wrap(p), **kwargs))]
    return [Impl("pytorch-optimizer for-loop", "eager",
                 lambda p: cls(wrap(p), foreach=False, **kwargs)),
            Impl("pytorch-optimizer foreach", "eager",
                 lambda p: cls(wrap(p), foreach=True, **kwargs))]


def _peer(package, attr, **kwargs) -> list[Impl]:
    module = _module(package)
    if module is None:
        return []
    cls = module
    for name in attr.split("."):
        cls = getattr(cls, name)
    label = {"lion_pytorch": "lion-pytorch", "sophia_opt": "sophia-opt",
             "bitsandbytes": "bitsandbytes"}.get(package, package)
    return [Impl(label, "eager", lambda p: cls(p, **kwargs))]


def families() -> dict[str, Callable[[], tuple[Callable, list[Impl]]]]:
    """``name -> () -> (optlib constructor, peers)`` (a peer's package is imported only when
    its family is timed), the same hyperparameters on both sides
    (where the peers name them differently, renamed; where their rules differ, the nearest
    settings). A family's list may hold a diagnostic row of optlib's (kind
    :data:`DIAGNOSTIC`, compared with nothing): Shampoo's :data:`NO_GRAFT`."""
    import optlib

    sgd = dict(lr=1e-3, momentum=0.9)
    adam = dict(lr=1e-3)
    adamw = dict(lr=1e-3, weight_decay=1e-2)
    lion = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-2)
    sf = dict(lr=2.5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    muon = dict(lr=2e-2, momentum=0.95, weight_decay=0.0)
    O = optlib  # noqa: N806
    return {
        "SGD momentum": lambda: (lambda p: O.SGD(p, **sgd),
                         _torch(torch.optim.SGD, True, **sgd)
                         + _heavyball("SGD", lr=1e-3, beta=0.9)),
        "Adam": lambda: (lambda p: O.Adam(p, **adam), _torch(torch.optim.Adam, True, **adam)),
        "AdamW": lambda: (lambda p: O.AdamW(p, **adamw),
                  _torch(torch.optim.AdamW, True, **adamw)
                  + _heavyball("AdamW", betas=(0.9, 0.999), **adamw)),
        "Adagrad": lambda: (lambda p: O.Adagrad(p, lr=1e-2), _torch(torch.optim.Adagrad, True, lr=1e-2)),
        "RMSprop": lambda: (lambda p: O.RMSprop(p, lr=1e-2), _torch(torch.optim.RMSprop, False, lr=1e-2)),
        "Adadelta": lambda: (lambda p: O.Adadelta(p), _torch(torch.optim.Adadelta, False)),
        "Adamax": lambda: (lambda p: O.Adamax(p), _torch(torch.optim.Adamax, False)),
        "NAdam": lambda: (lambda p: O.NAdam(p), _torch(torch.optim.NAdam, False)
                  + _heavyball("NAdam", lr=2e-3, betas=(0.9, 0.999))),
        "RAdam": lambda: (lambda p: O.RAdam(p), _torch(torch.optim.RAdam, False)
                  + _pytorch_optimizer("RAdam", weight_decouple=False)),
        "Adafactor": lambda: (lambda p: O.Adafactor(p), _torch(torch.optim.Adafactor, False)
                      + _pytorch_optimizer("AdaFactor", betas=(None, 0.999), lr=1e-2,
                                           relative_step=False, scale_parameter=False)),
        "Lion": lambda: (lambda p: O.Lion(p, **lion),
                 _peer("lion_pytorch", "Lion", use_triton=False, **lion)
                 + _pytorch_optimizer("Lion", **lion)),
        "LAMB": lambda: (lambda p: O.LAMB(p, lr=1e-3, weight_decay=1e-2),
                 _pytorch_optimizer("Lamb", lr=1e-3, weight_decay=1e-2, max_grad_norm=0.0)),
        "LARS": lambda: (lambda p: O.LARS(p, lr=1e-1, weight_decay=1e-4),
                 _pytorch_optimizer("LARS", lr=1e-1, weight_decay=1e-4)),
        "AdamWScheduleFree": lambda: (lambda p: O.AdamWScheduleFree(p, **sf),
                              _peer("schedulefree", "AdamWScheduleFree", **sf)
                              + _pytorch_optimizer("ScheduleFreeAdamW", **sf)
                              + _heavyball("SFAdamW", **sf)),
        "SophiaG": lambda: (lambda p: O.SophiaG(p), _peer("sophia_opt", "SophiaG")),
        "Muon": lambda: (lambda p: O.Muon(p, **muon),
                 [Impl("torch", "eager", lambda p: torch.optim.Muon(p, **muon))]
                 + _pytorch_optimizer("Muon", muon=True, **muon)
                 + _heavyball("Muon", lr=2e-2, betas=(0.95, 0.95))),
        "Adam8bit": lambda: (lambda p: O.Adam8bit(p),
                     _peer("bitsandbytes", "optim.Adam8bit")),
        "Shampoo": lambda: (lambda p: O.Shampoo(p, precondition_frequency=10),
                    [Impl(NO_GRAFT, DIAGNOSTIC,
                          lambda p: O.Shampoo(p, precondition_frequency=10, graft=None))]
                    + _pytorch_optimizer("Shampoo", preconditioning_compute_steps=10)),
        "SOAP": lambda: (lambda p: O.SOAP(p, precondition_frequency=10),
                 _pytorch_optimizer("SOAP", precondition_frequency=10)
                 + _heavyball("SOAP", precondition_frequency=10)),
    }


def _one_call(opt):
    """``opt`` with its eager rule called once per group, not over chunks of it
    (``optlib.optimizer.eager_chunks``): optlib's step before the chunks."""
    opt.eager_chunk_bytes = None
    return opt


def contestants(name: str, compile: bool = True, skip=(), per_tensor: bool = False) -> list[Impl]:
    """optlib's eager optimizer, ``optlib.compile`` of it (with ``compile``), and the peers
    (compiled ones only with ``compile``), less the implementations labelled in ``skip``;
    with ``per_tensor``, also the diagnostic row of optlib's rule called once per group
    rather than over cache-sized chunks of it."""
    import optlib

    ours, peers = families()[name]()
    impls = [Impl("optlib", "eager", ours, ours=True)]
    # (not for a class that calls its rule once per group anyway: Adam8bit)
    if per_tensor and ours(make_matrices(1, (2, 2))).eager_chunk_bytes is not None:
        impls.append(Impl(ONE_CALL, DIAGNOSTIC, lambda p: _one_call(ours(p))))
    if compile:
        impls.append(Impl("optlib compiled", "compiled",
                          lambda p: optlib.compile(ours(p)), ours=True))
    impls += [i for i in peers if compile or i.label not in ("heavyball compiled",)]
    return [i for i in impls if i.label not in skip]


def missing_peers() -> list[str]:
    return [name for name in PEER_PACKAGES if _version(name) is None]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- measuring ----------------------------------------------------------------------------

def parse_shape(spec: str) -> tuple[int, tuple[int, int]]:
    """``"200x100x50"`` -> ``(200, (100, 50))``: 200 matrices of 100 x 50."""
    parts = spec.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"shape {spec!r}: expected COUNTxROWSxCOLS, e.g. 200x100x50")
    count, rows, cols = map(int, parts)
    return count, (rows, cols)


def _step_fn(impl: Impl, opt) -> Callable[[], object]:
    if impl.step is not None:
        return lambda: impl.step(opt)
    return opt.step


def time_in_operators(step: Callable[[], object], steps: int = 3) -> float:
    """Seconds per step that ``step()`` spends inside ATen operators and compiled graphs
    (Inductor's ``## Call CompiledFxGraph`` calls), from ``torch.profiler``: the events
    at the top of the step (directly under the optimizer's ``Optimizer.step#...`` record,
    or top-level where there is none), each counted with what runs inside it. What a step
    takes beyond this is host time: Python, building the lists, dynamo's and Inductor's
    wrappers and guards."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()

    def work(event) -> bool:
        return event.name.startswith(("aten::", "## Call CompiledFxGraph"))

    inside = 0.0
    for event in prof.events():
        parent = event.cpu_parent
        top = parent is None or parent.name.startswith("Optimizer.step#")
        if top and work(event):
            inside += event.cpu_time_total       # microseconds, children included
    return inside / 1e6 / steps


def measure(name: str, shape: str, repeats: int = 5, reps: int = 5, block: int = 1,
            compile: bool = True, device="cpu", log=print, skip=()) -> list[dict]:
    """Time every contestant of ``name`` on ``shape``: one result per implementation with
    ``runs_ms`` (its median ms per step in each of the ``repeats`` runs), ``first_s``,
    ``ops`` and ``bytes_per_param`` (eager ones), ``in_ops_ms`` (time per step inside
    operators and compiled graphs, :func:`time_in_operators`) and ``note`` (why one is
    missing, or ``optlib.compile``'s fallback warning)."""
    count, matrix = parse_shape(shape)
    n_params = count * matrix[0] * matrix[1]
    results, steps, optimizers = [], {}, {}
    for impl in contestants(name, compile, skip, per_tensor=True):
        row = dict(family=name, shape=shape, impl=impl.label, kind=impl.kind, ours=impl.ours,
                   runs_ms=[], first_s=None, ops=None, bytes_per_param=None, in_ops_ms=None,
                   note="")
        results.append(row)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                opt = impl.make(make_matrices(count, matrix, device=device))
                if hasattr(opt, "train"):                    # schedule-free: training mode
                    opt.train()
                step = _step_fn(impl, opt)
                start = time.perf_counter()
                step()
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                row["first_s"] = time.perf_counter() - start
            fallbacks = [str(w.message) for w in caught if impl.ours
                         and impl.kind == "compiled" and issubclass(w.category, RuntimeWarning)]
            if fallbacks:
                row["note"] = "falls back to eager: " + fallbacks[0].split("\n")[0]
        except Exception as error:  # noqa: BLE001 - a peer that cannot run here is reported
            row["note"] = f"did not run: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
            log(f"  {name} {shape} {impl.label}: {row['note']}")
            continue
        steps[impl.label] = step
        optimizers[impl.label] = opt
    for run in range(repeats):
        medians = time_interleaved(steps, reps=reps, block=block, device=device, seed=run)
        for row in results:
            if row["impl"] in medians:
                row["runs_ms"].append(1e3 * medians[row["impl"]])
    for row in results:      # counted after the timed steps: the steady state (RAdam rectified)
        if row["impl"] not in steps:
            continue
        failure = getattr(getattr(optimizers[row["impl"]], "update", None), "failure", None)
        if row["ours"] and row["kind"] == "compiled" and failure and not row["note"]:
            row["note"] = ("falls back to eager: "
                           f"{type(failure).__name__}: {str(failure).splitlines()[0][:160]}")
        row["in_ops_ms"] = 1e3 * time_in_operators(steps[row["impl"]])
        if row["kind"] != "compiled":
            counted = count_traffic(steps[row["impl"]])
            row["ops"] = counted["ops"]
            row["bytes_per_param"] = (counted["read"] + counted["written"]) / n_params
    return results


# ---- ratios and the report (pure functions) ------------------------------------------------

def ratio_stats(ours: list[float], theirs: list[float]) -> dict:
    """Per-run ratios ``ours[i] / theirs[i]``: their median, min and max."""
    if not ours or len(ours) != len(theirs):
        raise ValueError(f"need the same positive number of runs, got {len(ours)} and {len(theirs)}")
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return dict(median=statistics.median(ratios), lo=min(ratios), hi=max(ratios))


def summarize(results: list[dict]) -> list[dict]:
    """One row per (family, shape) and kind of optlib's implementation: optlib's median ms,
    the fastest peer of the same kind (the lowest median over runs; for a compiled optlib
    with no compiled peer, the fastest peer of any kind, marked ``any kind``), its ms, and
    the ratio's median and range over the runs."""
    summary = []
    keys = list(dict.fromkeys((r["family"], r["shape"]) for r in results))
    for family, shape in keys:
        rows = [r for r in results if (r["family"], r["shape"]) == (family, shape) and r["runs_ms"]]
        for ours in (r for r in rows if r["ours"]):
            peers = [r for r in rows if not r["ours"] and r["kind"] == ours["kind"]]
            against = ours["kind"]
            if not peers and ours["kind"] == "compiled":
                peers = [r for r in rows if not r["ours"] and r["kind"] != DIAGNOSTIC]
                against = "any kind"
            entry = dict(family=family, shape=shape, impl=ours["impl"], ms=_med(ours),
                         note=ours["note"], peer=None, peer_ms=None, against=against,
                         ratio=None, lo=None, hi=None)
            if peers:
                best = min(peers, key=_med)
                entry.update(peer=best["impl"], peer_ms=_med(best),
                             **_rename(ratio_stats(ours["runs_ms"], best["runs_ms"])))
            summary.append(entry)
    return summary


def _med(row: dict) -> float:
    return statistics.median(row["runs_ms"])


def _rename(stats: dict) -> dict:
    return dict(ratio=stats["median"], lo=stats["lo"], hi=stats["hi"])


def verdict(ratio: float | None, lo: float | None = None) -> str:
    """``ok`` (median ratio at most 1.05), ``within spread`` (above, but the fastest run's
    ratio at most 1.05) or ``slower``."""
    if ratio is None:
        return "no peer"
    if ratio <= TOLERANCE:
        return "ok"
    return "within spread" if lo is not None and lo <= TOLERANCE else "slower"


def machine() -> dict:
    """What the report names: CPU model, logical CPUs, OS, Python, torch, threads."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    if torch.cuda.is_available():
        cpu += f"; GPU {torch.cuda.get_device_name()}"
    return dict(cpu=cpu, cpus=os.cpu_count(), os=platform.platform(),
                python=platform.python_version(), torch=torch.__version__,
                threads=torch.get_num_threads(),
                peers={name: _version(name) for name in PEER_PACKAGES})


def _fmt(x, spec=".3g"):
    return "–" if x is None else format(x, spec)


def format_report(meta: dict, results: list[dict], causes: dict | None = None,
                  overhead: list[dict] | None = None) -> str:
    """The markdown report: header (date, machine, versions, settings), the summary of
    optlib against its fastest peers, the causes where optlib is slower (with what the run
    measured, and the fixed costs in ``overhead`` where given), all timings."""
    m = meta["machine"]
    peers = ", ".join(f"{k} {v}" for k, v in m["peers"].items() if v) or "none"
    missing = ", ".join(k for k, v in m["peers"].items() if not v) or "none"
    lines = [
        "# optlib against its peers: optimizer step time",
        "",
        f"- Date: {meta['date']}",
        f"- Machine: {m['cpu']}, {m['cpus']} logical CPUs, {m['os']}"
        + (f"; {meta['load']}" if meta.get("load") else ""),
        f"- torch {m['torch']}, Python {m['python']}, {m['threads']} intra-op thread(s)",
        f"- Peers: {peers}; missing: {missing}",
        f"- Settings: {meta['settings']}",
    ]
    lines += [f"- {note}" for note in meta.get("notes", [])]
    summary = summarize(results)
    lines += ["", "## Summary", "",
              "optlib / fastest peer of the same kind: median of the per-run ratios "
              "[min–max over the runs]; ≤ 1.05 counts as as fast.", "",
              "| optimizer | shapes | optlib | ms | fastest peer | ms | optlib / peer | |",
              "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        peer = s["peer"] or "none"
        if s["against"] == "any kind" and s["peer"]:
            peer += " (no compiled peer)"
        impl = s["impl"] + (" (falls back to eager)" if s["note"].startswith("falls back") else "")
        ratio = "–" if s["ratio"] is None else f"{s['ratio']:.2f} [{s['lo']:.2f}–{s['hi']:.2f}]"
        lines.append(f"| {s['family']} | {s['shape']} | {impl} | {_fmt(s['ms'])} | {peer} | "
                     f"{_fmt(s['peer_ms'])} | {ratio} | {verdict(s['ratio'], s['lo'])} |")
    slower = [s for s in summary if verdict(s["ratio"], s["lo"]) == "slower"]
    if slower:
        lines += ["", "## Where optlib is slower, and why", ""]
        groups: dict[str, list[dict]] = {}      # one reason, the rows it explains
        for s in slower:
            reason = cause_of(causes, s["family"], s["shape"], s["impl"], measured(results, s))
            groups.setdefault(reason, []).append(s)
        for cause, rows in groups.items():
            names = ", ".join(dict.fromkeys(s["family"] for s in rows))
            where = "; ".join(dict.fromkeys(f"{s['impl']}, {s['shape']}" for s in rows))
            lines.append(f"- **{names}** ({where}): {cause}")
            for s in rows:
                lines.append(f"  - {s['family']}, {s['impl']}, {s['shape']}: {s['ratio']:.2f}x "
                             f"{s['peer']}. {facts(results, s, overhead)}".rstrip())
    fallbacks = [(r["family"], r["note"]) for r in results
                 if r["ours"] and r["note"].startswith("falls back")]
    if fallbacks:
        lines += ["", "## optlib.compile's fallbacks", ""]
        for family, note in dict(fallbacks).items():
            lines.append(f"- {family}: {note}")
    lines += ["", "## All timings", "",
              "Median ms per step over the runs; first step in seconds (state creation, or the "
              "compile); ms per step inside ATen operators and compiled graphs (torch.profiler; "
              "the rest is host time); ATen operator calls and bytes read + written per "
              "parameter in one eager step. A diagnostic row is compared with nothing.", "",
              "| optimizer | shapes | implementation | kind | ms | runs (ms) | first step s | "
              "in ops ms | ops | bytes/param | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        runs = " ".join(f"{x:.3g}" for x in r["runs_ms"])
        ms = _med(r) if r["runs_ms"] else None
        lines.append(f"| {r['family']} | {r['shape']} | {r['impl']} | {r['kind']} | {_fmt(ms)} | "
                     f"{runs} | {_fmt(r['first_s'], '.2f')} | {_fmt(r.get('in_ops_ms'))} | "
                     f"{_fmt(r['ops'], 'd')} | {_fmt(r['bytes_per_param'], '.0f')} | "
                     f"{r['note'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def facts(results: list[dict], entry: dict, overhead: list[dict] | None = None) -> str:
    """What this run measured about a slower row of the summary (``entry``), for its
    reason: time inside operators or compiled graphs against the whole step, operator
    calls and bytes per parameter (optlib's and the peer's), optlib against a foreach
    peer (the same order of work), the diagnostic row of one call per group, and, from
    ``overhead`` (results on one-element matrices, where a step's arithmetic is
    negligible), the two implementations' fixed cost per step."""
    rows = {r["impl"]: r for r in results
            if (r["family"], r["shape"]) == (entry["family"], entry["shape"]) and r["runs_ms"]}
    ours, peer = rows.get(entry["impl"]), rows.get(entry["peer"])
    if ours is None or peer is None:
        return ""

    def split(r):
        if r.get("in_ops_ms") is None:
            return None
        compiled = r["impl"] == "optlib compiled" and not r["note"].startswith("falls back")
        where = "graphs" if compiled else "operators"
        return f"{r['impl']} {_fmt(_med(r))} ms, {_fmt(r['in_ops_ms'])} in {where}"

    out = []
    timed = [x for x in (split(ours), split(peer)) if x]
    if len(timed) == 2:
        out.append("; ".join(timed))
    if ours["ops"] is not None and peer["ops"] is not None:
        out.append(f"operator calls {ours['ops']} against {peer['ops']}, bytes per parameter "
                   f"{ours['bytes_per_param']:.0f} against {peer['bytes_per_param']:.0f}")
    if ours["kind"] == "eager":
        foreach = [r for name, r in rows.items() if name.endswith("foreach") and r is not peer]
        for r in foreach:
            stats = ratio_stats(ours["runs_ms"], r["runs_ms"])
            out.append(f"optlib / {r['impl']} {stats['median']:.2f}")
        diagnostic = [r for r in rows.values() if r["kind"] == DIAGNOSTIC]
        for r in diagnostic:
            out.append(f"{r['impl']} {_fmt(_med(r))} ms")
    fixed = {r["impl"]: r for r in overhead or ()
             if r["family"] == entry["family"] and r["runs_ms"]}
    same_count = [parse_shape(r["shape"])[0] for r in fixed.values()] == [
        parse_shape(entry["shape"])[0]] * len(fixed)
    if same_count and ours["impl"] in fixed and peer["impl"] in fixed:
        a, b = fixed[ours["impl"]], fixed[peer["impl"]]
        out.append(f"fixed cost on {a['shape']} (one-element matrices): {a['impl']} "
                   f"{_fmt(_med(a))} ms, {b['impl']} {_fmt(_med(b))} ms")
    return "Measured: " + "; ".join(out) + "." if out else ""


@dataclass(frozen=True)
class Cause:
    """A written reason for slower rows, with the measurements it rests on.

    ``text`` may quote the run's measurements as format fields, the keys of
    :func:`measured` (``{ours_ops}``, ``{peer_bytes:.0f}``, ``{ops[torch foreach]}``), so
    that it never carries numbers of an older run. ``holds(m)`` checks, on the same
    measurements ``m``, that the run still shows what the text says (a rule's bytes, its
    calls, where its time goes); ``rests_on`` says that in words. Where it does not hold
    (the rule changed since the text was written, or the cause went away), the text is not
    attached to the row."""

    text: str
    holds: Callable[[dict], bool] = lambda m: True
    rests_on: str = ""

    def applies(self, m: dict | None) -> bool:
        if m is None:
            return True
        try:
            return bool(self.holds(m))
        except (KeyError, TypeError, ZeroDivisionError):   # a measurement the row lacks
            return False


def measured(results: list[dict], entry: dict) -> dict:
    """What the run measured for a summary row ``entry``, by name, for :class:`Cause`:
    ``ours_ms``, ``peer_ms``, ``ours_in`` and ``peer_in`` (ms inside operators or graphs),
    ``ours_host`` and ``peer_host`` (the rest of the median step, host time, at least 0),
    ``ours_ops``, ``peer_ops``, ``ours_bytes`` and ``peer_bytes`` (eager rows), ``count``
    (tensors), ``per_tensor_ops``, ``one_call_ms`` (the diagnostic row), and by
    implementation ``ms``, ``ops``, ``bytes``, ``in_ops`` and ``ratio_to`` (optlib's median
    per-run ratio to that implementation); a missing value is None."""
    rows = {r["impl"]: r for r in results
            if (r["family"], r["shape"]) == (entry["family"], entry["shape"]) and r["runs_ms"]}
    ours, peer = rows.get(entry["impl"]), rows.get(entry["peer"]) if entry["peer"] else None
    count = parse_shape(entry["shape"])[0]

    def get(row, key):
        return None if row is None else row.get(key)

    one_call = rows.get(ONE_CALL)
    m = dict(family=entry["family"], shape=entry["shape"], impl=entry["impl"],
             peer=entry["peer"] or "", ratio=entry["ratio"], count=count,
             falls_back=entry.get("note", "").startswith("falls back"),
             ours_ms=None if ours is None else _med(ours),
             peer_ms=None if peer is None else _med(peer),
             ours_in=get(ours, "in_ops_ms"), peer_in=get(peer, "in_ops_ms"),
             ours_ops=get(ours, "ops"), peer_ops=get(peer, "ops"),
             ours_bytes=get(ours, "bytes_per_param"), peer_bytes=get(peer, "bytes_per_param"),
             one_call_ms=None if one_call is None else _med(one_call),
             ms={k: _med(r) for k, r in rows.items()},
             ops={k: r.get("ops") for k, r in rows.items()},
             bytes={k: r.get("bytes_per_param") for k, r in rows.items()},
             in_ops={k: r.get("in_ops_ms") for k, r in rows.items()},
             ratio_to={k: ratio_stats(ours["runs_ms"], r["runs_ms"])["median"]
                       for k, r in rows.items() if ours is not None and r is not ours})
    for side in ("ours", "peer"):        # ms per step outside operators or graphs: host time
        ms, inside = m[f"{side}_ms"], m[f"{side}_in"]
        m[f"{side}_host"] = None if ms is None or inside is None else max(0.0, ms - inside)
    m["per_tensor_ops"] = None if m["ours_ops"] is None else m["ours_ops"] / count
    m["peer_per_tensor_ops"] = None if m["peer_ops"] is None else m["peer_ops"] / count
    return m


def measured_reason(m: dict) -> str:
    """What the measurements ``m`` (:func:`measured`) say about a slower row that no
    written reason explains: bytes and operator calls against the peer's, and whether the
    extra time is inside the operators (or graphs) or outside them, on the host."""
    out = []
    if m["ours_bytes"] is not None and m["peer_bytes"] is not None:
        a, b = m["ours_bytes"], m["peer_bytes"]
        relation = ("more bytes per parameter than" if a > 1.05 * b else
                    "fewer bytes per parameter than" if a < 0.95 * b else
                    "about as many bytes per parameter as")
        out.append(f"{relation} {m['peer']} ({a:.0f} against {b:.0f})")
    if m["ours_ops"] is not None and m["peer_ops"] is not None:
        out.append(f"{m['ours_ops']} operator calls against {m['peer_ops']}")
    if m["ours_in"] is not None and m["peer_in"] is not None and m["ours_ms"] is not None:
        where = "graphs" if m["impl"] == "optlib compiled" and not m["falls_back"] else "operators"
        inside = (f"{m['ours_in']:.3g} of its {m['ours_ms']:.3g} ms inside {where}, "
                  f"against the peer's {m['peer_in']:.3g} of {m['peer_ms']:.3g}")
        if m["ours_in"] <= 1.05 * m["peer_in"]:
            inside += ": no more time inside them, so the difference is host time"
        else:
            inside += ": longer inside them"
        out.append(inside)
    if not out:
        return "not yet measured."
    eager = ("optlib.compile falls back to the eager rule here (its fallbacks below), so "
             "this is the eager step; " if m["falls_back"] else "")
    return (eager + "no written reason fits this run's measurements yet; they show "
            + "; ".join(out) + ".")


def cause_of(causes: dict | None, family: str, shape: str, impl: str,
             m: dict | None = None) -> str:
    """The reason for a slower row: ``causes`` keyed by ``(family, shape, impl)``,
    ``(family, impl)`` or ``family``, the most specific first (a key may hold a tuple of
    causes, tried in order), skipping a :class:`Cause`
    whose measurements do not hold in ``m`` (:func:`measured`); a reason's format fields
    are filled from ``m``. Where none applies, what ``m`` shows (:func:`measured_reason`),
    naming the written reason that no longer holds."""
    causes = causes or {}
    stale = []
    for key in ((family, shape, impl), (family, impl), family):
        entry = causes.get(key)
        for cause in entry if isinstance(entry, tuple) else () if entry is None else (entry,):
            if not isinstance(cause, Cause):
                return cause
            if cause.applies(m):
                return cause.text.format(**m) if m is not None else cause.text
            stale.append(cause.rests_on or "its measurements")
    if m is None:
        return "not yet measured."
    reason = measured_reason(m)
    if stale:
        reason += (" (The written reason for this row rests on " + "; ".join(stale)
                   + ", which this run does not show.)")
    return reason


def merge(parts: list[dict]) -> dict:
    """One record from several (runs of different optimizers or shapes): the first part's
    machine, every part's settings and notes, all results. A later part's results for an
    optimizer and shape replace an earlier part's as a whole, so that every ratio is still
    taken within one process."""
    if not parts:
        raise ValueError("nothing to merge")
    groups: dict[tuple, list[dict]] = {}
    for part in parts:
        fresh: dict[tuple, list[dict]] = {}
        for r in part["results"]:
            fresh.setdefault((r["family"], r["shape"]), []).append(r)
        groups.update(fresh)
    results = {id(r): r for rows in groups.values() for r in rows}
    meta = dict(parts[0]["meta"])
    if len(parts) > 1:
        meta["date"] = " / ".join(dict.fromkeys(p["meta"]["date"] for p in parts))
        meta["settings"] = "; ".join(f"part {i + 1}: {p['meta']['settings']}"
                                     for i, p in enumerate(parts))
        meta["notes"] = list(dict.fromkeys(n for p in parts for n in p["meta"].get("notes", [])))
        meta["notes"].append(f"merged from {len(parts)} runs, each interleaved in one process; "
                             "ratios are only taken within one run")
    return dict(meta=meta, results=list(results.values()))


SMALL, LARGE = "200x100x50", "20x1000x500"


def _near(a, b, tolerance=0.05) -> bool:
    return abs(a - b) <= tolerance * b


def _inside_as_peer(m) -> bool:
    """optlib's time inside operators (or graphs) is at most the peer's, give or take 10%."""
    return m["ours_in"] <= 1.1 * m["peer_in"]


def _inside_graphs(m) -> bool:
    """Most (90%) of the compiled step is spent inside its graphs."""
    return m["ours_in"] >= 0.9 * m["ours_ms"]


_ORDER = Cause(
    "optlib steps each of these 2 MB matrices in a chunk of its own "
    "(optlib.optimizer.eager_chunks), in the order of work of a loop over tensors; the "
    "diagnostic row, the same rule once over the whole group (optlib's step before the "
    "chunks), shows what that changed. What is left was not found in what the run "
    "measured: the time inside operators is about the peer's.",
    _inside_as_peer, "optlib's time inside operators being about the peer's")

#: Fixed host cost of a step, measured in thread CPU time (this AMD EPYC, one thread,
#: interleaved, median of 200 steps) on 20 one-element tensors, where the arithmetic is
#: negligible: optlib with each tensor a chunk of its own (eager_chunk_bytes=1, as each
#: 2 MB matrix of 20x1000x500 is), optlib with the 20 in one chunk, and the peer's
#: for-loop, in µs per step.
CHUNK_COST = {
    "AdamW": (3255, 1234, 2250, "torch.optim.AdamW's"),
    "Adagrad": (1933, 735, 1171, "torch.optim.Adagrad's"),
    "Adadelta": (3471, 1401, 2172, "torch.optim.Adadelta's"),
    "Adamax": (2622, 1033, 1738, "torch.optim.Adamax's"),
    "NAdam": (3522, 1247, 2262, "torch.optim.NAdam's"),
    "AdamWScheduleFree": (2939, 1032, 2047, "pytorch-optimizer's ScheduleFreeAdamW"),
    "LARS": (5538, 1111, 2856, "pytorch-optimizer's LARS"),
    "RAdam": (2887, 840, 1303, "pytorch-optimizer's RAdam"),
    "Adam": (2789, 943, 1881, "torch.optim.Adam's"),
    "RMSprop": (2020, 703, 1313, "torch.optim.RMSprop's"),
    "SGD momentum": (1095, 407, 525, "torch.optim.SGD's"),
}


def _chunk_host(family: str) -> Cause:
    """The reason for ``family``'s slower eager row on 20 matrices of 1000 x 500: a fixed
    host cost per chunk (:data:`CHUNK_COST`), paid once per matrix."""
    chunks, one, peer, who = CHUNK_COST[family]
    return Cause(
        "optlib steps each of these 2 MB matrices in a chunk of its own "
        "(optlib.optimizer.eager_chunks), in the order of work of a loop over tensors, "
        "with no more bytes than {peer} ({ours_bytes:.0f} against {peer_bytes:.0f} per "
        "parameter; {ours_ops} operator calls against {peer_ops}), and every call of "
        "optlib's rule on a chunk pays a fixed cost on the host (the rule's Python, the "
        "state's gathering, the step counters) beyond a plain loop's. Measured in thread "
        "CPU time on this AMD EPYC on main at c6402cf (a chunk of one tensor runs the "
        "tensor's own operations), on 20 one-element tensors, where the arithmetic is "
        f"negligible: optlib {chunks:,} µs a step with each tensor a chunk of its own, as "
        f"here, {one:,} with the 20 in one chunk, {who} for-loop {peer:,}: about "
        f"{(chunks - peer) / 1000:.1f} ms of the gap. Adamax on these matrices: optlib's "
        "operators are torch's for-loop's one for one (162 calls each), their self times "
        "under torch.profiler 38.6 against 39.3 ms a step, the step's own Python 5.5 "
        "against 3.7; whole steps in thread CPU 42.8-47.3 against 40.3-43.0 ms. What is "
        "left beyond the fixed cost was not found. The "
        "diagnostic row (the rule once over the group, {one_call_ms:.3g} ms) pays the "
        "fixed cost once but passes over all the matrices operation by operation, out of "
        "cache; a cheaper call of the rule per chunk is the core's to make.",
        lambda m: m["ours_bytes"] <= 1.02 * m["peer_bytes"],
        "no more bytes than the peer")


_ADADELTA_FAULTS = Cause(
    "optlib's operators are torch's for-loop's one for one, and take its time (torch."
    "profiler, 5 steps each, interleaved: 73.6 against 73.5 ms a step), with the same bytes "
    "({ours_bytes:.0f} against {peer_bytes:.0f} per parameter); what differs is memory: "
    "optlib's step takes 18,880 minor page faults, torch's for-loop 10,426 (getrusage, 10 "
    "steps each, one process). The rule's two new 2 MB arrays of a matrix, √(a+ε) and "
    "√(v+ε), are both freed when the rule returns for that chunk, and the next matrix's "
    "are mapped afresh (about 944 faults a matrix), where torch's loop frees a matrix's "
    "arrays only as it assigns the next one's (about 521); that the C library gives the "
    "memory back to the kernel is the inferred mechanism, not traced. Whole steps in "
    "thread CPU at a load of about 10: optlib 115-120 ms, torch's for-loop 92-107. "
    "Writing the two temporaries in torch's order, or freeing the first one early, leaves "
    "the count at 18,880; keeping arrays across chunks, or the allocator's settings, "
    "would be the core's decision.",
    lambda m: _near(m["ours_bytes"], m["peer_bytes"]),
    "the peer's bytes")

_LARS_LARGE = Cause(
    "fewer bytes than {peer} ({ours_bytes:.0f} against {peer_bytes:.0f} per parameter) "
    "but more calls ({ours_ops} against {peer_ops}): optlib computes the trust ratio on "
    "0-dim tensors without reading them on the host (the norms stacked, the tests, "
    "where, the ratio's five operations, times η, unbind), and each matrix is a chunk of "
    "its own (thread CPU on 20 one-element tensors: optlib 5,538 µs a step, the peer's "
    "for-loop 2,856, 2.7 ms of the gap). Inside operators (torch.profiler): the norms "
    "13.9 against 12.5 ms, optlib's g + λθ as a new array 9.7, its mul_, sub_ and add_ "
    "17.6 against the peer's add_, mul_ and copy_ 25.7. Folding η ℓ (g + λθ) into the "
    "momentum update with addcmul_ (52 bytes instead of 60) changes the numbers "
    "(3,800-153,000 of 500,000 elements differ, float32 and float64); not done.",
    lambda m: m["ours_bytes"] <= m["peer_bytes"] and m["ours_ops"] > m["peer_ops"],
    "no more bytes than the peer and more operator calls")

_CPU_AS_PEER = Cause(
    "about the bytes of {peer} ({ours_bytes:.0f} against {peer_bytes:.0f} per parameter) "
    "and no more time inside operators ({ours_in:.3g} against {peer_in:.3g} ms); in "
    "thread CPU time, which a loaded machine inflates far less than wall time, optlib's "
    "step takes the peer's time (measured on this AMD EPYC, 200 matrices of 100 x 50, "
    "interleaved, median of 15 steps: optlib 17.3 ms, the rule once per group 17.9, "
    "torch's foreach 17.6, its for-loop 23.7), so the wall-time ratio is the spread of "
    "the shared machine, not optlib's work.",
    lambda m: _near(m["ours_bytes"], m["peer_bytes"]) and _inside_as_peer(m),
    "about the peer's bytes and time inside operators")

def _same_passes(m) -> bool:
    """The peer's bytes and at most eight more operator calls (the step's scalars and
    counts as 0-dim tensors, the passes over the tensors the peer's)."""
    return _near(m["ours_bytes"], m["peer_bytes"]) and m["ours_ops"] <= m["peer_ops"] + 8


_STEP_COUNTS = Cause(
    "optlib makes the same passes over the 200 tensors as {peer} (one foreach call each: "
    "the moments' lerp, mul and addcmul, the sqrt, the add of ε and the addcdiv of the "
    "step) and moves the same bytes ({ours_bytes:.0f} against {peer_bytes:.0f} per "
    "parameter); its other calls ({ours_ops} against {peer_ops}) keep torch.optim's "
    "state: each tensor's step count is a 0-dim tensor (torch's state_dict format), "
    "incremented by a foreach add over the 200 counts, stacked and read back, and the "
    "step's scalars are 0-dim tensors, where pytorch-optimizer counts once per group. "
    "Measured in thread CPU time on this AMD EPYC (interleaved, median of 15 steps): "
    "optlib 10.6 ms, {peer} 9.6, torch's foreach RAdam 15.5.",
    _same_passes, "the peer's bytes and at most eight more operator calls")

_SCHEDULE_FREE_SMALL = Cause(
    "optlib makes the same ten foreach passes over the 200 tensors as schedulefree and "
    "moves the same bytes ({ours_bytes:.0f} against {peer_bytes:.0f} per parameter); "
    "its other calls ({ours_ops} against {peer_ops}) make the step's scalars 0-dim "
    "tensors and read one back, and one of its divisions is out of place (a new list of "
    "200 tensors, where schedulefree divides in place). Measured in thread CPU time on "
    "this AMD EPYC (interleaved, median of 15 steps): optlib 17.2 ms, schedulefree 15.7.",
    lambda m: m["peer"] == "schedulefree" and _same_passes(m),
    "schedulefree's bytes and at most eight more operator calls")

_FALLS_BACK = Cause(
    "optlib.compile falls back to the eager rule here (its fallbacks below), so this row "
    "is optlib's eager step timed a second time ({ratio_to[optlib]:.2f} of the eager "
    "row's time in this run): the eager row's reason is this row's.",
    lambda m: m["falls_back"] and 0.85 <= m["ratio_to"]["optlib"] <= 1.15,
    "the fallback row taking the eager row's time")

_SAME_CODE = Cause(
    "on these 200 matrices (4.0 MB) the group is one chunk, so optlib and the diagnostic "
    "row (one call per group) run the very same code, yet their medians differ ({ours_ms:.3g} "
    "against {one_call_ms:.3g} ms): that much of the gap is the spread of this run at its "
    "load; the rest was not found in what the run measured (no more bytes than the peer: "
    "{ours_bytes:.0f} against {peer_bytes:.0f} per parameter).",
    lambda m: m["ours_ms"] >= 1.02 * m["one_call_ms"] and m["ours_bytes"] <= 1.02 * m["peer_bytes"],
    "optlib's median above its diagnostic row's (the same code) and no more bytes than the peer")

_HOST = Cause(
    "about the same bytes as its peer ({ours_bytes:.0f} against {peer_bytes:.0f} per "
    "parameter) and no more time inside operators ({ours_in:.3g} against {peer_in:.3g} ms), "
    "so the difference is spent outside them, on the host (Python around the operator "
    "calls); it was not profiled further.",
    lambda m: _near(m["ours_bytes"], m["peer_bytes"]) and _inside_as_peer(m),
    "about the peer's bytes and time inside operators")

_COMPILED_HOST = Cause(
    "the arithmetic inside optlib.compile's graphs takes about what torch's fused kernel "
    "takes, or less ({ours_in:.3g} against {peer_in:.3g} ms, from the profiler at other "
    "moments of the shared machine), so the step loses outside them, on the host: "
    "gathering the 200 tensors and their state, checking each graph's guards and calling "
    "it once per chunk of tensors (optlib.compiled's chunks), where torch's fused step is "
    "one C++ call. Split with cProfile (SGD momentum, 200 matrices of 100 x 50, one "
    "thread, 50 steps, load about 1; ms a step): 3.40 in all, the kernels about 1.1, "
    "Inductor's and AOT autograd's Python wrappers around the 8 chunk calls 0.55, "
    "dynamo's guards on the 600 tensors of those calls 0.33, optlib.compiled's "
    "gathering per chunk 0.49, optlib's step before the rule (gathering the group, its "
    "checks, the hyperparameters) 0.85; AdamW (load about 10): 4.71, graph calls 2.61, "
    "guards 0.54, optlib.compiled 0.62, before the rule 0.88. About 1 ms more Python on "
    "the host than torch's one call.",
    _inside_as_peer, "the time inside the compiled graphs being about the fused kernel's")

_COMPILED_LARGE_HOST = Cause(
    "the arithmetic inside optlib.compile's graphs takes about the fused kernel's time, "
    "or a little more ({ours_in:.3g} against {peer_in:.3g} ms), and the rest of the step "
    "is on the host ({ours_host:.2g} against {peer_host:.2g} ms): optlib's step, its "
    "chunks, and Inductor's wrappers and guards around each graph call, where torch's "
    "fused step is one C++ call. Measured before optlib.compile put these 2 MB matrices "
    "into one graph call (thread CPU, this AMD EPYC, 15 interleaved steps, ms): with "
    "one call per matrix, optlib compiled / torch fused SGD momentum 15.7 / 12.7, Adam "
    "24.8 / 20.6, AdamW 24.3 / 19.3, Adagrad 18.5 / 14.9, 150-250 µs a call; with one "
    "call over the 20, the compiled helper measured 0.93-0.99 of torch fused.",
    lambda m: m["ours_in"] <= 1.2 * m["peer_in"],
    "the time inside the compiled graphs being at most 1.2 times the fused kernel's")


OVERHEAD = "200x1x1"
_FIXED = ("on one-element matrices a step's arithmetic is negligible: the ratio compares "
          "fixed costs per step, Python and the dispatch of each operator call or graph")

_LION_BYTES = ("optlib forms β₁m + (1−β₁)g and β₂m + (1−β₂)g with a multiply and an add "
               "({ours_bytes:.0f} bytes per parameter) where {peer} uses lerp "
               "({peer_bytes:.0f}): optlib keeps the multiply-add because its numbers then "
               "equal lion-pytorch's bit for bit (lion-pytorch does the same, "
               "{bytes[lion-pytorch]:.0f} bytes); a lerp would change them at round-off, a "
               "decision for the core's owners")


def _more_bytes_than_pytorch_optimizer(m) -> bool:
    return m["peer"].startswith("pytorch-optimizer") and m["ours_bytes"] > 1.05 * m["peer_bytes"]


_SHAMPOO_GRAFT = Cause(
    "optlib's Shampoo grafts Adam's step size onto its direction by default "
    "(graft=\"adam\"), which {peer}'s Shampoo does not do: per matrix Adam's v, √v, "
    "G/(√v/√(1−β₂ᵗ) + ε), the norms of that and of the direction and their ratio, ten "
    "more operator calls and 72 more bytes per parameter (counted on 200 matrices of "
    "100 x 50 between refreshes: 6805 calls and 302 bytes, 4805 and 230 without "
    "grafting, the peer 4002 and 194; the run's count below can catch the peer at a "
    "refresh, with its SVDs). Without it (the diagnostic row 'optlib, graft=None', the "
    "peer's rule: the same numbers where the roots are refreshed every step) optlib's "
    "step takes {ms[optlib, graft=None]:.3g} "
    "ms against the peer's {peer_ms:.3g} (in thread CPU time, interleaved, on this AMD "
    "EPYC at a load of 6-8: 92.7 ms with grafting, 63.7 without, the peer 61.3). "
    "Profiled by operator (torch.profiler, "
    "interleaved): the factor updates (addmm_) and the two products per matrix (mm) "
    "take about the same time in both, and a refresh of the roots is faster in optlib "
    "(a float32 eigh per factor, where the peer takes an SVD); the extra time is the "
    "grafting's elementwise calls on 5,000-element matrices, mostly the cost of a "
    "call. The slower row is the price of the default grafting, not a slower "
    "operation.",
    lambda m: m["ms"][NO_GRAFT] <= 1.1 * m["peer_ms"] and m["ours_ms"] > m["ms"][NO_GRAFT],
    "the step without grafting (the diagnostic row) taking about the peer's time")


_SHAMPOO_GRAFT_LARGE = Cause(
    "optlib's Shampoo grafts Adam's step size onto its direction by default "
    "(graft=\"adam\"), which {peer}'s Shampoo does not do: {ours_bytes:.0f} bytes per "
    "parameter against the peer's {peer_bytes:.0f} in this run's count, of which 72 are the "
    "grafting's (230 without it, counted on 200 matrices of 100 x 50, where the diagnostic "
    "row 'optlib, graft=None' times the step without grafting at about the peer's). On "
    "these matrices a step is mostly the roots' refresh and the two products per matrix "
    "(about 2 s a step), and the grafting's elementwise passes over 10 million parameters "
    "add a few per cent; the diagnostic rows were left out of this part (its two runs of "
    "two rounds take 4 minutes as they are).",
    lambda m: m["ours_bytes"] is not None and m["peer_bytes"] is not None
    and m["ours_bytes"] - m["peer_bytes"] >= 65 and m["ratio"] <= 1.2,
    "optlib's step moving the grafting's 72 more bytes per parameter than the peer's, and "
    "at most 1.2x its time")

_ADAMAX_SMALL = Cause(
    "optlib runs torch foreach's operators one for one (torch.profiler, 20 steps each on "
    "200 matrices of 100 x 50, this AMD EPYC, one thread: 8000 calls of abs and of add_, "
    "4000 of addcdiv_, clamp_min_, lerp_ and mul in both), with the same bytes "
    "({ours_bytes:.0f} against {peer_bytes:.0f} per parameter) and fewer calls on the host "
    "({ours_ops} against {peer_ops}); in that profile optlib's step took 13.5 ms and "
    "torch foreach's 15.0. The run's ratio is not reproduced when the two are profiled "
    "one after the other, and this row was 1.04 [1.03-1.08] in the full run before "
    "(main at 6eb4a97): a difference of a few per cent that this benchmark cannot place.",
    lambda m: m["ours_bytes"] is not None and m["peer_bytes"] is not None
    and m["ours_bytes"] <= 1.01 * m["peer_bytes"] and m["ratio"] <= 1.12,
    "about the bytes of the peer (at most 1 per cent more), and at most 1.12x its time")


#: Written reasons where optlib is slower than the fastest peer beyond the run-to-run
#: spread, keyed by (optimizer, shape, implementation), (optimizer, implementation) or
#: optimizer (:func:`cause_of`). Each :class:`Cause` quotes the run's own measurements and
#: is attached only where they still show what it says; the report appends what the run
#: measured for each row (:func:`facts`).
CAUSES: dict = {
    **{(family, "optlib"): _HOST for family in families() if family not in ("Lion", "Muon")},
    **{(family, LARGE, "optlib"): (_chunk_host(family), _ORDER)
       for family in ("Adam", "RMSprop")},
    **{(family, LARGE, "optlib"): _chunk_host(family) for family in CHUNK_COST
       if family not in ("Adam", "RMSprop", "SGD momentum", "Adadelta", "LARS")},
    ("RAdam", SMALL, "optlib"): _STEP_COUNTS,
    ("Adadelta", LARGE, "optlib"): (_ADADELTA_FAULTS, _chunk_host("Adadelta")),
    ("LARS", LARGE, "optlib"): (_LARS_LARGE, _chunk_host("LARS")),
    **{(family, "optlib compiled"): _FALLS_BACK for family in ("Shampoo", "SOAP", "Adam8bit")},
    **{(family, SMALL, "optlib compiled"): _COMPILED_HOST
       for family in ("SGD momentum", "Adam", "AdamW", "Adagrad")},
    **{(family, LARGE, "optlib compiled"): _COMPILED_LARGE_HOST
       for family in ("SGD momentum", "Adam", "AdamW", "Adagrad")},
    **{(family, SMALL, "optlib"): _HOST
       for family in ("Adam", "AdamW", "Adagrad", "NAdam", "SophiaG")},
    **{(family, SMALL, "optlib"): _SAME_CODE
       for family in ("RMSprop", "LARS", "LAMB", "SGD momentum")},
    ("Adamax", SMALL, "optlib"): (_SAME_CODE, _ADAMAX_SMALL),
    ("AdamWScheduleFree", SMALL, "optlib"): (_SAME_CODE, _SCHEDULE_FREE_SMALL),
    ("Adadelta", SMALL, "optlib"): _CPU_AS_PEER,
    ("Shampoo", LARGE, "optlib"): _SHAMPOO_GRAFT_LARGE,
    **{(family, OVERHEAD, impl): _FIXED + "."
       for family in families() for impl in ("optlib", "optlib compiled")},
    ("Lion", "optlib"): Cause(_LION_BYTES + ".", _more_bytes_than_pytorch_optimizer,
                              "optlib's multiply-add moving more bytes than the peer's lerp"),
    ("Lion", LARGE, "optlib"): Cause(
        _LION_BYTES + "; each matrix is a chunk of its own already (the diagnostic row is "
        "the rule once over the group).", _more_bytes_than_pytorch_optimizer,
        "optlib's multiply-add moving more bytes than the peer's lerp"),
    ("Adafactor", SMALL, "optlib"): Cause(
        "on 200 small matrices optlib's eager rule makes {ours_ops} operator calls per step, "
        "{peer} {peer_ops} (torch's foreach {ops[torch foreach]}), for about the same "
        "bytes: optlib's factored statistics are computed tensor by tensor, and at 5,000 "
        "elements a tensor the cost per call dominates. optlib.compile removes it.",
        lambda m: m["ours_ops"] >= 10 * m["count"] and m["ours_ops"] > 1.5 * m["peer_ops"],
        "optlib's statistics computed tensor by tensor (10 or more operator calls per tensor, "
        "half again the peer's)"),
    ("Adafactor", LARGE, "optlib"): Cause(
        "optlib computes torch.optim.Adafactor's operations, whose numbers it keeps bit for "
        "bit ({ratio_to[torch for-loop]:.2f} of torch's for-loop's time here), and {peer} "
        "another order of work: it squares G once and takes the row and column means of "
        "G² by sums, and the reciprocal square root of the row and column factors only, "
        "where torch's rule takes two norms of G (over the rows and over the columns) and "
        "rsqrt of the whole V̂. Measured in thread CPU time on this AMD EPYC (one thread, "
        "a 1000 x 500 float32 matrix; CPU time, which a loaded machine inflates far less "
        "than wall time): the column norm torch.norm(G, dim=-2), ATen's generic reduction "
        "over the strided dimension, 1.15 ms, the row norm 0.11, rsqrt of V̂ 0.6, against "
        "the peer's G² 0.15 and its two sums 0.13: about 1.6 ms a matrix more, 31 ms for "
        "the 20, which is the gap (whole steps, interleaved, in CPU time: optlib 88.3 ms, "
        "torch's for-loop 89.3, {peer} 58.3, at a load of 6-8). No faster form of the "
        "column norm tried gave torch's bits.",
        lambda m: m["ratio_to"]["torch for-loop"] <= 1.12
        and m["peer"].startswith("pytorch-optimizer") and m["peer_bytes"] >= m["ours_bytes"],
        "optlib taking about torch's for-loop's time (at most 1.12 of it), the peer "
        "counting as many bytes or more"),
    ("Adafactor", LARGE, "optlib compiled"): Cause(
        "the time is inside the compiled graphs ({ours_in:.3g} of {ours_ms:.3g} ms): "
        "Inductor fuses each matrix's rule into one C++ kernel and inlines the 0-dim "
        "scalars that depend on the step (β̂₂ = 1 − t^−0.8 in float64, the clip's RMS) "
        "into the innermost loop of the update, a double-precision std::pow for every 8 "
        "elements (62,500 per 1000 x 500 matrix) that the C compiler does not hoist. "
        "Profiled by the compiled helper: 5.8 ms a matrix in the graph against about 3.7 "
        "eager; isolated, out = x * (1 − t^−0.8) on a 1000 x 500 matrix takes 2.22 ms "
        "compiled, 0.59 with a constant in its place, 1.00 eager; the column and row "
        "means are not the cause (compiled 0.21 and 0.19 ms, eager 0.31 and 0.30). "
        "Computing β̂₂ outside the graph, or a fix in Inductor, was not done.",
        _inside_graphs, "the compiled step's time being inside its graphs"),
    ("RAdam", LARGE, "optlib compiled"): Cause(
        "the time is inside the compiled graphs ({ours_in:.3g} of {ours_ms:.3g} ms), and "
        "Inductor's kernel for RAdam is slower than its kernel for "
        "Adam on the same bytes: it computes the rectification's test, ρ_t = ρ_∞ − "
        "2tβ₂ᵗ/(1−β₂ᵗ) > 5, inside the vectorized loop over the elements (a double "
        "std::pow(β₂, t), a division and a comparison for every 8 elements, read in the "
        "generated C++ with TORCH_LOGS=output_code), and both branches (the rectified "
        "step and the plain momentum step) for every element, blended by the test. "
        "Measured in thread CPU time on this AMD EPYC (20 matrices of 1000 x 500, one "
        "thread, interleaved, with one graph call per matrix): optlib compiled RAdam "
        "60.9 ms, 2.84 ms a graph call, "
        "against 21.6 ms for optlib compiled Adam; optlib's eager RAdam 49.9, {peer} "
        "56.8. Taking the test out of the kernel (a number of the step, or a graph per "
        "branch) is optlib.compile's or the rule's to do.",
        lambda m: _inside_graphs(m) and not m["falls_back"],
        "the compiled step's time being inside its graphs"),
    ("LAMB", LARGE, "optlib"): Cause(
        "more passes over memory than {peer}: {per_tensor_ops:.0f} operator calls per matrix "
        "against {peer_per_tensor_ops:.0f} and {ours_bytes:.0f} bytes per parameter against "
        "{peer_bytes:.0f} (the paper's bias corrections, which pytorch-optimizer's Lamb leaves "
        "out, and the trust ratio's product and the subtraction as two passes where the "
        "loop's add_(alpha=) is one, since the ratio stays a tensor; the extra calls are the "
        "ratio's small tensor operations); each matrix is a chunk of its own already (the "
        "diagnostic row is the rule once over the group).",
        lambda m: _near(m["ours_bytes"], 116, 0.02) and m["ours_bytes"] > 1.05 * m["peer_bytes"],
        "optlib's 116 bytes per parameter (the bias corrections, and the step's product and "
        "subtraction as two passes), more than the peer's"),
    ("LAMB", LARGE, "optlib compiled"): Cause(
        "the time is inside the compiled graphs ({ours_in:.3g} of {ours_ms:.3g} ms). LAMB "
        "needs each tensor's norms of θ and of the update before θ moves, so even fused it "
        "passes over every tensor twice; optlib.compile calls its graph tensor by tensor on "
        "these 2 MB matrices (optlib.compiled's chunks of one tensor), so that the second "
        "pass finds the tensor in cache, as {peer}'s loop does; which of the graph's "
        "kernels take longer was not profiled.",
        _inside_graphs, "the compiled step's time being inside its graphs"),
    ("SGD momentum", LARGE, "optlib"): (_chunk_host("SGD momentum"), Cause(
        _ORDER.text[:-1] + "; with three operations a step there is little to keep in "
        "cache, and the chunks change nothing (the diagnostic row, {one_call_ms:.3g} ms).",
        lambda m: _inside_as_peer(m) and _near(m["ours_ms"], m["one_call_ms"]),
        "optlib's time inside operators about the peer's, and the chunks changing nothing")),
    ("Muon", "optlib"): Cause(
        "optlib, like pytorch-optimizer's foreach Muon, runs each Newton-Schulz product for "
        "all same-shaped matrices as one batched product ({ours_ops} operator calls per step, "
        "against {peer_ops}; torch.optim.Muon runs them matrix by matrix, {ops[torch]}). Its "
        "time is inside the operators ({ours_in:.3g} against {peer_in:.3g} ms), and it moves "
        "more bytes per parameter ({ours_bytes:.0f} against {peer_bytes:.0f}: each matrix is "
        "converted to bfloat16, then copied into its stack); which operators take the longer "
        "time was not profiled.",
        lambda m: m["ours_ops"] <= 1.2 * m["peer_ops"] and m["ours_bytes"] > m["peer_bytes"]
        and m["ours_in"] > m["peer_in"],
        "the batched products (no more calls than the peer), more bytes and more time inside "
        "operators"),
    **{("Shampoo", SMALL, impl): _SHAMPOO_GRAFT for impl in ("optlib", "optlib compiled")},
}


def _record(args, names, now, results, path=None) -> dict:
    settings = (f"optimizers {' '.join(names)}; shapes {' '.join(args.shapes)} "
                f"(count x rows x cols, float32, {args.device}); {args.repeats} runs of "
                f"{args.reps} interleaved rounds of {args.block} step(s); compiled "
                f"{'no' if args.no_compile else 'yes'}"
                + (f"; left out: {', '.join(args.skip_impls)}" if args.skip_impls else ""))
    record = dict(meta=dict(date=now.strftime("%Y-%m-%d %H:%M UTC"), machine=machine(),
                            settings=settings, load=args.load, notes=[]),
                  results=results)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", nargs="+", default=None,
                        help="families to time (default: all); names as in the report")
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES),
                        help="COUNTxROWSxCOLS, e.g. 200x100x50")
    parser.add_argument("--repeats", type=int, default=5, help="runs (ratios taken per run)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds per run")
    parser.add_argument("--block", type=int, default=1, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="leave out compiled steps")
    parser.add_argument("--skip-impls", nargs="+", default=[],
                        help="implementations to leave out, by label (e.g. 'heavyball compiled')")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the markdown report here (default: benchmarks/results/"
                             "peers-DATE.md when every optimizer is timed)")
    parser.add_argument("--load", default="", help="a note on the machine's load, for the report")
    parser.add_argument("--note", action="append", default=[],
                        help="a line for the report's header (repeatable)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="merge these JSON results into one report (no timing)")
    parser.add_argument("--overhead", type=Path, default=None,
                        help="JSON results on one-element matrices (e.g. --shapes 200x1x1): "
                             "the fixed cost per step, quoted in the reasons")
    args = parser.parse_args(argv)
    if args.merge:
        record = merge([json.loads(p.read_text()) for p in args.merge])
        if args.load:
            record["meta"]["load"] = args.load
    else:
        torch.set_num_threads(args.threads)
        names = args.optimizers or list(families())
        unknown = sorted(set(names) - set(families()))
        if unknown:
            parser.error(f"unknown optimizers {unknown}; known: {list(families())}")
        for spec in args.shapes:
            parse_shape(spec)
        results = []
        now = datetime.datetime.now(datetime.timezone.utc)
        for name in names:
            for shape in args.shapes:
                start = time.perf_counter()
                results += measure(name, shape, args.repeats, args.reps, args.block,
                                   not args.no_compile, args.device, skip=args.skip_impls)
                print(f"{name:<18}{shape:<13}{time.perf_counter() - start:7.1f} s", flush=True)
                if args.json:        # after every optimizer and shape: an interrupted run keeps them
                    _record(args, names, now, results, args.json)
        record = _record(args, names, now, results, args.json)
    record["meta"]["notes"] = list(record["meta"].get("notes", [])) + args.note
    overhead = json.loads(args.overhead.read_text())["results"] if args.overhead else None
    text = format_report(record["meta"], record["results"], CAUSES, overhead)
    report = args.report
    if report is None and (args.merge or args.optimizers is None):
        report = ROOT / "benchmarks" / "results" / f"peers-{record['meta']['date'][:10]}.md"
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(text)
        print(f"report: {report}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
