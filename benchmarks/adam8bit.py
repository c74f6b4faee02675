"""optlib's Adam8bit against torch's foreach Adam and bitsandbytes' Adam8bit: time and accuracy.

    python benchmarks/adam8bit.py [--reps 9] [--threads 2] [--device cpu]

Time per step on two shapes: one 4096 x 1024 matrix, and 200 tensors of 5,000 values.
Every implementation steps its own copy of the same parameters and gradients; the steps are
interleaved in a fresh random order every round, in one process
(``optlib.book.performance.time_interleaved``), and the table gives medians and the ratio
to torch's foreach Adam. Bars: optlib at most bitsandbytes' time; aim: 3x torch foreach.

Accuracy, against fp32 Adam: 50 steps (lr 3e-3) on a least-squares problem with two
256 x 256 matrices (the one ``tests/test_quantized.py`` trains), final loss and
distance of the weights from fp32 Adam's; and 100 steps on gradients whose magnitudes
inside each block of 256 span 3.5 decades: each coordinate's largest step against
Adam's, and the distance of the end point from Adam's (relative to Adam's).

bitsandbytes (``pip install bitsandbytes==0.50.2``; its 8-bit optimizers run on CPU since
0.50) is optional: without it, its rows are left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import optlib  # noqa: E402
from optlib.book.performance import make_params, time_interleaved  # noqa: E402

SHAPES = {"4096 x 1024": [(4096, 1024)], "200 x 5k": [(5000,)] * 200}


def implementations():
    """Constructors (params -> optimizer), lr 1e-3 and defaults otherwise."""
    impls = {"torch Adam foreach": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
             "optlib Adam8bit": lambda p: optlib.Adam8bit(p, lr=1e-3)}
    try:
        import bitsandbytes as bnb
    except ImportError:
        return impls
    impls["bitsandbytes Adam8bit"] = lambda p: bnb.optim.Adam8bit(p, lr=1e-3)
    return impls


def _params(shapes, device):
    params = []
    for i, shape in enumerate(shapes):
        (p,) = make_params(1, int(torch.Size(shape).numel()), seed=i, device=device)
        p.data, p.grad = p.data.view(shape), p.grad.view(shape)
        params.append(p)
    return params


def step_times(reps: int, device) -> list[dict]:
    rows = []
    for shape, shapes in SHAPES.items():
        steps = {label: make(_params(shapes, device)).step
                 for label, make in implementations().items()}
        medians = time_interleaved(steps, reps=reps, device=device)
        base = medians["torch Adam foreach"]
        rows += [dict(shape=shape, impl=label, ms=1e3 * s, ratio=s / base)
                 for label, s in medians.items()]
    return rows


def _least_squares(make, steps=50, lr=3e-3):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(512, 256, generator=gen)
    Y = X @ (torch.randn(256, 256, generator=gen) / 16)
    W = [torch.nn.Parameter(torch.randn(256, 256, generator=gen) / 16) for _ in range(2)]
    opt = make(W, lr)
    for _ in range(steps):
        opt.zero_grad()
        (X @ W[0] @ W[1] - Y).square().mean().backward()
        opt.step()
    return (X @ W[0] @ W[1] - Y).square().mean().item(), [w.detach() for w in W]


def _spanning(make, decades=3.5, steps=100, n=256 * 16):
    """Largest step of each coordinate and the end point, on gradients spanning ``decades``."""
    gen = torch.Generator().manual_seed(0)
    scale = 10.0 ** (-decades * torch.rand(n, generator=gen))
    p = torch.nn.Parameter(torch.zeros(n))
    opt, largest = make([p], 1e-3), torch.zeros(n)
    for _ in range(steps):
        before = p.detach().clone()
        p.grad = torch.randn(n, generator=gen) * scale
        opt.step()
        largest = torch.maximum(largest, (p.detach() - before).abs())
    return largest, p.detach()


def accuracy() -> list[dict]:
    makers = {"fp32 Adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
              "optlib Adam8bit": lambda p, lr: optlib.Adam8bit(p, lr=lr, min_8bit_size=0)}
    if "bitsandbytes Adam8bit" in implementations():
        import bitsandbytes as bnb
        makers["bitsandbytes Adam8bit"] = lambda p, lr: bnb.optim.Adam8bit(p, lr=lr, min_8bit_size=0)
    loss_ref, w_ref = _least_squares(makers["fp32 Adam"])
    largest_ref, end_ref = _spanning(makers["fp32 Adam"])
    rows = []
    for label, make in makers.items():
        loss, w = _least_squares(make)
        largest, end = _spanning(make)
        distance = sum((a - b).square().sum() for a, b in zip(w, w_ref, strict=True)).sqrt()
        rows.append(dict(impl=label, loss=loss, loss_gap=abs(loss - loss_ref),
                         distance=distance.item(),
                         largest_step=(largest / largest_ref).max().item(),
                         span_error=((end - end_ref).norm() / end_ref.norm()).item()))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} interleaved steps")
    print(f"{'shape':<13}{'implementation':<23}{'ms/step':>9}{'vs foreach':>12}")
    rows = step_times(args.reps, args.device)
    for r in rows:
        print(f"{r['shape']:<13}{r['impl']:<23}{r['ms']:>9.2f}{r['ratio']:>11.2f}x")
    for shape in SHAPES:
        times = {r["impl"]: r["ms"] for r in rows if r["shape"] == shape}
        if "bitsandbytes Adam8bit" in times:
            print(f"{shape}: optlib / bitsandbytes = "
                  f"{times['optlib Adam8bit'] / times['bitsandbytes Adam8bit']:.2f} (bar: 1.0)")
    print("\nAccuracy against fp32 Adam (least squares, 2 x 256x256, 50 steps; gradients "
          "spanning 3.5 decades per block, 100 steps)")
    print(f"{'implementation':<23}{'loss':>9}{'|gap|':>9}{'|W - W_fp32|':>14}"
          f"{'largest step / Adam':>21}{'end error':>11}")
    for r in accuracy():
        print(f"{r['impl']:<23}{r['loss']:>9.5f}{r['loss_gap']:>9.5f}{r['distance']:>14.4f}"
              f"{r['largest_step']:>21.2f}{r['span_error']:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
