"""optlib.book's concept modules: the one training loop, the side-by-side runner, the
inspectors, the optimizer table, the one smooth."""

import math

import numpy as np
import pytest
import torch

import optlib
import optlib.book as book
from optlib import schedules


@pytest.fixture(scope="module")
def task():
    return book.data.LMTask(block_size=8, batch_size=4, val_batches=2)


@pytest.fixture(scope="module")
def digits():
    return book.data.digits()


def tiny(task):
    return book.models.tiny_transformer(task.vocab_size, block_size=8, d_model=16,
                                        n_layers=1, n_heads=2, seed=0)


def sgd_rule(params, grads, state, lr):
    for p, g in zip(params, grads, strict=True):
        p -= lr * g


def test_fit_resumes_from_a_checkpoint_as_if_never_stopped(task):
    schedule = schedules.wsd(2, 6, 4)
    model = tiny(task)
    full = book.train.fit(model, optlib.Adam(model.parameters(), lr=1e-2), task, 12,
                          schedule=schedule, save_at=[5])
    model = tiny(task)
    resumed = book.train.fit(model, optlib.Adam(model.parameters(), lr=1e-2), task, 12,
                             schedule=schedule, start=full.checkpoints[5])
    assert resumed.loss == full.loss[5:] and resumed.lr == full.lr[5:]
    assert resumed.val_loss == full.val_loss and math.isfinite(full.val_loss)
    model = tiny(task)                # a checkpoint can start any number of branches
    again = book.train.fit(model, optlib.Adam(model.parameters(), lr=1e-2), task, 12,
                           schedule=schedule, start=full.checkpoints[5])
    assert again.loss == resumed.loss
    assert 12 not in full.checkpoints and full.lr[0] == 0.0


def test_fit_takes_a_rule_like_an_optimizer(digits):
    def run(make, **kw):
        model = book.models.mlp((64, 16, 10), seed=0)
        opt = make(model) if make is not sgd_rule else sgd_rule
        stream = book.data.batches(digits.x_train, digits.y_train, 32)
        return book.train.fit(model, opt, stream, 10, schedule=lambda t: 0.9**t,
                              progress=False, **kw)

    with_sgd = run(lambda m: optlib.SGD(m.parameters(), lr=0.1))
    with_rule = run(sgd_rule, hyper={"lr": 0.1})
    assert with_rule.loss == pytest.approx(with_sgd.loss, rel=1e-6)
    assert with_rule.lr == with_sgd.lr
    assert with_rule.optimizer is None and len(with_rule.update_rms) == 10
    with pytest.raises(ValueError, match="hyper"):
        run(sgd_rule)


def test_loss_scale_changes_sgd_but_is_recorded_unscaled(digits):
    def run(scale):
        model = book.models.mlp((64, 16, 10), seed=0)
        stream = book.data.batches(digits.x_train, digits.y_train, 32)
        return book.train.fit(model, optlib.SGD(model.parameters(), lr=0.1), stream, 3,
                              loss_scale=scale)

    a, b = run(1.0), run(2.0)
    assert a.loss[0] == b.loss[0] and a.loss[2] != b.loss[2]
    assert b.grad_norm[0] == pytest.approx(2 * a.grad_norm[0], rel=1e-6)


def test_one_divergence_rule():
    s = book.data.regression()
    model = book.models.mlp((20, 1), seed=0)
    h = book.train.fit(model, optlib.SGD(model.parameters(), lr=100.0),
                       book.data.batches(s.x_train, s.y_train, 64), 200,
                       loss_fn=torch.nn.functional.mse_loss)
    assert h.diverged and not math.isfinite(h.loss[-1]) and h.final() == math.inf
    assert len(h.grad_norm) == len(h.loss) - 1 and math.isnan(h.val_loss)


def test_hooks_see_every_step_and_sophia_gets_its_hessian(task):
    seen = []
    model = tiny(task)
    h = book.train.fit(model, optlib.SophiaG(model.parameters(), lr=1e-3), task, 6,
                       hooks=[book.train.SophiaHessian(every=3),
                              lambda step: seen.append((step.t, step.lr, step.y.numel()))])
    assert seen == [(t, 1e-3, 32) for t in range(6)]
    assert any(float(st["hessian"].abs().sum()) > 0 for st in h.optimizer.state.values())
    with pytest.raises(ValueError, match="every"):
        book.train.SophiaHessian(every=0)


