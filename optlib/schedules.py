"""Learning-rate schedules as plain callables: ``schedule(step) -> multiplier``.

``step`` counts completed ``optimizer.step()`` calls from 0 and the result multiplies the
base learning rate, so::

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, optlib.schedules.cosine(1000))
    # loop: optimizer.step(); scheduler.step()

applies it, and ``[schedule(t) for t in range(T)]`` plots it. Each schedule is a small
picklable object with a readable ``repr``; ``LambdaLR.state_dict()`` saves its fields.
Warmup pieces rise as ``t / warmup_steps``: step 0 has multiplier 0, as in the widely
used Hugging Face schedules (the first batch only fills the optimizer's moments).

Each schedule equals a reference over a whole run, past its nominal end included:

=====================  =============================================================
``constant``           1
``step_decay``         ``torch.optim.lr_scheduler.StepLR``
``exponential``        ``torch.optim.lr_scheduler.ExponentialLR``
``cosine``             ``CosineAnnealingLR(T_max=total_steps, eta_min=min_ratio·lr)``
                       up to ``total_steps``; ``min_ratio`` after (torch's rises again)
``linear_decay``       ``1 − (1 − min_ratio)·t/total_steps``, then ``min_ratio``
``inverse_sqrt``       transformers' ``get_inverse_sqrt_schedule``
``noam``               Vaswani et al. (2017), eq. (3), with ``s = t + 1``
``warmup_cosine``      transformers' ``get_cosine_with_min_lr_schedule_with_warmup``
``warmup_linear``      transformers' ``get_linear_schedule_with_warmup``
``wsd``                transformers' ``get_wsd_schedule``
``one_cycle``          ``OneCycleLR`` (``max_lr`` = the base lr) up to its last step,
                       then its last value (torch's raises after one more step)
``cyclic``             ``CyclicLR`` (``max_lr`` = the base lr)
``cosine_restarts``    ``CosineAnnealingWarmRestarts``
``polynomial``         ``PolynomialLR``; with ``warmup_steps``, BERT's reference schedule
``warmup_polynomial``  transformers' ``get_polynomial_decay_schedule_with_warmup``
``ReduceOnPlateau``    ``ReduceLROnPlateau``'s rule (``step(metric)``; ``LambdaLR`` reads it)
=====================  =============================================================

The momentum cycles of torch's ``OneCycleLR`` and ``CyclicLR`` are schedules of their
own, ``one_cycle_momentum`` and ``cyclic_momentum`` (or ``one_cycle(...).momentum()``),
that return the momentum itself; :class:`LambdaMomentum` writes them into the optimizer.
Past its last step each of these stays at its last value (``cyclic`` and
``cosine_restarts`` have none: they cycle for as long as they are stepped).
"""

from __future__ import annotations

import math
import numbers
import operator

__all__ = [
    "Schedule", "constant", "step_decay", "exponential", "cosine", "linear_decay",
    "inverse_sqrt", "noam", "warmup_cosine", "warmup_linear", "wsd",
    "one_cycle", "one_cycle_momentum", "cyclic", "cyclic_momentum", "cosine_restarts",
    "polynomial", "warmup_polynomial", "ReduceOnPlateau", "LambdaMomentum",
]


# --- argument checks: a ValueError that names the argument and its value -----------------
def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _ratio(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0.0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _power(base: float, exponent: int) -> float:
    """base ** exponent, as a float: ``inf`` once it overflows (Python raises instead)."""
    try:
        return base ** exponent
    except OverflowError:
        return math.inf


def _warmup_within(warmup_steps: int, total_steps: int) -> None:
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})"
        )


class Schedule:
    """Base class: subclasses store their arguments as attributes and define ``value(t)``."""

    def __call__(self, step) -> float:
        try:   # an int, or anything that is one: a NumPy integer, a 0-dim integer tensor
            t = None if isinstance(step, bool) else operator.index(step)
        except TypeError:
            t = None
        if t is None or t < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        return self.value(t)

    def value(self, t: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(vars(self).items())))


def _warmup(t: int, warmup_steps: int) -> float:
    """The linear warmup of the Hugging Face schedules: 0, 1/W, 2/W, ..."""
    return t / max(1, warmup_steps)


class constant(Schedule):
    """η_t = η: the multiplier is always 1."""

    def value(self, t: int) -> float:
        return 1.0


