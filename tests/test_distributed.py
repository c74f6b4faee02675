"""optlib's optimizers under torch.distributed: DDP and ZeroRedundancyOptimizer (gloo, 2 CPUs).

Data parallelism must not change the numbers: two processes that each see half of every
batch end where one process that sees the whole batch ends (float64, 5 steps), and ZeRO
stage 1 splits the optimizer state between the processes without changing the result.
"""

import pytest
import torch

import optlib
from optlib.book import distributed as D
from optlib.book.compare import max_difference

WORLD_SIZE = 2
HYPER = {
    "SGD": dict(lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
    "AdamW": dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1),
    "LAMB": dict(lr=1e-2, weight_decay=0.1),
}
NAMES = list(HYPER)
AVAILABLE = [n for n in NAMES if hasattr(optlib, n)]


def needs(name):
    if not hasattr(optlib, name):
        pytest.skip(f"optlib.{name} does not exist yet (being written for issue #3); "
                    "this test runs as soon as it does")


@pytest.fixture(scope="module")
def runs():
    """Spawn the processes once (a few seconds) and run every available optimizer in them."""
    jobs = [D.Job(n, HYPER[n], zero=z) for n in AVAILABLE for z in (False, True)]
    return {(r.job.optimizer, r.job.zero): r for r in D.run_data_parallel(jobs, WORLD_SIZE)}


@pytest.mark.parametrize("name", NAMES)
def test_ddp_equals_one_process_on_the_combined_batch(name, runs):
    needs(name)
    r = runs[name, False]
    single = D.train_single(r.job, WORLD_SIZE)
    assert max_difference(r.params, single) < 1e-12
    assert r.replica_gap == 0.0                       # the replicas never drift apart
    moved = max_difference(r.params, [p.detach() for p in D.build_model().parameters()])
    assert moved > 1e-3                               # and training did move them


@pytest.mark.parametrize("name", NAMES)
def test_zero_shards_state_without_changing_the_result(name, runs):
    needs(name)
    r = runs[name, True]
    single_model = D.build_model()
    assert max_difference(r.params, D.train_single(r.job, WORLD_SIZE)) < 1e-12
    assert r.replica_gap == 0.0
    # Each rank keeps state for its own share of the tensors; together, all of them.
    n_tensors = len(list(single_model.parameters()))
    assert sum(r.state_tensors) == n_tensors
    assert all(0 < k < n_tensors for k in r.state_tensors)
    # ...and the bytes add up to what one process holds.
    full = getattr(optlib, name)(single_model.parameters(), **HYPER[name])
    for p in single_model.parameters():
        p.grad = torch.ones_like(p)
    full.step()
    assert sum(r.state_bytes) == optlib.state_bytes(full)
    assert max(r.state_bytes) < optlib.state_bytes(full)


def test_bad_world_size():
    with pytest.raises(ValueError, match="world_size"):
        D.run_data_parallel([D.Job("SGD", dict(lr=0.1))], world_size=0)
