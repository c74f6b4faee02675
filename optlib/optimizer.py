"""The shared machinery: torch.optim's surface outside, one rule per optimizer inside.

Every optimizer in ``optlib`` subclasses :class:`Optimizer` and writes two things:

* ``init_state(p, group)``: the state tensors a parameter gets on its first step
  (zeros for moments, a step counter, ...), under torch.optim's key names so that a
  ``state_dict`` loads into torch's class of the same name and back;
* ``update(group, p, g, s)``: the update rule, once, on :class:`~optlib.tensorlist.TensorList`
  objects holding a group's parameters ``p``, gradients ``g`` and state ``s`` (all of
  them, or a chunk of them: see below). A rule computes each tensor's update from that
  tensor's own values only (norms and trust ratios are per tensor), so that it gives the
  same numbers on any chunk of a group. A rule depends only on its inputs and changes
  only tensors: ``group`` is a read-only
  view of the group's hyperparameters (:class:`Hyper`) with the learning rate already a
  number, ``g`` is already negated under ``maximize``, and values of the step that are
  not hyperparameters come in through the view too (:meth:`~optlib.Optimizer.step_values`).
  Helpers shared by rules: :func:`zeros_like_state`, :func:`l2_decay`,
  :func:`decoupled_decay_`, and :meth:`State.each` for a rule that works tensor by tensor.

The base class does the plumbing that torch.optim repeats in every class: it gathers
the parameters that have a gradient (a parameter without one is skipped entirely, its
step counter does not move), refuses sparse gradients before anything is changed,
creates state lazily, views complex tensors as real pairs, and calls the rule for each
group: a tensor of ``EAGER_CHUNK_BYTES`` (1 MiB) or more in a call of its own, smaller
ones together in calls of up to 4 MiB, so that the rule's operations on a tensor run
while its arrays are still in cache
(:func:`eager_chunks` has the measurements; ``optlib.compile`` cuts its own chunks).
``param_groups``, ``state``, ``state_dict``/``load_state_dict``, hooks and
``zero_grad`` are torch's own, so schedulers, DDP and ``ZeroRedundancyOptimizer`` work.

**torch.optim's implementation flags.** Where torch's class of the same name accepts
``foreach``, ``fused``, ``capturable`` or ``differentiable``, optlib's accepts them too,
with torch's defaults (``check_flags``):

* ``foreach`` (``None``, ``False`` or ``True``) selects nothing: optlib has one
  implementation, a foreach one (``optlib.tensorlist``), and gives the same numbers
  either way. torch's refusals that depend on it (a tensor ``lr`` with ``foreach=True``
  in Adam) are kept, with torch's messages.
* ``fused=True`` is refused with a ``ValueError``: optlib has no fused kernels. Use
  ``torch.optim``'s class with ``fused=True`` for torch's kernel, or
  ``optlib.compile(optimizer)`` to fuse optlib's own rule with ``torch.compile``.
* ``capturable=True`` is refused with a ``ValueError``, on every device: a step reads its
  step counts on the host, so it cannot be captured in a CUDA graph (and on the CPU there
  is nothing to capture).
* ``differentiable=True`` is refused with a ``ValueError``: a rule is written once, with
  in-place foreach operations on the whole group, and autograd cannot differentiate
  through them (foreach backward formulas keep tensors that the rule then updates in
  place; torch itself drops to its single-tensor code for this flag). Use ``torch.optim``'s
  class with ``differentiable=True`` to differentiate through a step.

**Loading state.** ``load_state_dict`` is torch's, with torch's load
pre- and post-hooks, and like torch it accepts older formats: a group saved before a key
existed takes the key's constructor default (``maximize=False``, ...; torch's
``__setstate__`` fills the same values), and a ``step`` saved as a Python number becomes
a tensor. One difference: 0-dim state (step counters, NAdam's product of momenta) keeps
its saved dtype, where torch casts all but ``step`` to the parameter's dtype (which makes
a resumed float32 run drift from an uninterrupted one).

**Sparse gradients** are refused, before anything changes, except by the classes that
set ``supports_sparse`` (:class:`~optlib.SGD` and :class:`~optlib.Adagrad`, as in torch),
which may still refuse settings that torch refuses (``weight_decay`` with a sparse gradient).

**Non-finite gradients.** The torch.optim family gives torch's numbers, NaN and inf
included. The others are decided per class and written in each docstring; in none does a
NaN or infinite gradient enlarge the step of a finite coordinate (LAMB and LARS turn the
whole tensor NaN; Lion and SophiaG keep their bound of one lr per coordinate).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import numbers
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor

from .sharded import is_sharded
from .tensorlist import PerTensor, TensorList


def scalar_dtype() -> torch.dtype:
    """dtype of step counters, as torch.optim chooses it (float64 under a float64 default)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def step_counter(value: float = 0.0) -> Tensor:
    """A step counter as torch.optim keeps it: a 0-dim CPU tensor.

    Args:
        value: the starting count.
    """
    return torch.tensor(value, dtype=scalar_dtype())


