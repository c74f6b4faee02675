"""Arithmetic on a whole parameter group at once.

An update rule in ``optlib`` is written once, on :class:`TensorList` objects, in the
same words as torch's single-tensor code (``m.lerp_(g, 1 - beta1)``). Each method is
one ``torch._foreach_*`` call over every tensor of the group, so the readable rule is
also the fast one: on CUDA a foreach call is a handful of fused kernel launches, on CPU
it is a C++ loop with none of Python's per-tensor overhead.

Scalars may be plain numbers (the same for every tensor) or :class:`PerTensor` values
(one number per tensor, for example bias corrections when tensors have taken different
numbers of steps). ``PerTensor`` supports ordinary arithmetic elementwise, with Python
float semantics, so ``1 - beta1 ** t`` reads the same whichever ``t`` is.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from ._torch_version import require
from .sharded import is_sharded

# Every step asks torch.compiler.is_compiling (torch 2.3 on): an older torch hears so here,
# when optlib is imported, rather than as an AttributeError at the first step.
require("torch.compiler.is_compiling", "optlib (every optimizer step asks it)")

Number = float | int


class PerTensor(tuple):
    """One Python number per tensor of a :class:`TensorList`, with elementwise arithmetic."""

    __slots__ = ()

    @staticmethod
    def of(values: Iterable[Number]) -> PerTensor | float:
        """Collapse to a single float when every tensor has the same value (the usual case)."""
        values = tuple(values)
        if values and all(v == values[0] for v in values):
            return values[0]
        return PerTensor(values)

    def _map(self, fn: Callable, other) -> PerTensor:
        if isinstance(other, list):  # a TensorList: let it handle the operation
            return NotImplemented
        if isinstance(other, PerTensor):
            return PerTensor([fn(a, b) for a, b in zip(self, other, strict=True)])
        return PerTensor([fn(a, other) for a in self])

    def _rmap(self, fn: Callable, other) -> PerTensor:
        return PerTensor([fn(other, a) for a in self])

    def __add__(self, o):
        return self._map(operator.add, o)

    def __radd__(self, o):
        return self._rmap(operator.add, o)

    def __sub__(self, o):
        return self._map(operator.sub, o)

    def __rsub__(self, o):
        return self._rmap(operator.sub, o)

    def __mul__(self, o):
        return self._map(operator.mul, o)

    def __rmul__(self, o):
        return self._rmap(operator.mul, o)

    def __truediv__(self, o):
        return self._map(operator.truediv, o)

    def __rtruediv__(self, o):
        return self._rmap(operator.truediv, o)

    def __pow__(self, o):
        return self._map(operator.pow, o)

    def __rpow__(self, o):
        return self._rmap(operator.pow, o)

    def __neg__(self):
        return PerTensor([-a for a in self])

    def __gt__(self, o):  # comparisons give per-tensor booleans
        return self._map(operator.gt, o)

    def sqrt(self) -> PerTensor:
        return PerTensor(math.sqrt(a) for a in self)


def per_tensor(x, n: int) -> list:
    """A number or PerTensor as a list of ``n`` per-tensor values.

    Args:
        x: a number or a PerTensor.
        n: the number of tensors.
    """
    return list(x) if isinstance(x, PerTensor) else [x] * n


def pick(x, mask: Sequence[bool]):
    """The entries of a PerTensor where ``mask`` holds (a plain number is shared by all).

    Args:
        x: a number or a PerTensor.
        mask: per tensor, whether to keep its entry.
    """
    return PerTensor([v for v, keep in zip(x, mask, strict=True) if keep]) if isinstance(x, PerTensor) else x


def is_traced(x) -> bool:
    """Whether ``x``, a value of the step (a step count, a bias correction, the learning
    rate), is a tensor (or a :class:`PerTensor` or list of them) rather than a Python number.

    Why this is asked: :func:`optlib.compile` traces a rule with its step counts, learning
    rate and other values of the step as 0-dim tensors, so that the compiled graph reads
    them when it runs instead of baking them in (a new step count, or a scheduler's new
    lr, would otherwise compile again). Eagerly a rule gets Python numbers
    (``Optimizer.step`` reads a tensor lr with ``as_float``), so for the values of a rule
    this is true exactly while optlib.compile traces it. A traced value may not be read in
    Python (branched on, passed to Python's ``max``, or where torch takes only a number,
    such as ``alpha=``): the rule is written once with the functions that do either, for
    a value of either kind (:func:`choose`, :func:`maximum`, :func:`minimum`,
    :func:`sub_scaled_`, :meth:`TensorList.mul_where_`, and ``alpha`` of
    :class:`TensorList`'s methods, which multiplies separately when traced).

    Args:
        x: a number, a 0-dim tensor, or a PerTensor or list of either.
    """
    if isinstance(x, Tensor):
        return True
    return isinstance(x, _SEQUENCES) and bool(x) and isinstance(x[0], Tensor)


_SEQUENCES = (tuple, list)   # a PerTensor, or foreach's list of scalars


def choose(condition, fn: Callable, x, otherwise):
    """``fn(x)`` where ``condition`` holds and ``otherwise`` elsewhere, for values of the
    step: numbers, 0-dim tensors, or PerTensor values of either (one per tensor).

    Eagerly (numbers) ``fn`` is called only where the condition holds, as an ``if`` calls
    it (the formula may be undefined elsewhere). Traced (see :func:`is_traced`) it is
    computed for every value and ``torch.where`` picks, without reading the condition.

    Args:
        condition: a bool, a 0-dim bool tensor, or a PerTensor of them.
        fn: the formula, of one value.
        x: its argument: a value of the step, or a PerTensor of them.
        otherwise: the value where the condition does not hold.
    """
    if isinstance(condition, PerTensor):
        return PerTensor([choose(c, fn, xi, otherwise)
                          for c, xi in zip(condition, per_tensor(x, len(condition)), strict=True)])
    if is_traced(condition):
        return torch.where(condition, fn(x), otherwise)
    return fn(x) if condition else otherwise


def maximum(a, b):
    """max(a, b) of two values of the step: Python's ``max`` for numbers (as the eager
    rule computes it: ``max(a, nan)`` is ``a``), ``torch.clamp`` where one is traced (see
    :func:`is_traced`).

    Args:
        a: a number or a 0-dim tensor.
        b: a number or a 0-dim tensor.
    """
    if is_traced(b):
        return torch.clamp(b, min=a)
    if is_traced(a):
        return torch.clamp(a, min=b)
    return max(a, b)


def minimum(a, b):
    """min(a, b) of two values of the step: Python's ``min`` for numbers, ``torch.clamp``
    where one is traced (see :func:`is_traced`).

    Args:
        a: a number or a 0-dim tensor.
        b: a number or a 0-dim tensor.
    """
    if is_traced(b):
        return torch.clamp(b, max=a)
    if is_traced(a):
        return torch.clamp(a, max=b)
    return min(a, b)


def sub_scaled_(x: Tensor, u: Tensor, c) -> Tensor:
    """x ← x − c·u for one tensor, with ``c`` a value of the step: ``x.sub_(u, alpha=c)``
    for a number (one rounding, as torch computes it), ``x.sub_(u * c)`` for a traced one
    (see :func:`is_traced`: ``alpha=`` takes numbers only). :class:`TensorList`'s ``sub_``
    does the same for a whole group.

    Args:
        x: the tensor, changed in place.
        u: the tensor whose multiple is subtracted.
        c: the factor: a number or a 0-dim tensor.
    """
    return x.sub_(u.mul(c)) if is_traced(c) else x.sub_(u, alpha=c)


def _scalars(x):
    """A number or PerTensor as foreach accepts it (a number, or a list of numbers).

    Under ``optlib.compile`` scalars may be 0-dim tensors (step counts stay tensors so that
    the compiled graph does not depend on their values): see :func:`_traced_scalars`.
    A TensorList (``p.mul_(q)``) passes through."""
    if isinstance(x, PerTensor):
        x = list(x)
    if isinstance(x, list | Tensor) and torch.compiler.is_compiling():
        return _traced_scalars(x)
    return x


def _traced_scalars(x):
    """Scalars while torch.compile traces: a plain list (see :func:`_plain`), and each 0-dim
    tensor (a bias correction) passed through a view that makes Inductor compute it once;
    otherwise it inlines the computation, ``pow`` included, into every loop that reads it.

    Not a 0-dim tensor that is itself a view (``_base``), such as the entries that
    ``unbind`` makes of one stacked tensor (LAMB's and LARS's trust ratios times lr): it
    is handed on as it is. Inductor's ``as_strided`` (torch 2.13) takes the offset of a
    view of a buffer not yet computed as 0, so every such entry read the first one (the
    compiled LAMB gave every tensor the first tensor's ratio: 1e-2 off the eager numbers
    in 5 steps; a ``clone`` in between does not help, Inductor removes it). Such an entry
    is read from its computed buffer instead, or Inductor inlines its few scalar
    operations into the loop that reads it."""
    def once(v):
        if isinstance(v, Tensor) and v.dim() == 0 and v._base is None:
            return v.as_strided((), ())
        return v
    return once(x) if isinstance(x, Tensor) else [once(v) for v in x]


def _scalar(tensors: list, x):
    """A number ``x`` for a foreach call on ``tensors`` that takes a scalar (``mul``, ``div``,
    ``add``): as a 0-dim float64 CPU tensor where the tensors are float32 or float64 CPU
    tensors of one or more dimensions (not DTensors) and nothing is traced, else as
    :func:`_scalars` hands it on.

    Why: on the CPU a foreach call with a Python number wraps the number into a tensor
    once per tensor of the list; with a 0-dim tensor it does not. Measured (torch 2.13,
    one thread, 200 tensors): ``_foreach_mul_`` took 0.52 ms with a number and 0.14 ms
    with a 0-dim tensor on one-element tensors, 0.78 against 0.33 ms on tensors of 5,000.
    Where it is used the numbers are the same bits (``tests/test_tensorlist.py``): the
    kernel reads either as a double and computes in the tensors' dtype. Not elsewhere:
    a 0-dim float64 operand of a 0-dim float32 tensor (a step count, NAdam's product of
    momenta) makes the product float64 before it is rounded, and in-place foreach
    products of bfloat16 or float16 tensors round a number differently from a tensor.

    The tensor is made with ``torch.scalar_tensor``, which took 3.6 us where
    ``torch.tensor`` took 10.6 (AMD EPYC, loaded). A list of one CPU tensor does not get
    here (:func:`_alone`)."""
    if (type(x) is float or type(x) is int) and tensors and not torch.compiler.is_compiling():
        first = tensors[0]
        if (first.is_cpu and not is_sharded(first)
                and all(t.dtype in _EXACT and t.dim() for t in tensors)):
            return torch.scalar_tensor(x, dtype=torch.float64, device="cpu")
    return _scalars(x)


_EXACT = (torch.float32, torch.float64)


def _is_one(alpha) -> bool:
    """Whether ``alpha`` is the number 1 (a traced alpha is not compared: that would read
    its value in Python)."""
    return not is_traced(alpha) and alpha == 1


def _alone(xs: list) -> Tensor | None:
    """The tensor of a list of one float32 or float64 CPU tensor or parameter (not a subclass
    such as ``DTensor``; nothing traced), on which a method calls the tensor's own
    operation; else None (a foreach call). Not bfloat16 or float16: there foreach rounds
    a number otherwise than the tensor's operation (``tests/test_tensorlist.py`` checks
    the bits for all four).

    Why: the eager step calls its rule on each large matrix alone (a chunk of its own,
    :func:`~optlib.optimizer.eager_chunks`), so a rule's every operation is a foreach
    call on a list of one tensor, and on the CPU that call runs the tensor's operation
    in a loop of one (foreach's CPU kernels are that loop): the same arithmetic and bits,
    after foreach's checks of its lists. Calling the operation directly saves those
    checks and this module's handing on of arguments, a few microseconds an operation
    (measured, ``_foreach_addcdiv_`` 8.1 against ``addcdiv_`` 4.7 us on a loaded AMD
    EPYC), which a step on 20 matrices of 1000 x 500 pays some 180 times."""
    if len(xs) == 1:
        x = xs[0]
        if (type(x) in _PLAIN and x.dtype in _EXACT and x.is_cpu
                and not torch.compiler.is_compiling()):
            return x
    return None


#: The types :func:`_alone` takes (exactly these: a subclass such as ``DTensor`` keeps foreach).
_PLAIN = (Tensor, torch.nn.Parameter)


def _one(x):
    """The entry of a one-tensor list's argument: a list's or PerTensor's first, a number
    itself."""
    return x[0] if isinstance(x, _SEQUENCES) else x


def _plain(x: list) -> list:
    """A TensorList as torch.compile can hand it to a ``torch._foreach_*`` function: a plain
    list (dynamo cannot pass a list subclass to a torch function). Eager: ``x`` itself."""
    return list(x) if torch.compiler.is_compiling() else x


class TensorList(list):
    """A list of tensors whose arithmetic runs one ``torch._foreach_*`` call for all of them.

    Method names and arguments follow ``torch.Tensor``; a trailing underscore means in
    place, exactly as for tensors. ``other`` may be a TensorList (elementwise pairs), a
    number or a :class:`PerTensor`.
    """

    # ---- construction -------------------------------------------------------------------
    def clone(self) -> TensorList:
        return TensorList([t.clone() for t in self])

    def select(self, mask: Sequence[bool]) -> TensorList:
        """The tensors where ``mask`` is true (the same tensor objects, so in-place ops stick)."""
        return TensorList([t for t, keep in zip(self, mask, strict=True) if keep])

    def map(self, fn: Callable[[Tensor], Tensor]) -> TensorList:
        """Apply a per-tensor function (for rules that depend on each tensor's shape)."""
        return TensorList([fn(t) for t in self])

    # ---- in place -----------------------------------------------------------------------
    def add_(self, other, alpha: Number = 1) -> TensorList:
        if (x := _alone(self)) is not None:
            if isinstance(other, list):
                x.add_(other[0], alpha=alpha)
            else:
                x.add_(_one(other if _is_one(alpha) else other * alpha))
            return self
        if isinstance(other, list):
            if is_traced(_scalars(alpha)):   # a 0-dim tensor alpha: other · alpha
                return self.add_(TensorList(other).mul(alpha))
            torch._foreach_add_(_plain(self), _plain(other), alpha=alpha)
        else:
            torch._foreach_add_(_plain(self), _scalar(self, other if _is_one(alpha) else other * alpha))
        return self

    def sub_(self, other, alpha: Number = 1) -> TensorList:
        # x − α·y is x + (−α)·y to the bit (negation is exact; torch's sub is its add with
        # −α): add_'s paths, its 0-dim scalar included (tests/test_tensorlist.py)
        return self.add_(other, alpha=-alpha)

    def mul_(self, other) -> TensorList:
        if (x := _alone(self)) is not None:
            x.mul_(_one(other))
            return self
        torch._foreach_mul_(_plain(self), _scalar(self, other))
        return self

    def div_(self, other) -> TensorList:
        if (x := _alone(self)) is not None:
            x.div_(_one(other))
            return self
        torch._foreach_div_(_plain(self), _scalar(self, other))
        return self

    def mul_where_(self, condition, other: list) -> TensorList:
        """``self · other`` for the tensors where ``condition`` holds, unchanged elsewhere.

        Eagerly (bools) one foreach multiplication of the tensors chosen; traced (0-dim
        bool tensors, see :func:`is_traced`) ``torch.where(condition, other, 1)`` per
        tensor, which chooses without reading the condition (multiplying by 1 changes
        no bit).

        Args:
            condition: one for all tensors or a PerTensor of one per tensor: bools, or
                0-dim bool tensors.
            other: the factors, a TensorList.
        """
        conditions = per_tensor(condition, len(self))
        if is_traced(conditions):
            for x, c, o in zip(self, conditions, other, strict=True):
                x.mul_(torch.where(c, o, 1.0))
        elif all(conditions):
            self.mul_(other)
        elif any(conditions):
            self.select(conditions).mul_(TensorList(other).select(conditions))
        return self

    def addcmul_(self, tensor1: list, tensor2: list, value=1) -> TensorList:
        if (x := _alone(self)) is not None:
            x.addcmul_(tensor1[0], tensor2[0], value=_one(value))
            return self
        value = _scalars(value)
        # A traced value: (value · t1) * t2, as torch computes it (foreach addcmul/addcdiv
        # take no 0-dim tensor, and their one-value-per-tensor overloads cannot be traced
        # for CPU tensors).
        if is_traced(value):
            return self.add_(TensorList(tensor1).mul(value).mul_(tensor2))
        torch._foreach_addcmul_(_plain(self), _plain(tensor1), _plain(tensor2), value)
        return self

    def addcdiv_(self, tensor1: list, tensor2: list, value=1) -> TensorList:
        if (x := _alone(self)) is not None:
            x.addcdiv_(tensor1[0], tensor2[0], value=_one(value))
            return self
        value = _scalars(value)
        if is_traced(value):  # as torch computes it: (value · t1) / t2 (see addcmul_)
            return self.add_(TensorList(tensor1).mul(value).div_(tensor2))
        torch._foreach_addcdiv_(_plain(self), _plain(tensor1), _plain(tensor2), value)
        return self

    def lerp_(self, end: list, weight) -> TensorList:
        if (x := _alone(self)) is not None:
            x.lerp_(end[0], _one(weight))
            return self
        torch._foreach_lerp_(_plain(self), _plain(end), _scalars(weight))
        return self

    def maximum_(self, other: list) -> TensorList:
        if (x := _alone(self)) is not None:
            torch.maximum(x, other[0], out=x)
            return self
        torch._foreach_maximum_(_plain(self), _plain(other))
        return self

    def clamp_max_(self, value) -> TensorList:
        if (x := _alone(self)) is not None:
            x.clamp_max_(_one(value))
            return self
        torch._foreach_clamp_max_(_plain(self), _scalars(value))
        return self

    def sqrt_(self) -> TensorList:
        if (x := _alone(self)) is not None:
            x.sqrt_()
            return self
        torch._foreach_sqrt_(_plain(self))
        return self

    def reciprocal_(self) -> TensorList:
        if (x := _alone(self)) is not None:
            x.reciprocal_()
            return self
        torch._foreach_reciprocal_(_plain(self))
        return self

    def sign_(self) -> TensorList:
        if (x := _alone(self)) is not None:
            x.sign_()
            return self
        torch._foreach_sign_(_plain(self))
        return self

    def zero_(self) -> TensorList:
        if (x := _alone(self)) is not None:
            x.zero_()
            return self
        torch._foreach_zero_(_plain(self))
        return self

    def copy_(self, src: list) -> TensorList:
        if any(is_sharded(t) for t in self):   # DTensor has no _foreach_copy_ rule (torch 2.13)
            for t, s in zip(self, src, strict=True):
                t.copy_(s)
            return self
        torch._foreach_copy_(_plain(self), _plain(src))
        return self

    # ---- out of place -------------------------------------------------------------------
    def add(self, other, alpha: Number = 1) -> TensorList:
        if (x := _alone(self)) is not None:
            if isinstance(other, list):
                return TensorList([x.add(other[0], alpha=alpha)])
            return TensorList([x.add(_one(other if _is_one(alpha) else other * alpha))])
        if isinstance(other, list):
            if is_traced(_scalars(alpha)):
                return self.add(TensorList(other).mul(alpha))
            return TensorList(torch._foreach_add(_plain(self), _plain(other), alpha=alpha))
        scalar = other if _is_one(alpha) else other * alpha
        return TensorList(torch._foreach_add(_plain(self), _scalar(self, scalar)))

    def sub(self, other, alpha: Number = 1) -> TensorList:
        if isinstance(other, list):
            if is_traced(_scalars(alpha)):
                return self.sub(TensorList(other).mul(alpha))
            return TensorList(torch._foreach_sub(_plain(self), _plain(other), alpha=alpha))
        scalar = other if _is_one(alpha) else other * alpha
        return TensorList(torch._foreach_sub(_plain(self), _scalars(scalar)))

    def mul(self, other) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([x.mul(_one(other))])
        return TensorList(torch._foreach_mul(_plain(self), _scalar(self, other)))

    def div(self, other) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([x.div(_one(other))])
        return TensorList(torch._foreach_div(_plain(self), _scalar(self, other)))

    def addcmul(self, tensor1: list, tensor2: list, value=1) -> TensorList:
        value = _scalars(value)
        if is_traced(value):
            return self.add(TensorList(tensor1).mul(value).mul_(tensor2))
        return TensorList(torch._foreach_addcmul(_plain(self), _plain(tensor1), _plain(tensor2), value))

    def addcdiv(self, tensor1: list, tensor2: list, value=1) -> TensorList:
        value = _scalars(value)
        if is_traced(value):
            return self.add(TensorList(tensor1).mul(value).div_(tensor2))
        return TensorList(torch._foreach_addcdiv(_plain(self), _plain(tensor1), _plain(tensor2), value))

    def lerp(self, end: list, weight) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([x.lerp(end[0], _one(weight))])
        return TensorList(torch._foreach_lerp(_plain(self), _plain(end), _scalars(weight)))

    def sqrt(self) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([x.sqrt()])
        return TensorList(torch._foreach_sqrt(_plain(self)))

    def reciprocal(self) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([x.reciprocal()])
        return TensorList(torch._foreach_reciprocal(_plain(self)))

    def abs(self) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([x.abs()])
        return TensorList(torch._foreach_abs(_plain(self)))

    def sign(self) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([x.sign()])
        return TensorList(torch._foreach_sign(_plain(self)))

    def neg(self) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([x.neg()])
        return TensorList(torch._foreach_neg(_plain(self)))

    def maximum(self, other: list) -> TensorList:
        if (x := _alone(self)) is not None:
            return TensorList([torch.maximum(x, other[0])])
        return TensorList(torch._foreach_maximum(_plain(self), _plain(other)))

    def norm(self, ord: Number = 2) -> list[Tensor]:
        """One 0-dim tensor per tensor: its ``ord``-norm over all elements."""
        return list(torch._foreach_norm(_plain(self), ord))

    # ---- operators, for rules that read best as formulas --------------------------------
    __neg__ = neg

    def __add__(self, other):
        return self.add(other)

    __radd__ = __add__

    def __sub__(self, other):
        return self.sub(other)

    def __rsub__(self, other):
        return self.neg().add_(other)

    def __mul__(self, other):
        return self.mul(other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self.div(other)

    def __rtruediv__(self, other):
        # As torch.Tensor does it: c / x = (1/x) · c (the rounding matters for parity).
        return self.reciprocal().mul_(other)

    # A TensorList is a list: ``==`` stays list equality, and ``+`` with a plain list
    # would concatenate, so keep arithmetic to TensorLists, numbers and PerTensor.
