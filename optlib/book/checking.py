"""The exercise checkers (:mod:`optlib.book.grading` grades with them in a separate
process): run a reader's code beside optlib's and say whether they agree.

Each checker feeds both implementations the same inputs in float64 and compares after
every step. It prints either a line starting with ✓, or the first mismatch (which
inputs, step, tensor, element, expected vs got) with a hint that names the likely
mistake, and returns ``True`` or ``False`` so a notebook can also ``assert`` it. Lines
are wrapped at 88 characters.

* :func:`check_update`: an update rule written on plain tensors,
  ``student_step(params, grads, state, **hyper)``;
* :func:`check_optimizer`: a ``torch.optim.Optimizer``-style class;
* :func:`check_schedule`: a ``step -> multiplier`` function.

**Inputs on which every term matters.** An update rule is run on three sets of inputs
(three seeds), ``steps`` steps each:

1. *random gradients* of varied scale (some sign flips): the formula, the
   hyperparameters, the bias correction (with β₂ = 0.999 it matters for the first
   thousand steps) and the momentum buffers;
2. *gradients near zero*, of the size of ``eps`` (1e-8 when the rule has none), a quarter
   of them exactly zero: eps missing, eps inside the square root, or a division by zero
   changes the step by a factor of order one here (on gradients of order one eps moves
   the result by 1e-8, below any tolerance);
3. *shrinking gradients* (÷1.7 per step): a running maximum (AMSGrad) binds, so forgetting
   it or taking it of v̂ instead of v shows.

Updates are compared with a tolerance relative to the size of the update (1e-7), not of
the parameter, so a small update must be right too.

**Hints.** A mismatch is first compared with the usual mistakes of the reference's
family, run on the same inputs (SGD, RMSprop, Adam/AdamW, Lion: see ``_MISTAKES``); when
one of them reproduces the reader's numbers, the hint names it. Otherwise the hint is
judged from the numbers: state tensors not in float64 (``torch.zeros(p.shape)``), NaN
or inf, a constant factor, the first step, or a later step (the running state).
A reader's exception, or a signature that cannot take the hyperparameters, is reported
as the reader's error with the line of their code, not as a traceback of the checker.

**What they cannot detect.** A rule that differs from the reference only outside these
inputs (for example in a code path for ``maximize`` or ``nesterov`` when the
hyperparameters leave it off: pass the hyperparameters that switch it on), after more
than ``steps`` steps, or by less than the tolerance (a different order of floating-point
operations is fine on purpose). They run the reader's code in the same process as the
reference: code that copies the answer (calls ``optlib.Adam`` or ``torch.optim.Adam``
inside, subclasses the reference, or reads the checker's frames) passes. That is fine for
self-checks; to grade, use :mod:`optlib.book.grading`, which runs the reader's code in a
separate process and flags those submissions.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import optlib

from . import sandbox
from .sandbox import StudentError, Trajectory, _hyper_text

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

#: Relative tolerance on each update; absolute tolerance relative to the parameter
#: (the rounding of ``p - update``).
RTOL, PARAM_RTOL, ATOL = 1e-7, 1e-13, 1e-15
WIDTH = 88


_NBSP = "\u00a0"


def _glue(match: re.Match) -> str:
    return match.group(0).replace(" ", _NBSP)


def _say(text: str, indent: str = "  ") -> None:
    """Print ``text`` wrapped at :data:`WIDTH`, continuation lines indented; short
    parentheses such as ``(shape (3, 4))`` or ``(√v̂ + ε)`` are not split."""
    text = re.sub(r"\((?:[^()]|\([^()]*\)){0,22}\)", _glue, text)
    text = re.sub(r"\S+ [−+·=] \S+", _glue, text)
    lines = textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False,
                          break_long_words=False)
    print("\n".join(line.replace(_NBSP, " ") for line in lines))


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


def _fmt(x: float) -> str:
    return f"{x:.10g}"


# ---------------------------------------------------------------------------------------
# Inputs


@dataclass
class Problem:
    """One set of inputs: initial parameters and a gradient per step, float64."""

    label: str
    params: list[Tensor]
    grads: list[list[Tensor]]


def _random_problem(shapes: Sequence, steps: int, seed: int) -> Problem:
    """Varied scales, some sign flips."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(tuple(s), generator=g, dtype=torch.float64) for s in shapes]
    grads = []
    for _ in range(steps):
        scale = math.exp(0.7 * torch.randn((), generator=g, dtype=torch.float64).item())
        grads.append([scale * torch.randn(tuple(s), generator=g, dtype=torch.float64)
                      for s in shapes])
    return Problem("random gradients", params, grads)