def as_float(x) -> float:
    """A hyperparameter as a Python number (torch allows 1-element tensors for ``lr``).

    While ``torch.compile`` traces a rule (``optlib.compile``), a tensor stays a tensor: the
    compiled graph then reads its value at run time instead of baking it in.

    Args:
        x: a number, or a 1-element tensor.
    """
    if isinstance(x, Tensor):
        return x if torch.compiler.is_compiling() else x.item()
    return x


def zeros_like_state(p: Tensor) -> Tensor:
    """A state tensor of zeros shaped, typed and strided like ``p`` (torch.optim's choice).

    Args:
        p: the parameter the state belongs to.
    """
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def l2_decay(p: TensorList, g: TensorList, weight_decay) -> TensorList:
    """L2 weight decay, coupled to the gradient: ``g + λθ`` (a new list; ``g`` itself when
    ``λ = 0``), as torch.optim's ``weight_decay`` for SGD, Adam, Adagrad, RMSprop, ...

    Args:
        p: the parameters θ.
        g: their gradients.
        weight_decay: λ.
    """
    return g.add(p, alpha=weight_decay) if weight_decay != 0 else g


def decoupled_decay_(p: TensorList, lr, weight_decay) -> None:
    """Decoupled weight decay, in place: ``θ ← θ(1 − ηλ)`` (AdamW's; nothing when ``λ = 0``).

    Args:
        p: the parameters θ, changed in place.
        lr: the learning rate η.
        weight_decay: λ.
    """
    if weight_decay != 0:
        p.mul_(1 - lr * weight_decay)


def require(condition: bool, message: str) -> None:
    """Refuse a bad hyperparameter with a ``ValueError`` that names it and its value.

    Args:
        condition: what must hold.
        message: the error's message.
    """
    if not condition:
        raise ValueError(message)


def check_lr(lr) -> None:
    """Refuse a negative learning rate, or a tensor one with more than one element (torch's messages).

    Args:
        lr: the learning rate (a number or a 1-element tensor).
    """
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    require(0.0 <= lr, f"Invalid learning rate: {lr}")


def check_betas(betas) -> None:
    """Refuse betas that are not a pair of numbers in [0, 1) (torch's messages).

    Args:
        betas: a pair of numbers (or 0-dim tensors) in [0, 1).
    """
    require(
        isinstance(betas, (tuple, list)) and len(betas) == 2,
        f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))",
    )
    for i, beta in enumerate(betas):
        require(isinstance(beta, numbers.Real | Tensor) and not isinstance(beta, bool),
                f"Invalid betas: {betas!r} (the beta at index {i} is not a number)")
        require(0.0 <= beta < 1.0, f"Invalid beta parameter at index {i}: {beta}")


def check_flags(owner: str, *, foreach=None, fused=None, capturable=False,
                differentiable=False) -> None:
    """torch.optim's implementation flags, as optlib honours them (see the module docstring).

    torch's own refusals of flag combinations come first, with torch's messages.

    Args:
        owner: the class's name (for the messages).
        foreach: torch.optim's flag; accepted, selects nothing (optlib has one implementation, a
            foreach one).
        fused: torch.optim's flag; True is refused (see optlib.optimizer).
        capturable: torch.optim's flag; True is refused (see optlib.optimizer).
        differentiable: torch.optim's flag; True is refused (see optlib.optimizer).
    """
    require(foreach in (None, False, True), f"Invalid foreach value: {foreach!r}")
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        raise ValueError(
            f"fused=True is not supported by optlib.{owner}: optlib has no fused kernels. "
            f"Use torch.optim.{owner}(..., fused=True) for torch's fused kernel, or "
            f"optlib.compile(optlib.{owner}(...)) to fuse optlib's rule with torch.compile")
    if capturable:
        raise ValueError(
            f"capturable=True is not supported by optlib.{owner}: its step reads step counts "
            "on the host, so it cannot be captured in a CUDA graph (and CPU tensors have "
            f"nothing to capture). Use torch.optim.{owner}(..., capturable=True) on CUDA "
            "for graph capture, or capturable=False")
    if differentiable:
        raise ValueError(
            f"differentiable=True is not supported by optlib.{owner}: its rule updates the "
            "whole group with in-place foreach operations, which autograd cannot "
            f"differentiate through. Use torch.optim.{owner}(..., differentiable=True) to "
            "differentiate through a step, or differentiable=False")