class step_decay(Schedule):
    """Multiply by ``gamma`` every ``step_size`` steps: γ^⌊t / step_size⌋ (torch's ``StepLR``).

    Args:
        step_size: the number of steps between two multiplications.
        gamma: γ, the factor.
    """

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _positive("gamma", gamma)

    def value(self, t: int) -> float:
        return _power(self.gamma, t // self.step_size)


class exponential(Schedule):
    """γ^t (torch's ``ExponentialLR``).

    Args:
        gamma: γ, the factor per step.
    """

    def __init__(self, gamma: float):
        self.gamma = _positive("gamma", gamma)

    def value(self, t: int) -> float:
        return _power(self.gamma, t)


class _DecayToFloor(Schedule):
    """From 1 at t = 0 down to ``min_ratio`` at t = ``total_steps``, then ``min_ratio``;
    subclasses give the shape in between, ``decay(t, T, m)`` for 0 ≤ t < T."""

    def __init__(self, total_steps: int, min_ratio: float = 0.0):
        self.total_steps = _int("total_steps", total_steps, 1)
        self.min_ratio = _ratio("min_ratio", min_ratio)

    def value(self, t: int) -> float:
        m, T = self.min_ratio, self.total_steps
        return m if t >= T else self.decay(t, T, m)

    @staticmethod
    def decay(t: int, T: int, m: float) -> float:
        raise NotImplementedError


class cosine(_DecayToFloor):
    """Half a cosine from 1 down to ``min_ratio`` over ``total_steps``, then ``min_ratio``:
    m + (1 − m)·½(1 + cos(π t / T)) for t ≤ T (Loshchilov & Hutter 2017, SGDR without restarts).

    Equals torch's ``CosineAnnealingLR(T_max=T, eta_min=m·lr)`` for t ≤ T; torch's rises
    again after T (period 2T), this one stays at the floor.

    Args:
        total_steps: T, the length of the schedule in steps.
        min_ratio: m, the floor as a fraction of the base lr.
    """

    @staticmethod
    def decay(t: int, T: int, m: float) -> float:
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * t / T))


class linear_decay(_DecayToFloor):
    """A straight line from 1 at t = 0 to ``min_ratio`` at t = T, then ``min_ratio``.

    Args:
        total_steps: T, the length of the schedule in steps.
        min_ratio: m, the floor as a fraction of the base lr.
    """

    @staticmethod
    def decay(t: int, T: int, m: float) -> float:
        return 1.0 - (1.0 - m) * t / T


class inverse_sqrt(Schedule):
    """Linear warmup over W steps, then 1 / sqrt((t + τ − W) / τ) with timescale τ
    (default W, or 10 000 when W = 0): with τ = W this is sqrt(W / t).
    Transformers' ``get_inverse_sqrt_schedule``; the decay of Vaswani et al. (2017).

    Args:
        warmup_steps: W, the number of warmup steps.
        timescale: τ (default W, or 10 000 when W = 0).
    """

    def __init__(self, warmup_steps: int, timescale: int | None = None):
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)
        if timescale is not None:
            _positive("timescale", timescale)
        self.timescale = timescale

    def value(self, t: int) -> float:
        W = self.warmup_steps
        tau = self.timescale if self.timescale is not None else (W or 10_000)
        if t < W:
            return _warmup(t, W)
        return 1.0 / math.sqrt((t + tau - W) / tau)


class noam(Schedule):
    """d_model^−½ · min(s^−½, s · W^−1.5) with s = t + 1 (Vaswani et al. 2017, eq. 3).

    The multiplier *is* the paper's learning rate (use base lr 1): it rises linearly to
    its peak (d_model·W)^−½ at s = W, then decays as 1/sqrt(s). Counting from s = t + 1
    means the first step gets a small positive rate, never 0.

    Args:
        d_model: the model width.
        warmup_steps: W, the number of warmup steps.
    """

    def __init__(self, d_model: int, warmup_steps: int):
        self.d_model = _int("d_model", d_model, 1)
        self.warmup_steps = _int("warmup_steps", warmup_steps, 1)

    def value(self, t: int) -> float:
        s = t + 1
        return self.d_model ** -0.5 * min(s ** -0.5, s * self.warmup_steps ** -1.5)


