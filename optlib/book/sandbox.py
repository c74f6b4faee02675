"""Running a reader's code so that its errors are reported as theirs, in this process
or in a separate one.

The checkers (:mod:`optlib.book.checking`) call :func:`run_update`, :func:`run_optimizer`
and :func:`run_schedule` directly. The grader (:mod:`optlib.book.grading`) runs this file
as a script in a fresh Python process (``python .../sandbox.py``): it imports only torch,
the standard library and ``dill``, reads a pickled job (the submission and the inputs,
never the reference) from stdin and writes the outputs to stdout. It must not import
optlib, so that it starts fast and so that nothing of the reference is loaded unless
the submission itself loads it (which is then watched: see :func:`watch_library_steps`).
"""

from __future__ import annotations

import inspect
import linecache
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor


def _hyper_text(hyper: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in hyper.items()) or "defaults"


@dataclass
class StudentError:
    """What went wrong in the reader's code, said in the reader's terms."""

    kind: str                      # "exception", "signature", "return", "dtype"
    message: str
    step: int = 0
    line: str = ""                 # "line N: source" of the reader's code, if known


@dataclass
class Trajectory:
    """Parameters after each step (until an error), and the dtypes found in ``state``."""

    afters: list[list[Tensor]] = field(default_factory=list)
    error: StudentError | None = None
    state_dtypes: set = field(default_factory=set)
    state_keys: frozenset = frozenset()


def _user_line(error: BaseException, filenames: set) -> str:
    """The innermost frame of the traceback in one of the reader's files, as text."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename in filenames]
    if not frames:
        return ""
    f = frames[-1]
    src = (f.line or linecache.getline(f.filename, f.lineno)).strip()
    return f"line {f.lineno} of your code: {src}" if src else f"line {f.lineno} of your code"


def _code_files(obj) -> set:
    """Files that hold the reader's code: the function's, or a class's methods'."""
    files = set()
    if inspect.isclass(obj):
        for v in vars(obj).values():
            v = getattr(v, "__func__", v)
            if hasattr(v, "__code__"):
                files.add(v.__code__.co_filename)
    elif hasattr(obj, "__code__"):
        files.add(obj.__code__.co_filename)
    return files


def _dtypes(obj, seen=None) -> set:
    """Floating dtypes of the tensors anywhere in ``obj`` (dicts, lists, tuples)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return set()
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        return {obj.dtype} if obj.is_floating_point() else set()
    out = set()
    if isinstance(obj, dict):
        for v in obj.values():
            out |= _dtypes(v, seen)
    elif isinstance(obj, list | tuple):
        for v in obj:
            out |= _dtypes(v, seen)
    return out


def _signature_error(fn, args: tuple, hyper: dict, call: str) -> StudentError | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*args, **hyper)
    except TypeError as e:
        return StudentError("signature", f"{call} does not fit your signature {sig}: {e}")
    return None


def run_update(fn: Callable, params: list[Tensor], grads: list[list[Tensor]],
               hyper: dict) -> Trajectory:
    """Run ``fn(params, grads, state, **hyper)`` for each step's gradients; never raises
    for the reader's mistakes (they end the trajectory with a :class:`StudentError`)."""
    traj = Trajectory()
    mine = [p.clone() for p in params]
    state: dict = {}
    files = _code_files(fn)
    names = ", ".join(f"{k}=..." for k in hyper)
    err = _signature_error(fn, (mine, grads[0], state), hyper,
                           f"the call f(params, grads, state{', ' if names else ''}{names})")
    if err is not None:
        traj.error = err
        return traj
    for t, g in enumerate(grads, start=1):
        try:
            with torch.no_grad():
                out = fn(mine, [gi.clone() for gi in g], state, **hyper)
        except Exception as e:  # noqa: BLE001 - the reader's error, reported as theirs
            traj.error = StudentError("exception", f"{type(e).__name__}: {e}", t,
                                      _user_line(e, files))
            return traj
        finally:
            traj.state_dtypes |= _dtypes(state)
        if out is not None:
            try:
                out = list(out)
            except TypeError:
                out = [out]
            if len(out) != len(mine) or not all(isinstance(o, Tensor) for o in out):
                traj.error = StudentError(
                    "return", f"your function returned {len(out)} object(s); return None "
                    f"(after updating in place) or a list of {len(mine)} tensors", t)
                return traj
            mine = [o.detach() for o in out]
        traj.afters.append([p.detach().clone() for p in mine])
    return traj


def run_optimizer(cls: type, params: list[Tensor], grads: list[list[Tensor]],
                  hyper: dict) -> Trajectory:
    """Run a ``torch.optim``-style class over each step's gradients (errors as above)."""
    traj = Trajectory()
    files = _code_files(cls)
    mine = [torch.nn.Parameter(p.clone()) for p in params]
    try:
        opt = cls(mine, **hyper)
    except Exception as e:  # noqa: BLE001
        traj.error = StudentError("exception", f"{cls.__name__}(params, "
                                  f"{_hyper_text(hyper)}) raised {type(e).__name__}: {e}", 0,
                                  _user_line(e, files))
        return traj
    for t, g in enumerate(grads, start=1):
        for q, gi in zip(mine, g, strict=True):
            q.grad = gi.clone()
        try:
            opt.step()
        except Exception as e:  # noqa: BLE001
            traj.error = StudentError("exception", f"{type(e).__name__}: {e}", t,
                                      _user_line(e, files))
            return traj
        finally:
            traj.state_dtypes |= _dtypes(dict(opt.state))
        traj.afters.append([q.detach().clone() for q in mine])
    return traj


