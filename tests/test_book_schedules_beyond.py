"""optlib.book.schedules_beyond: the chapter 6/7 training loop and Adam's v-noise probe."""

import pytest
import torch

import optlib
from optlib import book, schedules
from optlib.book import schedules_beyond as sb


@pytest.fixture(scope="module")
def task():
    return sb.LMTask(block_size=8, batch_size=4, val_batches=2)


def small_model(task):
    return lambda: book.models.TinyTransformer(task.vocab_size, block_size=8, d_model=16,
                                               n_layers=1, n_heads=2, seed=0)


def test_batches_are_fixed_per_step(task):
    x1, y1 = task.batch(3)
    x2, y2 = task.batch(3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])


def test_resume_from_checkpoint_equals_uninterrupted_run(task):
    make = small_model(task)
    opt = lambda p: optlib.Adam(p, lr=1e-2)     # noqa: E731
    schedule = schedules.wsd(2, 6, 4)
    full = sb.run(task, make, opt, 12, schedule, save_at=[5])
    resumed = sb.run(task, make, opt, 12, schedule, start=full.checkpoints[5])
    assert resumed.loss == full.loss[5:]
    assert resumed.val_loss == full.val_loss


def test_run_records_lr_and_first_adam_step(task):
    r = sb.run(task, small_model(task), lambda p: optlib.Adam(p, lr=1e-2), 3,
               schedules.warmup_linear(2, 3))
    assert r.lr == pytest.approx([0.0, 5e-3, 1e-2])
    assert r.update_ratio[0] == 0.0          # warmup: step 0 does not move the weights
    assert len(r.loss) == 3 and r.val_loss == r.val_loss


def test_second_moment_noise_shapes(task):
    out = sb.second_moment_noise(task, small_model(task)(), steps=3, reference=4)
    assert out["q"].shape == (3, 3)
    assert (out["q"][:, 0] <= out["q"][:, 2]).all()


def test_bad_arguments(task):
    with pytest.raises(ValueError, match="steps"):
        sb.run(task, small_model(task), lambda p: optlib.Adam(p), -1)
    with pytest.raises(ValueError, match="batch_size"):
        sb.LMTask(batch_size=0)
