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