def _tiny_problem(shapes: Sequence, steps: int, seed: int, eps: float) -> Problem:
    """Gradients of the size of eps, a quarter of them exactly zero."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(tuple(s), generator=g, dtype=torch.float64) for s in shapes]
    grads = []
    for _ in range(steps):
        step = []
        for s in shapes:
            x = eps * torch.randn(tuple(s), generator=g, dtype=torch.float64)
            x = x * torch.exp(torch.randn(tuple(s), generator=g, dtype=torch.float64))
            x[torch.rand(tuple(s), generator=g, dtype=torch.float64) < 0.25] = 0.0
            step.append(x)
        grads.append(step)
    return Problem("gradients near zero", params, grads)


def _shrinking_problem(shapes: Sequence, steps: int, seed: int) -> Problem:
    """Gradients that shrink by 1.7 per step: a running maximum binds."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(tuple(s), generator=g, dtype=torch.float64) for s in shapes]
    grads = [[3.0 / 1.7**t * torch.randn(tuple(s), generator=g, dtype=torch.float64)
              for s in shapes] for t in range(steps)]
    return Problem("shrinking gradients", params, grads)


def problems(shapes: Sequence = ((3, 4), (5,)), steps: int = 20, seed: int = 0,
             hyper: dict | None = None) -> list[Problem]:
    """The three sets of inputs an update rule is checked on (seeds seed, seed+1, seed+2)."""
    eps = float((hyper or {}).get("eps", 1e-8) or 1e-8)
    return [_random_problem(shapes, steps, seed),
            _tiny_problem(shapes, steps, seed + 1, eps),
            _shrinking_problem(shapes, steps, seed + 2)]


# ---------------------------------------------------------------------------------------
# Running code: the reference, and the reader's (errors become the reader's messages)


def run_student_update(fn: Callable, problem: Problem, hyper: dict) -> Trajectory:
    """Run ``fn(params, grads, state, **hyper)`` over a problem; the reader's errors end
    the trajectory with a :class:`~optlib.book.sandbox.StudentError`, never raise."""
    return sandbox.run_update(fn, problem.params, problem.grads, hyper)


def run_student_optimizer(cls: type, problem: Problem, hyper: dict) -> Trajectory:
    """Run a ``torch.optim``-style class over a problem (errors as for updates)."""
    return sandbox.run_optimizer(cls, problem.params, problem.grads, hyper)


def run_reference(cls: type, problem: Problem, hyper: dict) -> Trajectory:
    ref = [torch.nn.Parameter(p.clone()) for p in problem.params]
    opt = cls(ref, **hyper)
    traj = Trajectory()
    for g in problem.grads:
        for p, gi in zip(ref, g, strict=True):
            p.grad = gi.clone()
        opt.step()
        traj.afters.append([p.detach().clone() for p in ref])
    traj.state_keys = frozenset(k for st in opt.state.values() for k in st)
    return traj


# ---------------------------------------------------------------------------------------
# The usual mistakes, run on the same inputs to name the reader's


def _denominator(v: Tensor, eps: float, mistake) -> Tensor:
    if mistake == "eps_inside":
        return (v + eps).sqrt()
    return v.sqrt() if mistake == "no_eps" else v.sqrt() + eps


def _sgd(params, grads, state, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
         nesterov=False, maximize=False, *, mistake=None):
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if mistake == "maximize_decay":
            g = g + weight_decay * p
            g = -g if maximize else g
        else:
            g = -g if maximize else g
            if mistake != "no_decay":
                g = g + weight_decay * p
        if momentum:
            b = state.get(i)
            if b is None:
                b = state[i] = (1 - dampening) * g if mistake == "damp_first" else g.clone()
            else:
                b.mul_(momentum).add_(g, alpha=1 - dampening)
            g = g + momentum * b if nesterov else b
        p.sub_(lr * g)


