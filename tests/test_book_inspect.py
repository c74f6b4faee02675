"""optlib.book's inspectors (book.inspect) and the corrupted batches of book.data, used by
chapter 8: roughness, shards and trust ratios, optimizer state per parameter, where the
loss comes from; and the MLP with a LayerNorm per hidden layer."""

import math

import pytest
import torch

import optlib
import optlib.book as book


def test_layernorm_mlp_is_seeded_and_has_a_layernorm_per_hidden_layer():
    a = book.models.mlp((4, 8, 8, 3), seed=1, layernorm=True)
    b = book.models.mlp((4, 8, 8, 3), seed=1, layernorm=True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=False))
    assert book.inspect.norm_gains(a) == [1.0, 1.0]
    assert a(torch.randn(5, 4)).shape == (5, 3)
    with pytest.raises(ValueError, match="sizes"):
        book.models.mlp((4,), layernorm=True)


def test_with_outliers_corrupts_every_kth_batch_only():
    clean = [(torch.ones(2, 3), torch.tensor([0, 9])) for _ in range(7)]
    out = list(book.data.with_outliers(iter(clean), every=3, scale=10.0, num_classes=10))
    for step, (x, y) in enumerate(out, start=1):
        bad = step % 3 == 0
        assert torch.equal(x, torch.full((2, 3), 10.0 if bad else 1.0))
        assert y.tolist() == ([1, 0] if bad else [0, 9])
    with pytest.raises(ValueError, match="every"):
        next(book.data.with_outliers(iter(clean), every=0, scale=2.0))


def test_broken_batch_breaks_one_batch_as_with_outliers_does():
    x, y = torch.ones(2, 3), torch.tensor([0, 9])
    outliers = list(book.data.with_outliers(iter([(x, y)] * 2), every=2, scale=10.0,
                                            num_classes=10))
    corrupt = book.data.broken_batch(1, scale=10.0, num_classes=10)
    for b in range(3):
        bx, by = corrupt(b, x, y)
        want = outliers[1] if b == 1 else (x, y)
        assert torch.equal(bx, want[0]) and torch.equal(by, want[1])
    labels_only = book.data.broken_batch(4, num_classes=10)(4, x, y)
    assert torch.equal(labels_only[0], x) and labels_only[1].tolist() == [1, 0]
    assert book.data.broken_batch(4, scale=2.0)(4, x, y)[1] is y
    with pytest.raises(ValueError, match="at"):
        book.data.broken_batch(-1)


def test_projection_on_the_initial_weights():
    start = book.models.mlp((4, 6, 6, 3), seed=0)
    model = book.models.mlp((4, 6, 6, 3), seed=0)
    assert book.inspect.projection(model, start) == pytest.approx(1.0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)                 # the biases count for nothing
        model[0].bias.add_(7.0)
    assert book.inspect.projection(model, start) == pytest.approx(0.5)
    other = book.models.mlp((4, 6, 6, 3), seed=1)
    end, init = book.inspect.matrix_params(other), book.inspect.matrix_params(start)
    wanted = sum((a * b).sum() for a, b in zip(end, init, strict=True))
    norm = sum((a * a).sum() for a in init)
    assert book.inspect.projection(other, start) == pytest.approx((wanted / norm).item())
    with pytest.raises(ValueError, match="shapes"):
        book.inspect.projection(book.models.mlp((4, 5, 3)), start)


def test_roughness():
    assert book.inspect.roughness([1.0] * 50) == 0.0
    assert book.inspect.roughness([0.0, 1.0] * 50) == 1.0
    assert math.isnan(book.inspect.roughness([1.0]))


def test_shards_and_trust_ratio_from_partial_sums():
    t = torch.randn(7, 5)
    pieces = book.inspect.shards(t, 3)
    assert torch.equal(torch.cat(pieces), t.reshape(-1))
    u = torch.randn(7, 5)
    exact = book.inspect.trust_ratio(t.norm(), u.norm())
    reduced = book.inspect.trust_ratio(sum(p.square().sum() for p in pieces).sqrt(),
                                   sum(q.square().sum() for q in book.inspect.shards(u, 3)).sqrt())
    assert reduced == pytest.approx(exact, rel=1e-6)
    assert book.inspect.trust_ratio(0.0, 3.0) == 1.0 and book.inspect.trust_ratio(2.0, 0.0) == 1.0


def test_state_bytes_per_param_leaves_the_model_alone():
    model = torch.nn.Linear(10, 10)
    before = [p.detach().clone() for p in model.parameters()]
    b = book.inspect.state_bytes_per_param(lambda p: optlib.AdamW(p), model)
    assert 8.0 < b < 8.2                             # two float32 moments + a step counter each
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=False))
    assert all(p.grad is None for p in model.parameters())


def test_loss_breakdown_by_hand():
    """Two right answers with small losses and one confident mistake: the mistake carries
    most of the mean loss, accuracy counts it once."""
    model = torch.nn.Identity()
    logits = torch.tensor([[3.0, 0.0], [0.0, 2.0], [8.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    per = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    b = book.inspect.loss_breakdown(model, logits, y)
    assert b["accuracy"] == pytest.approx(2 / 3)
    assert b["mean"] == pytest.approx(per.mean().item())
    assert b["median"] == pytest.approx(per[1].item())          # the middle of the three
    assert b["wrong_share"] == pytest.approx(per[2].item() / per.sum().item())
    assert b["wrong_mean"] == pytest.approx(per[2].item()) and b["wrong_mean"] > 7
    right = book.inspect.loss_breakdown(model, logits[:2], y[:2])
    assert right["wrong_share"] == 0.0 and right["wrong_mean"] == 0.0 and right["accuracy"] == 1.0