#: The size in bytes from which a tensor is a chunk of the eager step of its own (smaller
#: ones go in chunks of up to four times that): 1 MiB. See :func:`eager_chunks`.
EAGER_CHUNK_BYTES = 1 << 20


def eager_chunks(params: list[Tensor], limit: int | None) -> list[slice | None]:
    """The chunks of a group over which the eager step calls its rule, one after another:
    a tensor of ``limit`` bytes or more is a chunk of its own, and the consecutive smaller
    tensors between them go together in chunks closed once they reach ``4 * limit`` bytes;
    ``[None]`` (the whole group in one call) when that makes one chunk, or when ``limit``
    is None.

    Why: a foreach rule runs each operation over all of its tensors before the next
    operation, so on large tensors every array comes back from main memory once per
    operation; a loop over tensors (torch's for-loop path) runs all of one tensor's
    operations while its arrays are still in the processor's cache, and was the fastest
    eager step on 20 matrices of 1000 x 500 (2 MB each) for ten optimizers
    (benchmarks/results/peers-2026-11-27.md). Chunks keep the one rule and get the
    loop's order of work where it pays. The sizes, measured on the 2-core Xeon this book
    is checked on (1 MiB of L2 cache per core, 36 MB of L3), one thread, interleaved: on
    20 matrices of 2 MB, every limit from 0.25 to 1 MiB puts each matrix in a chunk of
    its own and took Adam from 72 to 45-51 ms, RMSprop from 58 to 30-33, Lion from 54
    to 33, LAMB from 111 to 97 (limits of 2 MiB and more, two matrices a chunk, gave
    part of it back). On 200 matrices of 20 KB, chunks of 1 MiB (50 matrices) measured
    within 4% of one call per group for Adam, RMSprop, LAMB and Lion, but SGD with
    momentum, three operations a step, lost 8% to torch's foreach step
    (benchmarks/step_time.py): each chunk pays every operation's fixed cost again. So
    small tensors go in chunks of 4 MiB, and such a group (4 MB) stays one call.

    Rules compute per tensor, so a chunk's step is the group's step restricted to it: the
    same numbers (``tests/test_chunks.py``).

    Args:
        params: the group's parameters that step.
        limit: the size in bytes from which a tensor is a chunk of its own, or None.
    """
    if limit is None:
        return [None]
    chunks, start, size = [], 0, 0
    for i, x in enumerate(params):
        nbytes = x.numel() * x.element_size()
        if nbytes >= limit:                 # alone, after the smaller ones before it
            if start < i:
                chunks.append(slice(start, i))
            chunks.append(slice(i, i + 1))
            start, size = i + 1, 0
            continue
        size += nbytes
        if size >= 4 * limit:
            chunks.append(slice(start, i + 1))
            start, size = i + 1, 0
    if start < len(params):
        chunks.append(slice(start, len(params)))
    return chunks if len(chunks) > 1 else [None]


