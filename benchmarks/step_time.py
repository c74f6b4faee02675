"""Time one optimizer step: optlib against torch.optim's for-loop, foreach and fused paths.

    python benchmarks/step_time.py [--reps 40] [--steps 5] [--threads N] [--compiled]

Two shapes: (a) 200 tensors of 5,000 parameters (per-tensor overhead matters) and
(b) 20 tensors of 500,000 (memory bandwidth matters). Every implementation gets its own
copy of the same parameters and gradients; repetitions are interleaved (one timed block
of each implementation in turn, in a rotating order, in one process), so that a slow moment of the machine
hits all of them alike. Prints medians and the ratio to torch's ``foreach=True``.
The bar for optlib is a ratio of at most 1.05 in every row.

``--compiled`` adds ``optlib.compile(...)`` for Adam and AdamW, timed after its first step
(which compiles; that one-off time is printed) against torch's ``fused=True`` step, with a
bar of 1.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import optlib  # noqa: E402

SHAPES = {"200 x 5k": (200, 5_000), "20 x 500k": (20, 500_000)}

OPTIMIZERS = {
    "SGD momentum": (optlib.SGD, torch.optim.SGD, dict(lr=1e-3, momentum=0.9)),
    "Adam": (optlib.Adam, torch.optim.Adam, dict(lr=1e-3)),
    "AdamW": (optlib.AdamW, torch.optim.AdamW, dict(lr=1e-3, weight_decay=1e-2)),
}


def make_params(count: int, size: int, device="cpu", seed=0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(size, generator=gen).to(device)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn(size, generator=gen).mul_(1e-3).to(device)
    return params


def implementations(name: str, compiled: bool = False) -> dict[str, Callable]:
    ours, theirs, kwargs = OPTIMIZERS[name]
    impls = {
        "torch for-loop": lambda p: theirs(p, foreach=False, **kwargs),
        "torch foreach": lambda p: theirs(p, foreach=True, **kwargs),
        "torch fused": lambda p: theirs(p, fused=True, **kwargs),
        "optlib": lambda p: ours(p, **kwargs),
    }
    if compiled and name in COMPILED:
        impls["optlib compiled"] = lambda p: optlib.compile(ours(p, **kwargs))
    return impls


COMPILED = ("Adam", "AdamW")   # the optimizers timed with --compiled


def time_interleaved(makers: dict[str, Callable], count: int, size: int, reps: int, steps: int,
                     device="cpu", first_step: dict | None = None) -> dict[str, float]:
    """Median seconds per step of each implementation, interleaved repetitions.
    ``first_step``, if given, receives each implementation's first-step seconds (state
    creation; for a compiled step, the one-off compile)."""
    optimizers = {}
    for label, make in makers.items():
        try:
            optimizers[label] = make(make_params(count, size, device))
        except (RuntimeError, ValueError):    # e.g. no fused kernel for this device
            continue
    for label, opt in optimizers.items():     # warm-up: creates state, first-call overheads
        start = time.perf_counter()
        opt.step()
        if first_step is not None:
            first_step[label] = time.perf_counter() - start
        opt.step()
    samples = {label: [] for label in optimizers}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    labels = list(optimizers)
    for rep in range(reps):
        # rotate the order every repetition, so no implementation always runs first
        for label in labels[rep % len(labels):] + labels[:rep % len(labels)]:
            opt = optimizers[label]
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                opt.step()
            sync()
            samples[label].append((time.perf_counter() - start) / steps)
    return {label: statistics.median(s) for label, s in samples.items()}


def table(reps: int = 40, steps: int = 5, device: str = "cpu", compiled: bool = False) -> list[dict]:
    rows = []
    for name in OPTIMIZERS:
        for shape, (count, size) in SHAPES.items():
            first: dict[str, float] = {}
            medians = time_interleaved(implementations(name, compiled), count, size, reps, steps,
                                       device, first_step=first)
            base = medians["torch foreach"]
            for label, seconds in medians.items():
                rows.append(dict(optimizer=name, shape=shape, impl=label, ms=1e3 * seconds,
                                 ratio=seconds / base, first_s=first.get(label),
                                 vs_fused=seconds / medians["torch fused"]
                                 if "torch fused" in medians else None))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compiled", action="store_true",
                        help="also time optlib.compile(...) for Adam and AdamW (compiles 4 graphs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = table(args.reps, args.steps, args.device, args.compiled)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} interleaved blocks of {args.steps} steps")
    print(f"{'optimizer':<14}{'shape':<11}{'implementation':<16}{'ms/step':>9}{'vs foreach':>12}")
    worst = 0.0
    for r in rows:
        flag = ""
        if r["impl"] == "optlib":
            worst = max(worst, r["ratio"])
            flag = "  ok" if r["ratio"] <= 1.05 else "  SLOWER"
        print(f"{r['optimizer']:<14}{r['shape']:<11}{r['impl']:<16}{r['ms']:>9.3f}{r['ratio']:>11.2f}x{flag}")
    print(f"worst optlib / torch foreach: {worst:.3f} (bar: 1.05)")
    compiled_rows = [r for r in rows if r["impl"] == "optlib compiled"]
    for r in compiled_rows:
        vs = r["vs_fused"]
        verdict = "no fused step to compare" if vs is None else (
            f"{vs:.2f}x torch fused, {'ok' if vs <= 1.1 else 'SLOWER'} (bar 1.1)")
        print(f"optlib compiled, {r['optimizer']:<6}{r['shape']:<10}: {r['ms']:.3f} ms/step, "
              f"{verdict}; first step (compiles): {r['first_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
