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


def test_reject_stops_before_the_step_and_keeps_no_later_checkpoint():
    _, full = _digits_run(steps=30, save_at=[10, 20, 30])
    seen = []

    def reject(loss):           # refuse the 15th batch (step 14), before its backward pass
        seen.append(loss)
        return len(seen) == 15

    _, h = _digits_run(steps=30, save_at=[10, 20, 30], reject=reject)
    assert h.rejected and not h.diverged and h.steps == 14 and len(h.loss) == 15
    assert h.loss == full.loss[:15] and sorted(h.checkpoints) == [10]  # no step on batch 14
    assert all(torch.equal(a, b) for a, b in zip(full.checkpoints[10].model.values(),
                                                 h.checkpoints[10].model.values(), strict=True))
    _, never = _digits_run(steps=30, reject=lambda loss: False)
    assert never.loss == full.loss and not never.rejected and full.rejected is False


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


# descend: the loop of the toy problems

def _quadratic(x):
    return 0.5 * (torch.tensor([1.0, 4.0], dtype=x.dtype) * x**2).sum()


def _sgd_rule(params, grads, state, lr):
    for p, g in zip(params, grads, strict=True):
        p.sub_(lr * g)


def test_descend_is_gradient_descent_with_an_optimizer_a_rule_or_an_exact_gradient():
    lr, h = 0.1, torch.tensor([1.0, 4.0], dtype=torch.float64)
    run = T.descend(lambda p: optlib.SGD(p, lr=lr), [1.0, 1.0], 10, loss=_quadratic)
    assert run.path.shape == (11, 2) and run.path.dtype == torch.float64
    assert run.steps == 10 and len(run.loss) == 11 and not (run.diverged or run.stopped)
    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    for t in range(11):                  # x_t = (1 − lr·h)^t x_0, f(x_t) = ½ Σ h x_t²
        torch.testing.assert_close(run.path[t], x, rtol=1e-14, atol=0)
        assert run.loss[t] == pytest.approx(0.5 * (h * x**2).sum().item(), rel=1e-13)
        x = x - lr * h * x
    assert torch.equal(run.point.detach(), run.path[-1]) and isinstance(run.optimizer, optlib.SGD)
    rule = T.descend(_sgd_rule, [1.0, 1.0], 10, loss=_quadratic, hyper={"lr": lr})
    exact = T.descend(lambda p: optlib.SGD(p, lr=lr), [1.0, 1.0], 10, loss=_quadratic,
                      gradient=lambda x: h * x)
    for other in (rule, exact):                 # the same steps, up to the last bit
        torch.testing.assert_close(other.path, run.path, rtol=1e-14, atol=0)
        assert other.loss == pytest.approx(run.loss, rel=1e-14)
    assert rule.optimizer is None


def test_descend_schedule_is_lambdalr_and_a_rule_gets_it_in_its_lr():
    schedule = lambda t: 1.0 if t < 3 else 0.1                          # noqa: E731
    ours = T.descend(lambda p: optlib.SGD(p, lr=0.3, momentum=0.9), [1.0, -2.0], 8,
                     loss=_quadratic, schedule=schedule)
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = optlib.SGD([x], lr=0.3, momentum=0.9)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    for t in range(8):
        opt.zero_grad()
        _quadratic(x).backward()
        opt.step()
        lambda_lr.step()
        assert torch.equal(ours.path[t + 1], x.detach())
    rule = T.descend(_sgd_rule, [1.0, -2.0], 8, loss=_quadratic, hyper={"lr": 0.3},
                     schedule=schedule)
    plain = T.descend(lambda p: optlib.SGD(p, lr=0.3), [1.0, -2.0], 8, loss=_quadratic,
                      schedule=schedule)
    torch.testing.assert_close(rule.path, plain.path, rtol=1e-14, atol=0)
    assert rule.path[4, 0] != plain.path[3, 0]          # the rule's lr did drop at step 3
    with pytest.raises(ValueError, match="hyper\\['lr'\\]"):
        T.descend(_sgd_rule, [1.0], 2, loss=lambda x: x.sum(), hyper={}, schedule=schedule)
    with pytest.raises(ValueError, match="schedule must be a step -> multiplier callable"):
        T.descend(lambda p: optlib.SGD(p, lr=0.1), [1.0], 2, loss=lambda x: x.sum(), schedule=3)


