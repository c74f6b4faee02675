"""Time one optimizer step: optlib against torch.optim's for-loop, foreach and fused paths.

    python benchmarks/step_time.py [--reps 40] [--steps 5] [--threads N] [--compiled]

Two shapes: (a) 200 tensors of 5,000 parameters (per-tensor overhead matters) and
(b) 20 tensors of 500,000 (memory bandwidth matters). Every implementation gets its own
copy of the same parameters and gradients; repetitions are interleaved (one timed block
of each implementation in turn, in a fresh random order every round, in one process), so
that a slow moment of the machine hits all of them alike and none always runs after the
same neighbour (whose leftovers in the caches would favour or hurt it every time). Prints
medians and the ratio to torch's ``foreach=True``. The bar for optlib is a ratio of at
most 1.05 in every row.
``--compiled`` adds ``optlib.compile(...)`` for Adam and AdamW, timed after its first step
(the one-off compile, reported), against torch's ``fused=True`` step (bar: 1.1).

The measurement itself lives in ``optlib.book.performance`` (``step_time_table``), so
that the performance appendix prints the same table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from optlib.book.performance import format_step_time_table, step_time_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compiled", action="store_true",
                        help="also time optlib.compile(...) for Adam and AdamW (compiles 4 graphs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = step_time_table(args.reps, args.steps, args.device, args.compiled)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} interleaved blocks of {args.steps} steps")
    print(format_step_time_table(rows))
    for r in rows:
        if r["impl"] == "optlib compiled":
            vs = r["vs_fused"]
            verdict = "no fused step to compare" if vs is None else (
                f"{vs:.2f}x torch fused, {'ok' if vs <= 1.1 else 'SLOWER'} (bar 1.1)")
            print(f"optlib compiled, {r['optimizer']:<6}{r['shape']:<10}: {r['ms']:.3f} ms/step, "
                  f"{verdict}; first step (compiles): {r['first_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
