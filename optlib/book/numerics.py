"""The book's numerical environment: the pins under which chapters execute for the record.

torch chooses its CPU kernels at run time from the processor's instruction set (ATen's
"CPU capability": default, AVX2 or AVX-512; MKL and oneDNN dispatch on their own), so
the last bits of a float differ from one CPU to another, and a few hundred training
steps turn them into different second and third digits. The committed outputs of a
chapter must reproduce on any machine, so a chapter runs *for the record* (by
``scripts/run_notebook.py`` and by the nbval run, ``chapters/conftest.py``) with

- ATen's kernels pinned to AVX2 (``ATEN_CPU_CAPABILITY=avx2``), which every x86-64
  server and laptop of the last decade has; ``default`` (no vector instructions) was as
  reproducible but made chapters 6 and 7 about twice as slow;
- MKL's code path pinned to its compatible branch (``MKL_CBWR=COMPATIBLE``, Intel's
  conditional numerical reproducibility). ``MKL_CBWR=AVX2`` is not enough: on an
  AVX-512 Xeon, a 300-step AdamW run on the digits MLP ended in three different places
  under ``MKL_ENABLE_INSTRUCTIONS`` AVX512, AVX2 and SSE4_2 with it, and in one place
  with ``COMPATIBLE``; and Intel documents a named branch such as AVX2 as falling back to
  automatic dispatch on non-Intel CPUs, while ``COMPATIBLE`` (SSE2) runs everywhere. It
  costs time: a step of the tiny transformer takes about 3 times as long as unpinned
  (notes/numerics.md), so chapters 6 and 7 exceed 3 minutes under the pins;
- oneDNN switched off (``torch.backends.mkldnn.enabled = False``, set in the kernel by
  :func:`apply`), because it dispatches on ``DNNL_MAX_CPU_ISA`` and the CPU even under
  the two pins above: a small transformer still changed in the fifth digit without this;
- one OpenMP and MKL thread (a reduction split over threads adds in another order), a
  fixed ``PYTHONHASHSEED`` (the order of sets of strings);
- the CPU kernels of ``torch.sqrt``, ``exp``, ``log``, ``tanh``, ``erf``, ``sin`` and
  ``cos`` (their in-place and ``out=`` forms too, which the ``torch._foreach_*`` functions
  call) replaced by :func:`apply`: torch computes them for float32 and float64 with MKL's
  vector math library (VML), which picks its code path from the processor on its own,
  whatever ``MKL_CBWR`` and ``ATEN_CPU_CAPABILITY`` say. On an AMD EPYC one float32 square
  root in six was one ulp away from the correctly rounded one, so every Adam-family run
  took other steps than on the Intel Xeon that had recorded the chapters (notes/numerics.md).
  Under the record profile the square root is numpy's (IEEE 754's, correctly rounded on
  every CPU) and the others are the C library's double-precision functions rounded to the
  tensor's type (one code path on every CPU with AVX2 and FMA; slower, and only these
  seven functions).

The variables must be in the kernel's environment before torch is imported, so the
process that starts the kernel sets them (:func:`kernel_environment`); inside the kernel
``optlib.book.setup`` calls :func:`apply`, which checks that they are in force, stops
with a clear message if they are not, and switches oneDNN off. Child processes (the
distributed workers of chapter 8) inherit the variables and call :func:`apply` too.
In Colab or a reader's own Jupyter the marker variable is absent and nothing here does
anything: a reader sees the same numbers up to their last digits.

The performance appendix times the machine as it is: it runs under the ``timing``
profile (the marker and one thread, no instruction-set pins), and its outputs that nbval
compares are counts of bytes and operator calls, which no instruction set changes.

``tests/test_numerics.py`` checks that the pins work (a chaotic run agrees bit for bit
under different MKL and oneDNN instruction-set limits, while the same run without the
pins changes with ATen's capability) and that every committed chapter carries the stamp
of :func:`stamp` with a digest of its outputs, so outputs made without the pins (or
edited by hand) cannot be committed unnoticed.
"""

from __future__ import annotations

import cmath
import hashlib
import json
import math
import os
from collections.abc import Mapping

#: Set in a kernel's environment when a chapter executes for the record; its value is
#: the profile, ``record`` (pinned) or ``timing`` (the machine as it is, for timings).
MARKER = "OPTLIB_NUMERICS"
PROFILES = ("record", "timing")
#: Set by ``scripts/run_notebook.py`` in the kernels it starts, and not by the nbval run,
#: when a chapter is executed to make its record rather than re-checked; a figure made from
#: this machine's timings is written only then (``optlib.book.interactive.show``).
RECORDING = "OPTLIB_RECORDING"

