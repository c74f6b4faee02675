"""optlib's torch.optim family as a drop-in for torch.optim, driven by torch's own test data.

``torch.testing._internal.common_optimizers.optim_db`` lists, for each torch optimizer, the
configurations torch tests (``optim_inputs_func``) and the bad inputs with the errors
torch raises (``optim_error_inputs_func``). For every optimizer of the catalogue that has
a torch twin: every configuration gives torch's numbers in float64, every bad input
torch's exception type and message, state_dicts load both ways and from older formats,
(every keyword of torch's constructors and the implementation flags: test_vs_torch.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
from catalogue import ENTRIES, TORCH_FAMILY, missing_from_torch, optim_info
from pairs import assert_close, drive, make_params, run_pair
from torch.testing._internal.common_optimizers import OptimizerErrorEnum

STEPS = 12


def _missing(name):
    """A skipped case for a class this torch has not yet (its optim_db has no entry)."""
    return pytest.param(name, 0, id=name, marks=pytest.mark.skip(reason=missing_from_torch(name)))


def _configs():
    for name in TORCH_FAMILY:
        if missing_from_torch(name):
            yield _missing(name)
            continue
        for i, config in enumerate(optim_info(name).optim_inputs_func("cpu")):
            yield pytest.param(name, i, id=f"{name}-{config.desc}")


def _error_inputs():
    for name in TORCH_FAMILY:
        if missing_from_torch(name):
            yield _missing(name)
            continue
        for i, error in enumerate(optim_info(name).optim_error_inputs_func("cpu", torch.float64)):
            yield pytest.param(name, i, id=f"{name}-{error.optimizer_error_input.desc}")


CONFIGS = list(_configs())


ERROR_INPUTS = list(_error_inputs())


def config_kwargs(name: str, index: int) -> dict:
    """A fresh copy of optim_db's configuration ``index`` for ``name`` (tensors included)."""
    return copy.deepcopy(optim_info(name).optim_inputs_func("cpu")[index].kwargs)


# ---- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "index"), CONFIGS)
def test_every_optim_db_configuration_gives_torchs_numbers(name, index, float64):
    entry = ENTRIES[name]
    a, b, ours, theirs = run_pair(lambda ps: entry.cls(ps, **config_kwargs(name, index)),
                                   lambda ps: entry.reference(ps, **config_kwargs(name, index)),
                                   steps=STEPS, shapes=entry.shapes)
    assert_close(a, b)
    # the same state_dict layout: group keys and values, per-parameter state keys
    mine, reference = ours.state_dict(), theirs.state_dict()
    for group in mine["param_groups"] + reference["param_groups"]:
        group.pop("foreach", None)             # the reference runs torch's single-tensor path
    assert mine["param_groups"] == reference["param_groups"]
    assert {k: set(v) for k, v in mine["state"].items()} == \
        {k: set(v) for k, v in reference["state"].items()}


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "index"), ERROR_INPUTS)
def test_every_optim_db_error_input_raises_torchs_error(name, index):
    for cls in (getattr(torch.optim, name), ENTRIES[name].cls):
        error = optim_info(name).optim_error_inputs_func("cpu", torch.float64)[index]
        given = error.optimizer_error_input
        params = given.params if given.params is not None else [
            torch.nn.Parameter(torch.randn(2, 2, dtype=torch.float64))]
        if error.error_on == OptimizerErrorEnum.STEP_ERROR:
            opt = cls(params, **given.kwargs)
            with pytest.raises(error.error_type, match=error.error_regex):
                opt.step()
        elif issubclass(error.error_type, Warning):
            with pytest.warns(error.error_type, match=error.error_regex):
                cls(params, **given.kwargs)
        else:
            with pytest.raises(error.error_type, match=error.error_regex):
                cls(params, **given.kwargs)


# ---- state_dict: both ways, and older formats --------------------------------------------


def _resume(name: str, index: int, first, second):
    """Train ``first`` 6 steps, load its state_dict into ``second`` on copies of the
    parameters, train both 6 more; returns both parameter lists."""
    entry = ENTRIES[name]
    a = make_params(entry.shapes)
    opt = first(a, **config_kwargs(name, index))
    drive(opt, a, 6, seed=1)
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    other = second(b, **config_kwargs(name, index))
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    drive(opt, a, 6, seed=2, start=6)
    drive(other, b, 6, seed=2, start=6)
    return a, b


@pytest.mark.parametrize(("name", "index"), CONFIGS)
def test_state_dict_loads_into_torch(name, index, float64):
    assert_close(*_resume(name, index, ENTRIES[name].cls, ENTRIES[name].reference))


@pytest.mark.parametrize(("name", "index"), CONFIGS)
def test_torchs_state_dict_loads_into_optlib(name, index, float64):
    assert_close(*_resume(name, index, ENTRIES[name].reference, ENTRIES[name].cls))


def older_format(state_dict: dict, name: str) -> dict:
    """``state_dict`` as an older torch wrote it: no group keys added after the optimizer
    first shipped (``not_og_supported_flags``, plus ``fused`` and ``decoupled_weight_decay``),
    and 0-dim state (``step``, NAdam's ``mu_product``) as Python numbers."""
    old = copy.deepcopy(state_dict)
    newer = {*optim_info(name).not_og_supported_flags, "fused", "decoupled_weight_decay"}
    for group in old["param_groups"]:
        for key in newer:
            group.pop(key, None)
    for st in old["state"].values():
        for key, value in st.items():
            if isinstance(value, torch.Tensor) and value.dim() == 0:
                st[key] = value.item()
    return old


@pytest.mark.parametrize(("name", "index"), CONFIGS)
def test_older_state_dicts_load_as_torch_loads_them(name, index, float64):
    entry = ENTRIES[name]
    a = make_params(entry.shapes)
    writer = entry.reference(a, **config_kwargs(name, index))
    drive(writer, a, 5, seed=1)
    old = older_format(writer.state_dict(), name)
    runs = []
    for make in (entry.cls, entry.reference):
        params = [torch.nn.Parameter(x.detach().clone()) for x in a]
        opt = make(params, **config_kwargs(name, index))
        opt.load_state_dict(copy.deepcopy(old))
        drive(opt, params, 5, seed=2, start=5)
        runs.append(params)
    assert_close(*runs)