def test_lr_schedule_is_the_one_of_fit_and_descend():
    groups = [{"lr": 0.5}, {"lr": 2.0}]
    rates = T.LRSchedule(lambda t: 0.1 * t, groups)
    assert rates.before(3) == pytest.approx(0.15) and groups[1]["lr"] == pytest.approx(0.6)
    fresh = [{"lr": 9.0}, {"lr": 9.0}]          # what load_state_dict puts in its place
    rates.rebind(fresh)
    assert [g["lr"] for g in fresh] == [0.5, 2.0] and rates.before(1) == pytest.approx(0.05)
    x = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([x], lr=1.0)
    torch_scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    rates = T.LRSchedule(torch_scheduler, opt.param_groups)
    assert rates.before(0) == 1.0          # a torch scheduler: untouched before the step
    opt.step()
    rates.after()
    assert rates.before(1) == 0.5
    assert T.LRSchedule(None, [{"lr": 0.1}]).before(5) == 0.1


def test_descend_stops_at_a_loss_that_is_not_finite():
    # lr 1 on curvature 4: x_y grows 3× per step, f overflows long before x does
    run = T.descend(lambda p: torch.optim.SGD(p, lr=1.0), [1.0, 1.0], 1000, loss=_quadratic)
    assert run.diverged and run.loss[-1] == math.inf and all(map(math.isfinite, run.loss[:-1]))
    k = run.steps
    assert 300 < k < 1000 and torch.isfinite(run.path[:k + 1]).all()
    assert torch.isnan(run.path[k + 1:]).all()             # the rows after it
    fine = T.descend(lambda p: torch.optim.SGD(p, lr=0.1), [1.0, 1.0], 5, loss=_quadratic)
    assert not fine.diverged


def test_descend_on_given_gradients_is_the_hand_written_loop():
    # synthetic gradients: step t uses gradients[t] wherever the point is, as a loop that
    # sets p.grad and steps would; the loss recorded is the linear <g_t, x>
    g = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    run = T.descend(lambda p: optlib.Adam(p, lr=0.1), torch.zeros(3), 6, gradients=g)
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt, path = optlib.Adam([p], lr=0.1), [p.detach().clone()]
    for t in range(6):
        p.grad = g[t].clone()
        opt.step()
        path.append(p.detach().clone())
    assert torch.equal(run.path, torch.stack(path)) and run.steps == 6
    assert run.loss[:6] == [(g[t] * path[t]).sum().item() for t in range(6)]
    assert run.loss[6] == (g[5] * path[6]).sum().item()      # the last step's gradient
    states = []                                 # a rule, and hooks, as with a loss
    T.descend(_sgd_rule, [0.0], 2, gradients=[[1.0], [2.0]], hyper={"lr": 0.5},
              hooks=[lambda step: states.append((step.t, step.x.grad.item()))])
    assert states == [(0, 1.0), (1, 2.0)]
    assert T.descend(_sgd_rule, [1.0], 0, gradients=torch.zeros(0, 1), hyper={"lr": 1.0}
                     ).loss == [0.0]
    with pytest.raises(ValueError, match="shape"):
        T.descend(_sgd_rule, [0.0], 3, gradients=[[1.0], [2.0]], hyper={"lr": 0.5})
    with pytest.raises(ValueError, match="not both"):
        T.descend(_sgd_rule, [0.0], 2, loss=_quadratic, gradients=[[1.0], [2.0]],
                  hyper={"lr": 0.5})
    with pytest.raises(ValueError, match="not both or neither"):
        T.descend(_sgd_rule, [0.0], 2, hyper={"lr": 0.5})
    with pytest.raises(ValueError, match="give no gradient"):
        T.descend(_sgd_rule, [0.0], 2, gradients=[[1.0], [2.0]], gradient=torch.ones_like,
                  hyper={"lr": 0.5})


