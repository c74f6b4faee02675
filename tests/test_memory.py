"""optlib.state_bytes per parameter for every optimizer equals what its algorithm needs."""

from __future__ import annotations

import inspect

import pytest
import repository
import torch
from catalogue import ENTRIES

import optlib

memory = repository.load("benchmarks/memory.py", "memory_benchmark")


@pytest.fixture(scope="module")
def rows():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {r["name"]: r for r in memory.measure()}
    finally:
        torch.set_num_threads(old)


def test_every_optimizer_in_optlib_is_measured(rows):
    classes = {name for name in optlib.__all__
               if inspect.isclass(getattr(optlib, name))
               and issubclass(getattr(optlib, name), torch.optim.Optimizer)
               and getattr(optlib, name) is not optlib.Optimizer}
    assert classes <= set(rows) | {"SGD"}
    assert set(ENTRIES) <= set(rows) | {"SGD"}           # and every one the tests cover
    assert "SGD-momentum" in rows


def test_measured_equals_theory(rows):
    for name, r in rows.items():
        assert r["measured"] == r["theory"], name


@pytest.mark.parametrize("name, per_param", [
    ("SGD", 0.0), ("SGD-momentum", 4.0), ("Lion", 4.0), ("LARS", 4.0), ("Muon", 4.0),
    ("Adagrad", 4.0), ("RMSprop", 4.0),
    ("Adam", 8.0), ("AdamW", 8.0), ("Adadelta", 8.0), ("NAdam", 8.0), ("RAdam", 8.0), ("Adamax", 8.0),
    ("LAMB", 8.0),
    ("SophiaG", 8.0), ("AdamWScheduleFree", 8.0),
])
def test_headline_bytes_per_parameter(rows, name, per_param):
    r = rows[name]
    assert r["measured"] / r["params"] == pytest.approx(per_param, abs=1e-3)   # counters aside


def test_factored_and_quantized_states_are_small(rows):
    assert rows["Adam8bit"]["measured"] / rows["Adam8bit"]["params"] <= 2.3
    assert rows["Adafactor"]["measured"] / rows["Adafactor"]["params"] < 0.1


def test_kronecker_factors_cost_m2_plus_n2_per_side(rows):
    """Per 512 x 256 weight, 2 (m² + n²) values of factors and roots (or eigenbases):
    Shampoo 4 (1 + 2 (m/n + n/m)) = 24 bytes per parameter with Adam's v, SOAP 28 with
    Adam's m and v; the vectors (under 1% of the parameters) pull both a little lower."""
    assert rows["Shampoo"]["measured"] / rows["Shampoo"]["params"] == pytest.approx(24, abs=0.1)
    assert rows["SOAP"]["measured"] / rows["SOAP"]["params"] == pytest.approx(28, abs=0.2)


def test_benchmark_prints_the_table(rows, capsys):
    memory.main(list(rows.values()))
    out = capsys.readouterr().out
    assert "bytes/param" in out and "Adam8bit" in out and "theory" in out
