"""optlib.book.models and optlib.book.train: shapes, determinism, the history, divergence."""

import math

import pytest
import torch

import optlib
from optlib import book
from optlib.book import data as D
from optlib.book import models as M
from optlib.book import train as T


def test_setup_seeds_and_threads():
    old = torch.get_num_threads()
    try:
        device = book.setup(seed=3)
        a = torch.rand(3)
        book.setup(seed=3)
        assert torch.equal(a, torch.rand(3)) and torch.get_num_threads() == 1
        assert device.type in ("cpu", "cuda")
    finally:
        torch.set_num_threads(old)


def test_models_shapes_and_seeds():
    x = torch.randn(5, 64)
    assert M.mlp(seed=0)(x).shape == (5, 10)
    assert torch.equal(M.mlp(seed=0)(x), M.mlp(seed=0)(x))
    state = torch.get_rng_state()
    M.mlp(seed=1)
    assert torch.equal(state, torch.get_rng_state())  # seeded init leaves the global RNG alone
    assert M.small_cnn(seed=0)(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    tt = M.TinyTransformer(vocab_size=20, block_size=8, seed=0)
    idx = torch.randint(20, (3, 8))
    assert tt(idx).shape == (3, 8, 20)
    # causal: the logits at position 2 do not depend on later tokens
    idx2 = idx.clone()
    idx2[:, 5:] = (idx2[:, 5:] + 1) % 20
    assert torch.allclose(tt(idx)[:, :5], tt(idx2)[:, :5], atol=1e-6)
    assert math.isclose(tt.loss(idx, idx).item(), math.log(20), rel_tol=0.2)
    assert tt.generate(idx[:1, :2], 10, generator=torch.Generator().manual_seed(0)).shape == (1, 12)
    with pytest.raises(ValueError, match="sizes must be at least two positive integers"):
        M.mlp((64,))


def _digits_run(steps=30, **kw):
    s = D.digits()
    model = M.mlp((64, 32, 10), seed=0)
    opt = optlib.SGD(model.parameters(), lr=0.1, momentum=0.9)
    h = T.fit(model, opt, D.batches(s.x_train, s.y_train, 64), steps,
                evaluate=lambda: T.accuracy(model, s.x_test, s.y_test), eval_every=10, **kw)
    return model, h


def test_train_history_is_complete_and_deterministic():
    model, h = _digits_run(schedule=optlib.schedules.linear_decay(30))
    assert len(h.loss) == len(h.lr) == len(h.grad_norm) == len(h.update_ratio) == 30
    assert h.steps == len(h.seconds) == 30 and all(t > 0 for t in h.seconds)
    assert h.eval_steps == [0, 10, 20, 30] and h.eval[-1] > 0.8 > h.eval[0]
    assert h.lr[0] == 0.1 and math.isclose(h.lr[15], 0.05) and not h.diverged
    assert h.final(5) < h.loss[0] and all(r > 0 for r in h.update_ratio)
    _, h2 = _digits_run(schedule=optlib.schedules.linear_decay(30))
    assert h.loss == h2.loss and h.eval == h2.eval  # deterministic
    assert "steps=30" in repr(h)


def test_grad_norm_and_update_ratio_are_right():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    w0 = model.weight.detach().clone()
    h = T.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), iter([(x, y)]), 1,
                loss_fn=torch.nn.functional.mse_loss)
    g = 2 * ((x @ w0.T - y) * x).mean(0)
    assert math.isclose(h.grad_norm[0], g.norm().item(), rel_tol=1e-5)
    assert math.isclose(h.update_ratio[0], 0.1 * g.norm().item() / w0.norm().item(), rel_tol=1e-5)


def test_clip_records_preclip_norm_and_limits_the_step():
    _, free = _digits_run(steps=5)
    _, clipped = _digits_run(steps=5, clip=0.01)
    assert free.grad_norm[0] == clipped.grad_norm[0] > 0.01
    assert clipped.update_ratio[0] < free.update_ratio[0]


def test_divergence_stops_and_is_recorded():
    s = D.regression()
    model = M.mlp((20, 1), seed=0)
    h = T.fit(model, torch.optim.SGD(model.parameters(), lr=100.0),
                D.batches(s.x_train, s.y_train, 64), 200, loss_fn=torch.nn.functional.mse_loss)
    assert h.diverged and len(h.loss) < 200 and not math.isfinite(h.loss[-1])
    assert h.steps == len(h.seconds) == len(h.loss) - 1    # the last loss took no step
    assert h.final() == math.inf


def test_stop_ends_training_at_the_first_accepted_evaluation():
    _, full = _digits_run(steps=30)        # accuracies after 0, 10, 20 and 30 steps
    target = full.eval[2]
    k = next(i for i, acc in enumerate(full.eval) if acc >= target)
    _, h = _digits_run(steps=30, save_at=[30], stop=lambda acc: acc >= target)
    assert h.stopped and h.steps == 10 * k and h.loss == full.loss[:10 * k]
    assert h.eval == full.eval[:k + 1] and not h.checkpoints      # no checkpoint at 30
    _, at_once = _digits_run(steps=30, stop=lambda acc: acc >= 0.0)
    assert at_once.stopped and at_once.steps == 0 and at_once.eval == full.eval[:1]
    assert not full.stopped
    model = M.mlp(seed=0)
    with pytest.raises(ValueError, match="stop needs evaluate"):
        T.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), iter([]), 1,
              stop=lambda v: True)


def test_transformer_trains_on_the_corpus():
    ds = D.CharDataset(D.text(), block_size=32)
    model = M.TinyTransformer(ds.vocab_size, block_size=32, d_model=32, n_layers=1, seed=0)
    opt = optlib.AdamW(model.parameters(), lr=3e-3)
    h = T.fit(model, opt, ds.batches(16), 40)
    assert h.loss[0] > 4.0 and h.final(5) < 3.3


def test_accuracy_and_loss_helpers_keep_mode():
    s = D.digits()
    model = M.mlp(seed=0)
    model.train()
    acc = T.accuracy(model, s.x_test, s.y_test)
    loss = T.evaluate_loss(model, s.x_test, s.y_test)
    assert 0.0 <= acc <= 1.0 and loss > 0 and model.training


def test_bad_arguments():
    model = M.mlp(seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps must be a non-negative integer, got 1.5"):
        T.fit(model, opt, iter([]), 1.5)
    with pytest.raises(ValueError, match="clip must be positive or None, got 0"):
        T.fit(model, opt, iter([]), 1, clip=0)
    with pytest.raises(ValueError, match="schedule must be a step -> multiplier callable"):
        T.fit(model, opt, iter([]), 1, schedule=3)
