"""The book's numerical environment (optlib.book.numerics): the pins work, the check in the
kernel stops a run without them, and every committed chapter carries the stamp of a run
for the record whose outputs are the ones committed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from optlib import book
from optlib.book import numerics

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
PROBE = Path(__file__).with_name("numerics_probe.py")

needs_avx2 = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="the book's pinned environment needs an x86-64 CPU with AVX2")


def probe(env: dict[str, str], *args: str) -> dict[str, str]:
    """Run the chaotic probe in a fresh process with ``env`` (torch reads it at import)."""
    out = subprocess.run([sys.executable, str(PROBE), *args], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def limited(profile_env: dict[str, str], mkl: str | None, dnnl: str | None) -> dict[str, str]:
    """``profile_env`` as a CPU would see it that has only the instruction sets named."""
    env = dict(profile_env)
    for name in ("MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA"):
        env.pop(name, None)
    if mkl:
        env["MKL_ENABLE_INSTRUCTIONS"] = mkl
    if dnnl:
        env["DNNL_MAX_CPU_ISA"] = dnnl
    return env


@needs_avx2
def test_the_pins_make_a_chaotic_run_independent_of_the_instruction_set():
    record = numerics.kernel_environment("record")
    runs = [probe(limited(record, mkl, dnnl))
            for mkl, dnnl in [(None, None), ("AVX2", "AVX2"), ("SSE4_2", "SSE41")]]
    assert runs[0]["capability"] == numerics.PINNED_CAPABILITY
    assert runs[1] == runs[0] and runs[2] == runs[0]


@needs_avx2
def test_without_the_pins_the_same_run_changes_so_the_check_above_can_fail():
    bare = {k: v for k, v in os.environ.items() if k not in (*numerics.PINNED, numerics.MARKER)}
    bare["OMP_NUM_THREADS"] = "1"
    by_capability = [probe({**bare, "ATEN_CPU_CAPABILITY": c}, "--mlp-only") for c in ("avx2", "default")]
    assert by_capability[0]["mlp"] != by_capability[1]["mlp"]
    # and oneDNN left on (only the variables pinned) lets its instruction set through
    pinned_but_onednn_on = {**bare, **numerics.PINNED}
    by_isa = [probe(limited(pinned_but_onednn_on, None, isa)) for isa in ("AVX2", "SSE41")]
    assert by_isa[0]["mlp"] == by_isa[1]["mlp"]
    assert by_isa[0]["transformer"] != by_isa[1]["transformer"]


def test_apply_stops_a_run_for_the_record_without_the_pins(monkeypatch):
    for name in numerics.PINNED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(numerics.MARKER, "record")
    with pytest.raises(RuntimeError, match=r"ATEN_CPU_CAPABILITY=None, expected 'avx2'.*run_notebook"):
        book.setup(seed=0)
    monkeypatch.setenv(numerics.MARKER, "nonsense")
    with pytest.raises(RuntimeError, match="not one of"):
        numerics.apply()


def test_apply_does_nothing_for_a_reader(monkeypatch):
    monkeypatch.delenv(numerics.MARKER, raising=False)
    assert numerics.problems() == []
    enabled = torch.backends.mkldnn.enabled
    threads = torch.get_num_threads()
    try:
        book.setup(seed=0)
        assert torch.backends.mkldnn.enabled == enabled
    finally:
        torch.set_num_threads(threads)


@needs_avx2
def test_a_kernel_under_the_record_profile_passes_the_check_and_switches_onednn_off():
    code = ("import torch; from optlib import book; book.setup(seed=0); "
            "print(torch.backends.mkldnn.enabled, torch.backends.cpu.get_cpu_capability())")
    out = subprocess.run([sys.executable, "-c", code], env=numerics.kernel_environment("record"),
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "AVX2"]


_VML_CHECK = """
import math, numpy as np, torch
from optlib import book
from optlib.book import numerics
book.setup(seed=0)
gen = torch.Generator().manual_seed(0)
for name in numerics.VML_FUNCTIONS:
    f = getattr(torch, name)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(10_007, generator=gen, dtype=dtype) * 3
        if name in ("sqrt", "log"):
            x = x.abs()
        if name == "sqrt":       # IEEE 754's square root
            want = torch.from_numpy(np.sqrt(x.numpy()))
        else:                    # the C library's, in double precision, rounded
            want = torch.tensor([getattr(math, name)(v) for v in x.tolist()],
                                dtype=torch.float64).to(dtype)
        out = torch.empty(0, dtype=dtype)
        forms = {"plain": f(x), "in-place": getattr(x.clone(), name + "_")(),
                 "out=": f(x, out=out), "foreach": getattr(torch, "_foreach_" + name)([x])[0],
                 "strided": f(x[::2])}
        for form, got in forms.items():
            expected = want[::2] if form == "strided" else want
            print(name, str(dtype), form, int((got != expected).sum()))
