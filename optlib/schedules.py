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
=====================  =============================================================
"""

from __future__ import annotations

import math
import numbers
import operator

__all__ = [
    "Schedule", "constant", "step_decay", "exponential", "cosine", "linear_decay",
    "inverse_sqrt", "noam", "warmup_cosine", "warmup_linear", "wsd",
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
    """Multiply by ``gamma`` every ``step_size`` steps: γ^⌊t / step_size⌋ (torch's ``StepLR``)."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _positive("gamma", gamma)

    def value(self, t: int) -> float:
        return _power(self.gamma, t // self.step_size)


class exponential(Schedule):
    """γ^t (torch's ``ExponentialLR``)."""

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
    """

    @staticmethod
    def decay(t: int, T: int, m: float) -> float:
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * t / T))


class linear_decay(_DecayToFloor):
    """A straight line from 1 at t = 0 to ``min_ratio`` at t = T, then ``min_ratio``."""

    @staticmethod
    def decay(t: int, T: int, m: float) -> float:
        return 1.0 - (1.0 - m) * t / T


class inverse_sqrt(Schedule):
    """Linear warmup over W steps, then 1 / sqrt((t + τ − W) / τ) with timescale τ
    (default W, or 10 000 when W = 0): with τ = W this is sqrt(W / t).
    Transformers' ``get_inverse_sqrt_schedule``; the decay of Vaswani et al. (2017)."""

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
    (transformers' ``get_linear_schedule_with_warmup``; BERT's schedule)."""

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