def test_epochs_cover_the_data(digits):
    x = torch.arange(10.0)[:, None]
    stream = book.train.epochs(x, torch.arange(10), 4, seed=0)
    epoch = [next(stream) for _ in range(3)]
    assert [len(b[0]) for b in epoch] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in epoch]).tolist()) == list(range(10))
    h = book.train.digits_run(digits, 0.1, batch_size=256, n_epochs=2)
    assert h.eval_steps == [0, 6, 12] and h.eval[-1] < h.eval[0]
    assert 0 < h.test_accuracy <= 1
    model = book.models.mlp((64, 128, 10), seed=1)
    same = book.train.fit(model, optlib.SGD(model.parameters(), lr=0.1, momentum=0.9),
                          book.data.batches(digits.x_train, digits.y_train, 32, seed=1), 5)
    h = book.train.digits_run(digits, 0.1, momentum=0.9, steps=5, seed=1)
    assert h.loss == same.loss
    assert book.train.digits_run(digits, 0.1, momentum=0.9, steps=5, seed=1,
                                 batch_size=32).loss == same.loss     # the default, given
    model = book.models.mlp((64, 128, 10), seed=1)
    clipped = book.train.fit(model, optlib.SGD(model.parameters(), lr=0.1, momentum=0.9),
                             book.data.batches(digits.x_train, digits.y_train, 32, seed=1),
                             5, clip=0.1)
    h = book.train.digits_run(digits, 0.1, momentum=0.9, steps=5, seed=1, clip=0.1)
    assert h.loss == clipped.loss and h.loss != same.loss     # fit's arguments pass through
    h = book.train.digits_run(digits, 20.0, momentum=0.9, steps=50, batch_size=None,
                              diverge_above=3.0)
    assert h.diverged and 3.0 < h.loss[-1] < math.inf and h.final() == math.inf
    with pytest.raises(ValueError, match="steps or n_epochs"):
        book.train.digits_run(digits, 0.1)


def _sgd_rule(params, grads, state, lr, weight_decay=0.0):
    for p, g in zip(params, grads, strict=True):
        p.sub_(lr * (g + weight_decay * p))


def test_digits_run_with_another_optimizer_or_a_rule(digits):
    model = book.models.mlp((64, 128, 10), seed=2)
    same = book.train.fit(model, optlib.Adam(model.parameters(), lr=3e-3, eps=1e-6),
                          book.data.batches(digits.x_train, digits.y_train, 32, seed=2), 5)
    h = book.train.digits_run(digits, 3e-3, steps=5, seed=2,
                              optimizer=lambda p, lr: optlib.Adam(p, lr=lr, eps=1e-6))
    assert h.loss == same.loss
    net = book.models.mlp((64, 128, 10), seed=2)           # fit_split's test numbers
    split = book.train.fit_split(net, optlib.Adam(net.parameters(), lr=3e-3, eps=1e-6),
                                 digits, 5, seed=2)
    assert split.loss == h.loss
    assert (h.test_loss, h.test_accuracy) == (split.test_loss, split.test_accuracy)
    assert h.test_loss == book.train.evaluate_loss(model, digits.x_test, digits.y_test)
    assert book.train.digits_run(digits, 3e-3, optimizer=optlib.Adam, steps=5,
                                 seed=2).loss != same.loss       # eps changes the run
    rule = book.train.digits_run(digits, 0.1, optimizer=_sgd_rule, steps=5,
                                 hyper={"weight_decay": 0.01})
    sgd = book.train.digits_run(digits, 0.1, steps=5, optimizer=lambda p, lr: optlib.SGD(
        p, lr=lr, weight_decay=0.01))
    assert rule.loss == pytest.approx(sgd.loss, rel=1e-6) and rule.loss[0] == sgd.loss[0]
    with pytest.raises(ValueError, match="SGD's"):
        book.train.digits_run(digits, 0.1, optimizer=optlib.Adam, momentum=0.9, steps=1)
    with pytest.raises(ValueError, match="hyper"):
        book.train.digits_run(digits, 0.1, optimizer=optlib.Adam, hyper={}, steps=1)


