"""The book's training loop: one function, :func:`fit`, and one record, :class:`History`.

Every chapter trains through :func:`fit`, whatever it trains:

* the optimizer is a ``torch.optim.Optimizer`` (optlib's or torch's) or a from-scratch
  ``Rule`` written in a chapter, ``rule(params, grads, state, **hyper)``;
* the data is an iterator of ``(x, y)`` batches or a *task* with ``batch(t)``
  (:class:`~optlib.book.data.LMTask`, :class:`~optlib.book.data.DigitsTask`), whose batch of
  step ``t`` is fixed, so a run restarted from a :class:`Checkpoint` at step ``t`` sees
  the batches it would have seen;
* the learning rate of step ``t`` is the base rate times ``schedule(t)`` (what
  ``LambdaLR`` does), or a torch scheduler steps after every step; a
  :class:`~optlib.schedules.ReduceOnPlateau` schedule reads each evaluation, and
  ``momentum(t)`` cycles the momentum (or Adam's β₁) as torch's ``OneCycleLR`` does;
* the gradient is that of ``loss_fn(model(x), y)``, optionally under ``autocast`` with a
  ``GradScaler`` (mixed precision), or whatever a ``gradient`` callable puts into
  ``.grad`` (:func:`~optlib.book.scale.accumulate`: gradient accumulation over
  micro-batches); the optimizer steps once per batch either way;
* ``clip`` bounds the global gradient norm; ``save_at`` keeps checkpoints, ``start``
  branches a run from one; ``hooks`` see every step (:class:`Step`), and
  :class:`SophiaHessian` is such a hook;
* one divergence rule: a minibatch loss that is not finite (or above ``diverge_above``,
  when given) stops training and is recorded as the last loss, with ``History.diverged``
  set; ``reject`` stops it the same way at a batch the caller refuses to step on
  (``History.rejected``: a rollback guard); ``stop`` ends a run early at an evaluation
  (train until a target loss).

The toy problems (a point on a surface, a scalar, a matrix quadratic) have no model and no
data: :func:`descend` is their loop, with :func:`fit`'s schedule (:class:`LRSchedule`),
hooks (:class:`Step`) and divergence rule, and returns a :class:`Descent` (the path and
the loss at every point).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optlib.clipping import clip_grad_norm_
from optlib.schedules import LambdaMomentum

from .progress import progress as _progress

__all__ = ["Rule", "History", "Checkpoint", "Step", "SophiaHessian", "LRSchedule", "fit",
           "Descent", "descend", "fit_split",
           "epochs", "digits_run", "lm_run", "cross_entropy", "accuracy", "evaluate_loss",
           "evaluating"]

# A from-scratch update rule: ``rule(params, grads, state, **hyper)`` changes ``params`` in
# place; ``state`` is a dict the rule owns (empty on the first call).
Rule = Callable[..., None]


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy; sequence logits (B, T, V) with targets (B, T) are flattened.

    Args:
        logits: (B, C) or (B, T, C) scores.
        targets: (B,) or (B, T) class indices.
    """
    if logits.dim() > 2:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return F.cross_entropy(logits, targets)


@dataclass
class Checkpoint:
    """Weights and optimizer state after ``step`` completed steps.

    Args:
        step: the number of completed steps.
        model: the model's ``state_dict`` (a deep copy).
        optimizer: the optimizer's ``state_dict`` (a deep copy).
    """

    step: int
    model: dict
    optimizer: dict


@dataclass
class Step:
    """What a hook of :func:`fit` or :func:`descend` sees after the optimizer step ``t``
    (counted from 0).

    Args:
        t: the step just taken.
        model: the model, after the step (``None`` in :func:`descend`).
        optimizer: the optimizer (``None`` for a rule).
        x: the step's inputs; in :func:`descend`, the point (after the step, with the
            step's gradient in ``x.grad``).
        y: the step's targets (``None`` in :func:`descend`).
        loss: the step's minibatch loss (before the step).
        lr: the first group's learning rate used by the step.
    """

    t: int
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    x: Tensor
    y: Tensor
    loss: float
    lr: float