def test_descend_stop_hooks_and_noise():
    # stop: at the first point accepted (here the start, or after a few steps)
    near = lambda x: float(x.norm()) < 0.5                              # noqa: E731
    run = T.descend(lambda p: optlib.SGD(p, lr=0.1), [1.0, 0.0], 100, loss=_quadratic, stop=near)
    assert run.stopped and run.steps == 7 and run.path[7, 0] == pytest.approx(0.9**7)
    assert torch.isnan(run.path[8:]).all()
    assert T.descend(lambda p: optlib.SGD(p, lr=0.1), [0.1, 0.0], 9, loss=_quadratic,
                     stop=near).steps == 0
    # hooks see a Step: t from 0, x the point (with the step's gradient), y and model None;
    # step_kwargs(x, y) reaches optimizer.step
    seen = []

    class SGDWithBatchSize(optlib.SGD):
        def step(self, closure=None, bs=None):
            self.bs = bs
            return super().step(closure)

    class Hook:
        def step_kwargs(self, x, y):
            return {"bs": 7}

        def __call__(self, step):
            assert step.optimizer.bs == 7
            seen.append((step.t, step.x.grad.clone(), step.x.detach().clone(), step.loss,
                         step.lr, step.model, step.y))

    run = T.descend(lambda p: SGDWithBatchSize(p, lr=0.1), [1.0, 1.0], 3, loss=_quadratic,
                    hooks=[Hook()], schedule=lambda t: 1.0 / (t + 1))
    assert [s[0] for s in seen] == [0, 1, 2]
    for t, grad, point, loss, lr, model, y in seen:
        assert torch.equal(point, run.path[t + 1]) and loss == run.loss[t]
        assert torch.equal(grad, torch.tensor([1.0, 4.0], dtype=torch.float64) * run.path[t])
        assert lr == pytest.approx(0.1 / (t + 1)) and model is None and y is None
    # noise: the same draws for the same seed, other draws for another
    make = lambda p: optlib.SGD(p, lr=0.05)                             # noqa: E731
    a, b, c = (T.descend(make, [1.0, 1.0], 20, loss=_quadratic, noise=0.5, seed=s)
               for s in (3, 3, 4))
    assert torch.equal(a.path, b.path) and not torch.equal(a.path, c.path)
    for bad, word in ((dict(steps=-1), "steps"), (dict(noise=-1.0), "noise")):
        kwargs = dict(steps=3, loss=_quadratic) | bad
        with pytest.raises(ValueError, match=word):
            T.descend(make, [1.0, 1.0], kwargs.pop("steps"), **kwargs)


def test_evaluating_sets_eval_mode_without_gradients_and_restores_the_mode():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    x = torch.ones(4, 3)
    for training in (True, False):
        model.train(training)
        with T.evaluating(model) as m:
            assert m is model and not model.training and not torch.is_grad_enabled()
            out = model(x)
        assert model.training == training and torch.is_grad_enabled()
        assert not out.requires_grad and torch.equal(out, model[0](x).detach())
    model.train()
    with pytest.raises(RuntimeError), T.evaluating(model):
        raise RuntimeError("inside")
    assert model.training
    assert T.evaluate_loss(model, x, torch.zeros(4, dtype=torch.long)) == T.cross_entropy(
        model[0](x), torch.zeros(4, dtype=torch.long)).item() and model.training


# fit's gradient, autocast and scaler: accumulation and mixed precision in the one loop

def _adamw_on_digits(dtype=torch.float32):
    model = M.mlp((64, 32, 10), seed=0, dtype=dtype)
    return model, torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)