def test_digits_run_batch_order_outliers_and_test_loss(digits):
    model = book.models.mlp((64, 128, 10), seed=0)
    stream = book.data.with_outliers(digits.batches(16, seed=5), every=3, scale=10.0,
                                     num_classes=10)
    same = book.train.fit(model, optlib.AdamW(model.parameters(), lr=1e-2), stream, 7,
                          clip=1.0, eval_every=3, evaluate=lambda: book.train.evaluate_loss(
                              model, digits.x_test, digits.y_test))
    h = book.train.digits_run(digits, 1e-2, optimizer=optlib.AdamW, batch_size=16, steps=7,
                              data_seed=5, clip=1.0, test_every=3,
                              outliers=dict(every=3, scale=10.0, num_classes=10))
    assert h.loss == same.loss and h.grad_norm == same.grad_norm
    assert h.eval_steps == [0, 3, 6, 7] and h.eval == same.eval
    clean = book.train.digits_run(digits, 1e-2, optimizer=optlib.AdamW, batch_size=16,
                                  steps=7, data_seed=5, clip=1.0)
    assert clean.loss[:2] == h.loss[:2] and clean.loss[2] != h.loss[2]   # batch 3 broken
    assert clean.eval == []
    other = book.train.digits_run(digits, 1e-2, optimizer=optlib.AdamW, batch_size=16,
                                  steps=7, seed=5, clip=1.0)
    assert other.loss != clean.loss                # the initialization's seed differs
    with pytest.raises(ValueError, match="own batches"):
        book.train.digits_run(book.data.DigitsTask(), 0.1, steps=1, data_seed=1)
    with pytest.raises(ValueError, match="own batches"):
        book.train.digits_run(book.data.DigitsTask(), 0.1, steps=1, outliers=dict(every=2,
                                                                                   scale=2.0))
    with pytest.raises(ValueError, match="test_every"):
        book.train.digits_run(digits, 0.1, n_epochs=1, test_every=5)


def test_digits_run_on_a_task_with_weight_decay():
    task = book.data.DigitsTask(batch_size=16, seed=3)
    model = book.models.mlp((64, 24, 24, 10), seed=4)
    same = book.train.fit(model, torch.optim.AdamW(model.parameters(), lr=1e-2,
                                                   weight_decay=0.5), task, 6)
    h = book.train.digits_run(task, 1e-2, optimizer=torch.optim.AdamW, weight_decay=0.5,
                              sizes=(64, 24, 24, 10), steps=6, seed=4)
    assert h.loss == same.loss and h.val_loss == same.val_loss
    assert h.optimizer.param_groups[0]["weight_decay"] == 0.5
    assert h.test_accuracy == book.train.accuracy(h.model, task.split.x_test,
                                                  task.split.y_test)
    default = book.train.digits_run(task, 1e-2, optimizer=torch.optim.AdamW,
                                    sizes=(64, 24, 24, 10), steps=6, seed=4)
    assert default.optimizer.param_groups[0]["weight_decay"] == 0.01   # AdamW's own
    sgd = book.train.digits_run(task, 0.1, weight_decay=0.5, steps=1)
    assert sgd.optimizer.param_groups[0]["weight_decay"] == 0.5
    with pytest.raises(ValueError, match="own batches"):
        book.train.digits_run(task, 0.1, n_epochs=1)
    for batch_size in (64, 32, None):   # 32 too: the split's default, but given
        with pytest.raises(ValueError, match="own batches"):
            book.train.digits_run(task, 0.1, steps=1, batch_size=batch_size)
    with pytest.raises(ValueError, match="hyper"):
        book.train.digits_run(task, 0.1, optimizer=_sgd_rule, weight_decay=0.1, steps=1)


def test_side_by_side_equal_rules_and_a_different_one(digits):
    gaps = book.compare.side_by_side(
        lambda: book.models.mlp((64, 8, 10)), digits.x_train, digits.y_train,
        {"rule": lambda p, g, s: sgd_rule(p, g, s, lr=0.1),
         "optlib": lambda p: optlib.SGD(p, lr=0.1),
         "torch": lambda p: torch.optim.SGD(p, lr=0.1),
         "other": lambda p: optlib.SGD(p, lr=0.2)}, steps=5)
    assert gaps["rule"] == 0.0 and gaps["optlib"] < 1e-12 and gaps["torch"] < 1e-12
    assert gaps["other"] > 1e-4
    with pytest.raises(ValueError, match="steps"):
        book.compare.side_by_side(lambda: book.models.mlp(), digits.x_train, digits.y_train,
                                  {"a": lambda p: optlib.SGD(p, lr=0.1)}, steps=0)


