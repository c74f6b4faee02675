import os

import pytest
import torch
from on_device import MOVED, on_device

# One intra-op thread per test process: the unit tests use small tensors, for which
# torch's thread pool costs more than it gains, and CI runs two pytest workers on two cores.
torch.set_num_threads(1)

#: OPTLIB_TEST_DEVICE=cuda: the tests that take the ``float64`` fixture (the float64 parity
#: tests) draw their random parameters and gradients onto that device (tests/on_device.py;
#: benchmarks/gpu_check.py runs them so). Default: cpu, nothing changes.
TEST_DEVICE = os.environ.get("OPTLIB_TEST_DEVICE", "cpu")


def pytest_configure(config):
    if torch.device(TEST_DEVICE).type == "cuda" and not torch.cuda.is_available():
        pytest.exit(f"OPTLIB_TEST_DEVICE={TEST_DEVICE}, but torch sees no CUDA device", returncode=4)


def pytest_terminal_summary(terminalreporter):
    if torch.device(TEST_DEVICE).type != "cpu":
        terminalreporter.write_line(f"OPTLIB_TEST_DEVICE={TEST_DEVICE}: {MOVED['tensors']} "
                                    "random tensors drawn onto it")


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype (step counters become float64 too),
    its random data on ``OPTLIB_TEST_DEVICE`` (default cpu)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    with on_device(TEST_DEVICE):
        yield
    torch.set_default_dtype(old)