class Hyper(Mapping):
    """What a rule reads besides tensors: its parameter group's entries, read-only, with the
    values of this step laid over them.

    ``hyper["lr"]`` is the learning rate as a Python number (the value of a 1-element
    tensor ``lr``, which torch allows; under :func:`optlib.compile` a 0-dim tensor, so that
    the compiled graph does not bake it in); optimizers add their step's own values
    (:meth:`~optlib.Optimizer.step_values`, SophiaG's batch size). A rule cannot write into it:
    what a rule changes is tensors.

    Args:
        group: the parameter group (a dict of ``optimizer.param_groups``), not copied.
        values: entries that replace or extend the group's for this step.
    """

    __slots__ = ("_group", "_values")

    def __init__(self, group: dict, values: dict):
        self._group = group
        self._values = values

    def __getitem__(self, key: str):
        values = self._values
        return values[key] if key in values else self._group[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._group
        yield from (key for key in self._values if key not in self._group)

    def __len__(self) -> int:
        return len(self._group) + sum(key not in self._group for key in self._values)

    def __repr__(self) -> str:
        return f"Hyper({dict(self)!r})"


class State:
    """The state of a group's parameters, one :class:`~optlib.TensorList` per key.

    ``s.exp_avg`` is the list of every parameter's ``exp_avg`` tensor (the very tensors
    in ``optimizer.state``, so in-place updates persist). ``s.new`` tells, per
    parameter, whether its state was created in this step. A rule that must work tensor
    by tensor (its state differs in shape from tensor to tensor) walks :meth:`each`.

    Args:
        states: each parameter's state dict, in the order of the group's lists.
        new: per parameter, whether its state was created in this step.
    """

    def __init__(self, states: list[dict], new: list[bool]):
        self._states = states
        self.new = new

    def __getattr__(self, key: str) -> TensorList:
        if key.startswith("_"):
            raise AttributeError(key)
        return TensorList([st[key] for st in self._states])

    def __getitem__(self, key: str) -> TensorList:
        return TensorList([st[key] for st in self._states])

    @property
    def states(self) -> list[dict]:
        """Each parameter's state dict (the very dicts in ``optimizer.state``)."""
        return self._states

    def each(self, *lists) -> Iterator[tuple]:
        """Tensor by tensor: ``(state dict, entry of each list)`` per parameter, for a rule
        whose computation depends on each tensor's shape (``for st, x, G in s.each(p, g)``).

        Args:
            lists: per-parameter sequences (TensorLists, lists of step counts), in the
                order of the group's parameters.
        """
        return zip(self._states, *lists, strict=True)

    def select(self, mask) -> State:
        """The state of the parameters where ``mask`` holds (as ``TensorList.select``)."""
        keep = list(mask)
        return State([st for st, k in zip(self._states, keep, strict=True) if k],
                     [n for n, k in zip(self.new, keep, strict=True) if k])

    def advance(self, key: str = "step") -> PerTensor | float:
        """Add 1 to every step counter and return the new counts (t = 1 on the first step)."""
        return _numbers(self.count(key))

    def count(self, key: str = "step") -> TensorList:
        """Add 1 to every step counter, without reading them (for a rule that does not use
        the count); returns the counters.

        On the CPU the 1 is added as a 0-dim tensor, as torch.optim adds it: a Python
        number makes foreach wrap it into a tensor once per counter (200 conversions per
        step for 200 tensors, about 0.3 ms here). One counter (a chunk of one tensor,
        :func:`eager_chunks`) is added to directly, with a 0-dim 1 made once
        (``add_(1)`` took 7.2 us on a 0-dim tensor, ``add_`` of a 0-dim tensor 2.7, AMD
        EPYC, thread time). The counts are the same (integers)."""
        counters = self[key]
        if len(counters) == 1 and counters[0].is_cpu and not torch.compiler.is_compiling():
            counters[0].add_(_ONE)
        elif counters and counters[0].is_cpu:
            torch._foreach_add_(counters, torch.scalar_tensor(1.0, device="cpu"), alpha=1.0)
        else:
            torch._foreach_add_(counters, 1)
        return counters

    def values(self, key: str) -> PerTensor | float:
        """Per-tensor values of a 0-dim state entry, as Python numbers."""
        return _numbers(self[key])

    def part(self, piece: slice) -> State:
        """The state of the parameters ``piece`` (a slice of the group's order) selects."""
        return State(self._states[piece], self.new[piece])

    def replace(self, key: str, mask, tensors) -> None:
        """Store ``tensors`` as the ``key`` entries of the parameters where ``mask`` holds
        (for a rule that must replace a state tensor rather than update it in place)."""
        chosen = [st for st, keep in zip(self._states, mask, strict=True) if keep]
        for st, t in zip(chosen, tensors, strict=True):
            st[key] = t


class Optimizer(torch.optim.Optimizer):
    """Base class: subclasses define ``init_state`` and ``update`` (see the module docstring)."""

    #: Whether the rule may see complex parameters (as real pairs, like torch.optim).
    supports_complex: bool = True
    #: Whether the rule gives one process's numbers on ``DTensor`` shards (FSDP2); a rule
    #: that reads whole tensors does so through :mod:`optlib.sharded`. False: refused.
    supports_sharded: bool = True
    #: Whether sparse gradients reach the rule (else a step with one is refused).
    supports_sparse: bool = False
    #: Per-parameter state entries that older checkpoints may hold as Python numbers.
    scalar_state_keys: tuple[str, ...] = ("step",)
    #: True, or why :func:`optlib.compile` keeps the eager rule for this class.
    compiles: bool | str = True
    #: The size from which a tensor is a chunk of the eager step (:func:`eager_chunks`), or None
    #: for one call per group (a rule that cuts its own chunks, Adam8bit's).
    eager_chunk_bytes: int | None = EAGER_CHUNK_BYTES
    #: Group entries that :meth:`step_values` keeps (running sums, counters) and the rule
    #: never reads: :func:`optlib.compile` does not compare them between steps.
    bookkeeping_keys: tuple[str, ...] = ()
    #: Whether the rule computes a tensor of a parameter's size and then reduces it (LAMB's
    #: norm of its direction, Adafactor's means of g², Muon's matrix products):
    #: :func:`optlib.compile` then steps large tensors of one shape one per call, so that
    #: the reduction reads the tensor while it is in cache. Speed only: same numbers.
    reduces_computed: bool = False

    def init_state(self, p: Tensor, group: dict) -> dict:
        """State of a parameter on its first step with a gradient. Default: none (then no
        entry is made in ``self.state`` for the parameter, as in torch)."""
        return {}

    def update(self, group: Hyper, p: TensorList, g: TensorList, s: State) -> None:
        """The rule: change ``p`` and the state ``s`` in place, for one group and step.

        Args:
            group: the group's hyperparameters (read-only, ``lr`` a number: :class:`~optlib.optimizer.Hyper`).
            p: the parameters that have a gradient.
            g: their gradients, negated already under ``maximize``.
            s: their state.
        """
        raise NotImplementedError

    def check_sparse(self, group: dict) -> None:
        """Raise if ``group``'s settings cannot take a sparse gradient (when ``supports_sparse``)."""

    # -------------------------------------------------------------------------------------
    def _gather(self, group: dict) -> tuple[list[Tensor], list[Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                if not self.supports_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients; "
                        "use a dense gradient (for embeddings: nn.Embedding(sparse=False)), "
                        "optlib.SGD, optlib.Adagrad or torch.optim.SparseAdam"
                    )
                if p.is_complex():
                    raise RuntimeError(f"{type(self).__name__} does not support sparse "
                                       "gradients of complex parameters")
                self.check_sparse(group)
            if p.is_complex() and not self.supports_complex:
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
            if is_sharded(p) and not self.supports_sharded:
                raise NotImplementedError(
                    f"{type(self).__name__} does not support DTensor (sharded, FSDP2) parameters "
                    "yet: its preconditioner is a function of whole matrices. Give it "
                    "unsharded parameters (fully_shard(..., ignored_params=...))")
            params.append(p)
            grads.append(g)
        return params, grads

    def _prepare(self, group: dict, params: list[Tensor]) -> State:
        states, new = [], []
        for p in params:
            st = self.state[p] if p in self.state else {}
            fresh = len(st) == 0
            if fresh:
                st.update(self.init_state(p, group))
                if st:
                    self.state[p] = st
            states.append(st)
            new.append(fresh)
        return State(states, new)

    # ---- loading: torch's load_state_dict and __setstate__, older formats included ------
    def _group_fill(self, group: dict, defaults: dict) -> dict:
        """The values a loaded group lacking a key takes for it: the constructor's default
        for the key (what torch's ``__setstate__`` fills), else ``defaults``'."""
        signature = inspect.signature(type(self).__init__).parameters
        return {key: (signature[key].default if key in signature
                      and signature[key].default is not inspect.Parameter.empty else value)
                for key, value in defaults.items()}

    def __setstate__(self, state: dict) -> None:
        defaults = dict(state.get("defaults", self.__dict__.get("defaults", {})))
        super().__setstate__(state)
        if "differentiable" not in defaults:    # torch's __setstate__ adds it: keep ours as built
            self.defaults.pop("differentiable", None)
        for group in self.param_groups:
            for key, value in self._group_fill(group, defaults).items():
                group.setdefault(key, value)
            for p in group["params"]:
                st = self.state.get(p)
                for key in self.scalar_state_keys if st else ():
                    if key in st and not isinstance(st[key], Tensor):
                        st[key] = torch.tensor(float(st[key]), dtype=scalar_dtype())

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict) -> None:
        """torch's ``load_state_dict`` (hooks, checks, casts), with older formats filled in
        (see the module docstring) and 0-dim state keeping its saved dtype: torch casts it
        to the parameter's dtype, which makes a resumed run drift from an uninterrupted one."""
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups = self.param_groups
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups, strict=False)):
            raise ValueError("loaded state dict contains a parameter group "
                             "that doesn't match the size of optimizer's group")
        id_map = dict(zip(itertools.chain.from_iterable(g["params"] for g in saved_groups),
                          itertools.chain.from_iterable(g["params"] for g in groups),
                          strict=True))
        state: defaultdict = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in id_map:
                param = id_map[key]
                state[param] = _cast(param, value)
            else:
                state[key] = value
        for group, saved in zip(groups, saved_groups, strict=True):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
        self.__setstate__({"state": state, "param_groups": saved_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    # ---- the step ---------------------------------------------------------------------------
    def step_values(self, group: dict) -> dict:
        """Values the rule reads in this step besides the group's own entries (none by
        default). Called once per group and step, after the step's checks and before the
        rule, also for a group in which no parameter has a gradient: the place for
        bookkeeping that a group keeps (AdamWScheduleFree's step counter), which the rule
        itself never writes.

        Args:
            group: the parameter group.
        """
        return {}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
        """
        return self._step(closure)

    @torch.no_grad()
    def _step(self, closure: Callable[[], float] | None, **values):
        """The step, with ``values`` (the step's own, SophiaG's ``bs``) laid over every
        group's hyperparameters. ``maximize`` is applied here: the rule sees the gradient
        of the objective it descends."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Gather every group before changing anything, so a refused step changes nothing.
        gathered = [self._gather(group) for group in self.param_groups]
        for group, (params, grads) in zip(self.param_groups, gathered, strict=True):
            hyper = Hyper(group, {"lr": as_float(group["lr"]), **values,
                                  **self.step_values(group)})
            if not params:
                continue
            state = self._prepare(group, params)
            # Sparse gradients take the eager rule (torch.compile traces dense tensors).
            rule = (type(self).update.__get__(self)
                    if any(g.is_sparse for g in grads) else self.update)
            if any(p.is_complex() for p in params):
                params, grads, state = _as_real(params, grads, state)
            maximize = group.get("maximize", False)
            # The eager rule runs over cache-sized chunks of the group (eager_chunks);
            # a compiled one (optlib.compile) takes the group and cuts its own chunks.
            compiled = rule is self.__dict__.get("update")
            pieces = [None] if compiled else eager_chunks(params, self.eager_chunk_bytes)
            for piece in pieces:
                if piece is None:
                    p, g, s = params, grads, state
                else:
                    p, g, s = params[piece], grads[piece], state.part(piece)
                g = TensorList(g)
                if maximize:
                    g = -g
                rule(hyper, TensorList(p), g, s)
        return loss


#: The 1 that :meth:`State.count` adds to a chunk's one step counter (read, never written).
_ONE = torch.ones((), dtype=torch.float32, device="cpu")


def _numbers(scalars: list[Tensor]) -> PerTensor | float:
    """The values of 0-dim tensors as Python numbers (one ``item`` for a chunk of one
    tensor, else one ``stack``: a call of ``item`` per tensor costs more)."""
    if len(scalars) == 1:
        return scalars[0].item()
    return PerTensor.of(torch.stack(scalars).tolist())


def _cast(param: Tensor, value):
    """A loaded state value for ``param``: tensors on its device, floating ones in its dtype
    (as torch's load_state_dict does), except 0-dim ones (step counts), which keep their
    dtype and live on the CPU, as optlib creates them (a copy: the dict is not aliased)."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value.to("cpu", copy=True)
        if param.is_floating_point():
            return value.to(dtype=param.dtype, device=param.device)
        return value.to(device=param.device)
    if isinstance(value, dict):
        return {k: _cast(param, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cast(param, v) for v in value)
    return value


def _as_real(params, grads, state: State):
    """View complex tensors as real (..., 2) tensors: the rule sees real and imaginary parts
    as independent coordinates, which is what torch.optim does."""

    def real(t):
        return torch.view_as_real(t) if isinstance(t, Tensor) and t.is_complex() else t

    states = [{k: real(v) for k, v in st.items()} for st in state._states]
    return [real(p) for p in params], [real(g) for g in grads], State(states, state.new)
