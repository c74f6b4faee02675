import pytest
import torch

from optlib.book import models, scale


def _loss(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


def _grads(micro_batches, **kwargs):
    model = models.mlp((5, 7, 3), seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    loss = scale.accumulate(model, _loss, x, y, micro_batches, **kwargs)
    return loss, [p.grad.clone() for p in model.parameters()]


def test_accumulation_equals_the_large_batch():
    loss1, g1 = _grads(1)
    loss4, g4 = _grads(4)
    assert abs(loss1 - loss4) < 1e-12
    assert all(torch.allclose(a, b, atol=1e-14, rtol=0) for a, b in zip(g1, g4, strict=True))


def test_without_division_the_gradient_is_k_times_larger():
    _, g1 = _grads(1)
    _, g3 = _grads(3, divide=False)
    assert all(torch.allclose(3 * a, b, atol=1e-13, rtol=0) for a, b in zip(g1, g3, strict=True))


def test_clip_each_bounds_every_slice():
    _, g = _grads(4, clip_each=1e-3)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g]))
    assert norm <= 4 * 1e-3 + 1e-12


@pytest.mark.parametrize("kwargs", [dict(micro_batches=0), dict(micro_batches=5),
                                    dict(micro_batches=2, clip_each=0.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        _grads(**kwargs)


def test_z_loss_adds_the_squared_log_normalizer():
    from optlib.book import schedules_beyond as sb

    task = sb.DigitsTask(batch_size=8, seed=0)
    model = models.mlp((64, 16, 10), seed=0)
    x, y = task.batch(0)
    wrapped = scale.ZLossTask(task, weight=0.5)
    z = scale.log_normalizer(model, x)
    expected = task.loss(model, x, y) + 0.5 * z.pow(2).mean()
    assert torch.allclose(wrapped.loss(model, x, y), expected)
    assert wrapped.n_train == task.n_train              # everything else is the task's
    with pytest.raises(ValueError, match="weight"):
        scale.ZLossTask(task, weight=-1.0)


def test_rollback_skips_a_bad_batch_and_restores_the_checkpoint():
    from optlib.book import schedules_beyond as sb

    def run(corrupt, rollback):
        task = sb.DigitsTask(batch_size=16, seed=0)
        model = models.mlp((64, 16, 10), seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        out = scale.train_with_rollback(task, model, opt, 40, corrupt=corrupt,
                                        rollback=rollback, every=10, window=5)
        return model, out

    bad = lambda b, x, y: (10 * x, (y + 1) % 10) if b == 30 else (x, y)  # noqa: E731
    model, out = run(bad, True)
    assert out["rollbacks"] == [30] and len(out["loss"]) == 40
    assert 30 not in out["batches"] and out["batches"][29:31] == [29, 31]
    # Rolled back to step 30 (a checkpoint) and skipped batch 30: the same as a run that
    # never saw batch 30 and took batch 31 next.
    skip = lambda b, x, y: (x, y)  # noqa: E731
    task = sb.DigitsTask(batch_size=16, seed=0)
    reference = models.mlp((64, 16, 10), seed=0)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for b in [*range(30), *range(31, 41)]:
        x, y = skip(b, *task.batch(b))
        opt.zero_grad()
        task.loss(reference, x, y).backward()
        opt.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    _, plain = run(bad, False)
    assert plain["rollbacks"] == [] and plain["batches"] == list(range(40))