class warmup_cosine(Schedule):
    """Linear warmup over W steps, then a cosine from 1 to ``min_ratio`` at T:
    m + (1 − m)·½(1 + cos(π p)), p = (t − W) / (T − W).

    Transformers' ``get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=min_ratio)``,
    past T included, where that formula keeps following the cosine and *rises* again;
    make ``total_steps`` the length of the run (or use :class:`wsd`, which stays at the floor).

    Args:
        warmup_steps: W, the number of warmup steps.
        total_steps: T, the length of the schedule in steps.
        min_ratio: m, the floor as a fraction of the base lr.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)
        self.total_steps = _int("total_steps", total_steps, 1)
        _warmup_within(self.warmup_steps, self.total_steps)
        self.min_ratio = _ratio("min_ratio", min_ratio)

    def value(self, t: int) -> float:
        W, T, m = self.warmup_steps, self.total_steps, self.min_ratio
        if t < W:
            return _warmup(t, W)
        p = (t - W) / max(1, T - W)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * p)) * (1.0 - m) + m)


class warmup_linear(Schedule):
    """Linear warmup over W steps, then a straight line down to 0 at T, then 0
    (transformers' ``get_linear_schedule_with_warmup``, often called BERT's schedule;
    BERT's reference code decays over all T steps from step 0 instead:
    :class:`polynomial` with ``warmup_steps``).

    Args:
        warmup_steps: W, the number of warmup steps.
        total_steps: T, the length of the schedule in steps.
    """

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)
        self.total_steps = _int("total_steps", total_steps, 1)
        _warmup_within(self.warmup_steps, self.total_steps)

    def value(self, t: int) -> float:
        W, T = self.warmup_steps, self.total_steps
        if t < W:
            return _warmup(t, W)
        return max(0.0, (T - t) / max(1, T - W))


_DECAYS = ("linear", "cosine", "1-sqrt")


class wsd(Schedule):
    """Warmup–stable–decay (Hägele et al. 2024; MiniCPM, Hu et al. 2024): warm up over
    ``warmup_steps``, hold 1 for ``stable_steps``, decay to ``min_ratio`` over
    ``decay_steps`` with the shape ``decay`` (``"linear"`` 1 − p, ``"cosine"``
    ½(1 + cos π p), ``"1-sqrt"`` 1 − √p), then stay at ``min_ratio``.

    Transformers' ``get_wsd_schedule`` with the same numbers (linear warmup), including
    its detail that the warmup, like the decay, is rescaled to [min_ratio, 1]: step 0
    has multiplier ``min_ratio`` (0 with the default).

    Args:
        warmup_steps: W, the number of warmup steps.
        stable_steps: the steps held at 1.
        decay_steps: the steps of the decay.
        min_ratio: m, the floor as a fraction of the base lr.
        decay: the decay's shape: "linear", "cosine" or "1-sqrt".
    """

    def __init__(self, warmup_steps: int, stable_steps: int, decay_steps: int,
                 min_ratio: float = 0.0, decay: str = "cosine"):
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)
        self.stable_steps = _int("stable_steps", stable_steps, 0)
        self.decay_steps = _int("decay_steps", decay_steps, 0)
        self.min_ratio = _ratio("min_ratio", min_ratio)
        if decay not in _DECAYS:
            raise ValueError(f"decay must be one of {', '.join(map(repr, _DECAYS))}; got {decay!r}")
        self.decay = decay

    def value(self, t: int) -> float:
        W, S, D, m = self.warmup_steps, self.stable_steps, self.decay_steps, self.min_ratio
        if t < W:
            return max(0.0, _warmup(t, W) * (1.0 - m) + m)
        if t < W + S:
            return 1.0
        if t < W + S + D:
            p = (t - W - S) / max(1, D)
            if self.decay == "linear":
                shape = 1.0 - p
            elif self.decay == "cosine":
                shape = 0.5 * (1.0 + math.cos(math.pi * p))
            else:
                shape = 1.0 - math.sqrt(p)
            return max(0.0, shape * (1.0 - m) + m)
        return m


# --- schedules from torch.optim.lr_scheduler and fast.ai -----------------------------------
def _torch_int(value, minimum: int, message: str) -> int:
    """An integer >= minimum, else a ValueError with torch's message for that argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(message)
    return int(value)


def _nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0.0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


_ANNEALS = ("cos", "linear")


def _anneal(kind: str, start: float, end: float, pct: float) -> float:
    """From ``start`` at pct = 0 to ``end`` at pct = 1: half a cosine or a straight line
    (torch's ``OneCycleLR._annealing_cos`` / ``_annealing_linear``, the same operations)."""
    if kind == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


