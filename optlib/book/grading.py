"""Grading that the graded code cannot fool: the checkers of :mod:`optlib.book.checking`,
with the reader's code run in a separate process.

:func:`grade_update`, :func:`grade_optimizer` and :func:`grade_schedule` take the same
arguments as ``check_update``, ``check_optimizer`` and ``check_schedule`` and return a
:class:`Grade` (true when it passes; ``score``, ``report``, ``flags``). The submission
is sent with ``dill`` to a fresh Python process (``python -m optlib.book.grading``),
which receives only the inputs (parameters and gradients, or the steps of a schedule),
runs the submission and sends back its outputs; this process then computes the
reference and compares. So the submission never runs beside the reference: reading the
grader's frames (``inspect.currentframe().f_back.f_locals``) finds nothing to copy.

A submission is **flagged**, and scores 0 whatever its numbers, when it uses a library
optimizer instead of its own arithmetic:

* it refers to ``optlib``, ``torch.optim`` (or their functions and classes), directly or
  through a helper function of the submission;
* it inspects frames (``inspect.currentframe``, ``sys._getframe``, ``f_back``, ...) or
  imports modules by name (``importlib``, ``__import__``);
* its class is a subclass of an optimizer of optlib or ``torch.optim`` other than the
  base ``torch.optim.Optimizer``;
* while it runs, the ``step`` of an optimizer of optlib or ``torch.optim`` is called
  (the child process watches them).

Limits: code copied from optlib's source, or computed with another library's optimizer
that these checks do not know, passes if its numbers are right; the grading process
itself runs in the teacher's environment (under otter-grader, in the kernel that ran the
student's notebook), so code that replaces the grader's functions before the tests run
is caught only by reading the submission. Needs ``dill`` (installed with otter-grader).
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import io
import math
import os
import pickle
import struct
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import optlib

from . import checking as C
from . import sandbox

#: Names whose use in a submission's code is a flag (attribute or global names).
SUSPICIOUS_NAMES = {
    "optlib": "refers to optlib",
    "optim": "refers to torch.optim",
    "currentframe": "inspects the caller's frames",
    "_getframe": "inspects the caller's frames",
    "f_back": "inspects the caller's frames",
    "f_locals": "inspects the caller's frames",
    "getouterframes": "inspects the caller's frames",
    "import_module": "imports modules by name",
    "__import__": "imports modules by name",
}


#: Base classes a submission may subclass (they have no update rule of their own).
_BASES = (torch.optim.Optimizer, optlib.optimizer.Optimizer)


@dataclass
class Grade:
    """The result of grading one submission against one reference."""

    name: str
    passed: bool
    score: float
    points: float
    report: str
    flags: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.report


def _library_object(value) -> str | None:
    """'optlib.Adam' if ``value`` is an optimizer, module or function of optlib or
    torch.optim, else None (the base classes ``Optimizer`` are allowed)."""
    if any(value is base for base in _BASES):
        return None
    if isinstance(value, types.ModuleType):
        name = value.__name__
    else:
        name = getattr(value, "__module__", None) or ""
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer) \
                and value is not torch.optim.Optimizer:
            for base in value.__mro__:
                mod = getattr(base, "__module__", "")
                if mod.startswith(("optlib", "torch.optim")) and base not in _BASES:
                    return f"{mod}.{base.__name__}"
            return None
    if name.startswith(("optlib", "torch.optim")):
        return f"{name}.{getattr(value, '__name__', '')}".rstrip(".")
    return None


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _functions_of(obj) -> list:
    if inspect.isclass(obj):
        out = []
        for klass in obj.__mro__:
            if klass.__module__ != obj.__module__:
                continue
            for v in vars(klass).values():
                v = getattr(v, "__func__", v)
                if isinstance(v, property):
                    v = v.fget
                if isinstance(v, types.FunctionType):
                    out.append(v)
        return out
    return [obj] if isinstance(obj, types.FunctionType) else []


def static_flags(obj) -> list[str]:
    """Why a submission (function or class) looks like it copies the reference."""
    flags: list[str] = []
    if inspect.isclass(obj):
        lib = _library_object(obj)
        if lib:
            flags.append(f"{obj.__name__} subclasses the library optimizer {lib}")
    seen: set = set()
    todo = _functions_of(obj)
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        for code in _code_objects(fn.__code__):
            for name in code.co_names:
                if name in SUSPICIOUS_NAMES:
                    flags.append(f"{fn.__name__} {SUSPICIOUS_NAMES[name]} ({name})")
                    continue
                value = fn.__globals__.get(name)
                if value is None:
                    continue
                lib = _library_object(value)
                if lib:
                    flags.append(f"{fn.__name__} uses the library's {lib}")
                elif isinstance(value, types.FunctionType) \
                        and value.__module__ == fn.__module__:
                    todo.append(value)               # a helper of the submission
                elif inspect.isclass(value) and value.__module__ == fn.__module__:
                    todo.extend(_functions_of(value))
        for cell in fn.__closure__ or ():
            with contextlib.suppress(ValueError):
                lib = _library_object(cell.cell_contents)
                if lib:
                    flags.append(f"{fn.__name__} uses the library's {lib}")
    return list(dict.fromkeys(flags))[:4]


_WORKER: subprocess.Popen | None = None


def _worker() -> subprocess.Popen:
    """The process that runs submissions (started once): a fresh Python that has loaded
    torch and dill only, and forks once per submission."""
    global _WORKER
    if _WORKER is None or _WORKER.poll() is not None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        # Run the file by path, without putting its folder first on sys.path (its
        # neighbours, such as optlib/book/inspect.py, would shadow the standard library).
        start = f"import runpy; runpy.run_path({sandbox.__file__!r}, run_name='__main__')"
        _WORKER = subprocess.Popen([sys.executable, "-c", start], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=env)
        atexit.register(_WORKER.kill)
    return _WORKER


def _run_child(job: dict, timeout: float) -> dict:
    import dill
    try:
        payload = dill.dumps(job, recurse=True)
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"the submission cannot be sent to the grading process: {e}") from e
    worker = _worker()
    worker.stdin.write(struct.pack("<QQ", len(payload), int(timeout * 1000)) + payload)
    worker.stdin.flush()
    header = worker.stdout.read(8)
    if len(header) < 8:
        raise RuntimeError("the grading process ended unexpectedly")
    answer = pickle.loads(worker.stdout.read(struct.unpack("<Q", header)[0]))
    if "error" in answer:
        raise RuntimeError(f"the submission's process failed: {answer['error']}")
    return pickle.loads(answer["ok"])


def _call_flags(calls: list[str]) -> list[str]:
    return [f"called the step of a library optimizer while it ran ({calls[0]})"] if calls else []


def _finish(name: str, passed: bool, log: io.StringIO, flags: list[str], points: float,
            quiet: bool) -> Grade:
    if flags:
        log = io.StringIO()          # the numbers do not matter when the code copies
        with contextlib.redirect_stdout(log):
            C._say(f"✗ flagged: {name} does not compute the rule itself: "
                   + "; ".join(flags) + ". Score 0.")
        passed = False
    grade = Grade(name, passed, points if passed else 0.0, points, log.getvalue(), flags)
    if not quiet:
        print(grade.report, end="")
    return grade


def _grade_rule(student, kind: str, reference, hyper, steps, shapes, seed, points, timeout,
                quiet) -> Grade:
    name = getattr(student, "__name__", "your code")
    cls = C._resolve(reference)
    hyper = dict(C.DEFAULT_HYPER.get(cls.__name__, {"lr": 0.01}) if hyper is None else hyper)
    probs = C.problems(shapes, steps, seed, hyper)
    flags = static_flags(student)
    log = io.StringIO()
    if flags:                                  # a copy: its numbers do not matter
        return _finish(name, False, log, flags, points, quiet)
    try:
        result = _run_child({"kind": kind, "student": student, "hyper": hyper,
                             "problems": [(p.params, p.grads) for p in probs]}, timeout)
    except Exception as e:  # noqa: BLE001 - cannot pickle, child crashed: the student's fault
        log.write(f"✗ {name}: {e}\n")
        return _finish(name, False, log, flags, points, quiet)
    flags += _call_flags(result["library_calls"])
    where = f"{name} vs {C._label(cls)}"
    passed = True
    with contextlib.redirect_stdout(log):
        for problem, plain in zip(probs, result["trajectories"], strict=True):
            traj = sandbox.from_plain(plain)
            ref = C.run_reference(cls, problem, hyper)       # after the submission has run
            if not C.compare(where, cls, problem, hyper, traj, ref):
                passed = False
                break
        if passed:
            C._say(f"✓ {name} matches {C._label(cls)} over {len(probs)} × {steps} steps "
                   f"(random, near-zero and shrinking gradients; {C._hyper_text(hyper)})")
    return _finish(name, passed, log, flags, points, quiet)


def grade_update(student_step: Callable, reference="Adam", hyper: dict | None = None,
                 steps: int = 20, shapes=((3, 4), (5,)), seed: int = 0, *,
                 points: float = 1.0, timeout: float = 120.0, quiet: bool = False) -> Grade:
    """Grade ``student_step(params, grads, state, **hyper)`` as
    :func:`~optlib.book.checking.check_update` checks it, in a separate process, with
    the flags of this module. Prints the report unless ``quiet``."""
    return _grade_rule(student_step, "update", reference, hyper, steps, shapes, seed, points,
                       timeout, quiet)


def grade_optimizer(student_class: type, reference_class="Adam", hyper: dict | None = None,
                    steps: int = 20, shapes=((3, 4), (5,)), seed: int = 0, *,
                    points: float = 1.0, timeout: float = 120.0, quiet: bool = False) -> Grade:
    """Grade a ``torch.optim``-style class as
    :func:`~optlib.book.checking.check_optimizer` checks it, in a separate process."""
    return _grade_rule(student_class, "optimizer", reference_class, hyper, steps, shapes,
                       seed, points, timeout, quiet)


def grade_schedule(student_fn: Callable[[int], float], reference_fn: Callable[[int], float],
                   steps: int = 200, *, points: float = 1.0, timeout: float = 120.0,
                   quiet: bool = False) -> Grade:
    """Grade a schedule as :func:`~optlib.book.checking.check_schedule` checks it; the
    submission computes its values in a separate process."""
    name = getattr(student_fn, "__name__", "your schedule")
    flags = static_flags(student_fn)
    log = io.StringIO()
    if flags:
        return _finish(name, False, log, flags, points, quiet)
    try:
        result = _run_child({"kind": "schedule", "student": student_fn, "steps": steps},
                            timeout)
    except Exception as e:  # noqa: BLE001
        log.write(f"✗ {name}: {e}\n")
        return _finish(name, False, log, flags, points, quiet)
    flags += _call_flags(result["library_calls"])
    with contextlib.redirect_stdout(log):
        error = result["error"]
        passed = C.compare_schedule(name, C.schedule_name(reference_fn), result["values"],
                                    sandbox.StudentError(**error) if error else None, None,
                                    reference_fn, steps)
    return _finish(name, passed, log, flags, points, quiet)


def total(grades) -> tuple[float, float]:
    """(score, points) summed over grades."""
    grades = list(grades)
    return (math.fsum(g.score for g in grades), math.fsum(g.points for g in grades))


