"""optlib.book's tasks with a fixed batch per step (book.data.LMTask, DigitsTask), Adam's
v-noise probe (book.noise), the inspectors of Adafactor's clipping and of LAMB/LARS's
trust ratios (book.inspect), and what chapters 6, 7 and 9 ask of book.train.fit: the lr
of each step under a warmup, a Muon that splits the model by its modules, the momentum
cycled against the rate, a plateau schedule fed by the evaluations, and lm_run (also with
an optimizer of book.optimizers.TABLE given by its name)."""

import pytest
import torch

import optlib
import optlib.book as book
from optlib import schedules


@pytest.fixture(scope="module")
def task():
    return book.data.LMTask(block_size=8, batch_size=4, val_batches=2)


def small_model(task):
    return book.models.tiny_transformer(task.vocab_size, block_size=8, d_model=16,
                                        n_layers=1, n_heads=2, seed=0)


def test_batches_are_fixed_per_step(task):
    x1, y1 = task.batch(3)
    x2, y2 = task.batch(3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])


def test_fit_records_the_scheduled_lr_and_a_zero_first_step(task):
    model = small_model(task)
    h = book.train.fit(model, optlib.Adam(model.parameters(), lr=1e-2), task, 3,
                       schedule=schedules.warmup_linear(2, 3), progress=False)
    assert h.lr == pytest.approx([0.0, 5e-3, 1e-2])
    assert h.update_ratio[0] == 0.0          # warmup: step 0 does not move the weights
    assert len(h.loss) == 3 and h.val_loss == h.val_loss


def test_fit_with_muon_given_the_model(task):
    model = small_model(task)
    h = book.train.fit(model, optlib.MuonWithAdamW(model), task, 3, progress=False)
    assert len(h.loss) == 3 and not h.diverged


def test_fit_cycles_the_momentum_as_lambda_momentum_does(task):
    cycle = schedules.one_cycle(6)
    model = small_model(task)
    adam = optlib.Adam(model.parameters(), lr=1e-2)
    by_hand = schedules.LambdaMomentum(adam, cycle.momentum())
    ref = book.train.fit(model, adam, task, 6, schedule=cycle, progress=False,
                         hooks=[lambda step: by_hand.step()])
    model = small_model(task)
    adam = optlib.Adam(model.parameters(), lr=1e-2)
    beta1 = []

    def record(step):
        beta1.append(step.optimizer.param_groups[0]["betas"][0])

    h = book.train.fit(model, adam, task, 6, schedule=cycle, momentum=cycle.momentum(),
                       save_at=[3], hooks=[record], progress=False)
    assert h.loss == ref.loss
    # a hook sees the next step's β₁, written after the step
    assert beta1 == [cycle.momentum()(t) for t in range(1, 7)]
    assert beta1[0] != beta1[3]
    model = small_model(task)
    branch = book.train.fit(model, optlib.Adam(model.parameters(), lr=1e-2), task, 6,
                            schedule=cycle, momentum=cycle.momentum(),
                            start=h.checkpoints[3], progress=False)
    assert branch.loss == h.loss[3:]       # resumed at step 3 with step 3's β₁


def test_fit_steps_a_plateau_schedule_with_each_evaluation(task):
    model = small_model(task)
    plateau = schedules.ReduceOnPlateau(factor=0.5, patience=0)
    metric = iter([3.0, 2.0, 2.0, 2.0, 1.0])     # before training, after steps 2, 4, 6, 7
    h = book.train.fit(model, optlib.Adam(model.parameters(), lr=1e-2), task, 7,
                       schedule=plateau, evaluate=lambda: next(metric), eval_every=2,
                       progress=False)
    # the value before training is not a check; 2.0 after step 2 is the best, the same
    # after step 4 halves the rate, again after step 6
    assert h.lr == pytest.approx([1e-2] * 4 + [5e-3] * 2 + [2.5e-3])
    assert h.eval == [3.0, 2.0, 2.0, 2.0, 1.0] and plateau.multiplier == 0.25
    with pytest.raises(ValueError, match="needs evaluate"):
        book.train.fit(model, optlib.Adam(model.parameters()), task, 1,
                       schedule=schedules.ReduceOnPlateau())
    with pytest.raises(ValueError, match="momentum must be a step -> momentum callable"):
        book.train.fit(model, optlib.Adam(model.parameters()), task, 1, momentum=0.9)


def test_lm_run_is_fit_on_the_tiny_transformer_with_adam(task):
    cosine = schedules.cosine(3)
    model = book.models.tiny_transformer(task.vocab_size)
    ref = book.train.fit(model, optlib.Adam(model.parameters(), lr=1e-2), task, 3,
                         schedule=cosine, progress=False)
    h = book.train.lm_run(task, 1e-2, 3, schedule=cosine, progress=False)
    assert h.loss == ref.loss and h.val_loss == ref.val_loss
    assert isinstance(h.optimizer, optlib.Adam)
    sgd = book.train.lm_run(task, 1e-2, 1, optimizer=optlib.SGD, progress=False)
    assert isinstance(sgd.optimizer, optlib.SGD) and sgd.lr == [1e-2]
    plateau = schedules.ReduceOnPlateau(factor=0.5, patience=0)
    h = book.train.lm_run(task, 1e-2, 4, schedule=plateau, eval_every=1, progress=False)
    assert h.eval_steps == [0, 1, 2, 3, 4]          # the task's validation loss
    assert h.eval[-1] == h.val_loss
    assert plateau.best == float("inf")     # the run stepped a copy


