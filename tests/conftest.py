import pytest
import torch

# One intra-op thread per test process: the unit tests use small tensors, for which
# torch's thread pool costs more than it gains, and CI runs two pytest workers on two cores.
torch.set_num_threads(1)


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype (step counters become float64 too)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