x = torch.tensor([4.0, 2.0], requires_grad=True)
x.sqrt().sum().backward()
print("grad", *x.grad.tolist(), torch.sqrt(torch.tensor(9)).item(),
      torch.tensor([2.0], dtype=torch.bfloat16).sqrt().item(),
      *torch.exp(torch.tensor([1000.0, -1000.0])).tolist(), *torch.log(torch.tensor([0.0])).tolist())
"""


@needs_avx2
def test_under_the_record_profile_the_vml_functions_give_the_same_bits_on_every_cpu():
    # torch's own CPU sqrt, exp, log, ... (MKL VML) pick their code path from the CPU (an
    # AMD EPYC: one float32 root in six an ulp off): the record profile replaces them
    out = subprocess.run([sys.executable, "-c", _VML_CHECK], capture_output=True, text=True,
                         env=numerics.kernel_environment("record"), timeout=300, check=True)
    lines = out.stdout.strip().splitlines()
    counts = [line.split() for line in lines[:-1]]
    assert len(counts) == 5 * 2 * len(numerics.VML_FUNCTIONS), lines
    assert all(int(c[-1]) == 0 for c in counts), [c for c in counts if int(c[-1])]
    # autograd's formula (1 / (2 sqrt x)), an integer input, a half type, IEEE's limits
    values = [float(v) for v in lines[-1].split()[1:]]
    assert values == pytest.approx([0.25, 0.5 / 2**0.5, 3.0, 1.4140625, math.inf, 0.0, -math.inf],
                                   rel=1e-7)
    assert not out.stderr.strip(), out.stderr       # no warning for nbval to see


def test_without_the_record_profile_torch_keeps_its_own_kernels():
    code = ("import torch; from optlib.book import numerics; numerics.apply(); "
            "print(len(numerics._VML_REPLACEMENTS))")
    env = {k: v for k, v in os.environ.items() if k != numerics.MARKER}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "0"


def test_kernel_environment_profiles():
    base = {"PATH": "/bin", "ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512"}
    record = numerics.kernel_environment("record", base)
    assert record["PATH"] == "/bin" and record[numerics.MARKER] == "record"
    assert all(record[k] == v for k, v in numerics.PINNED.items())
    timing = numerics.kernel_environment("timing", record)
    assert timing[numerics.MARKER] == "timing" and timing["OMP_NUM_THREADS"] == "1"
    assert "ATEN_CPU_CAPABILITY" not in timing and "MKL_CBWR" not in timing
    with pytest.raises(ValueError, match="profile must be one of .* got 'fast'"):
        numerics.kernel_environment("fast")
    assert numerics.profile_for("chapters/appendix_performance.ipynb") == "timing"
    assert numerics.profile_for("chapters/02_sgd.ipynb") == "record"


def _pinned_torch() -> str:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return next(line.split("==")[1].strip() for line in lines if line.startswith("torch=="))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_committed_outputs_carry_the_stamp_of_a_run_for_the_record(path):
    nb = nbformat.read(path, as_version=4)
    assert numerics.stamp_problems(nb, numerics.profile_for(path)) == [], (
        f"{path.name}: re-run it with `python scripts/run_notebook.py {path.relative_to(ROOT)}`")
    version = nb.metadata[numerics.STAMP_KEY]["torch"]
    assert version.split("+")[0] == _pinned_torch(), f"{path.name} was recorded with torch {version}"


def test_the_stamp_sees_an_edited_output():
    nb = nbformat.read(CHAPTERS[1], as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.outputs
                and "nbval-ignore-output" not in c.metadata.get("tags", [])
                and any(o.output_type == "stream" for o in c.outputs))
    stream = next(o for o in cell.outputs if o.output_type == "stream")
    stream.text = stream.text.replace("0", "1", 1) + " "
    assert any(p.startswith("outputs:") for p in numerics.stamp_problems(nb, "record"))
