"""The shared machinery: torch.optim's surface outside, one rule per optimizer inside.

Every optimizer in ``optlib`` subclasses :class:`Optimizer` and writes two things:

* ``init_state(p, group)``: the state tensors a parameter gets on its first step
  (zeros for moments, a step counter, ...), under torch.optim's key names so that a
  ``state_dict`` loads into torch's class of the same name and back;
* ``update(group, p, g, s)``: the update rule, once, on :class:`~optlib.tensorlist.TensorList`
  objects holding *all* of a group's parameters ``p``, gradients ``g`` and state ``s``.

The base class does the plumbing that torch.optim repeats in every class: it gathers
the parameters that have a gradient (a parameter without one is skipped entirely, its
step counter does not move), refuses sparse gradients before anything is changed,
creates state lazily, views complex tensors as real pairs, and calls the rule once per
group. ``param_groups``, ``state``, ``state_dict``/``load_state_dict``, hooks and
``zero_grad`` are torch's own, so schedulers, DDP and ``ZeroRedundancyOptimizer`` work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .sharded import is_sharded
from .tensorlist import PerTensor, TensorList


def scalar_dtype() -> torch.dtype:
    """dtype of step counters, as torch.optim chooses it (float64 under a float64 default)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def step_counter(value: float = 0.0) -> Tensor:
    """A step counter as torch.optim keeps it: a 0-dim CPU tensor."""
    return torch.tensor(value, dtype=scalar_dtype())


def as_float(x) -> float:
    """A hyperparameter as a Python number (torch allows 1-element tensors for ``lr``).

    While ``torch.compile`` traces a rule (``optlib.compile``), a tensor stays a tensor: the
    compiled graph then reads its value at run time instead of baking it in."""
    if isinstance(x, Tensor):
        return x if torch.compiler.is_compiling() else x.item()
    return x


def require(condition: bool, message: str) -> None:
    """Refuse a bad hyperparameter with a ``ValueError`` that names it and its value."""
    if not condition:
        raise ValueError(message)


def check_lr(lr) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    require(0.0 <= lr, f"Invalid learning rate: {lr}")


def check_betas(betas) -> None:
    require(
        isinstance(betas, (tuple, list)) and len(betas) == 2,
        f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))",
    )
    for i, beta in enumerate(betas):
        require(0.0 <= beta < 1.0, f"Invalid beta parameter at index {i}: {beta}")


class State:
    """The state of a group's parameters, one :class:`~optlib.TensorList` per key.

    ``s.exp_avg`` is the list of every parameter's ``exp_avg`` tensor (the very tensors
    in ``optimizer.state``, so in-place updates persist). ``s.new`` tells, per
    parameter, whether its state was created in this step.
    """

    def __init__(self, states: list[dict], new: list[bool]):
        self._states = states
        self.new = new

    def __getattr__(self, key: str) -> TensorList:
        if key.startswith("_"):
            raise AttributeError(key)
        return TensorList(st[key] for st in self._states)

    def __getitem__(self, key: str) -> TensorList:
        return TensorList(st[key] for st in self._states)

    @property
    def states(self) -> list[dict]:
        """Each parameter's state dict (the very dicts in ``optimizer.state``)."""
        return self._states

    def select(self, mask) -> State:
        """The state of the parameters where ``mask`` holds (as :meth:`TensorList.select`)."""
        keep = list(mask)
        return State([st for st, k in zip(self._states, keep, strict=True) if k],
                     [n for n, k in zip(self.new, keep, strict=True) if k])

    def advance(self, key: str = "step") -> PerTensor | float:
        """Add 1 to every step counter and return the new counts (t = 1 on the first step)."""
        counters = self[key]
        torch._foreach_add_(counters, 1)
        return PerTensor.of(torch.stack(counters).tolist())

    def values(self, key: str) -> PerTensor | float:
        """Per-tensor values of a 0-dim state entry, as Python numbers."""
        return PerTensor.of(torch.stack(self[key]).tolist())


class Optimizer(torch.optim.Optimizer):
    """Base class: subclasses define ``init_state`` and ``update`` (see the module docstring)."""

    #: Whether the rule may see complex parameters (as real pairs, like torch.optim).
    supports_complex: bool = True
    #: Whether the rule gives one process's numbers on ``DTensor`` shards (FSDP2); a rule
    #: that reads whole tensors does so through :mod:`optlib.sharded`. False: refused.
    supports_sharded: bool = True

    def init_state(self, p: Tensor, group: dict) -> dict:
        """State of a parameter on its first step with a gradient. Default: none."""
        return {}

    def update(self, group: dict, p: TensorList, g: TensorList, s: State) -> None:
        raise NotImplementedError

    # -------------------------------------------------------------------------------------
    def _gather(self, group: dict) -> tuple[list[Tensor], list[Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients; "
                    "use a dense gradient (for embeddings: nn.Embedding(sparse=False)) "
                    "or torch.optim.SparseAdam"
                )
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
            st = self.state[p]
            fresh = len(st) == 0
            if fresh:
                st.update(self.init_state(p, group))
            states.append(st)
            new.append(fresh)
        return State(states, new)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's ``load_state_dict``, except that 0-dim state (step counters, NAdam's
        running product of momenta) keeps its saved dtype: torch casts it to the
        parameter's dtype, which makes a resumed run drift from an uninterrupted one."""
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        scalars = {(position, key): value.clone()
                   for position, pid in enumerate(saved_ids)
                   for key, value in state_dict["state"].get(pid, {}).items()
                   if isinstance(value, Tensor) and value.dim() == 0}
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for (position, key), value in scalars.items():
            self.state[params[position]][key] = value

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Gather every group before changing anything, so a refused step changes nothing.
        gathered = [self._gather(group) for group in self.param_groups]
        for group, (params, grads) in zip(self.param_groups, gathered, strict=True):
            if not params:
                continue
            state = self._prepare(group, params)
            if any(p.is_complex() for p in params):
                params, grads, state = _as_real(params, grads, state)
            self.update(group, TensorList(params), TensorList(grads), state)
        return loss


def _as_real(params, grads, state: State):
    """View complex tensors as real (..., 2) tensors: the rule sees real and imaginary parts
    as independent coordinates, which is what torch.optim does."""

    def real(t):
        return torch.view_as_real(t) if isinstance(t, Tensor) and t.is_complex() else t

    states = [{k: real(v) for k, v in st.items()} for st in state._states]
    return [real(p) for p in params], [real(g) for g in grads], State(states, state.new)
