"""Time one step of the matrix-aware optimizers (Shampoo, SOAP, Muon) against AdamW.

    python benchmarks/matrix_step_time.py [--shape 512 512] [--count 4] [--reps 7] [--threads N]

Every optimizer steps its own copy of ``count`` float32 weight matrices (same values, same
fixed gradients); steps are timed in interleaved blocks of 10 (one timed block of each
optimizer in turn, in a fresh random order every round), so that each block holds the
same share of Shampoo's eigendecompositions and SOAP's basis refreshes (every 10 steps
with ``precondition_frequency=10``; Shampoo's default of 1 takes its roots every step)
and the median is the amortized cost of a step. The measurement lives in
``optlib.book.performance`` (``matrix_step_times``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from optlib.book.performance import format_matrix_step_times, matrix_step_times  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(512, 512))
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = matrix_step_times(tuple(args.shape), args.count, args.reps, device=args.device)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
          f"{args.count} matrices of {args.shape[0]} x {args.shape[1]}, median of {args.reps} "
          "interleaved blocks of 10 steps")
    print(format_matrix_step_times(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
