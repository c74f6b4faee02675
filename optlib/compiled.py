"""An optional compiled step: the same update rule, run through ``torch.compile``.

    opt = optlib.compile(optlib.AdamW(model.parameters(), lr=1e-3))

``optlib.compile(optimizer)`` returns the same optimizer object, whose ``step`` now runs
its ``update`` rule as compiled graphs, one per parameter group or chunk of it (see
"Chunks" below; PyTorch's Inductor fuses
the rule's foreach operations into a few loops over each tensor, so moments, bias
corrections and the parameter update happen in one pass over memory). Nothing else
changes: gathering gradients, creating state, ``param_groups``, ``state_dict``,
schedulers and hooks are the eager optimizer's own, and so is the rule: there is no
second copy of it, the compiler traces the one that ``update`` defines.

What makes the rule traceable, and its graph independent of the step and the learning rate:

* the rule sees the group's state as lists (one per key) and its ``TensorList`` methods hand
  ``torch._foreach_*`` plain lists while compiling (dynamo cannot pass a list subclass on);
* step counts stay 0-dim tensors: ``s.advance()`` returns one 0-dim float64 tensor when all
  tensors of the group are at the same step (the usual case; likewise any 0-dim state
  entry equal across the group, such as NAdam's product of momenta), a
  :class:`~optlib.PerTensor` of them otherwise, instead of Python numbers (reading them
  would break the graph and bake the step into it). Bias corrections such as
  ``1 - beta1**t`` are so computed inside
  the graph, in float64 as the eager path computes them in Python floats, and once per
  step rather than once per element (see ``optlib.tensorlist._traced_scalars``);
* the learning rate, which the eager step hands the rule as a Python number, goes in as a
  0-dim float64 tensor too, so a scheduler changing it every step reuses the compiled graph;
  so do the other numbers of the step (``Optimizer.step_values``: AdamWScheduleFree's
  warmup lr, averaging weight and count; SophiaG's ``bs``). Rules therefore never branch
  in Python on a step-dependent value (RAdam chooses per tensor with ``torch.where``,
  LAMB and LARS keep their trust ratios as tensors), and combine a TensorList with such a
  value through methods (``ratio.mul(lr)``), which hand foreach plain lists.
  Other hyperparameters (betas, eps, weight decay, flags) are constants of the graph
  (``dynamic=False``): changing one compiles again, and after torch.compile's limit of
  8 graphs the optimizer falls back to the eager rule, with the warning below.

**The fast path, and why it is kept.** After the first call of a graph, later steps call
Inductor's compiled code directly, not through ``torch.compile``'s frame hook: with
hundreds of tensors, dynamo's guards and the unpacking of a thousand arguments cost more
than the step's arithmetic (measured here on
200 tiny tensors, right after other work had run: about 0.7 ms per call through the hook,
0.2 ms direct; with 200 tensors of 5,000 parameters that took the compiled AdamW step
from 1.1-1.3x torch's fused step to 0.85-0.9x). The direct call
keeps its own guards, checked every step: the same hyperparameters (other than lr), the
same number of tensors and kinds of state, and every tensor's dtype, device, shape and
strides as when the graph was compiled (dynamo's C++ ``TensorGuards``). Anything else
goes through ``torch.compile`` as before, which recompiles where needed. Direct calls
are made only for a graph that returns nothing: a rule that hands a tensor to Python
(appends it to a list, say) makes its graph return it, and then every step goes through
``torch.compile``, which replays the side effect. (Not checked: that two parameters which
did not share memory when the graph was compiled have come to share it, by assigning
one's ``.data`` to a view of the other.)

The direct calls need three private torch internals (Inductor's wrapper, dynamo's
``TensorGuards``, its graph counter); all of them, and only they, live in
``optlib/_fastpath.py``, tested with torch 2.13. Without them (or if one fails on another
torch) the fast path switches itself off and every step goes through ``torch.compile``'s
public API: the same numbers, the slower step measured above. A rewrite of the whole path
on public ``torch.compile`` alone was measured on the same 2-core CPU: its steady step
was 2.7x torch's fused step where this one is 0.87x, and its first step took 40-121 s;
so the fast path stays, small and isolated.

Rules change only tensors (:mod:`optlib.optimizer`): the eager rule reads its group through
a read-only view, and the traced one a copy of it, with the step's own values
(``Optimizer.step_values``, SophiaG's ``bs``) in it as 0-dim tensors (above). The direct
calls compare the group's other entries with those the graph was compiled for, except the
bookkeeping that ``step_values`` keeps in the group and the rule never reads
(``Optimizer.bookkeeping_keys``: AdamWScheduleFree's running sums).

Numbers equal the eager optimizer's to rounding (Inductor may order a fused expression's
floating-point operations differently), not always bit for bit; in low precision too,
since the compiled code rounds to bfloat16 or float16 wherever the eager rule does.

Not every rule traces into one graph with torch 2.13. Adam8bit (codes and scales for
some tensors, full-precision moments for others, worked through block by block in
Python), and Shampoo and SOAP (which choose in Python, per tensor, the steps that
refresh their roots or eigenbasis) fall back: ``optlib.compile`` warns once and keeps
their eager rule, so a compiled one costs what the eager one costs, plus one failed
trace on the first step. SGD, Adagrad, RMSprop, Adadelta, Adam, AdamW, NAdam, RAdam,
Adamax, Adafactor (whose eager rule reads norms into Python with ``.item()``, as torch's
does, and whose traced one keeps them as tensors), Lion, LAMB, LARS, SophiaG,
AdamWScheduleFree and Muon compile (``tests/test_compiled.py`` checks every optimizer of
the test catalogue, in float32 and float64, across a ``state_dict`` round trip).

**Chunks.** The first step compiles. Inductor's time grows faster than the number of
tensors in a graph: one graph over 200 tensors of 5,000 parameters took 74-79 s on the
2-core CPU this book is checked on (20 tensors of 500,000: 4-5 s). So a group is cut
into chunks of at most ``CHUNK`` = 32 tensors, and tensors of the same layout (shape,
strides, dtype, device, kinds and shapes of state) go together, in chunks of one size
where one between 16 and 32 divides their number, else of nearly equal sizes: a chunk of
the same shapes as one compiled before is the same graph, so 200 tensors of one shape
compile one graph of 25 tensors and are then 8 calls of it (AdamW, first step, CPU time
with the C++ compiler's, measured while the machine was shared with other jobs at a load
of 15-17, which inflates it: 18.5-28.6 s, where one graph over all 200 took 180 s and
two graphs of 28 and 29 tensors 51.8 s). On the same machine when quiet, with 2 threads
(benchmarks/results/step-time-compiled-2026-11-27.md), the first step of Adam on 200
tensors of 5,000 took 20.9 s of wall time from an empty Inductor cache (the process's
first compile, Inductor's start-up included) and 13.5 s from a warm one; AdamW's, right
after it, 7.3-7.6 s; on 20 tensors of 500,000, 4.9-5.8 s. Most of the difference between
the two was Inductor's test builds of each vector instruction set, which optlib.compile
now skips
(``cpp.vec_isa_ok``, below): from an empty cache the first step's CPU time went from 26.6
to 12.7 s (benchmarks/results/compile-time-2026-11-27.md). A group of at most 32 tensors
whose layouts all differ stays one graph, as before (a small model: one compile).
Tensors of one layout of 1 MiB or more go one per chunk where the rule computes a tensor
of their size and then reduces it (``Optimizer.reduces_computed``: LAMB's norm of its
direction, Adafactor's means of g², Muon's products; see ``CompiledUpdate._chunks``), and
together otherwise. Rules
compute per tensor (norms, trust ratios and moments are each tensor's own), so a chunk's
step is the group's step restricted to it. Each parameter group, and each change of the
tensors with a gradient, plans its chunks anew and compiles what it has not compiled
yet; Inductor also caches compiled code on disk, so a second run of the same program
compiles faster. The steady step pays one direct call per chunk
(``benchmarks/step_time.py --compiled`` compares it with torch's fused step).

Where compiling fails (no C++ compiler for Inductor's CPU code, a platform or Python
without ``torch.compile`` support, a rule the compiler cannot trace in one graph), the
optimizer warns once (a ``RuntimeWarning`` naming the reason) and goes on with the eager
rule, which gives the eager numbers.
"""

