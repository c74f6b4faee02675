"""Exercise checkers: run a reader's code beside optlib's and say whether they agree.

Each checker feeds both implementations the same random inputs in float64, compares
after every step, and prints either one line starting with ✓, or the first mismatch
(step, tensor, element, expected vs got) with a hint about the usual mistake. It
returns ``True`` or ``False`` so a notebook can also ``assert`` it.

* :func:`check_update`: an update rule written on plain tensors,
  ``student_step(params, grads, state, **hyper)``;
* :func:`check_optimizer`: a ``torch.optim.Optimizer``-style class;
* :func:`check_schedule`: a ``step -> multiplier`` function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

import optlib

#: Hyperparameters used when ``hyper`` is not given: lrs large enough that a wrong
#: formula shows at once, the other values the references' defaults.
DEFAULT_HYPER: dict[str, dict] = {
    "SGD": {"lr": 0.1, "momentum": 0.9},
    "Adagrad": {"lr": 0.1, "eps": 1e-10},
    "RMSprop": {"lr": 0.01, "alpha": 0.99, "eps": 1e-8},
    "Adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
    "Adam": {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
    "AdamW": {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01},
    "NAdam": {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
    "RAdam": {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
    "Adamax": {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
    "Lion": {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.0},
    "LAMB": {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0},
    "LARS": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0},
}

RTOL, ATOL = 1e-7, 1e-10


def _resolve(reference) -> type:
    if isinstance(reference, str):
        for module in (optlib, torch.optim):
            cls = getattr(module, reference, None)
            if isinstance(cls, type):
                return cls
        raise ValueError(f"reference {reference!r} is not an optimizer in optlib or torch.optim")
    if isinstance(reference, type) and issubclass(reference, torch.optim.Optimizer):
        return reference
    raise ValueError(f"reference must be an optimizer class or its name, got {reference!r}")


def _label(cls: type) -> str:
    module = cls.__module__
    return f"optlib.{cls.__name__}" if module.startswith("optlib") else f"{module}.{cls.__name__}"


def _hyper_text(hyper: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in hyper.items()) or "defaults"


def _problem(shapes: Sequence, steps: int, seed: int):
    """Initial parameters and a gradient sequence (varied scales, some sign flips), float64."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(tuple(s), generator=g, dtype=torch.float64) for s in shapes]
    grads = []
    for _ in range(steps):
        scale = math.exp(0.7 * torch.randn((), generator=g, dtype=torch.float64).item())
        grads.append([scale * torch.randn(tuple(s), generator=g, dtype=torch.float64)
                      for s in shapes])
    return params, grads


def _fmt(x: float) -> str:
    return f"{x:.10g}"


def _hint(step: int, before: Tensor, got: Tensor, expected: Tensor, state_keys=frozenset()) -> str:
    """The likeliest mistake, judged from how the reader's update differs and from what
    state the reference keeps (only Adam-like rules get hints about bias correction)."""
    adam_like = "exp_avg" in state_keys and "exp_avg_sq" in state_keys
    d_got, d_exp = got - before, expected - before
    if torch.equal(got, before):
        return ("your function did not change the parameters: update them in place "
                "(p.sub_(...) or p -= ...) or return the list of new parameters.")
    mask = d_exp.abs() > 1e-12
    if mask.any():
        ratio = d_got[mask] / d_exp[mask]
        r = ratio.median().item()
        if torch.allclose(ratio, torch.full_like(ratio, r), rtol=1e-6, atol=0.0):
            if abs(r + 1.0) < 1e-6:
                return "your update has the wrong sign: a descent step subtracts."
            if abs(r - 1.0) > 1e-6:
                extra = " and the bias correction (it depends on the step t)" if adam_like else ""
                return (f"your step is {r:.4g} × the reference's in every coordinate: check "
                        f"the learning rate{extra}.")
    if step == 1:
        checks = ["the formula term by term (is every hyperparameter used, weight decay included?)"]
        if "momentum_buffer" in state_keys:
            checks.append("the momentum buffer (torch.optim.SGD starts it at the first gradient)")
        if adam_like:
            checks.append("the moments (they start at zero) and the bias correction at t = 1")
        if state_keys & {"exp_avg_sq", "sum", "square_avg"}:
            checks.append("where eps goes")
        return "the first step already differs: check " + ", ".join(checks) + "."
    return ("the first steps matched, so the formula is close: check that the running "
            "state (buffers, moments, step count) is kept in `state` and updated once per step.")


def _report_mismatch(where: str, step: int, index: int, before: Tensor, got: Tensor,
                     expected: Tensor, state_keys=frozenset()) -> None:
    bad = ~torch.isclose(got, expected, rtol=RTOL, atol=ATOL, equal_nan=False)
    pos = tuple(int(i) for i in bad.nonzero()[0]) if bad.any() else ()
    print(f"✗ {where}: first mismatch at step {step}, tensor {index} "
          f"(shape {tuple(got.shape)}), element {pos}:")
    print(f"    expected {_fmt(expected[pos].item())}, got {_fmt(got[pos].item())} "
          f"(before the step: {_fmt(before[pos].item())})")
    print(f"  Hint: {_hint(step, before, got, expected, state_keys)}")


def _state_keys(optimizer) -> frozenset:
    return frozenset(k for st in optimizer.state.values() for k in st)


def _compare(where, step, befores, gots, expecteds, state_keys=frozenset()) -> bool:
    for i, (before, got, exp) in enumerate(zip(befores, gots, expecteds, strict=False)):
        if got.shape != exp.shape:
            print(f"✗ {where}: at step {step}, tensor {i} has shape {tuple(got.shape)}, "
                  f"expected {tuple(exp.shape)}")
            return False
        if not torch.allclose(got, exp, rtol=RTOL, atol=ATOL):
            _report_mismatch(where, step, i, before, got, exp, state_keys)
            return False
    return True


