"""benchmarks/gpu_check.py skips cleanly without CUDA; OPTLIB_TEST_DEVICE's data mover."""

from __future__ import annotations

import repository
import torch
from on_device import MOVED, on_device

gpu_check = repository.load("benchmarks/gpu_check.py", "gpu_check")


def test_skips_cleanly_without_cuda(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = tmp_path / "gpu.md"
    assert gpu_check.main(["--report", str(report)]) == 0
    assert "No CUDA device" in capsys.readouterr().out
    assert not report.exists()


def test_report_names_device_versions_and_what_was_missing():
    env = dict(device="NVIDIA Test", capability=(9, 0), torch="2.x", cuda="13.0", python="3.12",
               commit="abc1234", peers={"heavyball": "3.2.1", "bitsandbytes": None},
               missing_tests=["expecttest"])
    text = gpu_check.format_report("2026-01-02 03:04 UTC", env, {"Float64 parity tests on cuda":
                                                                 "- 10 passed"})
    for needle in ("- Date: 2026-01-02 03:04 UTC", "NVIDIA Test (compute capability 9.0)",
                   "torch 2.x, CUDA 13.0", "heavyball 3.2.1", "Missing (their rows or tests left "
                   "out): bitsandbytes, expecttest", "## Float64 parity tests on cuda\n\n- 10 passed"):
        assert needle in text, needle


def test_random_data_moves_with_the_same_numbers():
    """The mover draws on the CPU (the same numbers) and moves the result; tensors made
    without a generator stay put. ``meta`` stands in for a GPU here."""
    before = MOVED["tensors"]
    with on_device("meta"):
        drawn = torch.randn(3, generator=torch.Generator().manual_seed(0))
        plain = torch.zeros(2)
    assert drawn.device.type == "meta" and plain.device.type == "cpu"
    assert MOVED["tensors"] == before + 1
    with on_device("cpu"):
        again = torch.randn(3, generator=torch.Generator().manual_seed(0))
    assert again.device.type == "cpu" and MOVED["tensors"] == before + 1
    assert torch.equal(again, torch.randn(3, generator=torch.Generator().manual_seed(0)))