class _OneCycleShape(Schedule):
    """The phases of the 1cycle policy; subclasses give the value at each phase boundary.

    Phase k runs from step ``ends[k-1]`` (0 for the first) to step ``ends[k]`` and anneals
    between its two boundary values with pct = (t − start) / (end − start). The ends are
    torch's, computed with the same float operations: pT − 1 (and 2pT − 2 for three
    phases) and T − 1, where p = ``pct_start`` and T = ``total_steps``.
    """

    def _set_phases(self, total_steps, pct_start, anneal) -> None:
        """Check and store the arguments that place the phases (``three_phase`` last)."""
        self.total_steps = _torch_int(
            total_steps, 1,
            f"Expected positive integer total_steps, but got {total_steps!r}")
        if isinstance(pct_start, bool) or not isinstance(pct_start, numbers.Real) \
                or not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start!r}")
        self.pct_start = float(pct_start)
        if anneal not in _ANNEALS:
            raise ValueError(f"anneal must be one of 'cos' or 'linear', instead got {anneal!r}")
        self.anneal = anneal
        if float(self.pct_start * self.total_steps) - 1 == 0.0:
            # torch's OneCycleLR divides 0 by 0 at step 0 here (ZeroDivisionError).
            raise ValueError(
                f"pct_start * total_steps must not be 1 (a warmup of a single step: torch's "
                f"OneCycleLR divides by zero), got pct_start={pct_start!r}, "
                f"total_steps={total_steps!r}")

    @staticmethod
    def _flag(name: str, value) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return value

    def _ends(self) -> list[float]:
        p, T = self.pct_start, self.total_steps
        if self.three_phase:
            return [float(p * T) - 1, float(2 * p * T) - 2, T - 1]
        return [float(p * T) - 1, T - 1]

    def _anchors(self) -> list[tuple[float, float]]:
        raise NotImplementedError

    def value(self, t: int) -> float:
        t = min(t, self.total_steps - 1)  # past the end: the value of the last step
        ends, anchors = self._ends(), self._anchors()
        start = 0.0
        for k, end in enumerate(ends):
            if t <= end or k == len(ends) - 1:
                a, b = anchors[k]
                return _anneal(self.anneal, a, b, (t - start) / (end - start))
            start = end
        raise AssertionError("unreachable")


class one_cycle(_OneCycleShape):
    """The 1cycle policy (Smith & Topin 2019): with the base lr as the peak, rise from 1/d
    (d = ``div_factor``) to 1 over the first ``pct_start`` of the ``total_steps`` steps,
    then anneal to 1/(d·f) (f = ``final_div_factor``) at the last step, t = T − 1.
    ``anneal`` is the shape of each phase, from a to b::

        "cos":    b + (a − b)·½(1 + cos(π·pct))        "linear":  a + (b − a)·pct

    with pct the fraction of the phase done: pct = t / (pT − 1) in the rise and
    (t − (pT − 1)) / (T − 1 − (pT − 1)) in the fall (p = ``pct_start``). With
    ``three_phase=True`` (the paper's form) it rises to 1 by pT − 1, falls back to 1/d by
    2pT − 2 and then anneals to 1/(d·f) at T − 1.

    Equals torch's ``OneCycleLR(max_lr=lr, total_steps=T, pct_start=p,
    anneal_strategy=anneal, div_factor=d, final_div_factor=f, three_phase=...)``, whose
    lr at construction is the lr of step 0, at every step 0 … T − 1. Past the end this one
    stays at its last value; torch's extrapolates the last phase for step T (below 1/(d·f)
    with ``"linear"``, back up with ``"cos"``; a division by zero when ``pct_start=1.0``)
    and raises a ValueError at the step after. ``pct_start·T = 1`` (a rise of one step) is
    refused: torch divides by zero there.

    fast.ai's ``fit_one_cycle`` runs the same policy (cosine phases; its defaults
    pct_start 0.25, div 25 and div_final 1e5 = d·f) on a grid one step later: its phases
    end at t = pT and t = T, torch's at pT − 1 and T − 1.

    The momentum cycle that goes with it, high when the lr is low: :meth:`momentum`
    (apply it with :class:`LambdaMomentum`).

    Args:
        total_steps: T, the length of the schedule in steps.
        pct_start: p, the fraction of the steps spent rising.
        anneal: each phase's shape: "cos" or "linear".
        div_factor: d: the start is 1/d of the peak.
        final_div_factor: f: the end is 1/(d·f) of the peak.
        three_phase: fall back to 1/d symmetrically before annealing to the end (torch's
            three_phase).
    """

    def __init__(self, total_steps: int, pct_start: float = 0.3, anneal: str = "cos",
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False):
        self._set_phases(total_steps, pct_start, anneal)
        self.div_factor = _positive("div_factor", div_factor)
        self.final_div_factor = _positive("final_div_factor", final_div_factor)
        self.three_phase = self._flag("three_phase", three_phase)

    def _anchors(self) -> list[tuple[float, float]]:
        initial = 1.0 / self.div_factor
        low = initial / self.final_div_factor
        if self.three_phase:
            return [(initial, 1.0), (1.0, initial), (initial, low)]
        return [(initial, 1.0), (1.0, low)]

    def momentum(self, base_momentum: float = 0.85, max_momentum: float = 0.95) \
            -> one_cycle_momentum:
        """The momentum cycle of this schedule (same steps and phases):
        ``one_cycle_momentum`` with torch's ``OneCycleLR`` defaults."""
        return one_cycle_momentum(self.total_steps, self.pct_start, self.anneal,
                                  base_momentum, max_momentum, self.three_phase)


