"""optlib.book.schedules_beyond: the chapter 6/7 training loop and Adam's v-noise probe."""

import pytest
import torch

import optlib
from optlib import book, schedules
from optlib.book import schedules_beyond as sb


@pytest.fixture(scope="module")
def task():
    return book.data.LMTask(block_size=8, batch_size=4, val_batches=2)


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
    out = book.noise.second_moment_noise(task, small_model(task)(), steps=3, reference=4)
    assert out["q"].shape == (3, 3)
    assert (out["q"][:, 0] <= out["q"][:, 2]).all()


def test_bad_arguments(task):
    with pytest.raises(ValueError, match="steps"):
        sb.run(task, small_model(task), lambda p: optlib.Adam(p), -1)
    with pytest.raises(ValueError, match="batch_size"):
        book.data.LMTask(batch_size=0)


def test_digits_task_and_steps_to():
    t = book.data.DigitsTask(batch_size=10_000)
    assert t.batch_size == t.n_train
    x, y = t.batch(0)
    assert x.shape == (t.n_train, 64)
    small = book.data.DigitsTask(batch_size=8)
    assert torch.equal(small.batch(4)[0], small.batch(4)[0])
    assert book.sweeps.steps_to([3.0] * 5 + [1.0] * 30, 1.5, window=5) == 9   # [3,1,1,1,1]: step 9
    assert book.sweeps.steps_to([3.0] * 30, 1.0) is None


def test_adafactor_update_rms_matches_the_step():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 5, dtype=torch.float64))
    opt = optlib.Adafactor([p], lr=1e-2)
    p.grad = torch.randn(6, 5, dtype=torch.float64)
    before = p.detach().clone()
    opt.step()
    (rms_u,) = book.inspect.adafactor_update_rms(opt)
    alpha = max(1e-3, before.pow(2).mean().sqrt().item()) * 1e-2
    step_rms = (p.detach() - before).pow(2).mean().sqrt().item()
    assert step_rms == pytest.approx(alpha * rms_u / max(1.0, rms_u), rel=1e-9)


def test_trust_ratios_lamb_and_lars():
    torch.manual_seed(0)
    for cls, kw in ((optlib.LAMB, {"lr": 1e-6}), (optlib.LARS, {"lr": 1e-6})):
        p = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
        g = torch.randn(4, 3, dtype=torch.float64)
        p.grad = g.clone()
        opt = cls([p], **kw)
        opt.step()
        (ratio,) = book.inspect.trust_ratios(opt)
        if cls is optlib.LARS:
            expected = 1e-3 * p.norm().item() / (g.norm().item() + 1e-8)
        else:                            # first step: u = g/(|g| + eps) elementwise
            expected = p.norm().item() / (g / (g.abs() + 1e-6)).norm().item()
        assert ratio == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="LAMB or LARS"):
        q = torch.nn.Parameter(torch.ones(2))
        q.grad = torch.ones(2)
        o = optlib.Adam([q])
        o.step()
        book.inspect.trust_ratios(o)


def test_run_with_sophia_and_muon(task):
    make = small_model(task)
    r = sb.run(task, make, lambda p: optlib.SophiaG(p, lr=1e-3), 12, hessian_every=5)
    assert not r.diverged and any(float(st["hessian"].abs().sum()) > 0
                                  for st in r.optimizer.state.values())
    m = sb.run(task, make, lambda model: optlib.MuonWithAdamW(model), 3,
               optimizer_gets_model=True)
    assert len(m.loss) == 3


def test_run_without_update_records_trains_the_same(task):
    make = small_model(task)
    opt = lambda p: optlib.Adam(p, lr=1e-2)     # noqa: E731
    full = sb.run(task, make, opt, 4)
    lean = sb.run(task, make, opt, 4, record_updates=False)
    assert lean.loss == full.loss and lean.val_loss == full.val_loss
    assert lean.update_ratio == [] and len(full.update_ratio) == 4