def test_max_difference_of_models_or_tensors():
    a, b = book.models.mlp((4, 3, 2), seed=0), book.models.mlp((4, 3, 2), seed=0)
    assert book.compare.max_difference(a, b) == 0.0
    with torch.no_grad():
        b[2].bias[1] += 0.25                       # one entry of the last tensor moves
    assert book.compare.max_difference(a, b) == 0.25
    assert book.compare.max_difference(list(a.parameters()), b.parameters()) == 0.25
    with pytest.raises(ValueError, match="hold 4 and 3 tensors"):
        book.compare.max_difference(a, list(b.parameters())[:3])


def test_mlp_options():
    ln = book.models.mlp((4, 8, 8, 3), seed=1, layernorm=True)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in ln) == 2
    deep = book.models.mlp((100,) + (400,) * 2 + (7,), activation="tanh", seed=0,
                           init_scale=2.0, dtype=torch.float64)
    w = deep[2].weight
    assert w.dtype == torch.float64 and w.std().item() == pytest.approx(0.1, rel=0.05)
    assert deep[0].bias.abs().sum() == 0
    with pytest.raises(ValueError, match="activation"):
        book.models.mlp(activation="swish")


def test_noisy_labels_and_outliers():
    y = torch.arange(10).repeat(100)
    z = book.data.noisy_labels(y, 0.3, seed=0)
    assert torch.equal(z, book.data.noisy_labels(y, 0.3, seed=0)) and z.dtype == y.dtype
    assert 0.2 < (z != y).float().mean().item() < 0.3
    out = list(book.data.with_outliers(iter([(torch.ones(1), y[:1])] * 4), every=2, scale=3.0))
    assert [float(x) for x, _ in out] == [1.0, 3.0, 1.0, 3.0]


def test_adafactor_update_rms_leaves_the_state_alone():
    torch.manual_seed(0)
    w, b = torch.randn(6, 4, requires_grad=True), torch.randn(4, requires_grad=True)
    opt = optlib.Adafactor([w, b], lr=1e-2)
    for _ in range(2):
        w.grad, b.grad = torch.randn(6, 4), torch.randn(4)
        opt.step()
    before = {k: v.clone() for st in opt.state.values() for k, v in st.items()
              if torch.is_tensor(v)}
    rms = book.inspect.adafactor_update_rms(opt)
    after = {k: v for st in opt.state.values() for k, v in st.items() if torch.is_tensor(v)}
    assert len(rms) == 2 and all(r > 0 for r in rms)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_trust_ratio_is_the_cores():
    assert book.inspect.trust_ratio(3.0, 4.0) == 0.75
    assert book.inspect.trust_ratio(0.0, 4.0) == 1.0 == book.inspect.trust_ratio(2.0, 0.0)


def test_optimizer_table_builds_every_entry():
    model = book.models.mlp((8, 8, 3), seed=0)
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    for name in book.optimizers.TABLE:
        m = book.models.mlp((8, 8, 3), seed=0)
        opt = book.optimizers.build(name, m, 1e-3, warmup_steps=2)
        if hasattr(opt, "train"):
            opt.train()
        for _ in range(2):           # SOAP's first step only sets up its preconditioner
            m.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step(**({"bs": 4} if name == "SophiaG" else {}))
        moved = any(not torch.equal(a, b) for a, b in zip(m.parameters(), model.parameters(),
                                                          strict=True))
        assert moved, name
    with pytest.raises(ValueError, match="name"):
        book.optimizers.factory("Adamm", 1e-3)


def test_smooth_and_step_lengths():
    assert np.allclose(book.plots.smooth([1, 2, 3, 4], k=2), [1.5, 2.5, 3.5])
    assert len(book.plots.smooth(range(100), k=25)) == 76
    with pytest.raises(ValueError, match="k"):
        book.plots.smooth([1.0], k=0)
    ell = book.rates.step_lengths(lambda p: optlib.SGD(p, lr=0.01, momentum=0.9), 200)
    assert ell.dtype == torch.float64
    assert ell[0].item() == pytest.approx(0.01, rel=1e-12)
    assert ell[-1].item() == pytest.approx(0.1 * (1 - 0.9**200), rel=1e-12)
    drop = lambda t: 1.0 if t < 3 else 0.1                              # noqa: E731
    by_rule = book.rates.step_lengths(_sgd_rule, 6, drop, hyper={"lr": 0.5})
    assert by_rule.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.05, 0.05, 0.05], rel=1e-12)
    assert torch.equal(by_rule, book.rates.step_lengths(
        lambda p: optlib.SGD(p, lr=0.5), 6, drop))
    with pytest.raises(ValueError, match="lr"):
        book.rates.step_lengths(_sgd_rule, 6, drop)
    with pytest.raises(ValueError, match="rule"):
        book.rates.step_lengths(optlib.SGD, 6, hyper={"lr": 0.5})
    assert not book.compare.is_rule(optlib.Adam) and book.compare.is_rule(_sgd_rule)