def test_lm_run_takes_the_model_seed_and_qk_norm(task):
    z_loss, losses = book.scale.z_loss(1e-4), []
    for seed, qk_norm in ((3, True), (3, False)):
        model = book.models.tiny_transformer(task.vocab_size, seed=seed, qk_norm=qk_norm)
        ref = book.train.fit(model, torch.optim.Adam(model.parameters(), lr=1e-2), task, 3,
                             loss_fn=z_loss, progress=False)
        seen = []
        h = book.train.lm_run(task, 1e-2, 3, optimizer=torch.optim.Adam, seed=seed,
                              qk_norm=qk_norm, loss_fn=z_loss, hooks=[seen.append],
                              progress=False)
        assert h.loss == ref.loss and h.val_loss == ref.val_loss
        assert [s.t for s in seen] == [0, 1, 2]
        for a, b in zip(h.model.parameters(), model.parameters(), strict=True):
            assert torch.equal(a, b)
        losses.append(h.loss)
    assert losses[0] != losses[1]         # QK-norm is a different model
    assert book.train.lm_run(task, 1e-2, 1, progress=False).loss != \
        book.train.lm_run(task, 1e-2, 1, seed=3, progress=False).loss


def test_lm_run_with_a_name_is_optimizers_fit_on_the_tiny_transformer(task):
    schedule = schedules.warmup_cosine(2, 4)
    for name, warmup in (("SophiaG", None), ("AdamW schedule-free", 2)):
        model = book.models.tiny_transformer(task.vocab_size)
        ref = book.optimizers.fit(name, model, 1e-3, task, 4, schedule,
                                  warmup_steps=warmup or 0, hessian_every=2,
                                  progress=False)
        h = book.train.lm_run(task, 1e-3, 4, optimizer=name, schedule=schedule,
                              warmup_steps=warmup, hessian_every=2, progress=False)
        assert h.loss == ref.loss and h.val_loss == ref.val_loss
        assert type(h.optimizer) is type(ref.optimizer)
    assert h.lr == [1e-3] * 4       # the schedule-free entry ran without the schedule
    with pytest.raises(ValueError, match="warmup_steps is for an optimizer given by"):
        book.train.lm_run(task, 1e-3, 1, warmup_steps=2)


def test_second_moment_noise_shapes(task):
    out = book.noise.second_moment_noise(task, small_model(task), steps=3, reference=4)
    assert out["q"].shape == (3, 3)
    assert (out["q"][:, 0] <= out["q"][:, 2]).all()


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        book.data.LMTask(batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        book.data.DigitsTask(batch_size=0)


def test_digits_task_and_steps_to():
    t = book.data.DigitsTask(batch_size=10_000)
    assert t.batch_size == t.n_train
    x, y = t.batch(0)
    assert x.shape == (t.n_train, 64)
    small = book.data.DigitsTask(batch_size=8)
    assert torch.equal(small.batch(4)[0], small.batch(4)[0])
    assert book.sweeps.steps_to([3.0] * 5 + [1.0] * 30, 1.5, window=5) == 9   # [3,1,1,1,1]: step 9
    assert book.sweeps.steps_to([3.0] * 30, 1.0) is None


def test_digits_task_evaluates_a_float64_model_in_float64():
    t = book.data.DigitsTask(batch_size=8)
    model = book.models.mlp((64, 16, 10), seed=0)
    wide = book.models.mlp((64, 16, 10), seed=0).double()
    x, y = t.split.x_train.double(), t.split.y_train
    with torch.no_grad():
        assert t.train_loss(wide) == t.loss(wide, x, y).item()
    assert t.train_loss(wide) == pytest.approx(t.train_loss(model), rel=1e-6)
    assert t.val_loss(wide) == pytest.approx(t.val_loss(model), rel=1e-6)
    assert t.accuracy(wide) == t.accuracy(model)


def test_digits_task_evaluates_in_eval_mode_and_restores_the_mode():
    t = book.data.DigitsTask(batch_size=8)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Dropout(0.5))
    x, y = t.split.x_test, t.split.y_test
    for training in (True, False):
        model.train(training)
        clean = torch.nn.functional.cross_entropy(model[0](x), y).item()
        assert t.val_loss(model) == clean and model.training == training
        assert t.accuracy(model) == (model[0](x).argmax(-1) == y).float().mean().item()
        assert model.training == training
    with torch.no_grad():
        assert t.train_loss(model) == torch.nn.functional.cross_entropy(
            model[0](t.split.x_train), t.split.y_train).item()


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
    # with decay, LAMB's ratio is ‖θ‖/‖u‖ for u = m̂/(√v̂ + ε) + λθ (θ before the step;
    # a step of lr 1e-9 leaves ‖θ‖ the same to 1e-9)
    p = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    g = torch.randn(4, 3, dtype=torch.float64)
    u = g / (g.abs() + 1e-6) + 0.1 * p.detach()
    expected = p.norm().item() / u.norm().item()
    p.grad = g
    opt = optlib.LAMB([p], lr=1e-9, weight_decay=0.1)
    opt.step()
    assert book.inspect.trust_ratios(opt) == [pytest.approx(expected, rel=1e-8)]
    with pytest.raises(ValueError, match="LAMB or LARS"):
        q = torch.nn.Parameter(torch.ones(2))
        q.grad = torch.ones(2)
        o = optlib.Adam([q])
        o.step()
        book.inspect.trust_ratios(o)