#: The variables both profiles set, for one thread (a reduction split over threads adds
#: in another order) and a fixed iteration order of sets of strings.
COMMON: dict[str, str] = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
#: The pinned variables of the ``record`` profile (before torch is imported).
PINNED: dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", **COMMON}

#: Chapters that run under the ``timing`` profile: their timings are of the machine as it
#: is, and every other output they print is a count that no instruction set changes.
TIMING_CHAPTERS = ("appendix_performance.ipynb",)

#: What ``torch.backends.cpu.get_cpu_capability()`` reports under the pins.
PINNED_CAPABILITY = "AVX2"
#: The notebook metadata key of the stamp.
STAMP_KEY = "optlib_numerics"


def profile_variables(profile: str) -> dict[str, str]:
    """The variables a kernel of ``profile`` gets, the marker included.

    Args:
        profile: ``"record"`` (the pins) or ``"timing"`` (the machine as it is).
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    pinned = PINNED if profile == "record" else COMMON
    return {**pinned, MARKER: profile}


def profile_for(notebook: str | os.PathLike) -> str:
    """The profile a chapter executes under for the record: ``timing`` or ``record``.

    Args:
        notebook: the chapter's path (only its file name is read).
    """
    return "timing" if os.path.basename(os.fspath(notebook)) in TIMING_CHAPTERS else "record"


def kernel_environment(profile: str = "record", base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to start a kernel (or any process) with, for ``profile``.

    The variables of the other profile are removed, so a ``timing`` kernel started from a
    pinned process runs on the machine as it is.

    Args:
        profile: ``"record"`` or ``"timing"``.
        base: the environment to start from; ``os.environ`` when None.
    """
    env = dict(os.environ if base is None else base)
    for name in (*PINNED, MARKER):
        env.pop(name, None)
    env.update(profile_variables(profile))
    return env


def active_profile() -> str | None:
    """The profile this process runs under: ``record``, ``timing`` or None (a reader's)."""
    return os.environ.get(MARKER) or None


def problems() -> list[str]:
    """What differs from the active profile in this process (empty when all is in force)."""
    profile = active_profile()
    if profile is None:
        return []
    if profile not in PROFILES:
        return [f"{MARKER}={profile!r} is not one of {PROFILES}"]
    found = [f"{name}={os.environ.get(name)!r}, expected {value!r}"
             for name, value in profile_variables(profile).items() if os.environ.get(name) != value]
    if profile == "record":
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
        if capability != PINNED_CAPABILITY:
            found.append(f"torch runs {capability} kernels, expected {PINNED_CAPABILITY} "
                         "(this CPU lacks AVX2, or torch was imported before the variables were set)")
    return found


def apply() -> None:
    """Check the environment of a run for the record and switch oneDNN off; a no-op elsewhere.

    Called by ``optlib.book.setup`` in every chapter and by the distributed workers.

    Raises:
        RuntimeError: the marker is set but the pins are not in force.
    """
    profile = active_profile()
    if profile is None:
        return
    found = problems()
    if found:
        raise RuntimeError(
            "this chapter is executing for the record (" + MARKER + "=" + profile + ") but the "
            "book's numerical environment is not in force: " + "; ".join(found) + ". Start it with "
            "scripts/run_notebook.py or the nbval run (make notebooks), which set the variables "
            "before the kernel imports torch; see CONTRIBUTING.md.")
    if profile == "record":
        import torch

        torch.backends.mkldnn.enabled = False
        _replace_vml_kernels()


#: torch's CPU kernels that call MKL's vector math library (VML) for float32 and float64
#: (found with a debugger's breakpoints on VML's entry points, torch 2.13): VML picks its
#: code path from the processor itself, whatever ``MKL_CBWR`` and ``ATEN_CPU_CAPABILITY``
#: say, so these results differ from one CPU to another. GELU, softmax, log-softmax,
#: sigmoid, SiLU, LayerNorm and attention do not call it.
VML_FUNCTIONS = ("sqrt", "exp", "log", "tanh", "erf", "sin", "cos")
#: Under the record profile they are replaced by IEEE 754's square root (numpy's, correctly
#: rounded on every CPU) and by the C library's double-precision functions (glibc's, one
#: code path on every x86-64 CPU with AVX2 and FMA) rounded to the tensor's type.
#: The kernels that :func:`apply` registers (kept alive here; registered once a process).
_VML_REPLACEMENTS: list = []


