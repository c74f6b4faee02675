"""On a machine with CUDA: optlib's float64 parity tests, step times and peers on the GPU,
written to a dated markdown report in notes/.

    python benchmarks/gpu_check.py [--report notes/gpu-check-DATE.md] [--no-compile]
                                   [--parity-timeout 300] [--peers-budget 240]
    make gpu-check

Without a CUDA device it prints why and exits 0 without writing anything, so it can run
anywhere. With one, in this order (the report is rewritten after each part, so an
interrupted run still leaves what it measured):

1. the float64 parity tests (``pytest tests -k parity``) with ``OPTLIB_TEST_DEVICE=cuda``:
   the tests taking the ``float64`` fixture draw their parameters and gradients onto the
   GPU (``tests/on_device.py``), and torch's reference optimizers run there too;
2. the step-time table of ``benchmarks/step_time.py`` on the GPU: SGD with momentum, Adam
   and AdamW, optlib against torch's for-loop, foreach and fused steps, and (unless
   ``--no-compile``) ``optlib.compile`` against the fused step;
3. ``benchmarks/peers.py`` on the GPU, for the optimizers that fit in ``--peers-budget``
   seconds: optlib eager and compiled against the peer packages installed there.

The GPU machine may have another torch and no network: the report names the device, the
torch and CUDA versions, and every package (peer, test dependency) that was missing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Test dependencies whose absence skips or fails some parity tests.
TEST_PACKAGES = ("pytest", "hypothesis", "expecttest")


def _load_peers():
    spec = importlib.util.spec_from_file_location("peers_benchmark", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def environment(device: str = "cuda") -> dict:
    """Device, versions, and the optional packages that are missing."""
    peers = _load_peers()
    name = torch.cuda.get_device_name() if device == "cuda" else peers.machine()["cpu"]
    capability = torch.cuda.get_device_capability() if device == "cuda" else ()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return dict(device=name, capability=capability,
                torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                commit=commit,
                peers={k: v for k, v in peers.machine()["peers"].items()},
                missing_tests=[m for m in TEST_PACKAGES if importlib.util.find_spec(m) is None])


def parity_tests(timeout: float, device: str = "cuda") -> dict:
    """``pytest tests -k parity`` with ``OPTLIB_TEST_DEVICE=cuda``: the summary line, the
    failures, and how many random tensors were drawn onto the GPU."""
    env = dict(os.environ, OPTLIB_TEST_DEVICE=device, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "pytest", "tests", "-k", "parity", "-q", "-p", "no:cacheprovider",
           "-p", "no:xdist", "--continue-on-collection-errors", "-rfE", "--tb=line"]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        out, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        out, rc = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (
            error.stdout or ""), f"timed out after {timeout:.0f} s"
    lines = out.splitlines()
    summary = next((line.strip("= ") for line in reversed(lines)
                    if re.search(r"\d+ (passed|failed|error)", line)), "no summary line")
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    moved = next((line for line in lines if line.startswith("OPTLIB_TEST_DEVICE=")), "")
    return dict(command=" ".join([f"OPTLIB_TEST_DEVICE={device}", "python"] + cmd[1:]), rc=rc,
                summary=summary, failures=failures, moved=moved,
                seconds=time.perf_counter() - start)


def step_times(compiled: bool, reps: int, device: str = "cuda") -> str:
    from optlib.book.performance import format_step_time_table, step_time_table

    rows = step_time_table(reps=reps, block=5, device=device, compiled=compiled)
    text = format_step_time_table(rows)
    for r in rows:
        if r["impl"] == "optlib compiled":
            vs = r["vs_fused"]
            text += (f"\noptlib compiled, {r['optimizer']} {r['shape']}: {r['ms']:.3f} ms/step, "
                     + ("no fused step" if vs is None else f"{vs:.2f}x torch fused")
                     + f"; first step (compiles) {r['first_s']:.1f} s")
    return text


def peer_rows(compiled: bool, budget: float, repeats: int, reps: int,
              device: str = "cuda") -> tuple[list, list]:
    """peers.measure on cuda for each optimizer while the budget lasts: (results, not run)."""
    peers = _load_peers()
    results, skipped, start = [], [], time.perf_counter()
    for name in peers.families():
        for shape in peers.DEFAULT_SHAPES:
            if time.perf_counter() - start > budget:
                skipped.append(f"{name} {shape}")
                continue
            try:
                results += peers.measure(name, shape, repeats, reps, 1, compiled, device,
                                         log=lambda *_: None)
            except Exception as error:  # noqa: BLE001 - reported, the rest goes on
                skipped.append(f"{name} {shape} ({type(error).__name__}: {error})")
    return results, skipped


def format_report(date: str, env: dict | None, parts: dict) -> str:
    """The report from what has been measured so far (``parts``: section title -> text)."""
    lines = ["# optlib on a GPU: parity tests, step times, peers", "", f"- Date: {date}"]
    if env:
        missing = [k for k, v in env["peers"].items() if not v] + env["missing_tests"]
        capability = (f" (compute capability {'.'.join(map(str, env['capability']))})"
                      if env["capability"] else "")
        lines += [f"- Device: {env['device']}{capability}",
                  f"- torch {env['torch']}, CUDA {env['cuda']}, Python {env['python']}, "
                  f"optlib at commit {env['commit']}",
                  "- Peers installed: " + (", ".join(f"{k} {v}" for k, v in env["peers"].items()
                                                     if v) or "none"),
                  "- Missing (their rows or tests left out): " + (", ".join(missing) or "nothing")]
    for title, text in parts.items():
        lines += ["", f"## {title}", "", text]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=None,
                        help="default: notes/gpu-check-DATE.md")
    parser.add_argument("--no-compile", action="store_true", help="leave out optlib.compile")
    parser.add_argument("--parity-timeout", type=float, default=300.0)
    parser.add_argument("--reps", type=int, default=20, help="step-time table: rounds")
    parser.add_argument("--peers-budget", type=float, default=240.0,
                        help="seconds for peers.py (optimizers left over are named)")
    parser.add_argument("--peers-repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["parity", "steps", "peers"])
    parser.add_argument("--device", default="cuda",
                        help="cuda; cpu only to try this script where there is no GPU")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"No CUDA device (torch {torch.__version__}): gpu_check skipped, no report written.")
        return 0
    now = datetime.datetime.now(datetime.timezone.utc)
    date = now.strftime("%Y-%m-%d %H:%M UTC")
    report = args.report or ROOT / "notes" / f"gpu-check-{now:%Y-%m-%d}.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    env, parts = environment(args.device), {}
    dev = args.device

    def write():
        report.write_text(format_report(date, env, parts))

    write()
    if "parity" not in args.skip:
        p = parity_tests(args.parity_timeout, dev)
        parts[f"Float64 parity tests on {dev}"] = "\n".join(
            [f"`{p['command']}` ({p['seconds']:.0f} s, exit status {p['rc']}):", "",
             f"- {p['summary']}", f"- {p['moved'] or f'no random tensors were drawn onto {dev}'}"]
            + [f"- {line}" for line in p["failures"][:40]]
            + ([f"- ... and {len(p['failures']) - 40} more"] if len(p["failures"]) > 40 else []))
        write()
        print(parts[f"Float64 parity tests on {dev}"], flush=True)
    if "steps" not in args.skip:
        try:
            text = step_times(not args.no_compile, args.reps, dev)
        except Exception as error:  # noqa: BLE001
            text = f"failed: {type(error).__name__}: {error}"
        parts[f"Step time on {dev} against torch.optim"] = (
            f"Median of {args.reps} interleaved blocks of 5 steps (benchmarks/step_time.py's "
            f"table), float32.\n\n```\n{text}\n```")
        write()
        print(text, flush=True)
    if "peers" not in args.skip:
        peers = _load_peers()
        results, skipped = peer_rows(not args.no_compile, args.peers_budget,
                                     args.peers_repeats, 5, dev)
        meta = dict(date=date, settings=f"{dev}, {args.peers_repeats} runs of 5 rounds of 1 step",
                    machine=peers.machine(), load="", notes=[])
        causes = {name: "not analysed on this device." for name in peers.families()}
        text = peers.format_report(meta, results, causes) if results else "nothing measured"
        body = text.split("\n## ", 1)[1] if "\n## " in text else text
        parts[f"Peers on {dev} (benchmarks/peers.py)"] = (
            ("Not run within the budget: " + ", ".join(skipped) + ".\n\n" if skipped else "")
            + "### " + body.replace("\n## ", "\n### "))
        write()
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