def test_fit_with_accumulation_is_the_hand_written_loop_and_the_large_batch():
    from optlib.book import scale

    task = D.DigitsTask(batch_size=16, seed=0)
    steps, k, clip = 6, 4, 0.5
    schedule = optlib.schedules.warmup_cosine(2, steps)
    model, opt = _adamw_on_digits(torch.float64)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses = []
    for t in range(steps):      # what fit(gradient=...) should do, written out
        opt.zero_grad()
        x, y = task.batch(t)
        losses.append(scale.accumulate(model, task.loss, x.double(), y, k))
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        lambda_lr.step()
    fitted, fit_opt = _adamw_on_digits(torch.float64)
    h = T.fit(fitted, fit_opt, task, steps, schedule=schedule, clip=clip,
              gradient=lambda m, x, y: scale.accumulate(m, task.loss, x.double(), y, k))
    assert h.loss == losses and h.steps == steps
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fitted.parameters(),
                                                 strict=True))
    one, one_opt = _adamw_on_digits(torch.float64)
    T.fit(one, one_opt, task, steps, schedule=schedule, clip=clip,
          gradient=lambda m, x, y: scale.accumulate(m, task.loss, x.double(), y, 1))
    gap = max((a - b).abs().max().item() for a, b in zip(one.parameters(),
                                                         fitted.parameters(), strict=True))
    assert 0 < gap < 1e-12      # k micro-batches: the large batch's step, to round-off


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fit_with_autocast_and_a_grad_scaler_is_the_recipe(dtype):
    task = D.DigitsTask(batch_size=32, seed=0)
    steps, clip = 8, 1.0

    def scaler():   # 2^20 overflows float16 gradients: steps are skipped, the scale moves
        return torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=2)

    model, opt = _adamw_on_digits()
    start = [p.detach().clone() for p in model.parameters()]
    hand, losses = scaler(), []
    for t in range(steps):      # torch's recipe for autocast with a GradScaler
        x, y = task.batch(t)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        losses.append(loss.item())
        hand.scale(loss).backward()
        hand.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        hand.step(opt)
        hand.update()
        if t == 0:
            first = [p.detach().clone() for p in model.parameters()]
    fitted, fit_opt = _adamw_on_digits()
    fit_scaler = scaler()
    h = T.fit(fitted, fit_opt, task, steps, clip=clip, autocast=dtype, scaler=fit_scaler)
    assert h.loss == losses and fit_scaler.get_scale() == hand.get_scale()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fitted.parameters(),
                                                 strict=True))
    assert fitted[0].weight.dtype == fit_opt.state[fitted[0].weight]["exp_avg"].dtype \
        == torch.float32
    skipped = all(torch.equal(a, b) for a, b in zip(start, first, strict=True))
    assert skipped == (dtype == torch.float16)      # bf16 has float32's range: no overflow
    assert (hand.get_scale() < 2.0**20) == skipped
    if skipped:
        assert h.update_ratio[0] == 0.0 and math.isinf(h.grad_norm[0])


def test_fit_bad_gradient_autocast_and_scaler():
    model, opt = _adamw_on_digits()
    task = D.DigitsTask(batch_size=8, seed=0)
    grad = lambda m, x, y: 0.0   # noqa: E731
    with pytest.raises(ValueError, match="gradient must be a callable"):
        T.fit(model, opt, task, 1, gradient=3)
    with pytest.raises(ValueError, match=r"no loss_scale \(2.0\)"):
        T.fit(model, opt, task, 1, gradient=grad, loss_scale=2.0)
    with pytest.raises(ValueError, match="no loss_scale"):
        T.fit(model, opt, task, 1, gradient=grad, autocast=torch.bfloat16)
    with pytest.raises(ValueError, match="autocast must be a torch dtype or None, got 'bf16'"):
        T.fit(model, opt, task, 1, autocast="bf16")
    with pytest.raises(ValueError, match="scaler must be a torch.amp.GradScaler"):
        T.fit(model, opt, task, 1, scaler=object())
    rule = lambda params, grads, state, lr: None   # noqa: E731
    with pytest.raises(ValueError, match="scaler must be a torch.amp.GradScaler"):
        T.fit(model, rule, task, 1, scaler=torch.amp.GradScaler("cpu"), hyper={"lr": 0.1})
    with pytest.raises(ValueError, match=r"loss_scale \(2.0\) and scaler both scale"):
        T.fit(model, opt, task, 1, loss_scale=2.0, scaler=torch.amp.GradScaler("cpu"))
