"""The fast path of :func:`optlib.compile`: calling a compiled graph directly. Everything
here relies on private torch internals; everything else in :mod:`optlib.compiled` uses
public APIs only (``torch.compile``).

Why: after the first call of a graph, a step through ``torch.compile``'s frame hook pays
for dynamo's guards and for unpacking every tensor argument, which with hundreds of
tensors costs more than the step's arithmetic. Measured (torch 2.13, 2-core CPU; the
module docstring of :mod:`optlib.compiled` has the details): about 0.7 ms per call
through the hook against 0.2 ms direct on 200 tiny tensors, and with 200 tensors of
5,000 parameters the compiled AdamW step went from 1.1-1.3x torch's fused step through
the hook to 0.85-0.9x direct.

The private internals, all of them (tested with torch 2.13, ``tests/test_compiled.py``):

* ``torch._TorchCompileInductorWrapper``: Inductor as ``torch.compile`` calls it, wrapped
  in a backend that notes each graph it compiles and where the graph's arguments come
  from among the call's tensors;
* ``torch._C._dynamo.guards.TensorGuards``: dynamo's C++ checks of tensor metadata
  (dtype, device, shape, strides), which a direct call runs before calling the graph;
* ``torch._dynamo.utils.counters``: the number of graphs compiled so far (to time the
  calls that compiled).

If one of them is missing or fails (another torch), the fast path switches itself off
and every step goes through ``torch.compile``: the same numbers, a slower step, no error.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import Tensor

try:   # dynamo's checks of tensor metadata, in C++ (private API)
    from torch._C._dynamo.guards import TensorGuards
except ImportError:  # a torch without them: every step goes through torch.compile
    TensorGuards = None


def graphs_compiled() -> int | None:
    """How many graphs dynamo has compiled in this process (None if torch does not say)."""
    try:
        return torch._dynamo.utils.counters["stats"]["unique_graphs"]
    except Exception:  # noqa: BLE001 -- a private counter: absent means unknown
        return None


class _Graph:
    """One graph as Inductor compiled it: ``run(*args)``, and where each of its arguments
    comes from among the call's tensors (``params + grads + state columns + [lr]``)."""

    def __init__(self, run, order: tuple[int, ...]):
        self.run = run
        self.pick = operator.itemgetter(*order) if len(order) > 1 else (
            lambda sources: (sources[order[0]],))


class _DirectCall:
    """A group's shortcut to the graph that its last step ran, with the guards under which
    that graph is the right one: the ``key`` of the call (everything but the tensors), and
    each tensor's metadata."""

    def __init__(self, graph: _Graph, key: tuple, hyper: dict, args: tuple):
        self.graph, self.key, self.hyper = graph, key, hyper
        self.guards = TensorGuards(*args, dynamic_dims_sizes=[list(a.shape) for a in args],
                                   dynamic_dims_strides=[list(a.stride()) for a in args])

    def __call__(self, key: tuple, hyper: dict, sources: list) -> bool:
        """Run the graph if it is the right one for this call; whether it ran."""
        if key != self.key or hyper != self.hyper:
            return False
        args = self.graph.pick(sources)
        if not self.guards.check(*args):
            return False
        self.graph.run(*args)
        return True


class FastPath:
    """The direct calls of one compiled optimizer: the backend that notes graphs, and per
    parameter group the graph its last step ran, with its guards.

    ``steps`` counts the group steps that called a graph directly; ``failure`` is the
    exception that switched the fast path off, or None.
    """

    def __init__(self):
        self.steps = 0
        self.failure: BaseException | None = None
        self._direct: dict[object, _DirectCall] = {}
        self._sources: list = []       # the tensors of the call being compiled
        self._ran: _Graph | None = None  # the graph that the last torch.compile call ran

    def _off(self, error: BaseException) -> None:
        self.failure = error
        self._direct.clear()

    def backend(self, options: dict) -> dict:
        """``torch.compile``'s options with Inductor behind a backend that notes each graph
        (``options`` unchanged for another backend, or where the wrapper is missing)."""
        inductor = getattr(torch, "_TorchCompileInductorWrapper", None)
        if options.get("backend", "inductor") != "inductor" or inductor is None:
            return options
        options = dict(options)
        try:
            wrapped = inductor(options.get("mode"), options.get("options"), False)
        except Exception as error:  # noqa: BLE001 -- another torch: the public path
            self._off(error)
            return options
        options.pop("mode", None)
        options.pop("options", None)
        options["backend"] = self._noting(wrapped)
        return options

    def _noting(self, backend):
        def compile_graph(gm, example_inputs):
            run = backend(gm, example_inputs)
            where = {id(t): i for i, t in enumerate(self._sources)}
            order = tuple(where.get(id(t), -1) for t in example_inputs)
            (outputs,) = next(n for n in gm.graph.nodes if n.op == "output").args
            # No direct calls for a graph with an argument that is not one of the call's
            # tensors, for a call in which one tensor stands in two places (the graph
            # would take it once; a later call may have two tensors there), or for a graph
            # that returns values: the frame around it does something with them (appends
            # a tensor to a Python list, say) that a direct call would skip.
            if -1 in order or not order or len(where) != len(self._sources) or outputs:
                return run
            graph = _Graph(run, order)

            def run_noted(*args):
                self._ran = graph
                return run(*args)
            return run_noted
        return compile_graph

    def compiling(self, sources: list) -> None:
        """The tensors of the ``torch.compile`` call about to be made."""
        self._sources, self._ran = sources, None

    def compiled(self) -> None:
        """The ``torch.compile`` call is over (the graph it ran stays noted for :meth:`note`)."""
        self._sources = []

    def call(self, slot, key: tuple, others: dict, sources: list) -> bool:
        """Call the graph that the last step of ``slot`` (a group's chunk of tensors) ran, if
        its guards hold; whether it ran."""
        direct = self._direct.get(slot)
        if direct is None or torch.compiler.is_compiling() or not direct(key, others, sources):
            return False
        self.steps += 1
        return True

    def note(self, slot, key: tuple, others: dict, sources: list) -> None:
        """Let the next steps of ``slot`` call the graph that this step ran directly, if they
        can: a graph of the call's tensors only, no state that is a Python number (the graph
        would hold its value as a constant), hyperparameters that compare as plain values."""
        graph, self._ran = self._ran, None
        if (graph is None or TensorGuards is None or self.failure is not None
                or not all(isinstance(t, Tensor) for t in sources)
                or any(isinstance(v, Tensor) for v in others.values())):
            self._direct.pop(slot, None)
            return
        try:
            # A deep copy: a list among the hyperparameters, changed in place later, must
            # not change the snapshot it is compared with.
            self._direct[slot] = _DirectCall(graph, key, copy.deepcopy(others),
                                                  graph.pick(sources))
        except Exception as error:  # noqa: BLE001 -- another torch's TensorGuards
            self._off(error)
