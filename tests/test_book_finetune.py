"""optlib.book.finetune: class subsets of the digits, new heads and LoRA adapters."""

import pytest
import torch

from optlib import book
from optlib.book import finetune


def test_class_task_keeps_and_relabels_the_classes():
    task = finetune.class_task([7, 3], batch_size=16, seed=0, per_class=5)
    assert task.n_train == 10 and task.batch_size == 10
    assert sorted(task.split.y_train.tolist()) == [0] * 5 + [1] * 5
    assert set(task.split.y_test.tolist()) == {0, 1}
    full = book.data.digits()
    assert len(task.split.y_test) == int(((full.y_test == 7) | (full.y_test == 3)).sum())
    x, y = task.batch(0)
    assert x.shape == (10, 64) and y.shape == (10,)


def test_lora_starts_at_the_pretrained_network_and_trains_only_adapters():
    torch.manual_seed(0)
    model = book.models.mlp((64, 32, 32, 5), seed=0)
    x = torch.randn(8, 64)
    before = model(x).detach()
    finetune.add_lora(model, rank=2, seed=0)
    assert torch.equal(model(x).detach(), before)           # B = 0 at the start
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.A", "0.B", "2.A", "2.B", "4.weight", "4.bias"}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frozen = model[0].base.weight.detach().clone()
    for _ in range(2):          # B moves at the first step, the output at the second
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    assert torch.equal(model[0].base.weight, frozen)
    assert not torch.equal(model(x).detach(), before)


def test_lora_update_is_low_rank():
    layer = finetune.LoRALinear(torch.nn.Linear(16, 12), rank=3, alpha=6.0, seed=1)
    layer.B.data.normal_()
    delta = layer.scale * layer.B @ layer.A
    assert layer.scale == 2.0 and torch.linalg.matrix_rank(delta) == 3
    x = torch.randn(4, 16)
    assert torch.allclose(layer(x), layer.base(x) + x @ delta.T, atol=1e-6)


def test_new_head_replaces_only_the_last_layer():
    model = book.models.mlp((64, 32, 10), seed=0)
    first = model[0].weight.detach().clone()
    finetune.new_head(model, 3, seed=0)
    assert model[-1].out_features == 3 and torch.equal(model[0].weight, first)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="classes"):
        finetune.class_task([1, 1])
    with pytest.raises(ValueError, match="per_class"):
        finetune.class_task([1, 2], per_class=0)
    with pytest.raises(ValueError, match="rank"):
        finetune.LoRALinear(torch.nn.Linear(4, 4), rank=0)
    with pytest.raises(ValueError, match="two Linear"):
        finetune.add_lora(torch.nn.Sequential(torch.nn.Linear(4, 4)))