class one_cycle_momentum(_OneCycleShape):
    """The momentum of the 1cycle policy (Smith & Topin 2019), moving opposite to the lr:
    from ``max_momentum`` down to ``base_momentum`` while the lr rises, back up to
    ``max_momentum`` while it falls (three phases: up while it falls back to 1/d, then
    held at ``max_momentum``); same phases and ``anneal`` shape as :class:`one_cycle`.

    The value is the momentum itself (SGD's ``momentum``, Adam's β₁), not a multiplier:
    apply it with :class:`LambdaMomentum`, which writes it where torch's ``OneCycleLR``
    with ``cycle_momentum=True`` writes it; the numbers are the same at every step.

    Args:
        total_steps: T, the length of the schedule in steps.
        pct_start: p, the fraction of the steps in the first phase.
        anneal: each phase's shape: "cos" or "linear".
        base_momentum: the lowest momentum (at the lr's peak).
        max_momentum: the highest momentum (at the start and the end).
        three_phase: the three phases of one_cycle(three_phase=True).
    """

    def __init__(self, total_steps: int, pct_start: float = 0.3, anneal: str = "cos",
                 base_momentum: float = 0.85, max_momentum: float = 0.95,
                 three_phase: bool = False):
        self._set_phases(total_steps, pct_start, anneal)
        self.base_momentum = _momentum("base_momentum", base_momentum)
        self.max_momentum = _momentum("max_momentum", max_momentum)
        self.three_phase = self._flag("three_phase", three_phase)

    def _anchors(self) -> list[tuple[float, float]]:
        lo, hi = self.base_momentum, self.max_momentum
        if self.three_phase:
            return [(hi, lo), (lo, hi), (hi, hi)]
        return [(hi, lo), (lo, hi)]


def _momentum(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


class _CyclicShape(Schedule):
    """Where step t sits in its cycle (torch's ``CyclicLR.get_lr``, same operations):
    a height h in [0, 1] (0 at the start of a cycle, 1 at its peak) and the amplitude
    scale s: 1 (``triangular``), 1/2^(c−1) in cycle c = 1, 2, … (``triangular2``),
    γ^t (``exp_range``)."""

    def _set_cycle(self, step_size_down, mode, gamma) -> None:
        """Check and store the arguments after ``step_size_up`` that shape the cycle."""
        self.step_size_down = None if step_size_down is None else \
            _int("step_size_down", step_size_down, 0)
        self.mode = _choice("mode", mode, _CYCLIC_MODES)
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) \
                or not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.gamma = float(gamma)

    def _height_and_scale(self, t: int) -> tuple[float, float]:
        up = float(self.step_size_up)
        down = up if self.step_size_down is None else float(self.step_size_down)
        total = up + down
        ratio = up / total
        cycle = math.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        h = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if self.mode == "triangular":
            s = 1.0
        elif self.mode == "triangular2":
            s = 1 / _power(2.0, cycle - 1)
        else:
            s = self.gamma ** t
        return h, s