@dataclass
class History:
    """What :func:`fit` saw, step by step (index k: the k-th step of the run).

    Args:
        loss: the minibatch loss before each step (the last one not finite if diverged).
        lr: the first group's learning rate used by each step.
        grad_norm: the global gradient norm of each step, before clipping.
        update_ratio: ‖Δθ‖/‖θ‖ of each step over all parameters.
        update_rms: RMS(Δθ) of each step divided by its learning rate.
        seconds: the wall-clock time of each step: the batch, the forward and backward
            passes, clipping and the optimizer step (not the loop's own measurements,
            hooks or evaluations; on a GPU, unsynchronized).
        eval_steps: completed-step counts at which ``evaluate()`` ran.
        eval: the ``evaluate()`` values there.
        val_loss: a task's validation loss after training (nan otherwise).
        diverged: the loss stopped being finite (training stopped there).
        rejected: ``reject`` refused the last batch, whose loss is the last loss and took
            no step (training stopped there).
        stopped: ``stop`` accepted an evaluation (training stopped there).
        checkpoints: the :class:`Checkpoint` of each ``save_at`` step.
        model: the trained model.
        optimizer: the optimizer (``None`` for a rule).
    """

    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    update_ratio: list = field(default_factory=list)
    update_rms: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    eval: list = field(default_factory=list)
    val_loss: float = math.nan
    diverged: bool = False
    rejected: bool = False
    stopped: bool = False
    checkpoints: dict = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)
    optimizer: torch.optim.Optimizer | None = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        """The number of optimizer steps taken (a diverged run's last loss took none)."""
        return len(self.grad_norm)

    def final(self, n: int = 20) -> float:
        """Mean of the last ``n`` losses (``inf`` if training diverged).

        Args:
            n: how many of the last losses to average.
        """
        if self.diverged:
            return math.inf
        tail = self.loss[-n:]
        return sum(tail) / len(tail) if tail else math.nan

    def __repr__(self) -> str:
        last = f"{self.final():.4g}" if self.loss else "-"
        return (f"History(steps={len(self.loss)}, final_loss={last}, "
                f"diverged={self.diverged}, evals={len(self.eval)})")


class SophiaHessian:
    """A hook of :func:`fit` for :class:`optlib.SophiaG`: the step gets ``bs`` = the number
    of predictions in the batch, and every ``every`` steps the Hessian estimate is refreshed
    with :func:`optlib.gnb_update_hessian` (Gauss–Newton–Bartlett), as in the authors'
    training loop.

    Args:
        every: steps between two Hessian refreshes.
    """

    def __init__(self, every: int = 10):
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every = every

    def step_kwargs(self, x: Tensor, y: Tensor) -> dict:
        """Keyword arguments of ``optimizer.step`` for the batch ``(x, y)``.

        Args:
            x: the step's inputs.
            y: the step's targets.
        """
        return {"bs": y.numel()}

    def __call__(self, step: Step) -> None:
        from optlib import gnb_update_hessian

        gnb_update_hessian(step.optimizer, step.model, step.x, step=step.t, every=self.every,
                           generator=torch.Generator().manual_seed(step.t))


def _norm(tensors: list[Tensor]) -> float:
    if not tensors:
        return 0.0
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))).item()


def _reads_metric(schedule) -> bool:
    """A ``t -> multiplier`` schedule that also reads a metric (``ReduceOnPlateau``)."""
    return hasattr(schedule, "step") and not isinstance(
        schedule, torch.optim.lr_scheduler.LRScheduler)


class LRSchedule:
    """The learning rate of every step, for :func:`fit` and :func:`descend`.

    ``schedule`` is ``None`` (the rates stay), a ``t -> multiplier`` callable (step ``t``
    uses every group's base lr times ``schedule(t)``, what ``LambdaLR`` does, written into
    the groups by :meth:`before`), or a torch scheduler (stepped by :meth:`after`).

    Args:
        schedule: ``None``, a ``t -> multiplier`` callable or a torch ``LRScheduler``.
        groups: the optimizer's ``param_groups``, or ``[hyper]`` for a rule (whose
            ``hyper["lr"]`` is then its base lr).
        rule: whether ``groups`` is a rule's ``[hyper]``.
    """

    def __init__(self, schedule, groups: list, rule: bool = False):
        self.scheduler = None
        if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler):
            self.scheduler, schedule = schedule, None
        elif schedule is not None and not callable(schedule):
            raise ValueError("schedule must be a step -> multiplier callable or a torch "
                             f"scheduler, got {schedule!r}")
        if rule and schedule is not None and "lr" not in groups[0]:
            raise ValueError("a rule with a schedule needs its base lr in hyper['lr']")
        self.schedule = schedule
        self.groups = groups
        self.base_lrs = [g.get("lr", math.nan) for g in groups]

    def rebind(self, groups: list) -> None:
        """Write the base rates into ``groups``, which replace the old ones (after
        ``load_state_dict``, whose groups hold the scheduled rates).

        Args:
            groups: the new ``param_groups``.
        """
        self.groups = groups
        for g, lr in zip(groups, self.base_lrs, strict=True):
            g["lr"] = lr

    def before(self, t: int) -> float:
        """Set the rates of step ``t``; return the first group's.

        Args:
            t: the step about to be taken, counted from 0.
        """
        if self.schedule is not None:
            mult = self.schedule(t)
            for g, lr in zip(self.groups, self.base_lrs, strict=True):
                g["lr"] = lr * mult
        return float(self.groups[0].get("lr", math.nan))

    def after(self) -> None:
        """After a step: step the torch scheduler, if any."""
        if self.scheduler is not None:
            self.scheduler.step()