def test_fit_split_reports_the_test_set(digits):
    model = book.models.mlp((64, 16, 10), seed=0)
    h = book.train.fit_split(model, optlib.SGD(model.parameters(), lr=0.1), digits, 20)
    assert h.test_loss == book.train.evaluate_loss(model, digits.x_test, digits.y_test)
    assert 0.5 < h.test_accuracy <= 1 and len(h.loss) == 20


def test_optimizers_fit_equals_the_loop_with_what_each_entry_needs(task):
    schedule = schedules.warmup_cosine(2, 6)
    model = tiny(task)
    h = book.optimizers.fit("SophiaG", model, 1e-3, task, 6, schedule, hessian_every=3)
    model = tiny(task)
    same = book.train.fit(model, optlib.SophiaG(model.parameters(), lr=1e-3, weight_decay=0.0),
                          task, 6, schedule=schedule,
                          hooks=[book.train.SophiaHessian(every=3)])
    assert h.loss == same.loss
    free = book.optimizers.fit("AdamW schedule-free", tiny(task), 1e-3, task, 3, schedule,
                               warmup_steps=2)
    assert free.lr == [1e-3] * 3                  # no schedule on a schedule-free optimizer


def test_best_lr_table():
    class R:
        def __init__(self, val, loss):
            self.val_loss, self.loss = val, loss

        def final(self):
            return self.loss[-1]

    runs = {("a", 1): R(2.0, [5.0] * 30), ("a", 2): R(1.0, [3.0] * 30),
            ("b", 1): R(0.5, [1.0] * 30), ("b", 2): R(0.7, [1.0] * 30)}
    rows = book.sweeps.best_lr_table(runs, {"a": (1, 2), "b": (1, 2)}, target=2.0)
    assert rows == [("b", "1e+00<", 1.0, 0.5, 25), ("a", "2e+00>", 3.0, 1.0, None)]
    assert book.sweeps.best_lrs(runs, {"a": (1, 2), "b": (1, 2)}) == {"a": 2, "b": 1}


def test_fit_loss_scale_leaves_adam_nearly_unchanged(digits):
    runs = []
    for scale in (1.0, 1e-3):
        torch.manual_seed(0)
        net = book.models.mlp((64, 8, 10))
        stream = book.data.batches(digits.x_train, digits.y_train, 16)
        runs.append(book.train.fit(net, optlib.Adam(net.parameters(), lr=1e-3), stream, 20,
                                   loss_scale=scale).loss)
    assert max(abs(a - b) for a, b in zip(*runs, strict=True)) < 1e-4


def test_fit_refuses_a_bad_loss_scale(digits):
    net = book.models.mlp((64, 8, 10))
    stream = book.data.batches(digits.x_train, digits.y_train, 16)
    with pytest.raises(ValueError, match="loss_scale"):
        book.train.fit(net, sgd_rule, stream, 1, loss_scale=0.0, hyper={"lr": 0.1})
    with pytest.raises(ValueError, match="hyper"):
        book.train.fit(net, sgd_rule, stream, 1, schedule=lambda t: 1.0)


def test_run_1d_matches_gradient_descent():
    path = book.surfaces.run_1d(lambda p: optlib.SGD(p, lr=0.25), lambda x: x**2, 1.0, 3)
    assert torch.allclose(path, torch.tensor([1.0, 0.5, 0.25, 0.125], dtype=torch.float64))
    seen = []                                   # a hook sees every step and the optimizer
    book.surfaces.run_1d(lambda p: optlib.RMSprop(p, lr=0.1), lambda x: x**2, 1.0, 3,
                         hooks=[lambda step: seen.append((step.t, book.inspect.effective_lr(
                             step.optimizer).item()))])
    assert [t for t, _ in seen] == [0, 1, 2] and all(r > 0 for _, r in seen)