class cyclic(_CyclicShape):
    """Cyclical learning rates (Smith 2017): up and down between ``base_ratio`` and 1
    (the base lr is the top), ``step_size_up`` steps up, ``step_size_down`` (default:
    as many) down, forever::

        multiplier = b + (1 − b)·h(t)·s(t)

    with b = ``base_ratio``, h the triangle wave (0 at the start of each cycle, 1 at its
    top) and s the amplitude scale of ``mode``: 1 (``"triangular"``), halved each cycle
    (``"triangular2"``: 1/2^(c−1) in cycle c = 1, 2, …) or γ^t (``"exp_range"``,
    ``gamma`` in (0, 1]).

    Equals torch's ``CyclicLR(base_lr=b·lr, max_lr=lr, step_size_up=..., step_size_down=...,
    mode=..., gamma=...)`` at every step (torch overwrites the optimizer's lr with
    ``base_lr``; here the optimizer's lr is the top). It has no end: it cycles for as
    long as it is stepped, as torch's does. torch's ``CyclicLR`` also cycles the momentum
    by default (``cycle_momentum=True``, between 0.8 and 0.9): :meth:`momentum` and
    :class:`LambdaMomentum` do the same.

    Args:
        step_size_up: steps from the bottom to the top.
        base_ratio: b, the bottom as a fraction of the base lr.
        step_size_down: steps from the top to the bottom (default: step_size_up).
        mode: "triangular", "triangular2" or "exp_range".
        gamma: γ of "exp_range".
    """

    def __init__(self, step_size_up: int, base_ratio: float, step_size_down: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0):
        self.step_size_up = _int("step_size_up", step_size_up, 1)
        self.base_ratio = _ratio("base_ratio", base_ratio)
        self._set_cycle(step_size_down, mode, gamma)

    def value(self, t: int) -> float:
        h, s = self._height_and_scale(t)
        return self.base_ratio + (1.0 - self.base_ratio) * h * s

    def momentum(self, base_momentum: float = 0.8, max_momentum: float = 0.9) \
            -> cyclic_momentum:
        """The momentum cycle of this schedule: ``cyclic_momentum`` with torch's
        ``CyclicLR`` defaults."""
        return cyclic_momentum(self.step_size_up, self.step_size_down, self.mode, self.gamma,
                               base_momentum, max_momentum)


class cyclic_momentum(_CyclicShape):
    """The momentum of torch's ``CyclicLR(cycle_momentum=True)``, opposite to the lr:
    ``max_momentum − (max_momentum − base_momentum)·h(t)·s(t)`` with the h and s of
    :class:`cyclic` (Smith 2017 cycles the lr; torch adds this momentum cycle from the
    1cycle policy). The value is the momentum itself: apply it with :class:`LambdaMomentum`.

    Args:
        step_size_up: steps of the lr's rise (the momentum's fall).
        step_size_down: steps of the lr's fall (default: step_size_up).
        mode: "triangular", "triangular2" or "exp_range", as in cyclic.
        gamma: γ of "exp_range".
        base_momentum: the lowest momentum (at the lr's top).
        max_momentum: the highest momentum.
    """

    def __init__(self, step_size_up: int, step_size_down: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0,
                 base_momentum: float = 0.8, max_momentum: float = 0.9):
        self.step_size_up = _int("step_size_up", step_size_up, 1)
        self._set_cycle(step_size_down, mode, gamma)
        self.base_momentum = _momentum("base_momentum", base_momentum)
        self.max_momentum = _momentum("max_momentum", max_momentum)

    def value(self, t: int) -> float:
        h, s = self._height_and_scale(t)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * h * s


class cosine_restarts(Schedule):
    """Cosine annealing with warm restarts, SGDR (Loshchilov & Hutter 2017, eq. 5):
    m + (1 − m)·½(1 + cos(π·T_cur / T_i)), where T_cur counts the steps since the last
    restart, the first period is T_0 = ``first_period`` steps and each period is
    ``period_mult`` times the one before (T_i = T_0·mult^i); m = ``min_ratio``.

    Equals torch's ``CosineAnnealingWarmRestarts(T_0=first_period, T_mult=period_mult,
    eta_min=m·lr)`` stepped once per optimizer step, at every step. It has no end: it
    restarts for as long as it is stepped, as torch's does (the floor m itself is never
    reached: the step that would reach it is the restart, back at 1).

    Args:
        first_period: T_0, the length of the first period.
        period_mult: each period's length over the previous one's.
        min_ratio: m, the floor as a fraction of the base lr.
    """

    def __init__(self, first_period: int, period_mult: int = 1, min_ratio: float = 0.0):
        self.first_period = _torch_int(
            first_period, 1,
            f"Expected positive integer first_period, but got {first_period!r}")
        self.period_mult = _torch_int(
            period_mult, 1,
            f"Expected integer period_mult >= 1, but got {period_mult!r}")
        self.min_ratio = _ratio("min_ratio", min_ratio)

    def value(self, t: int) -> float:
        T_i, T_cur = self.first_period, t
        if self.period_mult == 1:
            T_cur = t % T_i
        else:
            while T_cur >= T_i:
                T_cur -= T_i
                T_i *= self.period_mult
        m = self.min_ratio
        return m + (1.0 - m) * (1 + math.cos(math.pi * T_cur / T_i)) / 2


