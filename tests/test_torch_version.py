"""What needs which torch: the declared bound and the messages of an older torch.

The bound in pyproject.toml is the one notes/torch-versions.md records: every older torch
fails a unit test or a chapter there. On an older torch, what needs a newer one says which torch
has it (``optlib._torch_version``), never an ``AttributeError``.
"""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from optlib import _torch_version as V
from optlib.book import distributed as D

ROOT = Path(__file__).resolve().parents[1]


def declared_bound() -> tuple[int, int]:
    """The ``torch>=X.Y`` of pyproject.toml's dependencies."""
    import tomllib  # Python 3.11 on; the tests run under 3.11

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_dep,) = [d for d in deps if re.match(r"torch\b", d)]
    return V.parse(re.fullmatch(r"torch>=(\S+)", torch_dep).group(1))


def test_versions_parse():
    assert V.parse("2.6.0+cu124") == (2, 6)
    assert V.parse("2.13.0") == (2, 13)
    assert V.parse("2.10.0a0+git1234") == (2, 10)
    with pytest.raises(ValueError, match="not a torch version"):
        V.parse("nightly")


def test_the_declared_bound_is_the_verified_one():
    bound = declared_bound()
    notes = (ROOT / "notes" / "torch-versions.md").read_text()
    assert f"torch>={bound[0]}.{bound[1]}" in notes
    # every step asks is_compiling and chapter 8 shards with fully_shard on the CPU
    assert bound >= V.FIRST["torch.compiler.is_compiling"]
    assert bound >= V.FIRST["torch.distributed.fsdp.fully_shard on the CPU"]
    assert V.parse(torch.__version__) >= bound


@pytest.mark.parametrize("feature", sorted(V.FIRST))
def test_an_older_torch_is_told_which_torch_has_the_feature(feature):
    first = V.FIRST[feature]
    older = f"{first[0]}.{first[1] - 1}.1"
    assert not V.has(feature, older) and V.has(feature, f"{first[0]}.{first[1]}.0")
    with pytest.raises(V.TorchTooOld, match=re.escape(f"torch has from {first[0]}.{first[1]} on")):
        V.require(feature, "this test", version=older)
    V.require(feature, "this test", version=f"{first[0]}.{first[1]}.0")


def test_fsdp2_on_an_older_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(V.TorchTooOld, match=r"FSDP2 .*fully_shard.*from 2\.6 on; this is torch 2\.5\.1"):
        D.shard(nn.Sequential(nn.Linear(2, 2)))


def test_fsdp2_on_the_cpu_before_torch_2_7_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    with pytest.raises(V.TorchTooOld, match=r"on the CPU.*from 2\.7 on; this is torch 2\.6\.0"):
        D.shard(nn.Sequential(nn.Linear(2, 2)))