def test_effective_lr_reads_adagrad_and_rmsprop_and_refuses_adam():
    x = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = optlib.Adagrad([x], lr=0.1)
    x.grad = torch.tensor([2.0, 0.0])
    opt.step()
    rates = book.inspect.effective_lr(opt)
    assert rates[0].item() == pytest.approx(0.1 / (2.0 + 1e-10))
    assert book.inspect.effective_lr(opt, seen_only=True).numel() == 1
    y = torch.zeros(3, requires_grad=True)
    rms = optlib.RMSprop([y], lr=0.01)
    y.grad = torch.ones(3)
    rms.step()
    assert torch.allclose(book.inspect.effective_lr(rms), torch.full((3,), 0.01 / (0.1 + 1e-8)))
    # one parameter's rates, in its shape
    w = torch.ones(2, 3, requires_grad=True)
    two = optlib.Adagrad([x, w], lr=0.1)
    x.grad, w.grad = torch.tensor([2.0, 0.0]), torch.full((2, 3), 4.0)
    two.step()
    assert torch.equal(book.inspect.effective_lr(two, param=w),
                       book.inspect.effective_lr(two)[2:].view(2, 3))
    with pytest.raises(ValueError, match="not a parameter"):
        book.inspect.effective_lr(two, param=y)
    with pytest.raises(ValueError, match="not both"):
        book.inspect.effective_lr(two, True, param=w)
    adam = optlib.Adam([y])
    adam.step()
    with pytest.raises(ValueError, match="AdaGrad or RMSprop"):
        book.inspect.effective_lr(adam)


def test_decay_under_noise_adamw_is_the_closed_form():
    shrink = book.noise.decay_under_noise(lambda p: optlib.AdamW(p, lr=1e-2, weight_decay=1.0),
                                          [0.01, 10.0], steps=100, per_sigma=20)
    for value in shrink:
        assert value == pytest.approx((1 - 1e-2) ** 100, rel=0.05)


def test_decay_under_noise_without_noise_is_pure_decay_in_the_given_dtype():
    def make(p):
        return optlib.AdamW(p, lr=6e-4, weight_decay=0.1)

    for dtype in (torch.float32, torch.float64):
        expected = torch.ones(1, dtype=dtype)
        for _ in range(1000):
            expected.mul_(1 - 6e-4 * 0.1)     # AdamW's decay; its Adam step is 0/(0 + ε)
        (shrink,) = book.noise.decay_under_noise(make, [0.0], steps=1000, per_sigma=1,
                                                 dtype=dtype)
        assert shrink == expected.item()
    # float32 rounds 1 − 6e-5 at every step: 0.94174 against 0.94176 in float64
    assert f"{shrink:.5f}" == "0.94176"
    assert book.noise.decay_under_noise(make, [0.0], 1000, 1, dtype=torch.float32) != [shrink]


def test_paper_parametrization_is_weight_decay_over_lr():
    p = torch.ones(1, requires_grad=True)
    opt = book.optimizers.make_adamw_paper([p], lr=1e-3, wd=1e-2)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(10.0)
    p.grad = torch.zeros(1)
    opt.step()
    assert p.item() == pytest.approx(1 - 1e-2)


def test_noisy_labels_fraction():
    y = torch.arange(1000) % 10
    noisy = book.data.noisy_labels(y, 0.3, seed=1)
    wrong = (noisy != y).float().mean().item()
    assert 0.22 < wrong < 0.32
    assert torch.equal(noisy, book.data.noisy_labels(y, 0.3, seed=1))
    assert torch.equal(book.data.noisy_labels(y, 0.0), y)
    with pytest.raises(ValueError, match="fraction"):
        book.data.noisy_labels(y, 1.5)


def test_lr_wd_grid_shape_and_range(digits):
    err, loss = book.sweeps.lr_wd_grid(book.optimizers.make_adam_l2, [1e-3, 1e-2],
                                       [0.0, 1e-3, 1e-2], digits,
                                       lambda s: book.models.mlp((64, 8, 10), seed=s), steps=5)
    assert err.shape == loss.shape == (3, 2)
    assert ((0 <= err) & (err <= 1)).all()
    assert all(math.isfinite(v) for v in loss.flatten().tolist())
