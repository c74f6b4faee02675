"""optlib.compile: the compiled rule gives the eager rule's numbers, a scheduler does not
recompile it, later steps call the compiled code directly only while its guards hold, and
a compile failure falls back to the eager rule with one warning.

The tests that compile take small graphs (about 20 s each on a 2-core CPU, much less when
Inductor's disk cache has them); they are skipped where torch.compile cannot run (no C++
compiler for Inductor's CPU code, no dynamo support).
"""

from __future__ import annotations

import copy
import gc
import warnings
import weakref

import pytest
import torch
from catalogue import ENTRIES

import optlib
from optlib.compiled import CompiledUpdate

SHAPES = ((3, 4), (5,), (2, 3, 2), (7,))


def _cannot_compile() -> str | None:
    """Why torch.compile's CPU backend cannot run here, or None if it can."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile (dynamo) is not supported on this Python/platform"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        get_cpp_compiler()
    except Exception as error:  # noqa: BLE001 -- any failure to find one means: skip
        return f"no C++ compiler for torch.compile's CPU backend ({type(error).__name__})"
    return None


needs_compiler = pytest.mark.skipif(_cannot_compile() is not None, reason=str(_cannot_compile()))


def make_params(seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def run(opt, steps, seed=1):
    """``steps`` steps on fixed gradients (the last tensor never has one), with an lr
    schedule that changes the learning rate every step."""
    gen = torch.Generator().manual_seed(seed)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.7 ** k)
    params = opt.param_groups[0]["params"]
    for _ in range(steps):
        for p in params[:-1]:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        sched.step()
    return params


@needs_compiler
def test_compiled_adamw_equals_eager_and_a_schedule_does_not_recompile():
    kwargs = dict(lr=0.1, betas=(0.8, 0.99), weight_decay=0.1)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = optlib.compile(optlib.AdamW(make_params(), **kwargs))
    assert isinstance(compiled, optlib.AdamW)
    eager = optlib.AdamW(make_params(), **kwargs)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ours = run(compiled, steps=6)
    assert not [w for w in record if "optlib.compile" in str(w.message)]   # no fallback
    theirs = run(eager, steps=6)
    assert compiled.update.failure is None
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1   # 6 lrs, one graph
    # step 1 compiles (fresh state), step 2 runs the graph through torch.compile and notes
    # it; steps 3 to 6 call it directly
    assert compiled.update.direct_steps == 4
    assert compiled.update.compile_seconds > 0
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(ours[:-1], theirs[:-1], strict=True):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(compiled.state[a][key], eager.state[b][key],
                                       rtol=1e-6, atol=1e-9)
    assert compiled.state[ours[0]]["step"].item() == 6
    assert ours[-1] not in compiled.state              # no gradient: untouched, no state
    # state_dict is the eager optimizer's: it loads into torch.optim.AdamW
    twin = torch.optim.AdamW(make_params(), **kwargs)
    twin.load_state_dict(compiled.state_dict())


@needs_compiler
def test_load_state_dict_leaves_no_stale_cache_entries():
    """``load_state_dict`` replaces every group's dict and state: the compiled optimizer's
    caches (per group its chunks, per chunk its shared step counts and its direct call)
    keep one entry per group or chunk over repeated loads, and let the old state go."""
    kwargs = dict(lr=0.1, betas=(0.8, 0.99), weight_decay=0.1)   # the graph of the test above
    params = make_params()
    compiled = optlib.compile(optlib.AdamW(params, **kwargs))
    run(compiled, steps=2)
    update = compiled.update
    sizes = (len(update._plans), len(update._known), len(update.fast._direct))
    assert sizes == (1, 1, 1)
    for _ in range(3):
        old = weakref.ref(compiled.state[params[0]]["exp_avg"])
        compiled.load_state_dict(copy.deepcopy(compiled.state_dict()))
        run(compiled, steps=2)
        gc.collect()
        assert (len(update._plans), len(update._known), len(update.fast._direct)) == sizes
        assert old() is None
    assert update.failure is None and update.direct_steps >= 5


@needs_compiler
def test_compiled_with_step_counts_that_differ_per_tensor():
    """After a step in which only the first tensor had a gradient, counts differ (2, 1, 1):
    the compiled rule then takes one bias correction per tensor, as the eager rule does."""
    kwargs = dict(lr=0.1, weight_decay=0.1)
    compiled, eager = (optlib.AdamW(make_params(), **kwargs) for _ in range(2))
    for opt in (compiled, eager):
        first = opt.param_groups[0]["params"][0]
        first.grad = torch.ones_like(first)
        opt.step()
        first.grad = None
    optlib.compile(compiled)
    ours, theirs = run(compiled, steps=2), run(eager, steps=2)
    assert compiled.update.failure is None
    assert [compiled.state[p]["step"].item() for p in ours[:-1]] == [3, 2, 2]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@needs_compiler
def test_direct_calls_give_way_when_their_guards_fail():
    """A gradient with other strides, or another beta, is not what the noted graph was
    compiled for: that step goes through torch.compile (which compiles again), and every
    step keeps the eager numbers."""
    kwargs = dict(lr=0.1, weight_decay=0.1)
    compiled = optlib.compile(optlib.AdamW(make_params(), **kwargs))
    eager = optlib.AdamW(make_params(), **kwargs)
    gen = torch.Generator().manual_seed(3)
    direct = []
    for step in range(7):
        grads = [torch.randn(p.shape, generator=gen) for p in make_params()[:-1]]
        if step == 3:                       # a transposed (non-contiguous) gradient
            grads[0] = grads[0].t().contiguous().t()
            assert not grads[0].is_contiguous()
        for opt in (compiled, eager):
            group = opt.param_groups[0]
            for p, g in zip(group["params"], grads, strict=False):
                p.grad = g.clone(memory_format=torch.preserve_format)
            if step == 5:
                group["betas"] = (0.8, 0.99)
            opt.step()
        direct.append(compiled.update.direct_steps)
        for a, b in zip(compiled.param_groups[0]["params"], eager.param_groups[0]["params"], strict=False):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert compiled.update.failure is None
    # direct from step 3 (index 2). Not at the odd gradient (3), which notes its own graph;
    # not at the step after it (4), whose gradients no longer fit that graph (torch.compile
    # finds the first one again, and it is noted again); not at the new betas (5).
    assert [b - a for a, b in zip([0] + direct, direct, strict=False)] == [0, 0, 1, 0, 0, 0, 1]


RECORDED: dict[str, list] = {"compiled": [], "eager": []}


class RecordingSGD(optlib.SGD):
    """SGD whose rule also appends a tensor to a Python list: a side effect that the frame
    around the compiled graph performs after the graph returns the tensor, so no direct
    calls for this graph."""

    def __init__(self, params, log: list, **kwargs):
        super().__init__(params, **kwargs)
        self.log = log

    def update(self, group, p, g, s):
        super().update(group, p, g, s)
        self.log.append(p[0].sum())


@needs_compiler
def test_a_rule_with_python_side_effects_is_not_called_directly():
    compiled = optlib.compile(RecordingSGD(make_params(), RECORDED["compiled"], lr=0.1))
    eager = RecordingSGD(make_params(), RECORDED["eager"], lr=0.1)
    ours, theirs = run(compiled, steps=4), run(eager, steps=4)
    assert compiled.update.failure is None and compiled.update.direct_steps == 0
    assert len(RECORDED["compiled"]) == len(RECORDED["eager"]) == 4     # every step
    torch.testing.assert_close(RECORDED["compiled"], RECORDED["eager"])
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@needs_compiler
def test_without_tensor_guards_every_step_goes_through_torch_compile(monkeypatch):
    """On a torch whose dynamo's TensorGuards (a private API) fails, the fast path switches
    itself off: no direct calls, and every step goes through torch.compile."""
    import optlib._fastpath

    def changed(*args, **kwargs):
        raise TypeError("simulated: TensorGuards changed")

    monkeypatch.setattr(optlib._fastpath, "TensorGuards", changed)
    kwargs = dict(lr=0.1, weight_decay=0.1)
    compiled = optlib.compile(optlib.AdamW(make_params(), **kwargs))
    ours, theirs = run(compiled, steps=4), run(optlib.AdamW(make_params(), **kwargs), steps=4)
    assert compiled.update.failure is None and compiled.update.direct_steps == 0
    assert "simulated" in str(compiled.update.fast.failure)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_without_inductor_wrapper_the_fast_path_is_off_and_the_rule_eager(monkeypatch):
    """On a torch whose Inductor wrapper (a private API, which torch.compile's own
    ``backend="inductor"`` uses too) fails, the fast path switches itself off and the
    optimizer falls back to the eager rule with one warning: the eager numbers."""
    def changed(*args, **kwargs):
        raise TypeError("simulated: the Inductor wrapper changed")

    monkeypatch.setattr(torch, "_TorchCompileInductorWrapper", changed)
    kwargs = dict(lr=0.1, weight_decay=0.1)
    compiled = optlib.compile(optlib.AdamW(make_params(), **kwargs))
    with pytest.warns(RuntimeWarning, match="simulated: the Inductor wrapper changed") as record:
        ours = run(compiled, steps=3)
    assert len([w for w in record if "optlib.compile" in str(w.message)]) == 1
    theirs = run(optlib.AdamW(make_params(), **kwargs), steps=3)
    assert compiled.update.direct_steps == 0
    assert "simulated" in str(compiled.update.fast.failure)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_compiler
def test_same_shaped_tensors_compile_one_graph_for_their_chunks(monkeypatch):
    """With chunks of at most 4 tensors, 9 tensors of one shape are 3 chunks of 3 (one
    graph, called 3 times a step) and the odd one a chunk of its own: 2 graphs, the eager
    numbers (the last tensor never has a gradient)."""
    import optlib.compiled

    monkeypatch.setattr(optlib.compiled, "CHUNK", 4)
    shapes = [(3, 2)] * 9 + [(5,), (4,)]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = optlib.compile(optlib.NAdam(make_params(shapes=shapes), lr=0.1))
    ours = run(compiled, steps=4)
    theirs = run(optlib.NAdam(make_params(shapes=shapes), lr=0.1), steps=4)
    (plan,) = compiled.update._plans.values()
    assert [len(c) for c in plan[3]] == [3, 3, 3, 1]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert compiled.update.failure is None
    assert compiled.update.direct_steps == 2 * 4      # steps 3 and 4, 4 chunks each
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@needs_compiler
def test_large_tensors_of_one_shape_are_chunks_of_one_with_one_graph(monkeypatch):
    """Tensors of one layout from ALONE_BYTES on (here 24 bytes: the 3 x 2 matrices) whose
    rule reduces a tensor it computed (``LAMB.reduces_computed``: the norm of its direction
    u) are chunks of one tensor each, all one graph; a smaller odd one stays a chunk of its
    own: 2 graphs in all, from the first step on, and the eager numbers of LAMB."""
    import optlib.compiled

    monkeypatch.setattr(optlib.compiled, "ALONE_BYTES", 24)
    shapes = [(3, 2)] * 3 + [(5,), (4,)]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    kwargs = dict(lr=0.1, weight_decay=0.1)
    compiled = optlib.compile(optlib.LAMB(make_params(shapes=shapes), **kwargs))
    ours = run(compiled, steps=4)
    theirs = run(optlib.LAMB(make_params(shapes=shapes), **kwargs), steps=4)
    (plan,) = compiled.update._plans.values()
    assert plan[3] == [[0], [1], [2], [3]]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert compiled.update.failure is None
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@needs_compiler
def test_large_tensors_of_an_elementwise_rule_stay_one_chunk(monkeypatch):
    """An elementwise rule (Adam, LARS: norms of θ and g only, as they come) keeps tensors
    of one layout from ALONE_BYTES on together: one call for the three matrices, not
    three (a call per tensor cost SGD momentum, Adam, AdamW and Adagrad 17-37% of their
    step on 20 matrices of 2 MB)."""
    import optlib.compiled

    monkeypatch.setattr(optlib.compiled, "ALONE_BYTES", 24)
    shapes = [(3, 2)] * 3 + [(5,), (4,)]
    for cls, kwargs in ((optlib.Adam, dict(lr=0.1)), (optlib.LARS, dict(lr=0.1))):
        compiled = optlib.compile(cls(make_params(shapes=shapes), **kwargs))
        ours = run(compiled, steps=3)
        theirs = run(cls(make_params(shapes=shapes), **kwargs), steps=3)
        (plan,) = compiled.update._plans.values()
        assert plan[3] == [[0, 1, 2], [3]], cls.__name__
        assert not compiled.update.reduces_computed
        assert compiled.update.failure is None
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@needs_compiler
def test_scalars_that_are_entries_of_one_stacked_tensor_keep_their_own_values():
    """The 0-dim views that ``unbind`` makes of one stacked tensor (LAMB's and LARS's trust
    ratios times lr, stacked since they are multiplied in one product) are scalars of a
    foreach call each with its own value when compiled, as eagerly. Before the fix,
    ``_traced_scalars`` passed each through ``as_strided((), ())``, which Inductor (torch
    2.13) read at offset 0 of the stacked tensor: every tensor took the first one's factor
    (the compiled LAMB on three 8x6 matrices was 1e-2 off its eager numbers in 5 steps)."""
    def rule(xs, r, lr):
        optlib.TensorList(xs).mul_(optlib.TensorList((r * lr).unbind()))

    r, lr = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    eager, compiled = ([torch.ones(4) for _ in range(3)] for _ in range(2))
    rule(eager, r, lr)
    torch.compile(rule, fullgraph=True, dynamic=False)(compiled, r, lr)
    assert [x[0].item() for x in eager] == [0.5, 1.0, 1.5]
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _compile_cases():
    """Every optimizer of the catalogue (tests/catalogue.py), with its last variant where it
    has any (the settings with the most state: SGD's Nesterov momentum, a centered RMSprop,
    amsgrad, Shampoo's momentum), else with its own settings."""
    for name, entry in ENTRIES.items():
        overrides = list(entry.variants.values())[-1] if entry.variants else {}
        yield pytest.param(entry, overrides, id=name)


@needs_compiler
@pytest.mark.parametrize(("entry", "overrides"), list(_compile_cases()))
def test_every_optimizer_compiled_gives_its_eager_numbers(entry, overrides):
    """Compiled, or fallen back after one warning: either way the eager rule's numbers, on
    the entry's shapes in float32 and in float64 (one group), over six steps with a
    state_dict round trip after the third: the compiled optimizer goes on from the eager
    one's saved state and the eager one from the compiled one's (Muon's bfloat16
    Newton-Schulz iteration included: the compiled code rounds where the eager rule
    rounds). The entries marked ``compiles`` compile with torch 2.13 and call the compiled
    code directly from the third step; ``compiles=False`` ones may compile with a later
    torch; Shampoo and SOAP choose per tensor, in Python, when to refresh their roots or
    basis, so they may fall back."""
    dtypes = [torch.float32] * len(entry.shapes) + [torch.float64] * len(entry.shapes)
    shapes = list(entry.shapes) * 2
    runs = []
    for _ in range(2):
        params = [p.to(dtype).detach().requires_grad_()
                  for p, dtype in zip(make_params(shapes=shapes), dtypes, strict=True)]
        runs.append((entry.make(params, **overrides), params))
    (compiled, a), (eager, b) = runs
    optlib.compile(compiled)
    gen = torch.Generator().manual_seed(1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in range(6):
            if step == 3:       # each goes on from the other's saved state
                saved = copy.deepcopy(compiled.state_dict())
                compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
                eager.load_state_dict(saved)
            grads = [torch.randn(s, generator=gen, dtype=d) for s, d in zip(shapes, dtypes, strict=True)]
            for opt, params in ((compiled, a), (eager, b)):
                for p, g in zip(params, grads, strict=True):
                    p.grad = g.clone()
                opt.step()
    ours = [w for w in record if "optlib.compile" in str(w.message)]
    update = compiled.update
    if entry.compiles:
        assert update.failure is None and not ours
        # steps 3 to 6 at least: the graph noted for a group serves it after
        # load_state_dict too (which replaces the group's dict and state)
        assert update.direct_steps >= 4
    else:
        assert len(ours) == (update.failure is not None)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)


def test_inductor_takes_the_cpus_vector_instructions_without_test_builds():
    """cpp.vec_isa_ok: no test compile per instruction set (about 12 s of CPU of a first
    compile from an empty cache on a 2-core CPU); an option of the caller's wins."""
    opt = optlib.compile(optlib.Adam(make_params(), lr=0.1))
    assert opt.update.options["options"]["cpp.vec_isa_ok"] is True
    mine = optlib.compile(optlib.Adam(make_params(), lr=0.1), options={"cpp.vec_isa_ok": None})
    assert mine.update.options["options"]["cpp.vec_isa_ok"] is None


def failing_backend(gm, example_inputs):
    raise RuntimeError("simulated: no C++ compiler found")


def test_compile_failure_falls_back_to_eager_with_one_warning():
    kwargs = dict(lr=0.1, weight_decay=0.1)
    torch._dynamo.reset()
    compiled = optlib.compile(optlib.Adam(make_params(), **kwargs), backend=failing_backend)
    eager = optlib.Adam(make_params(), **kwargs)
    with pytest.warns(RuntimeWarning, match="could not compile Adam's update rule") as record:
        ours = run(compiled, steps=3)
    assert len([w for w in record if "optlib.compile" in str(w.message)]) == 1
    assert "simulated: no C++ compiler found" in str(record[0].message)
    theirs = run(eager, steps=3)
    for a, b in zip(ours, theirs, strict=True):                 # the eager rule: equal bits
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert compiled.update.failure is not None


def test_compile_is_idempotent_and_refuses_other_optimizers():
    opt = optlib.Adam(make_params())
    assert optlib.compile(optlib.compile(opt)) is opt
    assert isinstance(opt.update, CompiledUpdate) and not isinstance(opt.update.eager, CompiledUpdate)
    with pytest.raises(ValueError, match="optimizer must be an optlib optimizer"):
        optlib.compile(torch.optim.Adam(make_params()))
