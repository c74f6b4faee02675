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
    from optlib.book import data

    task = data.DigitsTask(batch_size=8, seed=0)
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
    from optlib.book import data

    def run(corrupt, rollback):
        task = data.DigitsTask(batch_size=16, seed=0)
        model = models.mlp((64, 16, 10), seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        out = scale.train_with_rollback(task, model, opt, 40, corrupt=corrupt,
                                        rollback=rollback, every=10, window=5)
        return model, out

    def same_as_never_seen(model, out):
        # A run that rolled back and skipped batches ends as a plain run that never saw
        # them: the same losses and the same weights, bit for bit.
        task = data.DigitsTask(batch_size=16, seed=0)
        reference = models.mlp((64, 16, 10), seed=0)
        opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
        losses = []
        for b in out["batches"]:
            opt.zero_grad()
            loss = task.loss(reference, *task.batch(b))
            losses.append(loss.item())
            loss.backward()
            opt.step()
        assert losses == out["loss"]
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.equal(p, q)

    bad = lambda b, x, y: (10 * x, (y + 1) % 10) if b == 30 else (x, y)  # noqa: E731
    model, out = run(bad, True)
    assert out["rollbacks"] == [30] and len(out["loss"]) == 40
    assert out["batches"] == [*range(30), *range(31, 41)]    # back to step 30, batch 30 skipped
    same_as_never_seen(model, out)
    _, plain = run(bad, False)
    assert plain["rollbacks"] == [] and plain["batches"] == list(range(40))
    # Two bad batches in a row (30, 31) and a third at step 36 (batch 38): each rolls
    # back to the checkpoint of step 30, whose optimizer state the steps taken after the
    # first rollback must not have changed, and the skipped batches add up.
    worse = lambda b, x, y: bad(30, x, y) if b in (30, 31, 38) else (x, y)  # noqa: E731
    model, out = run(worse, True)
    assert out["rollbacks"] == [30, 31, 38] and len(out["loss"]) == 40
    assert out["batches"] == [*range(30), *range(39, 49)]
    same_as_never_seen(model, out)


def test_z_loss_function_is_the_tasks_loss_and_plain_at_weight_zero():
    from optlib.book import data

    task = data.DigitsTask(batch_size=8, seed=0)
    model = models.mlp((64, 16, 10), seed=0)
    x, y = task.batch(0)
    logits = model(x)
    assert torch.equal(scale.z_loss(0.5)(logits, y), scale.ZLossTask(task, 0.5).loss(model, x, y))
    assert torch.equal(scale.z_loss(0.0)(logits, y), torch.nn.functional.cross_entropy(logits, y))
    seq = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 2], [3, 4, 0]])
    expected = (torch.nn.functional.cross_entropy(seq.reshape(-1, 5), targets.reshape(-1))
                + 1e-4 * torch.logsumexp(seq, -1).pow(2).mean())
    assert torch.allclose(scale.z_loss()(seq, targets), expected, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="weight"):
        scale.z_loss(-1e-4)


def test_qk_norm_off_leaves_the_transformer_as_it_was_and_on_adds_only_norms():
    plain = models.tiny_transformer(20, block_size=8, d_model=16, n_layers=2)
    normed = models.tiny_transformer(20, block_size=8, d_model=16, n_layers=2, qk_norm=True)
    old = plain.state_dict()
    new = normed.state_dict()
    extra = set(new) - set(old)
    assert set(old) <= set(new) and extra and all("q_norm" in k or "k_norm" in k for k in extra)
    assert all(torch.equal(old[k], new[k]) for k in old)     # the same initial weights
    assert not any("norm" in k and ("q_" in k or "k_" in k) for k in old)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_logits_are_the_ones_the_block_attends_with(qk_norm):
    torch.manual_seed(0)
    block = models.Block(16, 4, qk_norm=qk_norm)
    x = torch.randn(2, 6, 16)
    logits = block.attention_logits(x)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    _, _, v = block._qkv(x)
    a = (weights @ v).transpose(1, 2).reshape(2, 6, 16)
    h = x + block.proj(a)
    expected = h + block.mlp(block.ln2(h))
    assert torch.allclose(block(x), expected, atol=1e-5, rtol=0)


def test_qk_norm_bounds_the_attention_logits():
    idx = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    largest = {}
    for qk_norm in (False, True):
        model = models.tiny_transformer(20, block_size=8, d_model=16, n_heads=4,
                                        qk_norm=qk_norm)
        with torch.no_grad():
            for block in model.blocks:
                block.qkv.weight.mul_(30)                # queries and keys 30 times larger
        largest[qk_norm] = max(model.max_attention_logits(idx))
    assert largest[True] <= 4 ** 0.5 + 1e-4              # |q̂·k̂|/√d ≤ √d with d = 4
    assert largest[False] > 10 * largest[True]
