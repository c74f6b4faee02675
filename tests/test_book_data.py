"""optlib.book.data: local, deterministic, correctly shaped and standardized."""

import pytest
import torch

from optlib.book import data as D


def test_digits_split_standardized_and_cached():
    s = D.digits()
    assert s.x_train.shape == (1347, 64) and s.x_test.shape == (450, 64)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert set(s.y_train.tolist()) == set(range(10))
    assert torch.allclose(s.x_train.mean(0), torch.zeros(64), atol=1e-5)
    std = s.x_train.std(0, unbiased=False)
    assert torch.all(((std - 1).abs() < 1e-4) | (std == 0))  # constant border pixels stay 0
    again = D.digits()
    assert all(torch.equal(a, b) for a, b in zip(s, again, strict=False))
    assert D._load_digits.cache_info().hits >= 1
    img = D.digits(flat=False)
    assert img.x_train.shape == (1347, 1, 8, 8) and torch.equal(img.x_train.reshape(-1, 64), s.x_train)
    other = D.digits(seed=1)
    assert not torch.equal(other.y_train, s.y_train)


def test_regression_conditioning():
    s = D.regression(n=4000, d=10, condition=100.0, noise=0.0)
    assert s.x_train.shape == (3200, 10) and s.y_train.shape == (3200, 1)
    cov = (s.x_train.T @ s.x_train / len(s.x_train)).double()
    eig = torch.linalg.eigvalsh(cov)
    assert 60 < (eig[-1] / eig[0]).item() < 160
    w = torch.linalg.lstsq(s.x_train.double(), s.y_train.double()).solution
    assert torch.allclose(s.x_test.double() @ w, s.y_test.double(), atol=1e-4)  # noise 0: exact


def test_sparse_classification():
    s = D.sparse_classification()
    x = torch.cat([s.x_train, s.x_test])
    assert x.shape == (2000, 500) and set(x.unique().tolist()) == {0.0, 1.0}
    assert abs(x.mean().item() - 0.02) < 0.005
    freq = x.mean(0)
    assert freq[:10].mean() > 10 * freq[-100:].mean()  # Zipf: a few common, many rare
    y = torch.cat([s.y_train, s.y_test])
    assert abs(y.float().mean().item() - 0.5) < 0.01


def test_text_and_char_dataset():
    t = D.text()
    assert 100_000 < len(t) < 300_000 and t.isascii()
    ds = D.CharDataset(t, block_size=16)
    assert ds.decode(ds.encode("Return the value.")) == "Return the value."
    g = torch.Generator().manual_seed(0)
    x, y = ds.batch(4, generator=g)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < ds.vocab_size
    a = next(ds.batches(2, "val", seed=5))
    b = next(ds.batches(2, "val", seed=5))
    assert torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match="split must be 'train' or 'val', got 'test'"):
        ds.batch(2, "test")


def test_batches_epochs_and_determinism():
    x = torch.arange(10).float()[:, None]
    y = torch.arange(10)
    it = D.batches(x, y, 3, seed=1)
    epoch = [next(it) for _ in range(3)]
    seen = torch.cat([b[1] for b in epoch])
    assert all(len(b[1]) == 3 for b in epoch) and len(set(seen.tolist())) == 9
    assert all(torch.equal(b[0][:, 0].long(), b[1]) for b in epoch)  # rows stay paired
    again = D.batches(x, y, 3, seed=1)
    assert all(torch.equal(next(again)[1], b[1]) for b in epoch)
    full = D.batches(x, y, 100, shuffle=False)
    assert torch.equal(next(full)[1], y)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        next(D.batches(x, y, 0))


def test_split_batches_are_the_training_sets_batches():
    s = D.digits()
    ours, theirs = s.batches(64, seed=2), D.batches(s.x_train, s.y_train, 64, seed=2)
    for _ in range(25):             # past the first epoch of 21 full batches
        (x, y), (x2, y2) = next(ours), next(theirs)
        assert torch.equal(x, x2) and torch.equal(y, y2) and len(y) == 64
    x_train, *_ = s                 # still the tuple it was
    assert x_train is s.x_train and isinstance(s, tuple)