def run_schedule(fn: Callable, steps: int) -> tuple[list[float], StudentError | None]:
    """The reader's values for t = 0 .. steps-1, until the first error."""
    values: list[float] = []
    files = _code_files(fn)
    for t in range(steps):
        try:
            values.append(float(fn(t)))
        except Exception as e:  # noqa: BLE001
            return values, StudentError("exception", f"{type(e).__name__}: {e}", t,
                                        _user_line(e, files))
    return values, None


def watch_library_steps(calls: list) -> None:
    """Make every optimizer class of torch.optim, and of optlib if the submission has
    loaded it, record a call of its ``step`` in ``calls`` (base classes excepted)."""
    modules = [torch.optim] + [m for n, m in list(sys.modules.items())
                               if n == "optlib" or n.startswith("optlib.")]
    bases = [torch.optim.Optimizer]
    base_mod = sys.modules.get("optlib.optimizer")
    if base_mod is not None:
        bases.append(base_mod.Optimizer)
    classes = set()
    for module in modules:
        for v in list(vars(module).values()):
            if isinstance(v, type) and issubclass(v, torch.optim.Optimizer) \
                    and v not in bases:
                classes.add(v)
    for cls in classes:
        step = cls.step

        def watched(self, *a, _step=step, _name=f"{cls.__module__}.{cls.__name__}", **k):
            calls.append(_name)
            return _step(self, *a, **k)
        cls.step = watched


def _plain(traj: Trajectory) -> dict:
    return {"afters": traj.afters, "error": asdict(traj.error) if traj.error else None,
            "state_dtypes": sorted(str(d) for d in traj.state_dtypes)}


def from_plain(d: dict) -> Trajectory:
    """A :class:`Trajectory` from what the child process sent back."""
    dtypes = {getattr(torch, s.replace("torch.", "")) for s in d["state_dtypes"]}
    return Trajectory(d["afters"], StudentError(**d["error"]) if d["error"] else None, dtypes)


def run_job(payload: bytes) -> bytes:
    """Run one pickled job (the submission and the inputs); the pickled outputs."""
    import dill
    job = dill.loads(payload)
    calls: list = []
    watch_library_steps(calls)
    student = job["student"]
    if job["kind"] == "schedule":
        values, error = run_schedule(student, job["steps"])
        result = {"values": values, "error": asdict(error) if error else None}
    else:
        runner = run_update if job["kind"] == "update" else run_optimizer
        result = {"trajectories": [_plain(runner(student, params, grads, job["hyper"]))
                                   for params, grads in job["problems"]]}
    result["library_calls"] = sorted(set(calls))
    return pickle.dumps(result)


def _read_exact(f, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _serve(inp, out) -> None:
    """Serve jobs (8-byte length, 8-byte timeout in ms, payload) until stdin closes; each
    runs in a fresh fork of this process, which has loaded only torch and dill, so one
    submission cannot leave anything behind for the next. Answers: 8-byte length and a
    pickled dict ``{"ok": result bytes}`` or ``{"error": text}``."""
    import select
    import signal
    import struct
    while True:
        try:
            n, timeout_ms = struct.unpack("<QQ", _read_exact(inp, 16))
            payload = _read_exact(inp, n)
        except EOFError:
            return
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                  # the submission's process
            os.close(r)
            os.dup2(2, 1)                             # its prints go to stderr
            try:
                answer = {"ok": run_job(payload)}
            except BaseException as e:  # noqa: BLE001 - anything: reported, never hangs
                answer = {"error": f"{type(e).__name__}: {e}"}
            with os.fdopen(w, "wb") as f:
                f.write(pickle.dumps(answer))
            os._exit(0)
        os.close(w)
        chunks, deadline_ok = [], True
        with os.fdopen(r, "rb") as f:
            while True:
                ready, _, _ = select.select([f], [], [], timeout_ms / 1000)
                if not ready:
                    deadline_ok = False
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = os.read(f.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        os.waitpid(pid, 0)
        data = b"".join(chunks)
        if not deadline_ok:
            data = pickle.dumps({"error": f"did not finish within {timeout_ms / 1000:g} s"})
        elif not data:
            data = pickle.dumps({"error": "the submission's process died"})
        out.write(struct.pack("<Q", len(data)) + data)
        out.flush()


def main() -> None:
    """The worker process: serves jobs from stdin, answers on stdout."""
    import signal

    import dill  # noqa: F401 - loaded once, before the forks
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a kernel's interrupt is not for us
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
