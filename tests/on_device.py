"""Run tests' random data on another device: ``OPTLIB_TEST_DEVICE=cuda`` (read by
``tests/conftest.py``) puts the float64 parity tests on a GPU (``benchmarks/gpu_check.py``).

Inside :func:`on_device`, every tensor a factory function draws from a CPU generator
(``torch.randn(shape, generator=gen)``, as the tests' twin runs do) is drawn on the CPU, so
the numbers are those of a CPU run, and moved to the device; parameters, gradients and the
optimizers' state made from them then live there. Nothing else changes: tensors made
without a generator (literals, and the optimizers' own step counters) stay where the code
puts them."""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

#: How many tensors each mode moved (read by conftest's summary).
MOVED = {"tensors": 0}


class _RandomDataOn(TorchFunctionMode):
    def __init__(self, device):
        super().__init__()
        self.device = torch.device(device)
        self.constructors = _device_constructors()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        gen = kwargs.get("generator")
        out = func(*args, **kwargs)
        if (func in self.constructors and gen is not None and gen.device.type == "cpu"
                and kwargs.get("device") is None and kwargs.get("out") is None):
            MOVED["tensors"] += 1
            return out.to(self.device)
        return out


@contextlib.contextmanager
def on_device(device):
    """Within: random tensors drawn from CPU generators land on ``device`` (a no-op for cpu)."""
    if torch.device(device).type == "cpu":
        yield
        return
    with _RandomDataOn(device):
        yield