from __future__ import annotations

import itertools
import math
import operator
import time
import types
import warnings

import torch
from torch import Tensor

from ._fastpath import FastPath, graphs_compiled
from .optimizer import Hyper, Optimizer, State
from .tensorlist import PerTensor, TensorList


class _TracedState(State):
    """The :class:`~optlib.optimizer.State` the compiled rule sees: the group's state as
    one list per key, and 0-dim entries (step counts) as tensors rather than Python numbers.

    Keys in ``shared`` hold the same value for every tensor (checked before the call, the
    usual case); their values come back as one 0-dim tensor, so that the graph computes
    bias corrections once rather than once per tensor. Other keys give a PerTensor."""

    def __init__(self, columns: dict[str, list], new: list[bool], shared: frozenset,
                 states: list[dict]):
        self._columns = columns
        self._shared = shared
        self.new = new
        # each tensor's own state dict, for rules that work tensor by tensor (``s.each``):
        # the optimizer's very dicts, so that torch.compile replays a replaced entry
        self._states = states

    def __getattr__(self, key: str) -> TensorList:
        if key.startswith("_"):
            raise AttributeError(key)
        return TensorList(self._columns[key])

    def __getitem__(self, key: str) -> TensorList:
        return TensorList(self._columns[key])

    def advance(self, key: str = "step"):
        self.count(key)
        return self.values(key)

    def count(self, key: str = "step"):
        torch._foreach_add_(self._columns[key], 1)
        return TensorList(self._columns[key])

    def values(self, key: str):
        # float64, like the Python floats of the eager path (1 - 0.999**t loses digits in float32)
        column = self._columns[key]
        if key in self._shared:
            return column[0].to(torch.float64)
        return PerTensor([c.to(torch.float64) for c in column])


