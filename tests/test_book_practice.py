"""The helpers of chapter 8 (optlib.book.practice) and of the performance appendix
(optlib.book.performance)."""

import math

import pytest
import torch

import optlib
import optlib.book as book
from optlib.book import performance as perf
from optlib.book import practice


def test_ln_mlp_is_seeded_and_has_a_layernorm_per_hidden_layer():
    a, b = practice.ln_mlp((4, 8, 8, 3), seed=1), practice.ln_mlp((4, 8, 8, 3), seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=False))
    assert book.inspect.norm_gains(a) == [1.0, 1.0]
    assert a(torch.randn(5, 4)).shape == (5, 3)
    with pytest.raises(ValueError, match="sizes"):
        practice.ln_mlp((4,))


def test_with_outliers_corrupts_every_kth_batch_only():
    clean = [(torch.ones(2, 3), torch.tensor([0, 9])) for _ in range(7)]
    out = list(book.data.with_outliers(iter(clean), every=3, scale=10.0, num_classes=10))
    for step, (x, y) in enumerate(out, start=1):
        bad = step % 3 == 0
        assert torch.equal(x, torch.full((2, 3), 10.0 if bad else 1.0))
        assert y.tolist() == ([1, 0] if bad else [0, 9])
    with pytest.raises(ValueError, match="every"):
        next(book.data.with_outliers(iter(clean), every=0, scale=2.0))


def test_noisy_labels():
    y = torch.arange(10).repeat(100)
    z = practice.noisy_labels(y, 0.3, num_classes=10, seed=0)
    assert torch.equal(z, practice.noisy_labels(y, 0.3, num_classes=10, seed=0))
    changed = (z != y).float().mean().item()
    assert 0.2 < changed < 0.3                       # 30% redrawn, a tenth of those unchanged
    assert torch.equal(practice.noisy_labels(y, 0.0, 10), y)
    with pytest.raises(ValueError, match="fraction"):
        practice.noisy_labels(y, 1.5, 10)


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


def test_traffic_table():
    assert perf.TRAFFIC["SGD"].bytes_per_param() == 12
    assert perf.TRAFFIC["Adam"].bytes_per_param() == 28
    assert perf.TRAFFIC["Adam"].bytes_per_param(element_size=2) == 14


@pytest.mark.parametrize("make, arrays", [
    (lambda p: optlib.SGD(p, lr=0.1), 3),                           # θ += -η g: one pass
    (lambda p: torch.optim.Adam(p, fused=True), 8),                 # one pass (g declared written)
    (lambda p: torch.optim.Adam(p, foreach=True), 19),              # one pass per operation
])
def test_count_traffic(make, arrays):
    params = perf.make_params(3, 1000)
    opt = make(params)
    opt.step()
    t = perf.count_traffic(opt.step)
    assert (t["read"] + t["written"]) / (3000 * 4) == pytest.approx(arrays, abs=0.01)
    assert t["ops"] >= 1


def test_timing_helpers():
    calls = []
    times = perf.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                  reps=3)
    assert set(times) == {"a", "b"} and calls.count("a") == 5     # 2 warm-up calls + 3
    times, bandwidth = perf.time_with_bandwidth({"noop": lambda: None}, reps=2, megabytes=4)
    assert set(times) == {"noop"} and bandwidth > 0
    with pytest.raises(ValueError, match="stream"):
        perf.time_with_bandwidth({"stream": lambda: None})
    with pytest.raises(ValueError, match="count"):
        perf.make_params(0, 10)


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