def _rmsprop(params, grads, state, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
             centered=False, maximize=False, *, mistake=None):
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        g = -g if maximize else g
        g = g + weight_decay * p
        st = state.setdefault(i, {"v": torch.zeros_like(p), "a": torch.zeros_like(p),
                                  "b": torch.zeros_like(p)})
        st["v"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
        v = st["v"]
        if centered and mistake != "not_centered":
            st["a"].mul_(alpha).add_(g, alpha=1 - alpha)
            v = v - st["a"] * st["a"]
        denom = _denominator(v, eps, mistake)
        if momentum > 0:
            st["b"].mul_(momentum).add_(g / denom)
            p.sub_(lr * st["b"])
        else:
            p.sub_(lr * g / denom)


def _adam(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          amsgrad=False, maximize=False, *, decoupled=False, mistake=None):
    b1, b2 = betas
    state["t"] = t = state.get("t", 0) + 1
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        g = -g if maximize else g
        coupled = (not decoupled) != (mistake == "coupled_swap")
        if weight_decay and coupled:
            g = g + weight_decay * p
        elif weight_decay and mistake != "decay_after":
            p.mul_(1 - (1.0 if mistake == "decay_no_lr" else lr) * weight_decay)
        st = state.setdefault(i, {"m": torch.zeros_like(p), "v": torch.zeros_like(p),
                                  "vmax": torch.zeros_like(p)})
        m, v = st["m"], st["v"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        bc1 = 1.0 if mistake in ("no_bias", "no_bias_m") else 1 - b1**t
        bc2 = 1.0 if mistake in ("no_bias", "no_bias_v") else 1 - b2**t
        if amsgrad and mistake == "max_vhat":
            torch.maximum(st["vmax"], v / bc2, out=st["vmax"])
            v_hat = st["vmax"]
        elif amsgrad and mistake != "no_max":
            torch.maximum(st["vmax"], v, out=st["vmax"])
            v_hat = st["vmax"] / bc2
        else:
            v_hat = v / bc2
        denom = _denominator(v_hat, eps, mistake)
        p.sub_(lr * (m / bc1) / denom)
        if weight_decay and mistake == "decay_after" and not coupled:
            p.mul_(1 - lr * weight_decay)


def _adamw(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
           amsgrad=False, maximize=False, *, mistake=None):
    _adam(params, grads, state, lr, betas, eps, weight_decay, amsgrad, maximize,
          decoupled=True, mistake=mistake)


def _lion(params, grads, state, lr, betas=(0.9, 0.99), weight_decay=0.0, *, mistake=None):
    b1, b2 = betas
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        m = state.setdefault(i, torch.zeros_like(p))
        p.mul_(1 - lr * weight_decay)
        if mistake == "m_first":
            m.mul_(b2).add_(g, alpha=1 - b2)
            p.sub_(lr * torch.sign(b1 * m + (1 - b1) * g))
        else:
            p.sub_(lr * torch.sign(b1 * m + (1 - b1) * g))
            m.mul_(b2).add_(g, alpha=1 - b2)


_EPS_NONE = "eps is missing from the denominator (√v̂ + ε): it only matters where v̂ is tiny"
_EPS_IN = "eps is inside the square root: the reference adds it after, √v̂ + ε, not √(v̂ + ε)"

#: reference name -> (rule on plain tensors, [(mistake, when it can show, what it is)]).
_MISTAKES: dict[str, tuple[Callable, list]] = {
    "SGD": (_sgd, [
        ("damp_first", lambda h: h.get("momentum") and h.get("dampening"),
         "dampening is applied on the first step: torch.optim.SGD starts the momentum "
         "buffer at the first gradient, b₁ = g₁, and damps only later steps"),
        ("maximize_decay", lambda h: h.get("maximize") and h.get("weight_decay"),
         "maximize also flips the weight-decay term: negate the gradient first, then add "
         "weight_decay · p (decay always pulls toward zero)"),
        ("no_decay", lambda h: h.get("weight_decay"), "weight_decay is not used"),
    ]),
    "RMSprop": (_rmsprop, [
        ("not_centered", lambda h: h.get("centered"),
         "the denominator is not centered: with centered=True it is √(v − ḡ²) + ε, "
         "with ḡ the running average of the gradients"),
        ("eps_inside", lambda h: True, _EPS_IN.replace("v̂", "v")),
        ("no_eps", lambda h: True, _EPS_NONE.replace("v̂", "v")),
    ]),
    "Adam": (_adam, [
        ("no_eps", lambda h: True, _EPS_NONE),
        ("eps_inside", lambda h: True, _EPS_IN),
        ("no_bias", lambda h: True, "there is no bias correction: divide m by 1 − β₁ᵗ "
         "and v by 1 − β₂ᵗ, with t the step count"),
        ("no_bias_m", lambda h: True, "m is not bias-corrected: m̂ = m / (1 − β₁ᵗ)"),
        ("no_bias_v", lambda h: True, "v is not bias-corrected: v̂ = v / (1 − β₂ᵗ)"),
        ("max_vhat", lambda h: h.get("amsgrad"),
         "the running max is taken of v̂ (bias-corrected): the reference keeps the max of "
         "v itself, v_max = max(v_max, v), and divides v_max by 1 − β₂ᵗ afterwards"),
        ("no_max", lambda h: h.get("amsgrad"),
         "the running max is missing (or not kept between steps): AMSGrad divides by "
         "√(max over all steps of v) / √(1 − β₂ᵗ), stored in the state"),
        ("coupled_swap", lambda h: h.get("weight_decay"),
         "weight decay is decoupled (p ← p(1 − lr·λ)) where the reference adds λ·p to "
         "the gradient (pass decoupled_weight_decay=True or use AdamW for the former)"),
    ]),
}
_MISTAKES["AdamW"] = (_adamw, [m for m in _MISTAKES["Adam"][1] if m[0] != "coupled_swap"] + [
    ("coupled_swap", lambda h: h.get("weight_decay"),
     "weight decay is added to the gradient (L2, as in Adam): AdamW decouples it, "
     "p ← p(1 − lr·λ), before the Adam step"),
    ("decay_no_lr", lambda h: h.get("weight_decay"),
     "the decay is not multiplied by the learning rate: AdamW uses p ← p(1 − lr·λ)"),
    ("decay_after", lambda h: h.get("weight_decay"),
     "the decay is applied after the Adam step: AdamW decays p first, then steps"),
])
_MISTAKES["Lion"] = (_lion, [
    ("m_first", lambda h: True,
     "the momentum is updated before the sign step: Lion takes sign(β₁m + (1 − β₁)g) with "
     "the old m, then updates m ← β₂m + (1 − β₂)g"),
])


def _distance(a: list[Tensor], b: list[Tensor]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        both_nan = torch.isnan(x) & torch.isnan(y)
        if (torch.isnan(x) ^ torch.isnan(y)).any():
            return math.inf
        d = (x - y).abs()
        d = torch.where(both_nan | (x == y), torch.zeros_like(d), d)
        worst = max(worst, float(d.max()) if d.numel() else 0.0)
    return worst


def _diagnose(cls: type, problem: Problem, hyper: dict, t: int, got: list[Tensor],
              expected: list[Tensor]) -> str | None:
    """The usual mistake that reproduces the reader's parameters after step t, if any."""
    entry = _MISTAKES.get(cls.__name__)
    if entry is None:
        return None
    rule, mistakes = entry
    err_ref = _distance(got, expected)
    best = None
    for key, applies, text in mistakes:
        if not applies(hyper):
            continue
        params = [p.clone() for p in problem.params]
        state: dict = {}
        try:
            with torch.no_grad():
                for g in problem.grads[:t]:
                    rule(params, [gi.clone() for gi in g], state, **hyper, mistake=key)
        except TypeError:   # hyperparameters this sketch of the rule does not know
            return None
        err = _distance(got, params)
        if err <= 1e-3 * err_ref and (best is None or err < best[0]):
            best = (err, text)
    return best[1] if best else None


# ---------------------------------------------------------------------------------------
# Comparing and explaining


def _bad(before: Tensor, got: Tensor, exp: Tensor) -> Tensor:
    """Elements where the reader's step differs from the reference's by more than the
    tolerance relative to the step (and to the rounding of ``p - step``)."""
    tol = RTOL * (exp - before).abs() + PARAM_RTOL * exp.abs() + ATOL
    diff = (got - exp).abs()
    return ~(diff <= tol) & ~(torch.isnan(got) & torch.isnan(exp))


def _heuristic_hint(t: int, problem: Problem, before: Tensor, got: Tensor, exp: Tensor,
                    traj: Trajectory, state_keys: frozenset) -> str:
    adam_like = "exp_avg" in state_keys and "exp_avg_sq" in state_keys
    low = {d for d in traj.state_dtypes if d != torch.float64}
    if low:
        names = ", ".join(sorted(str(d).replace("torch.", "") for d in low))
        return (f"your state holds {names} tensors in a float64 check: torch.zeros(p.shape) "
                "makes float32; use torch.zeros_like(p) (or dtype=p.dtype).")
    if not torch.isfinite(got).all():
        return ("your step produced NaN or inf (a division by zero where the gradient is 0? "
                "eps belongs in the denominator).")
    if torch.equal(got, before):
        return ("your function did not change the parameters: update them in place "
                "(p.sub_(...) or p -= ...) or return the list of new parameters.")
    d_got, d_exp = got - before, exp - before
    mask = d_exp.abs() > 1e-12 * (1 + exp.abs())
    if mask.any():
        ratio = d_got[mask] / d_exp[mask]
        r = ratio.median().item()
        if torch.allclose(ratio, torch.full_like(ratio, r), rtol=1e-6, atol=0.0):
            if abs(r + 1.0) < 1e-6:
                return "your update has the wrong sign: a descent step subtracts."
            if abs(r - 1.0) > 1e-6:
                extra = ", a bias correction (1 − βᵗ)" if adam_like else ""
                return (f"your step is {r:.4g} × the reference's in every coordinate: a "
                        f"constant factor is off (the learning rate, a (1 − β) or "
                        f"dampening factor{extra}).")
    if problem.label == "gradients near zero":
        return ("the random gradients matched, but gradients of the size of eps do not: "
                "check where eps goes (added once, after the square root).")
    if problem.label == "shrinking gradients":
        return ("the random gradients matched, but shrinking gradients do not: check the "
                "state that depends on the history (a running max, kept in `state`).")
    if t == 1:
        checks = ["the formula term by term (is every hyperparameter used, weight decay "
                  "included?)"]
        if "momentum_buffer" in state_keys:
            checks.append("the momentum buffer (torch.optim.SGD starts it at the first "
                          "gradient)")
        if adam_like:
            checks.append("the moments (they start at zero) and the bias correction at t = 1")
        if state_keys & {"exp_avg_sq", "sum", "square_avg"}:
            checks.append("where eps goes")
        return "the first step already differs: check " + ", ".join(checks) + "."
    return ("the first steps matched, so the formula is close: check that the running "
            "state (buffers, moments, step count) is kept in `state` and updated once "
            "per step, and the order of the updates within a step.")


def _print_error(where: str, problem: Problem, err: StudentError) -> None:
    on = f" (on the {problem.label})" if problem.label != "random gradients" else ""
    if err.kind == "signature":
        _say(f"✗ {where}: {err.message}")
    elif err.kind == "exception":
        at = f"at step {err.step}{on}" if err.step else "when created"
        _say(f"✗ {where}: your code raised {err.message} {at}")
        if err.line:
            _say(f"  in {err.line}", "    ")
    else:
        _say(f"✗ {where}: at step {err.step}{on}, {err.message}")


def compare(where: str, cls: type, problem: Problem, hyper: dict, traj: Trajectory,
            ref: Trajectory) -> bool:
    """Compare a reader's trajectory with the reference's; print the first mismatch."""
    n = len(ref.afters)
    for t in range(1, n + 1):
        if t > len(traj.afters):
            _print_error(where, problem, traj.error)
            return False
        befores = traj.afters[t - 2] if t > 1 else problem.params
        ref_befores = ref.afters[t - 2] if t > 1 else problem.params
        gots, exps = traj.afters[t - 1], ref.afters[t - 1]
        for i, (before, got, exp) in enumerate(zip(befores, gots, exps, strict=True)):
            if got.shape != exp.shape:
                _say(f"✗ {where}: at step {t}, tensor {i} has shape {tuple(got.shape)}, "
                     f"expected {tuple(exp.shape)}")
                return False
            if got.dtype != exp.dtype:
                _say(f"✗ {where}: at step {t}, tensor {i} is {got.dtype}, expected "
                     f"{exp.dtype}: keep the parameters' dtype (torch.zeros_like(p), "
                     "not torch.zeros(p.shape))")
                return False
            bad = _bad(ref_befores[i], got, exp)
            if not bad.any():
                continue
            pos = tuple(int(k) for k in bad.nonzero()[0])
            on = f"on the {problem.label}, " if problem.label != "random gradients" else ""
            _say(f"✗ {where}: first mismatch {on}at step {t}, tensor {i} "
                 f"(shape {tuple(got.shape)}),")
            _say(f"  element {pos}: expected {_fmt(exp[pos].item())}, got "
                 f"{_fmt(got[pos].item())} (before: {_fmt(before[pos].item())})", "    ")
            named = _diagnose(cls, problem, hyper, t, gots, exps)
            if named:
                hint = f"your numbers match a known mistake: {named}."
            else:
                hint = _heuristic_hint(t, problem, before, got, exp, traj, ref.state_keys)
            _say(f"  Hint: {hint}", "    ")
            return False
    return True


def _check(student, runner, reference, hyper, steps, shapes, seed, name) -> bool:
    cls = _resolve(reference)
    hyper = dict(DEFAULT_HYPER.get(cls.__name__, {"lr": 0.01}) if hyper is None else hyper)
    where = f"{name} vs {_label(cls)}"
    probs = problems(shapes, steps, seed, hyper)
    for problem in probs:
        traj = runner(student, problem, hyper)   # before the reference exists
        ref = run_reference(cls, problem, hyper)
        if not compare(where, cls, problem, hyper, traj, ref):
            return False
    _say(f"✓ {name} matches {_label(cls)} over {len(probs)} × {steps} steps (random, "
         f"near-zero and shrinking gradients; {_hyper_text(hyper)})")
    return True


def check_update(student_step: Callable, reference="Adam", hyper: dict | None = None,
                 steps: int = 20, shapes=((3, 4), (5,)), seed: int = 0) -> bool:
    """Check ``student_step(params, grads, state, **hyper)`` against optlib's optimizer.

    ``params`` and ``grads`` are lists of float64 tensors; ``state`` is a dict the
    function owns (empty at first, the same dict on every call). The function updates
    ``params`` in place or returns the new list. ``reference``: an optimizer class or
    its name in ``optlib`` (or ``torch.optim``); ``hyper``: keyword arguments for both
    (default: :data:`DEFAULT_HYPER`). Prints ✓ or the first mismatch; returns a bool.

    Runs the three sets of inputs of :func:`problems` (``seed``, ``seed + 1``,
    ``seed + 2``), ``steps`` steps each. Detects: a wrong formula or hyperparameter,
    a missing or misplaced eps (eps inside the square root), a missing or partial bias
    correction, dampening on the first step, an uncentered denominator, the running max
    of AMSGrad taken of v̂ or forgotten, decoupled against L2 weight decay, state not kept
    between steps, the wrong sign, state in float32, wrong return values, exceptions and
    signatures that cannot take ``hyper`` (reported as the reader's, with their line).
    Cannot detect: differences in code paths that ``hyper`` leaves off, after ``steps``
    steps, or below a relative 1e-7 of a step; copying the reference (use
    :func:`optlib.book.grading.grade_update` to grade).
    """
    name = getattr(student_step, "__name__", "your function")
    return _check(student_step, run_student_update, reference, hyper, steps, shapes, seed,
                  name)


def check_optimizer(student_class: type, reference_class="Adam", hyper: dict | None = None,
                    steps: int = 20, shapes=((3, 4), (5,)), seed: int = 0) -> bool:
    """Check a ``torch.optim``-style class: both get the same parameters, gradients and
    ``hyper`` (default: :data:`DEFAULT_HYPER`); parameters are compared after every step,
    on the same three sets of inputs as :func:`check_update`, which detects the same
    mistakes and has the same limits (a bare subclass of the reference passes here:
    :func:`optlib.book.grading.grade_optimizer` flags it)."""
    name = getattr(student_class, "__name__", "your class")
    return _check(student_class, run_student_optimizer, reference_class, hyper, steps,
                  shapes, seed, name)


def _schedule_hint(t: int, student: Callable, reference: Callable, steps: int) -> str:
    def close(a, b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)

    window = range(max(t, 1), min(steps, t + 20))
    try:
        if window and all(close(float(student(s)), float(reference(s + 1))) for s in window):
            return ("your values are one step ahead: `step` counts completed optimizer steps "
                    "from 0, so step 0 is the very first update.")
        if window and all(close(float(student(s)), float(reference(s - 1))) for s in window):
            return ("your values are one step behind: `step` counts completed optimizer "
                    "steps from 0 (do not add 1).")
    except Exception:  # noqa: BLE001 - the reader's function fails elsewhere: no hint from it
        pass
    if t == 0:
        return ("the first value differs: a warmup starts at t / warmup_steps = 0; "
                "a decay starts at 1.")
    return (f"the values agree up to step {t - 1}: look at what your formula does from "
            f"step {t} on (the end of a warmup or decay phase? integer division?).")


def schedule_name(reference_fn) -> str:
    if isinstance(reference_fn, optlib.schedules.Schedule):
        return repr(reference_fn)
    return getattr(reference_fn, "__name__", "the reference")


def run_student_schedule(fn: Callable, steps: int) -> tuple[list[float], StudentError | None]:
    """The reader's values for t = 0 .. steps-1, until the first error."""
    return sandbox.run_schedule(fn, steps)


def compare_schedule(name: str, ref_name: str, values: list[float],
                     error: StudentError | None, student_fn, reference_fn, steps: int) -> bool:
    where = f"{name} vs {ref_name}"
    for t in range(steps):
        if t >= len(values):
            _say(f"✗ {where}: your code raised {error.message} at step {t}")
            if error.line:
                _say(f"  in {error.line}", "    ")
            return False
        expected, got = float(reference_fn(t)), values[t]
        if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
            _say(f"✗ {where}: first mismatch at step {t}: "
                 f"expected {_fmt(expected)}, got {_fmt(got)}")
            hint = (_schedule_hint(t, student_fn, reference_fn, steps) if student_fn
                    else _schedule_hint_from_values(t, values, reference_fn))
            _say(f"  Hint: {hint}", "    ")
            return False
    _say(f"✓ {name} matches {ref_name} for steps 0..{steps - 1}")
    return True


def _schedule_hint_from_values(t, values, reference_fn) -> str:
    return _schedule_hint(t, lambda s: values[s] if s < len(values) else math.nan,
                          reference_fn, len(values))


def check_schedule(student_fn: Callable[[int], float], reference_fn: Callable[[int], float],
                   steps: int = 200) -> bool:
    """Compare ``student_fn(t)`` with ``reference_fn(t)`` for t = 0 .. steps-1.

    Detects any value off by more than a relative 1e-9 and names an off-by-one step count,
    a wrong start, or the step from which the values part; an exception is reported with
    the reader's line. Cannot detect differences after ``steps`` steps."""
    name = getattr(student_fn, "__name__", "your schedule")
    values, error = run_student_schedule(student_fn, steps)
    return compare_schedule(name, schedule_name(reference_fn), values, error, student_fn,
                            reference_fn, steps)