class polynomial(Schedule):
    """Polynomial decay to 0: (1 − t/T)^power for t ≤ T = ``total_steps``, then 0.

    Equals torch's ``PolynomialLR(total_iters=T, power=power)`` at every step, past T
    included (torch computes it as a running product of ratios; the difference is
    round-off). With ``warmup_steps=W`` the first W steps are t/W instead and the decay
    still counts from step 0: power 1 is then BERT's schedule exactly as its reference
    code builds it (``polynomial_decay`` to 0 over all T steps, the warmup overriding the
    first W; Devlin et al. 2019). Transformers' ``get_linear_schedule_with_warmup``
    (:class:`warmup_linear`) and ``get_polynomial_decay_schedule_with_warmup``
    (:class:`warmup_polynomial`) decay over the T − W steps after the warmup instead.

    Args:
        total_steps: T, the length of the schedule in steps.
        power: the exponent.
        warmup_steps: W: the first W steps are t/W instead.
    """

    def __init__(self, total_steps: int, power: float = 1.0, warmup_steps: int = 0):
        self.total_steps = _int("total_steps", total_steps, 1)
        self.power = _positive("power", power)
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)
        _warmup_within(self.warmup_steps, self.total_steps)

    def value(self, t: int) -> float:
        if t < self.warmup_steps:
            return _warmup(t, self.warmup_steps)
        return (1.0 - min(t, self.total_steps) / self.total_steps) ** self.power


class warmup_polynomial(Schedule):
    """Linear warmup over W steps, then a polynomial decay from 1 to m = ``min_ratio`` at T:
    m + (1 − m)·(1 − (t − W)/(T − W))^power, then m.

    Transformers' ``get_polynomial_decay_schedule_with_warmup(lr_end=m·lr, power=...)``
    (whose ``lr_end`` is an absolute lr, default 1e-7; here a fraction of the base lr,
    default 0). Power 1 and m = 0 give :class:`warmup_linear`. Where transformers' formula
    divides by zero (W = T, at step T), this one is at m, as at every step from T on.

    Args:
        warmup_steps: W, the number of warmup steps.
        total_steps: T, the length of the schedule in steps.
        power: the exponent.
        min_ratio: m, the floor as a fraction of the base lr.
    """

    def __init__(self, warmup_steps: int, total_steps: int, power: float = 1.0,
                 min_ratio: float = 0.0):
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)
        self.total_steps = _int("total_steps", total_steps, 1)
        _warmup_within(self.warmup_steps, self.total_steps)
        self.power = _positive("power", power)
        self.min_ratio = _ratio("min_ratio", min_ratio)

    def value(self, t: int) -> float:
        W, T, m = self.warmup_steps, self.total_steps, self.min_ratio
        if t < W:
            return _warmup(t, W)
        if t >= T:
            return m
        return m + (1.0 - m) * (1 - (t - W) / (T - W)) ** self.power


_PLATEAU_MODES = ("min", "max")
_THRESHOLD_MODES = ("rel", "abs")