def _scalar(name: str):
    """``math.<name>`` with IEEE 754's results where math raises: an overflowing ``exp``
    is inf, the ``log`` of 0 is -inf, any other domain error (log of a negative, sin of
    inf) is NaN."""
    f = getattr(math, name)

    def value(v: float) -> float:
        try:
            return f(v)
        except OverflowError:
            return math.inf
        except ValueError:
            return -math.inf if name == "log" and v == 0 else math.nan
    return value


def _replacement_values(name: str, x):
    """``torch.<name>(x)`` for a CPU tensor, computed without MKL VML (see VML_FUNCTIONS)."""
    import numpy as np
    import torch

    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.get_default_dtype())         # of integers: the default float type
    if x.dtype in (torch.float16, torch.bfloat16):  # torch rounds the float32 value, as here
        return _replacement_values(name, x.float()).to(x.dtype)
    if x.is_complex():      # Python's complex functions (small tensors: eigenvalues, rates)
        if name == "erf":
            raise NotImplementedError("torch.erf of a complex tensor")
        f = getattr(cmath, name)
        flat = [f(v) for v in x.detach().reshape(-1).tolist()]
        return torch.tensor(flat, dtype=x.dtype).reshape(x.shape)
    if name == "sqrt":
        a = x.detach().contiguous().numpy()
        out = np.empty_like(a)
        np.sqrt(a, out=out)
        return torch.from_numpy(out).reshape(x.shape)
    value = _scalar(name)
    flat = [value(v) for v in x.detach().reshape(-1).tolist()]
    return torch.tensor(flat, dtype=torch.float64).to(x.dtype).reshape(x.shape)


def _replace_vml_kernels() -> None:
    """Register, for the CPU, kernels of VML_FUNCTIONS that give the same bits on every CPU."""
    if _VML_REPLACEMENTS:
        return
    import warnings

    import torch

    library = torch.library.Library("aten", "IMPL")

    def kernels(name):
        def plain(x):
            return _replacement_values(name, x)

        def in_place(x):
            return x.copy_(_replacement_values(name, x))

        def out_form(x, *, out):
            values = _replacement_values(name, x)
            out.resize_(values.shape)
            return out.copy_(values)
        return {name: plain, f"{name}_": in_place, f"{name}.out": out_form}

    with warnings.catch_warnings():     # "overriding a previously registered kernel": meant
        warnings.simplefilter("ignore")
        for name in VML_FUNCTIONS:
            for op, kernel in kernels(name).items():
                library.impl(op, kernel, "CPU")
    _VML_REPLACEMENTS.append(library)


def definition_digest() -> str:
    """A short digest of the record profile's definition: it changes when the pins do."""
    text = json.dumps({"variables": PINNED, "capability": PINNED_CAPABILITY, "onednn": False,
                       "replaced": VML_FUNCTIONS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compared_text(nb: Mapping) -> str:
    """The text nbval compares, cell by cell: stream, text and error outputs of every code
    cell not tagged ``nbval-ignore-output`` (images are not compared, so not included)."""
    parts = []
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        if "nbval-ignore-output" in cell.get("metadata", {}).get("tags", []):
            parts.append("<ignored>")
            continue
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                parts.append(f"{out['name']}:{_text(out['text'])}")
            elif kind in ("execute_result", "display_data"):
                data = out.get("data", {})
                parts.extend(f"{mime}:{_text(data[mime])}" for mime in sorted(data)
                             if mime.startswith("text/"))
            elif kind == "error":
                parts.append(f"error:{out.get('ename')}:{out.get('evalue')}")
        parts.append("<cell>")
    return "\n".join(parts)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def stamp(nb: Mapping, profile: str, torch_version: str) -> dict[str, str]:
    """The stamp ``scripts/run_notebook.py`` writes into a notebook it executed.

    Args:
        nb: the executed notebook.
        profile: the profile it ran under.
        torch_version: ``torch.__version__`` of the kernel.
    """
    return {
        "profile": profile,
        "definition": definition_digest() if profile == "record" else "machine",
        "torch": torch_version,
        "outputs": hashlib.sha256(compared_text(nb).encode()).hexdigest()[:16],
    }


def stamp_problems(nb: Mapping, profile: str) -> list[str]:
    """Why a committed notebook's stamp does not vouch for its outputs (empty if it does).

    Args:
        nb: the notebook as committed.
        profile: the profile it must have been executed under.
    """
    found = nb.get("metadata", {}).get(STAMP_KEY)
    if not found:
        return ["no stamp: not executed by scripts/run_notebook.py"]
    expected = stamp(nb, profile, found.get("torch", ""))
    return [f"{key}: stamp says {found.get(key)!r}, expected {value!r}"
            for key, value in expected.items() if found.get(key) != value]
