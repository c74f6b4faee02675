"""optlib.book.mup: μP for MLPs trained with Adam."""

import math

import pytest
import torch

from optlib.book import mup


def test_mup_equals_sp_at_the_base_width():
    sp, mu = mup.mlp(32, "sp", 32, seed=0), mup.mlp(32, "mup", 32, seed=0)
    for a, b in zip(sp.parameters(), mu.parameters(), strict=True):
        assert torch.equal(a, b)
    groups = mup.param_groups(mu, 0.01, "mup", 32)
    assert {g["lr"] for g in groups} == {0.01}


def test_mup_scales_the_readout_init_and_the_hidden_rates():
    sp, mu = mup.mlp(128, "sp", 32, seed=0), mup.mlp(128, "mup", 32, seed=0)
    assert torch.allclose(mu[-1].weight, sp[-1].weight * math.sqrt(32 / 128))
    assert torch.equal(mu[0].weight, sp[0].weight) and torch.equal(mu[2].weight, sp[2].weight)
    groups = mup.param_groups(mu, 0.01, "mup", 32)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(rate) == len(list(mu.parameters()))
    assert rate[id(mu[0].weight)] == 0.01 and rate[id(mu[0].bias)] == 0.01
    assert rate[id(mu[2].weight)] == pytest.approx(0.0025)
    assert rate[id(mu[4].weight)] == pytest.approx(0.0025) and rate[id(mu[4].bias)] == 0.01
    assert mup.param_groups(sp, 0.01, "sp")[0]["lr"] == 0.01


def test_mup_first_step_moves_logits_alike_at_every_width():
    torch.manual_seed(0)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    change = {}
    for par in ("sp", "mup"):
        for w in (32, 512):
            model = mup.mlp(w, par, 32, seed=0)
            opt = torch.optim.Adam(mup.param_groups(model, 1e-2, par, 32))
            before = model(x).detach()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            change[par, w] = (model(x).detach() - before).pow(2).mean().sqrt().item()
    assert change["sp", 512] > 4 * change["sp", 32]
    assert change["mup", 512] < 2 * change["mup", 32]


def test_fit_is_train_fit_of_the_mlp_with_adam_at_its_rates():
    from optlib import book

    for par in ("sp", "mup"):
        task = book.data.DigitsTask(batch_size=16, seed=1)
        run = mup.fit(task, 64, 1e-2, 3, par, 32, seed=2, validate=False, progress=False)
        model = mup.mlp(64, par, 32, seed=2)
        adam = torch.optim.Adam(mup.param_groups(model, 1e-2, par, 32))
        ref = book.train.fit(model, adam, task, 3, validate=False, progress=False)
        assert run.loss == ref.loss
        assert isinstance(run.optimizer, torch.optim.Adam)
        assert [g["lr"] for g in run.optimizer.param_groups] == \
            [g["lr"] for g in adam.param_groups]
        for a, b in zip(run.model.parameters(), model.parameters(), strict=True):
            assert torch.equal(a, b)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="parametrization"):
        mup.mlp(32, "ntk")
    with pytest.raises(ValueError, match="width"):
        mup.mlp(0)
    with pytest.raises(ValueError, match="depth"):
        mup.mlp(32, depth=0)
    with pytest.raises(ValueError, match="lr"):
        mup.param_groups(mup.mlp(32), 0.0)