class ReduceOnPlateau(Schedule):
    """Reduce the lr when a metric stops improving: torch's ``ReduceLROnPlateau`` rule.

    ``step(metric)`` (once per evaluation, say per epoch) compares the metric with the
    best so far: it improves if it is below best·(1 − ``threshold``) (``threshold_mode=
    "rel"``) or best − ``threshold`` (``"abs"``), above best·(1 + threshold) or best +
    threshold with ``mode="max"``. After more than ``patience`` evaluations in a row
    without improvement the multiplier becomes max(multiplier·``factor``, ``min_ratio``)
    (unless that changes it by no more than ``eps``) and the next ``cooldown``
    evaluations count as neither good nor bad. ``step`` returns the multiplier; calling
    the object, ``schedule(step)``, returns the current one whatever the step, so that
    ``LambdaLR`` applies it::

        plateau = ReduceOnPlateau(patience=2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plateau)
        for epoch in range(epochs):
            train_one_epoch(optimizer)          # optimizer.step() per batch
            plateau.step(validation_loss())
            scheduler.step()                    # the new multiplier reaches the optimizer

    which gives the lrs of ``ReduceLROnPlateau(optimizer, mode, factor, patience,
    threshold, threshold_mode, cooldown, min_lr=min_ratio·lr, eps=eps·lr)`` with
    ``scheduler.step(validation_loss())`` in place of the last two lines. ``min_ratio``
    and ``eps`` are fractions of the base lr (torch's ``min_lr`` and ``eps`` are lrs).
    The state (``multiplier``, ``best``, ``num_bad_epochs``, ``cooldown_counter``, torch's
    names) is in the object's attributes, so ``LambdaLR.state_dict()`` saves it and
    ``load_state_dict`` restores it.

    Args:
        mode: "min" (a loss) or "max" (an accuracy).
        factor: the factor applied at a plateau.
        patience: evaluations without improvement tolerated before reducing.
        threshold: the least change that counts as an improvement.
        threshold_mode: "rel" or "abs".
        cooldown: evaluations to wait after a reduction before counting again.
        min_ratio: m, the floor as a fraction of the base lr.
        eps: reductions smaller than this are skipped.
    """

    __hash__ = None  # it changes as it steps

    def __init__(self, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_ratio: float = 0.0, eps: float = 1e-8):
        if mode not in _PLATEAU_MODES:
            raise ValueError(f"mode {mode!r} is unknown! (use 'min' or 'max')")
        if threshold_mode not in _THRESHOLD_MODES:
            raise ValueError(
                f"threshold_mode {threshold_mode!r} is unknown! (use 'rel' or 'abs')")
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) \
                or not 0.0 <= factor < 1.0:
            raise ValueError(f"Factor should be < 1.0 (and >= 0), got factor={factor!r}")
        self.mode = mode
        self.factor = float(factor)
        self.patience = _int("patience", patience, 0)
        self.threshold = _nonnegative("threshold", threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = _int("cooldown", cooldown, 0)
        self.min_ratio = _ratio("min_ratio", min_ratio)
        self.eps = _nonnegative("eps", eps)
        self.multiplier = 1.0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _is_better(self, a: float) -> bool:
        best, th = self.best, self.threshold
        if self.mode == "min":
            return a < best * (1.0 - th) if self.threshold_mode == "rel" else a < best - th
        return a > best * (th + 1.0) if self.threshold_mode == "rel" else a > best + th

    def step(self, metric) -> float:
        """Take one evaluation of the metric (a number or a 0-dim tensor); return the
        multiplier from now on."""
        current = float(metric)
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad evaluations in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            reduced = max(self.multiplier * self.factor, self.min_ratio)
            if self.multiplier - reduced > self.eps:
                self.multiplier = reduced
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        return self.multiplier

    def value(self, t: int) -> float:
        return self.multiplier

    def __repr__(self) -> str:
        args = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
                "min_ratio", "eps")
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in args)})"


class LambdaMomentum:
    """Set each group's momentum from ``momentum_fn(t)`` (t = completed optimizer steps),
    as ``LambdaLR`` sets its lr: into ``betas[0]`` when the optimizer has ``betas``
    (Adam, AdamW, NAdam, …), else into ``momentum`` (SGD, RMSprop). It writes step 0's
    value when it is made and the next one at each ``step()``, after ``optimizer.step()``::

        lr = optlib.schedules.one_cycle(1000)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr)
        momentum = optlib.schedules.LambdaMomentum(optimizer, lr.momentum())
        # loop: optimizer.step(); scheduler.step(); momentum.step()

    That is what torch's ``OneCycleLR`` and ``CyclicLR`` do with ``cycle_momentum=True``,
    with the same numbers (see :class:`one_cycle_momentum`, :class:`cyclic_momentum`).
    ``momentum_fn`` may be a list, one per parameter group.

    Args:
        optimizer: the optimizer whose groups' momentum (or β₁) is set.
        momentum_fn: t → the momentum after t completed steps.
    """

    def __init__(self, optimizer, momentum_fn):
        defaults = getattr(optimizer, "defaults", {})
        if "momentum" not in defaults and "betas" not in defaults:
            raise ValueError(
                f"optimizer must support momentum or beta1 to cycle the momentum; "
                f"{type(optimizer).__name__} has neither")
        self.optimizer = optimizer
        self.use_beta1 = "betas" in defaults
        groups = optimizer.param_groups
        if isinstance(momentum_fn, (list, tuple)):
            if len(momentum_fn) != len(groups):
                raise ValueError(
                    f"Expected {len(groups)} momentum_fns, but got {len(momentum_fn)}")
            self.momentum_fns = list(momentum_fn)
        else:
            self.momentum_fns = [momentum_fn] * len(groups)
        self.last_step = 0
        self._write()

    def _write(self) -> None:
        for group, fn in zip(self.optimizer.param_groups, self.momentum_fns, strict=True):
            m = fn(self.last_step)
            if self.use_beta1:
                group["betas"] = (m, *group["betas"][1:])
            else:
                group["momentum"] = m

    def step(self) -> None:
        """Advance one optimizer step and write its momentum into the groups."""
        self.last_step += 1
        self._write()

    def state_dict(self) -> dict:
        """The step count, to save beside the optimizer's and the lr scheduler's state."""
        return {"last_step": self.last_step}

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume the count (the optimizer's own state_dict carries the momentum)."""
        self.last_step = int(state_dict["last_step"])