def _checkpoint(t: int, model: nn.Module, optimizer) -> Checkpoint:
    state = {} if optimizer is None else copy.deepcopy(optimizer.state_dict())
    return Checkpoint(t, copy.deepcopy(model.state_dict()), state)


def fit(model: nn.Module, optimizer, data, steps: int, *, loss_fn: Callable = cross_entropy,
        schedule=None, momentum: Callable[[int], float] | None = None,
        clip: float | None = None, evaluate: Callable[[], float] | None = None,
        eval_every: int = 50, hooks: Sequence[Callable[[Step], None]] = (),
        start: Checkpoint | None = None, save_at: Iterable[int] = (),
        hyper: dict | None = None, loss_scale: float = 1.0, validate: bool = True,
        diverge_above: float | None = None, reject: Callable[[float], bool] | None = None,
        stop: Callable[[float], bool] | None = None,
        gradient: Callable[[nn.Module, Tensor, Tensor], float] | None = None,
        autocast: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
        progress: bool | None = None) -> History:
    """Train ``model`` until ``steps`` steps are done; return the :class:`History`.

    The loss of step ``t`` is ``loss_fn(model(x), y)`` on the step's batch. Deterministic
    on CPU for a fixed seed.

    Args:
        model: the model to train (in place).
        optimizer: a ``torch.optim.Optimizer``, or a from-scratch ``Rule`` called as
            ``rule(params, grads, state, **hyper)`` without gradients.
        data: an iterator of ``(x, y)`` batches, or a task with ``batch(t)`` (and
            ``val_loss(model)``, recorded in ``History.val_loss`` after training).
        steps: the number of completed steps at which to stop (a run from ``start``
            takes ``steps - start.step`` steps).
        loss_fn: ``loss_fn(outputs, targets)``, a scalar.
        schedule: a ``t -> multiplier`` callable: step ``t`` uses every group's base lr
            (a rule: ``hyper["lr"]``) times ``schedule(t)``, as ``LambdaLR`` does; or a
            torch scheduler, stepped after every step. A schedule with a ``step(metric)``
            method (:class:`~optlib.schedules.ReduceOnPlateau`) is also stepped with the
            value of every evaluation after a step, so it needs ``evaluate``.
        momentum: a ``t -> momentum`` callable (``one_cycle(T).momentum()``): step ``t``
            uses it as every group's momentum, or β₁ for an optimizer with ``betas``,
            written by :class:`~optlib.schedules.LambdaMomentum`, as torch's
            ``OneCycleLR`` cycles it against the rate.
        clip: the largest global gradient norm (``optlib.clipping.clip_grad_norm_``).
        evaluate: a float metric, computed in eval mode without gradients before training,
            every ``eval_every`` steps and after the last step.
        eval_every: steps between two evaluations.
        hooks: callables ``hook(step: Step)`` called after every step; a hook with a
            ``step_kwargs(x, y)`` method adds keyword arguments to ``optimizer.step``
            (:class:`SophiaHessian`).
        start: a :class:`Checkpoint` to resume from (weights, optimizer state, step count).
        save_at: completed-step counts at which to keep a :class:`Checkpoint`.
        hyper: keyword arguments of a rule.
        loss_scale: the gradient is that of ``loss_scale * loss`` (the recorded loss is
            unscaled): a scale-invariant method must not depend on it.
        validate: record a task's ``val_loss(model)`` after training.
        diverge_above: a finite loss above this also counts as diverged (a run whose loss
            has grown by orders of magnitude is not coming back).
        reject: ``reject(loss)`` on each minibatch loss, before the divergence rule and
            before the backward pass (after ``gradient``, which does both): true stops
            training there without a step, the loss recorded as the last one
            (``History.rejected``); a caller that rolls back and skips the batch resumes
            from a checkpoint (:func:`optlib.book.scale.train_with_rollback`).
        stop: ``stop(value)`` on each value of ``evaluate`` (the one before training
            included): true ends training there (``History.stopped``).
        gradient: ``gradient(model, x, y)``, called after ``zero_grad`` instead of the
            forward and backward passes: it fills ``.grad`` with the batch's gradient and
            returns the batch's loss (:func:`optlib.book.scale.accumulate` over
            micro-batches). Clipping, the step, the schedule and the hooks still happen
            once per batch. Not with ``loss_scale``, ``autocast`` or ``scaler``.
        autocast: run the forward pass and the loss under ``torch.autocast`` in this
            dtype (``torch.bfloat16``, ``torch.float16``) on the batch's device; the
            weights, gradients and optimizer state keep their own dtype.
        scaler: a ``torch.amp.GradScaler`` (float16): the backward pass runs on the
            scaled loss, the gradients are unscaled before clipping (so ``clip`` and
            ``History.grad_norm`` see the true ones), and ``scaler.step`` skips a step
            whose gradients hold an inf or NaN, then ``scaler.update`` adjusts the scale.
        progress: show a bar (default: yes, except under pytest/nbval or with
            ``OPTLIB_PROGRESS=0``).

    Returns:
        The :class:`History`; ``History.model`` and ``History.optimizer`` are the ones trained.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not (isinstance(eval_every, int) and eval_every >= 1):
        raise ValueError(f"eval_every must be a positive integer, got {eval_every!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive or None, got {clip}")
    if not loss_scale > 0:
        raise ValueError(f"loss_scale must be positive, got {loss_scale}")
    is_rule = not isinstance(optimizer, torch.optim.Optimizer)
    if is_rule and not callable(optimizer):
        raise ValueError(f"optimizer must be a torch optimizer or a rule, got {optimizer!r}")
    if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler) and start is not None:
        raise ValueError("start needs a step -> multiplier schedule, not a torch scheduler")
    plateau = schedule if _reads_metric(schedule) else None
    if stop is not None and evaluate is None:
        raise ValueError("stop needs evaluate: the values it reads")
    if plateau is not None and evaluate is None:
        raise ValueError("a schedule with step(metric), such as ReduceOnPlateau, needs "
                         "evaluate: the metric it reads")
    if gradient is not None and not callable(gradient):
        raise ValueError(f"gradient must be a callable (model, x, y) -> loss, got {gradient!r}")
    if gradient is not None and (loss_scale != 1.0 or autocast is not None
                                 or scaler is not None):
        raise ValueError("gradient computes the loss and its gradient itself: it takes no "
                         f"loss_scale ({loss_scale}), autocast ({autocast}) or scaler")
    if autocast is not None and not isinstance(autocast, torch.dtype):
        raise ValueError(f"autocast must be a torch dtype or None, got {autocast!r}")
    if scaler is not None and (is_rule or not isinstance(scaler, torch.amp.GradScaler)):
        raise ValueError("scaler must be a torch.amp.GradScaler, with a torch optimizer; "
                         f"got {scaler!r} with {optimizer!r}")
    if scaler is not None and loss_scale != 1.0:
        raise ValueError(f"loss_scale ({loss_scale}) and scaler both scale the loss: pass one")
    if momentum is not None and (is_rule or not callable(momentum)):
        raise ValueError("momentum must be a step -> momentum callable, with a torch "
                         f"optimizer; got {momentum!r} with {optimizer!r}")
    hyper = dict(hyper or {})
    rates = LRSchedule(schedule, [hyper] if is_rule else optimizer.param_groups, is_rule)
    first = 0
    if start is not None:
        model.load_state_dict(start.model)
        if not is_rule:
            optimizer.load_state_dict(copy.deepcopy(start.optimizer))   # reusable
            # loading replaced the group dicts, holding the scheduled lr: restore the base
            rates.rebind(optimizer.param_groups)
        first = start.step
    save_at = set(save_at)
    task = data if hasattr(data, "batch") else None
    it = None if task is not None else iter(data)
    history = History()
    params = [p for p in model.parameters() if p.requires_grad]
    rule_state: dict = {}
    kwarg_hooks = [h for h in hooks if hasattr(h, "step_kwargs")]

    def run_eval(step: int) -> None:
        if evaluate is None:
            return
        with evaluating(model):
            value = float(evaluate())
        history.eval_steps.append(step)
        history.eval.append(value)
        if plateau is not None and step > first:
            plateau.step(value)
        if stop is not None and stop(value):
            history.stopped = True

    # writes momentum(first) now and the next step's value after every step
    cycler = None if momentum is None else LambdaMomentum(optimizer,
                                                          lambda t: momentum(first + t))
    if hasattr(optimizer, "train"):     # schedule-free: gradients are taken at y
        optimizer.train()
    model.train()
    run_eval(first)
    for t in _progress(range(first, steps), total=steps - first, desc="train",
                       enabled=progress):
        if history.stopped:
            break
        if t in save_at:
            history.checkpoints[t] = _checkpoint(t, model, None if is_rule else optimizer)
        lr_now = rates.before(t)
        tick = time.perf_counter()
        x, y = task.batch(t) if task is not None else next(it)
        (model if is_rule else optimizer).zero_grad(set_to_none=True)
        if gradient is not None:
            value = float(gradient(model, x, y))
        else:
            with (contextlib.nullcontext() if autocast is None
                  else torch.autocast(x.device.type, dtype=autocast)):
                loss = loss_fn(model(x), y)
            value = loss.item()
        history.loss.append(value)
        history.lr.append(lr_now)
        if reject is not None and reject(value):
            history.rejected = True
            break
        if not math.isfinite(value) or (diverge_above is not None and value > diverge_above):
            history.diverged = True
            break
        if gradient is None:
            if scaler is not None:
                loss = scaler.scale(loss)
            elif loss_scale != 1.0:
                loss = loss * loss_scale
            loss.backward()
        if scaler is not None:
            scaler.unscale_(optimizer)      # the true gradients, for clip and grad_norm
        if clip is not None:
            norm = float(clip_grad_norm_(params, clip))
        spent = time.perf_counter() - tick
        if clip is None:
            norm = _norm([p.grad for p in params if p.grad is not None])
        history.grad_norm.append(norm)
        before = [p.detach().clone() for p in params]
        tick = time.perf_counter()
        if is_rule:
            with torch.no_grad():
                optimizer(params, [p.grad for p in params], rule_state, **hyper)
        else:
            kwargs = {}
            for h in kwarg_hooks:
                kwargs.update(h.step_kwargs(x, y))
            if scaler is None:
                optimizer.step(**kwargs)
            else:
                scaler.step(optimizer, **kwargs)    # skipped if a gradient is inf or NaN
                scaler.update()
        history.seconds.append(spent + time.perf_counter() - tick)
        with torch.no_grad():
            delta = _norm(torch._foreach_sub([p.detach() for p in params], before))
        theta = _norm(before)
        history.update_ratio.append(delta / theta if theta > 0 else math.inf)
        rms = delta / math.sqrt(sum(p.numel() for p in params))
        history.update_rms.append(rms / lr_now if lr_now > 0 else math.nan)
        rates.after()
        if cycler is not None:
            cycler.step()
        if hooks:
            info = Step(t, model, None if is_rule else optimizer, x, y, value, lr_now)
            for h in hooks:
                h(info)
        if (t + 1) % eval_every == 0 or t + 1 == steps:
            run_eval(t + 1)
    if steps in save_at and not (history.diverged or history.rejected or history.stopped):
        history.checkpoints[steps] = _checkpoint(steps, model, None if is_rule else optimizer)
    if hasattr(optimizer, "eval"):      # schedule-free: evaluate at the averaged weights x
        optimizer.eval()
    if validate and task is not None and hasattr(task, "val_loss") and not history.diverged:
        history.val_loss = task.val_loss(model)
    history.model, history.optimizer = model, None if is_rule else optimizer
    return history


@dataclass
class Descent:
    """What :func:`descend` saw: the point and its loss after every step.

    Args:
        path: the points x_0 .. x_steps, float64, shape ``(steps + 1, *start.shape)``;
            the rows after the last point reached (a diverged or stopped run) are NaN.
        loss: the loss at each point reached (the last one not finite if diverged).
        diverged: a loss was not finite (the run stopped at that point).
        stopped: ``stop`` accepted the last point reached (the run stopped there).
        point: the tensor that was optimized, at its last value.
        optimizer: the optimizer (``None`` for a rule).
    """

    path: Tensor
    loss: list = field(default_factory=list)
    diverged: bool = False
    stopped: bool = False
    point: Tensor | None = field(default=None, repr=False)
    optimizer: torch.optim.Optimizer | None = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        """The number of steps taken (to the last point reached)."""
        return len(self.loss) - 1


def descend(optimizer: Callable, start, steps: int, *,
            loss: Callable[[Tensor], Tensor] | None = None,
            gradient: Callable[[Tensor], Tensor] | None = None,
            gradients: Tensor | Sequence | None = None, hyper: dict | None = None,
            schedule=None, hooks: Sequence[Callable[[Step], None]] = (),
            noise: float = 0.0, seed: int = 0, stop: Callable[[Tensor], bool] | None = None,
            dtype: torch.dtype = torch.float64) -> Descent:
    """Minimize a toy objective ``loss(x)`` of one tensor ``x`` from ``start``:
    the loop of the book's small problems (surfaces, a scalar, a quadratic in a matrix),
    as :func:`fit` is the loop of its models. Deterministic.

    Each step computes the gradient (autograd on ``loss``, or ``gradient(x)``, plus
    Gaussian noise of std ``noise``) inside a closure handed to ``optimizer.step``, so
    optimizers that need a closure (L-BFGS) work too. The learning rate follows
    ``schedule`` (:class:`LRSchedule`, as in :func:`fit`); ``hooks`` see every step as a
    :class:`Step` whose ``x`` is the point (with the step's gradient in ``x.grad``) and
    ``model``, ``y`` are ``None``; a hook with ``step_kwargs(x, y)`` adds keyword
    arguments to ``optimizer.step``. The divergence rule is :func:`fit`'s: a loss that is
    not finite ends the run at that point.

    Args:
        optimizer: ``params -> optimizer`` (called with ``[x]``), or, with ``hyper``, a
            from-scratch rule ``rule(params, grads, state, **hyper)``, called without
            gradients.
        start: the first point (any shape; copied).
        steps: the most steps to take.
        loss: ``x -> scalar tensor``, the objective.
        gradient: ``x -> tensor``, the exact gradient, used instead of autograd (the
            loss is then computed without gradients, only to be recorded).
        gradients: instead of ``loss``, the gradient ``g_t`` of every step given in
            advance, shape ``(steps, *start.shape)``: synthetic gradients, which depend
            on the step and not on the point (pure noise, a sudden jump). Step ``t``'s
            loss is then the linear ``<g_t, x>``, whose gradient ``g_t`` is (the last
            point's: the last step's).
        hyper: the keyword arguments of a rule (``{}`` for none); ``None`` for a factory.
        schedule: ``None``, a ``t -> multiplier`` callable, or a torch scheduler.
        hooks: callables ``hook(step: Step)`` called after every step.
        noise: the standard deviation of the noise added to every gradient.
        seed: the seed of the noise's generator (fresh for every run).
        stop: ``stop(x)`` at every point reached (the start included): true ends the
            run there (``Descent.stopped``).
        dtype: the point's dtype (the path is recorded in float64).

    Returns:
        The :class:`Descent`.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    is_rule = hyper is not None
    if not callable(optimizer):
        raise ValueError(f"optimizer must be a factory or a rule, got {optimizer!r}")
    # as_tensor(...).clone(): a list or a tensor (torch.tensor(tensor) warns), never aliased
    x = torch.as_tensor(start, dtype=dtype).clone().requires_grad_(True)
    if (loss is None) == (gradients is None):
        raise ValueError("give loss (and, if known, gradient) or gradients, not both or "
                         "neither")
    t = 0                       # the step being taken (the closures below read it)
    if gradients is not None:
        if gradient is not None:
            raise ValueError("gradients are the steps' gradients: give no gradient")
        given = torch.as_tensor(gradients, dtype=dtype)
        if given.shape != (steps, *x.shape):
            raise ValueError(f"gradients must have shape {(steps, *x.shape)} (steps, "
                             f"*start.shape), got {tuple(given.shape)}")

        def gradient(point):    # a synthetic gradient: the step's, wherever the point is
            return given[min(t, steps - 1)].clone()

        def loss(point):        # <g_t, x>: the linear loss whose gradient is g_t
            if not steps:
                return torch.zeros((), dtype=point.dtype)
            return (given[min(t, steps - 1)] * point).sum()
    opt = None if is_rule else optimizer([x])
    hyper = dict(hyper or {})
    rates = LRSchedule(schedule, [hyper] if is_rule else opt.param_groups, is_rule)
    generator = torch.Generator().manual_seed(seed)
    rule_state: dict = {}
    kwarg_hooks = [h for h in hooks if hasattr(h, "step_kwargs")]
    record = Descent(torch.full((steps + 1, *x.shape), math.nan, dtype=torch.float64),
                     point=x, optimizer=opt)
    first: list = []            # the loss at the point the step starts from

    def closure():
        x.grad = None
        if gradient is None:
            value = loss(x)
            value.backward()
        else:
            with torch.no_grad():
                value = loss(x)
                x.grad = gradient(x)
        if noise:
            x.grad.add_(torch.randn(x.shape, generator=generator, dtype=x.dtype),
                        alpha=noise)
        if not first:
            first.append(value.item())
        return value

    record.path[0] = x.detach()
    for t in range(steps + 1):
        if stop is not None and stop(x.detach()):
            record.stopped = True
        if t == steps or record.stopped:
            with torch.no_grad():
                record.loss.append(float(loss(x)))
            record.diverged = not math.isfinite(record.loss[-1])
            break
        lr = rates.before(t)
        first.clear()
        if is_rule:
            closure()
            if math.isfinite(first[0]):
                with torch.no_grad():
                    optimizer([x], [x.grad], rule_state, **hyper)
        else:
            kwargs = {}
            for h in kwarg_hooks:
                kwargs.update(h.step_kwargs(x, None))
            opt.step(closure, **kwargs)
        record.loss.append(first[0])
        if not math.isfinite(first[0]):       # the step from there is not taken into the path
            record.diverged = True
            break
        for h in hooks:
            h(Step(t, None, opt, x, None, first[0], lr))
        rates.after()
        record.path[t + 1] = x.detach()
    return record


def epochs(x: Tensor, y: Tensor, batch_size: int, seed: int = 0):
    """Minibatches by epochs: each epoch a fresh shuffle, the last batch smaller. Endless.

    Args:
        x: inputs, one row per example.
        y: targets.
        batch_size: examples per batch.
        seed: the seed of the shuffles.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            yield x[idx], y[idx]


class _Default(int):
    """An int default that a function can tell from the same number passed explicitly."""


_SPLIT_BATCH = _Default(32)     # digits_run's batch_size: a split's; a task has its own


def digits_run(data, lr: float, *, momentum: float = 0.0, nesterov: bool = False,
               weight_decay: float | None = None, optimizer: Callable | None = None,
               hyper: dict | None = None, sizes: Sequence[int] = (64, 128, 10),
               batch_size: int | None = _SPLIT_BATCH, steps: int | None = None,
               n_epochs: int | None = None, seed: int = 0, data_seed: int | None = None,
               outliers: dict | None = None, test_every: int | None = None,
               **kwargs) -> History:
    """The MLP of ``sizes`` (64-128-10 unless given; initialized with ``seed``) trained on
    the digits with ``optlib.SGD`` or the given optimizer: the chapters' standard small
    network.

    ``data`` is a :class:`~optlib.book.data.Split` or a
    :class:`~optlib.book.data.DigitsTask`. From a split, give ``steps`` (minibatches from
    :func:`optlib.book.data.batches`, every batch full) or ``n_epochs`` (whole epochs from
    :func:`epochs`, the last batch of each smaller; ``History.eval`` then holds the
    full-batch training loss before training and after every epoch). From a task, give
    ``steps``: step ``t`` trains on ``task.batch(t)`` (the task's batch size and order),
    and ``History.val_loss`` is the task's validation loss. ``History.test_accuracy`` and
    ``History.test_loss`` (attributes added here) are the test accuracy and loss at the
    end, as :func:`fit_split` records them.

    ``data_seed`` orders a split's batches apart from the initialization (one network,
    several batch orders); ``outliers`` corrupts some of a split's batches
    (:func:`optlib.book.data.with_outliers`); ``test_every`` records the test loss every
    so many steps in ``History.eval``.

    Args:
        data: a :class:`~optlib.book.data.Split` of the digits, or a
            :class:`~optlib.book.data.DigitsTask`.
        lr: the learning rate.
        momentum: SGD's momentum.
        nesterov: Nesterov's momentum.
        weight_decay: the optimizer's ``weight_decay`` (``None``: its default).
        optimizer: ``optimizer(params, lr=lr)``, the optimizer to train with instead of
            SGD (``weight_decay=`` too, when given); or a from-scratch rule
            (:func:`optlib.book.compare.is_rule`), called with ``lr=lr`` and ``hyper``.
        hyper: more keyword arguments of a rule.
        sizes: the MLP's widths (:func:`optlib.book.models.mlp`), input first.
        batch_size: examples per batch of a split (32 unless given); ``None``: the full
            batch at every step. A task's batches are its own: with a task, leave it out
            (an explicit ``batch_size``, 32 included, is refused).
        steps: the number of steps.
        n_epochs: the number of epochs (instead of ``steps``; a split only).
        seed: the seed of the initialization and of a split's batch order.
        data_seed: the seed of a split's batch order, when it is not ``seed``.
        outliers: the keyword arguments of :func:`optlib.book.data.with_outliers`
            (``every``, ``scale``, ``num_classes``), which corrupts a split's batches.
        test_every: evaluate the test loss before training, every ``test_every`` steps
            and after the last (``History.eval``; with ``steps``).
        **kwargs: more arguments of :func:`fit` (``clip``, ``diverge_above``, ...).
    """
    import itertools

    import optlib

    from . import data as _data
    from . import models
    from .compare import is_rule

    if (steps is None) == (n_epochs is None):
        raise ValueError("give steps or n_epochs, not both or neither")
    if optimizer is not None and (momentum or nesterov):
        raise ValueError("momentum and nesterov are SGD's; give them to the optimizer")
    task = data if hasattr(data, "batch") else None
    if task is not None and (n_epochs is not None or batch_size is not _SPLIT_BATCH
                             or data_seed is not None or outliers is not None):
        raise ValueError("a task has its own batches: give steps, and no batch_size, "
                         "data_seed or outliers")
    if test_every is not None and steps is None:
        raise ValueError("test_every needs steps (n_epochs evaluates the training loss)")
    split = data if task is None else task.split
    x, y = split.x_train, split.y_train
    model = models.mlp(sizes, seed=seed)
    kw = {}
    decay = {} if weight_decay is None else {"weight_decay": weight_decay}
    if optimizer is not None and is_rule(optimizer):
        if decay:
            raise ValueError("a rule takes its weight decay in hyper")
        opt, kw["hyper"] = optimizer, {**(hyper or {}), "lr": lr}
    elif hyper is not None:
        raise ValueError("hyper is for a rule; give an optimizer its arguments")
    elif optimizer is not None:
        opt = optimizer(model.parameters(), lr=lr, **decay)
    else:
        opt = optlib.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov,
                         **decay)
    if task is not None:
        stream = task
    elif batch_size is None:
        stream = itertools.repeat((x, y))
    elif steps is not None:
        stream = _data.batches(x, y, batch_size, seed=seed if data_seed is None else data_seed)
    else:
        per_epoch = math.ceil(len(x) / batch_size)
        stream = epochs(x, y, batch_size, seed=seed if data_seed is None else data_seed)
        steps = n_epochs * per_epoch
        kw.update(eval_every=per_epoch, evaluate=lambda: evaluate_loss(model, x, y))
    if outliers is not None:
        stream = _data.with_outliers(stream, **outliers)
    if test_every is not None:
        kw.update(eval_every=test_every,
                  evaluate=lambda: evaluate_loss(model, split.x_test, split.y_test))
    history = fit(model, opt, stream, steps, **kw, **kwargs)
    history.test_loss = evaluate_loss(model, split.x_test, split.y_test)
    history.test_accuracy = accuracy(model, split.x_test, split.y_test)
    return history


def lm_run(task, lr: float, steps: int, *, optimizer: Callable | str | None = None,
           schedule=None, warmup_steps: int | None = None, seed: int = 0,
           qk_norm: bool = False, **kwargs) -> History:
    """The tiny transformer (:func:`~optlib.book.models.tiny_transformer`, seed 0 unless
    given) trained on a language-model task with ``optlib.Adam``, or with an optimizer of
    the book's table: the chapters' standard small language model, as :func:`digits_run`
    is their standard small classifier.

    A :class:`~optlib.schedules.ReduceOnPlateau` schedule is copied, so that one object
    can start several runs fresh, and reads ``task.val_loss`` every ``eval_every`` steps
    (:func:`fit`'s argument, 50 unless given).

    Args:
        task: an :class:`~optlib.book.data.LMTask` (its ``seed`` orders the batches).
        lr: the (peak) learning rate.
        steps: the number of steps.
        optimizer: ``optimizer(params, lr=lr)``, the optimizer to train with (default
            ``optlib.Adam``); or the name of an entry of
            :data:`optlib.book.optimizers.TABLE`, trained through
            :func:`optlib.book.optimizers.fit`, which gives the entry what it needs
            (SophiaG its Hessian refreshes, a schedule-free optimizer no schedule).
        schedule: the schedule of :func:`fit`.
        warmup_steps: the schedule-free entry's own warmup (with a name only; default 0).
        seed: the seed of the model's initialization (the task's own ``seed`` orders the
            batches).
        qk_norm: the model normalizes queries and keys
            (:func:`~optlib.book.models.tiny_transformer`'s argument).
        **kwargs: more arguments of :func:`fit` (``loss_fn``, ``hooks``, ``momentum``,
            ``eval_every``, ``save_at``, ``start``, ``clip``, ...).
    """
    import optlib

    from . import models, optimizers

    if warmup_steps is not None and not isinstance(optimizer, str):
        raise ValueError("warmup_steps is for an optimizer given by its name in "
                         f"book.optimizers.TABLE, got {optimizer!r}")
    model = models.tiny_transformer(task.vocab_size, seed=seed, qk_norm=qk_norm)
    if _reads_metric(schedule):
        schedule = copy.deepcopy(schedule)
        kwargs.setdefault("evaluate", lambda: task.val_loss(model))
    if isinstance(optimizer, str):
        return optimizers.fit(optimizer, model, lr, task, steps, schedule,
                              warmup_steps=warmup_steps or 0, **kwargs)
    opt = (optimizer or optlib.Adam)(model.parameters(), lr=lr)
    return fit(model, opt, task, steps, schedule=schedule, **kwargs)


def fit_split(model: nn.Module, optimizer, split, steps: int, *, batch_size: int = 32,
              seed: int = 0, **kwargs) -> History:
    """:func:`fit` on minibatches of a split's training set, then the test set's loss and
    accuracy in ``History.test_loss`` and ``History.test_accuracy`` (attributes added here).

    Args:
        model: the classifier to train.
        optimizer: a torch optimizer or a rule (see :func:`fit`).
        split: a :class:`~optlib.book.data.Split`.
        steps: the number of steps.
        batch_size: examples per batch (:func:`optlib.book.data.batches`).
        seed: the seed of the batch order.
        **kwargs: more arguments of :func:`fit`.
    """
    history = fit(model, optimizer, split.batches(batch_size, seed=seed), steps, **kwargs)
    history.test_loss = evaluate_loss(model, split.x_test, split.y_test)
    history.test_accuracy = accuracy(model, split.x_test, split.y_test)
    return history


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """A block in which ``model`` is in eval mode and no gradients are recorded; the
    model's mode (training or not) is restored after it: how the book evaluates a model
    (:func:`fit`'s ``evaluate``, :func:`accuracy`, :func:`evaluate_loss`, a task's
    ``val_loss``).

    Args:
        model: the model.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of rows whose arg-max output equals the label (model in eval mode).

    Args:
        model: the classifier.
        x: inputs.
        y: labels.
    """
    with evaluating(model):
        pred = model(x).argmax(dim=-1)
    return (pred == y).float().mean().item()


def evaluate_loss(model: nn.Module, x: Tensor, y: Tensor,
                  loss_fn: Callable = cross_entropy) -> float:
    """``loss_fn(model(x), y)`` in eval mode without gradients.

    Args:
        model: the model.
        x: inputs.
        y: targets.
        loss_fn: the loss.
    """
    with evaluating(model):
        return loss_fn(model(x), y).item()