def _rule(update, group, params, grads, columns, new, shared, states):
    """What torch.compile traces: the optimizer's own rule on the group's lists."""
    update(group, TensorList(params), TensorList(grads),
           _TracedState(columns, new, shared, states))


_copies = itertools.count()

#: The most tensors in one compiled graph (see ``CompiledUpdate._chunks``).
CHUNK = 32

#: The size in bytes from which tensors of one layout are chunks of one tensor each (one
#: graph, called once per tensor) where the rule reduces a tensor of theirs that it
#: computes (``Optimizer.reduces_computed``: LAMB): see ``CompiledUpdate._chunks``.
ALONE_BYTES = 1 << 20


def _split(indices: list[int]) -> list[list[int]]:
    """``indices`` in consecutive chunks of at most ``CHUNK``: of one size where a size
    between ``CHUNK/2`` and ``CHUNK`` divides their number (one graph: 200 tensors are 8
    chunks of 25), else of sizes that differ by at most one (two graphs)."""
    n = len(indices)
    size = next((k for k in range(min(CHUNK, n), CHUNK // 2, -1) if n % k == 0), None)
    if size is not None:
        sizes = [size] * (n // size)
    else:
        count = -(-n // CHUNK)
        size, extra = divmod(n, count)
        sizes = [size + 1] * extra + [size] * (count - extra)
    bounds = list(itertools.accumulate(sizes, initial=0))
    return [indices[a:b] for a, b in itertools.pairwise(bounds)]


class CompiledUpdate:
    """Stands in for an optimizer's ``update``: calls the rule through ``torch.compile``,
    and the eager rule from the first failure on (after one warning).

    ``compile_seconds`` is the time spent in calls that compiled (the first step, and any
    later one that met a new group layout); ``failure`` is the exception that made it
    fall back, or ``None``; ``direct_steps`` counts the group steps that called the
    compiled code directly (see the module docstring).

    Args:
        optimizer: the optimizer whose rule is compiled.
        options: keyword arguments of torch.compile.
    """

    def __init__(self, optimizer: Optimizer, options: dict):
        self.eager = type(optimizer).update.__get__(optimizer)
        self.name = type(optimizer).__name__
        self.bookkeeping = frozenset(optimizer.bookkeeping_keys)
        #: why the optimizer's rule is not compiled at all (``Optimizer.compiles``), or None
        self.refusal = None if optimizer.compiles is True else optimizer.compiles
        # Inductor options: no size asserts (dynamo's guards, and those of the direct calls,
        # already check every input's sizes and strides; the asserts would check them again,
        # one Python call per tensor and step) and no vectorized loop tails (smaller code
        # for a loop per tensor; the step time measured the same either way, within noise),
        # and rounding where the eager rule rounds: without emulate_precision_casts, Inductor
        # keeps a fused chain of bfloat16 operations in float32 (Muon's Newton-Schulz
        # iteration then drifts from the eager numbers by about bfloat16's precision).
        # cpp.vec_isa_ok: the vector instructions the CPU reports (which ATen's own kernels
        # dispatch on too) are taken as usable, without Inductor's test builds of each
        # instruction set. Those ran 4 C++ compiles of ATen's vector headers, about 12 s of
        # CPU of a first compile from an empty cache on the book's 2-core CPU (which took
        # 27 s of CPU in all; benchmarks/results/compile-time-2026-11-27.md). A compiler
        # that cannot build them fails the kernel's compile, and the rule falls back to eager.
        # dynamic=False: hyperparameters other than lr stay constants of the graph (a change
        # compiles again) rather than becoming symbolic numbers.
        self.options = {"fullgraph": True, "dynamic": False, **options}
        if "mode" not in options and options.get("backend", "inductor") == "inductor":
            self.options["options"] = {"size_asserts": False, "cpp.enable_loop_tail_vec": False,
                                       "emulate_precision_casts": True, "cpp.vec_isa_ok": True,
                                       **options.get("options", {})}
        self.compiled: dict[tuple, object] = {}
        self.failure: BaseException | None = None
        self.compile_seconds = 0.0
        self.fast = FastPath()         # direct calls of the compiled graphs (optlib._fastpath)
        self._optimizer = optimizer
        # Per group, keyed by its place in ``param_groups`` (see _place): its chunks (see
        # _chunks); per chunk, keyed by that place and the chunk's number: its shared
        # 0-dim state (see _shared) and, in ``self.fast``, its direct call.
        self._plans: dict[object, tuple] = {}
        self._known: dict[tuple, tuple] = {}
        #: whether large tensors of one layout go one per chunk (see ``_chunks``)
        self.reduces_computed = bool(optimizer.reduces_computed)

    @property
    def direct_steps(self) -> int:
        """The group steps that called compiled code directly."""
        return self.fast.steps

    def _compile(self):
        # torch.compile keeps its graphs per code object (8 at most): give each optimizer
        # its own copy of ``_rule`` so that optimizers do not evict each other's graphs.
        # (Code objects compare by value, so the copy needs a name of its own.)
        name = f"_rule_{next(_copies)}"
        rule = types.FunctionType(_rule.__code__.replace(co_name=name), _rule.__globals__, name)
        return torch.compile(rule, **self.fast.backend(self.options))

    def _place(self, group: dict) -> object:
        """What identifies ``group`` from step to step: its index in the optimizer's
        ``param_groups``. Not the dict's id: ``load_state_dict`` replaces every group's
        dict, and a cache keyed by ids would keep an entry per group at every load (each
        holding the old state's tensors alive). A group that the optimizer does not hold
        (a rule's ``update`` called with a dict of its own) goes by its id."""
        for index, held in enumerate(self._optimizer.param_groups):
            if held is group:
                return index
        return ("id", id(group))

    def _shared(self, slot: tuple, columns: dict, zero_dim: list) -> frozenset:
        """The 0-dim state keys (step counts, NAdam's product of momenta) that hold the same
        value for every tensor of the group (the usual case). Checking costs a sync of all
        of them, so the answer is remembered for as long as the group steps the very same
        tensors: each compiled step changes all of them alike. (A value changed in place
        between steps by other code would go unnoticed.)"""
        scalars = [t for k in zero_dim for t in columns[k]]
        known = self._known.get(slot)
        if (known is not None and len(known[0]) == len(scalars)
                and all(map(operator.is_, scalars, known[0]))):
            return known[1]
        shared = frozenset(k for k in zero_dim
                           if len(set(torch.stack(columns[k]).tolist())) == 1)
        self._known[slot] = (scalars, shared)
        return shared

    def _chunks(self, place: object, p: TensorList, s: State) -> list[list[int] | None]:
        """The group's tensors in the chunks that are compiled and called one by one:
        ``[None]`` (all at once) where no tensor layout occurs more than once and the group
        has at most ``CHUNK`` tensors, the usual case for a small model.

        Otherwise tensors of the same layout (shape, strides, dtype, device, and kinds and
        shapes of state) go together, in chunks of at most ``CHUNK`` of nearly equal
        size: same-shaped chunks are one graph, compiled once and called for each. Such
        tensors of ``ALONE_BYTES`` (1 MiB) or more are chunks of one each, still one graph,
        where the rule computes a tensor of their size and then reduces it (its class says
        so, ``Optimizer.reduces_computed``: LAMB's norm of its direction u, Adafactor's
        means of g², Muon's products): its second pass over that tensor then runs while it
        is still in cache, rather than over all of them from main memory (LAMB on 20
        matrices of 2 MB, one thread: 60 -> 45 ms a step, interleaved). Other rules keep
        the tensors together: a call per tensor made the elementwise ones slower (SGD
        momentum, Adam, AdamW and Adagrad on 20 matrices of 2 MB: 1.16-1.27x torch's fused
        step, against 0.93-0.99x in one call, interleaved in one process). LARS, whose
        norms are of θ and g as they come, stays together too (one per chunk was 1.3x
        slower in one run, but two equal plans differed by 1.17x in another: not better,
        at least).
        The others go in chunks of the same kinds of state (Adafactor keeps factored
        moments for matrices, a full one for vectors). The plan is remembered while the
        group steps the very same parameters and state dicts."""
        states = s._states
        plan = self._plans.get(place)
        if (plan is not None and plan[2] == s.new and len(plan[0]) == len(p)
                and all(map(operator.is_, plan[0], p)) and all(map(operator.is_, plan[1], states))):
            return plan[3]
        layouts: dict[tuple, list[int]] = {}
        for i, (x, st) in enumerate(zip(p, states, strict=True)):
            kinds = tuple((k, tuple(v.shape), v.dtype) if isinstance(v, Tensor) else (k, type(v))
                          for k, v in st.items())
            layouts.setdefault((tuple(x.shape), x.stride(), x.dtype, x.device, kinds, s.new[i]),
                               []).append(i)
        kinds = {tuple(k[0] for k in layout[4]) for layout in layouts}
        if len(p) <= CHUNK and len(layouts) == len(p) and len(kinds) == 1:
            chunks: list = [None]
        else:
            chunks, rest = [], {}
            for layout, where in layouts.items():
                size = math.prod(layout[0])
                if (len(where) > 1 and self.reduces_computed
                        and size * layout[2].itemsize >= ALONE_BYTES):
                    chunks += [[i] for i in where]
                elif len(where) > 1:
                    chunks += _split(where)
                else:      # single tensors, by kinds of state (keys only)
                    rest.setdefault(tuple(k[0] for k in layout[4]), []).extend(where)
            for where in rest.values():
                chunks += _split(sorted(where))
            if chunks == [list(range(len(p)))]:
                chunks = [None]
        self._plans[place] = (list(p), list(states), list(s.new), chunks)
        return chunks

    def __call__(self, group: Hyper, p: TensorList, g: TensorList, s: State) -> None:
        if self.failure is not None:
            return self.eager(group, p, g, s)
        if self.refusal is not None:
            return self._fall_back(group, p, g, s, RuntimeError(self.refusal))
        place = self._place(group._group if isinstance(group, Hyper) else group)
        # The values of this step (the learning rate, schedule-free's averaging weight: the
        # numbers of ``Hyper``'s overlay) go in as 0-dim float64 tensors, so that a scheduler
        # changing them does not recompile.
        values = group._values if isinstance(group, Hyper) else {"lr": group["lr"]}
        traced = {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()
                  if isinstance(v, int | float) and not isinstance(v, bool)}
        others = {k: v for k, v in group.items()
                  if k != "params" and k not in traced and k not in self.bookkeeping}
        for number, chunk in enumerate(self._chunks(place, p, s)):
            if chunk is not None:
                p_, g_ = TensorList(p[i] for i in chunk), TensorList(g[i] for i in chunk)
                s_ = State([s._states[i] for i in chunk], [s.new[i] for i in chunk])
            else:
                p_, g_, s_ = p, g, s
            if self.failure is not None:       # an earlier chunk fell back
                self.eager(group, p_, g_, s_)
            else:
                self._call((place, number), group, p_, g_, s_, traced, others)
        return None

    def _call(self, slot: tuple, group: Hyper, p: TensorList, g: TensorList, s: State,
              traced: dict, others: dict) -> None:
        """One chunk's step: directly, through torch.compile, or (after a failure) eager."""
        states = s._states
        try:
            columns = {k: [st[k] for st in states] for k in states[0]}
        except KeyError as error:  # parameters of the group with different kinds of state
            return self._fall_back(group, p, g, s, error)
        zero_dim = [k for k, c in columns.items() if isinstance(c[0], Tensor) and c[0].dim() == 0]
        shared = self._shared(slot, columns, zero_dim)
        # lr as one per tensor where state scalars differ per tensor (a tensor and a
        # PerTensor do not mix in arithmetic)
        per_tensor_lr = not set(zero_dim) <= shared
        sources = [*p, *g, *itertools.chain.from_iterable(columns.values()), *traced.values()]
        # What the graph depends on besides the tensors (dynamo's guards check the same).
        key = (len(p), tuple(columns), tuple(s.new), shared, per_tensor_lr, tuple(traced),
               torch.is_grad_enabled(), torch.get_default_dtype(),
               torch.are_deterministic_algorithms_enabled())
        if self.fast.call(slot, key, others, sources):
            return None
        hyper = {**group, **traced}
        if per_tensor_lr and "lr" in traced:
            hyper["lr"] = PerTensor([traced["lr"]] * len(p))
        try:
            start, graphs = time.perf_counter(), graphs_compiled()
            # a compiled function (a copy of ``_rule``) per chunk shape: torch.compile keeps
            # at most 8 graphs per function
            shapes = tuple((x.shape, x.dtype) for x in p)
            if shapes not in self.compiled:
                self.compiled[shapes] = self._compile()
            self.fast.compiling(sources)
            self.compiled[shapes](self.eager, hyper, list(p), list(g), columns, s.new, shared,
                                  states)
        except Exception as error:  # noqa: BLE001 -- any compiler failure means: run eager
            return self._fall_back(group, p, g, s, error)
        finally:
            self.fast.compiled()
        if graphs_compiled() != graphs:          # this call compiled a graph
            self.compile_seconds += time.perf_counter() - start
        if not torch.compiler.is_compiling():
            self.fast.note(slot, key, others, sources)
        return None

    def _fall_back(self, group, p, g, s, error: BaseException) -> None:
        self.failure = error
        cause = error                          # dynamo wraps the backend's own error
        while (inner := cause.__cause__ or getattr(cause, "inner_exception", None)) is not None:
            cause = inner
        first_line = (str(cause).strip().splitlines() or [""])[0]
        warnings.warn(
            f"optlib.compile: torch.compile could not compile {self.name}'s update rule "
            f"({type(cause).__name__}: {first_line}); using the eager rule (same numbers, "
            "slower step).", RuntimeWarning, stacklevel=7)  # at the caller of step()
        # A failure while compiling happens before the compiled code runs, so nothing has
        # been updated yet: the eager rule takes this step.
        return self.eager(group, p, g, s)


def compile(optimizer: Optimizer, **options) -> Optimizer:
    """Run ``optimizer``'s update rule through ``torch.compile``; returns ``optimizer``.

    ``options`` go to ``torch.compile`` (defaults: ``fullgraph=True``, ``dynamic=False``;
    for example ``mode="max-autotune-no-cudagraphs"`` or ``backend=...``). Compilation
    happens on the first ``step()``; ``optimizer.update.compile_seconds`` then tells how
    long it took. If ``torch.compile`` cannot compile the rule, one ``RuntimeWarning``
    says why and the optimizer keeps stepping with the eager rule.

    Args:
        optimizer: an optlib optimizer.
        options: keyword arguments of torch.compile.
    """
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be an optlib optimizer, got {type(optimizer).__name__}")
    if not isinstance(optimizer.__dict__.get("update"), CompiledUpdate):
        optimizer.update = CompiledUpdate(optimizer, options)
    return optimizer