def check_update(student_step: Callable, reference="Adam", hyper: dict | None = None,
                 steps: int = 20, shapes=((3, 4), (5,)), seed: int = 0) -> bool:
    """Check ``student_step(params, grads, state, **hyper)`` against optlib's optimizer.

    ``params`` and ``grads`` are lists of float64 tensors; ``state`` is a dict the
    function owns (empty at first, the same dict on every call). The function updates
    ``params`` in place or returns the new list. ``reference``: an optimizer class or
    its name in ``optlib`` (or ``torch.optim``); ``hyper``: keyword arguments for both
    (default: :data:`DEFAULT_HYPER`). Prints ✓ or the first mismatch; returns a bool.
    """
    cls = _resolve(reference)
    hyper = dict(DEFAULT_HYPER.get(cls.__name__, {"lr": 0.01}) if hyper is None else hyper)
    params, grads = _problem(shapes, steps, seed)
    ref = [torch.nn.Parameter(p.clone()) for p in params]
    opt = cls(ref, **hyper)
    mine = [p.clone() for p in params]
    state: dict = {}
    name = getattr(student_step, "__name__", "your function")
    where = f"{name} vs {_label(cls)}"
    for t, g in enumerate(grads, start=1):
        for p, gi in zip(ref, g, strict=False):
            p.grad = gi.clone()
        opt.step()
        befores = [p.clone() for p in mine]
        with torch.no_grad():
            out = student_step(mine, [gi.clone() for gi in g], state, **hyper)
        if out is not None:
            out = list(out)
            if len(out) != len(mine) or not all(isinstance(o, Tensor) for o in out):
                print(f"✗ {where}: at step {t} your function returned {len(out)} objects; "
                      f"return None (after updating in place) or a list of {len(mine)} tensors")
                return False
            mine = [o.detach() for o in out]
        if not _compare(where, t, befores, mine, [p.detach() for p in ref], _state_keys(opt)):
            return False
    print(f"✓ {name} matches {_label(cls)} over {steps} steps "
          f"({len(shapes)} tensors; {_hyper_text(hyper)})")
    return True


def check_optimizer(student_class: type, reference_class="Adam", hyper: dict | None = None,
                    steps: int = 20, shapes=((3, 4), (5,)), seed: int = 0) -> bool:
    """Check a ``torch.optim``-style class: both get the same parameters, gradients and
    ``hyper`` (default: :data:`DEFAULT_HYPER`); parameters are compared after every step."""
    cls = _resolve(reference_class)
    hyper = dict(DEFAULT_HYPER.get(cls.__name__, {"lr": 0.01}) if hyper is None else hyper)
    params, grads = _problem(shapes, steps, seed)
    ref = [torch.nn.Parameter(p.clone()) for p in params]
    mine = [torch.nn.Parameter(p.clone()) for p in params]
    opt_ref, opt_mine = cls(ref, **hyper), student_class(mine, **hyper)
    where = f"{getattr(student_class, '__name__', 'your class')} vs {_label(cls)}"
    for t, g in enumerate(grads, start=1):
        for p, q, gi in zip(ref, mine, g, strict=False):
            p.grad, q.grad = gi.clone(), gi.clone()
        befores = [q.detach().clone() for q in mine]
        opt_ref.step()
        opt_mine.step()
        if not _compare(where, t, befores, [q.detach() for q in mine], [p.detach() for p in ref],
                        _state_keys(opt_ref)):
            return False
    print(f"✓ {getattr(student_class, '__name__', 'your class')} matches {_label(cls)} "
          f"over {steps} steps ({len(shapes)} tensors; {_hyper_text(hyper)})")
    return True


def _schedule_hint(t: int, student: Callable, reference: Callable, steps: int) -> str:
    def close(a, b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)

    window = range(max(t, 1), min(steps, t + 20))
    if window and all(close(float(student(s)), float(reference(s + 1))) for s in window):
        return ("your values are one step ahead: `step` counts completed optimizer steps "
                "from 0, so step 0 is the very first update.")
    if window and all(close(float(student(s)), float(reference(s - 1))) for s in window):
        return ("your values are one step behind: `step` counts completed optimizer steps "
                "from 0 (do not add 1).")
    if t == 0:
        return ("the first value differs: a warmup starts at t / warmup_steps = 0; "
                "a decay starts at 1.")
    return (f"the values agree up to step {t - 1}: look at what your formula does from "
            f"step {t} on (the end of a warmup or decay phase? integer division?).")


def check_schedule(student_fn: Callable[[int], float], reference_fn: Callable[[int], float],
                   steps: int = 200) -> bool:
    """Compare ``student_fn(t)`` with ``reference_fn(t)`` for t = 0 .. steps-1."""
    name = getattr(student_fn, "__name__", "your schedule")
    ref_name = repr(reference_fn) if isinstance(reference_fn, optlib.schedules.Schedule) else \
        getattr(reference_fn, "__name__", "the reference")
    for t in range(steps):
        expected = float(reference_fn(t))
        got = float(student_fn(t))
        if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
            print(f"✗ {name} vs {ref_name}: first mismatch at step {t}: "
                  f"expected {_fmt(expected)}, got {_fmt(got)}")
            print(f"  Hint: {_schedule_hint(t, student_fn, reference_fn, steps)}")
            return False
    print(f"✓ {name} matches {ref_name} for steps 0..{steps - 1}")
    return True
