"""The book's data: small, local, deterministic. Nothing here downloads anything.

* :func:`digits`: scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes);
* :func:`regression`: a linear model with Gaussian noise and a chosen conditioning;
* :func:`sparse_classification`: rare binary features that carry the signal (AdaGrad's home);
* :func:`text` and :class:`CharDataset`: a character corpus shipped in ``optlib/book/data``;
* :func:`batches`: an endless, deterministic minibatch iterator;
* :class:`LMTask` and :class:`DigitsTask`: a fixed batch per step (``batch(t)``), so a
  run restarted from a checkpoint sees the batches it would have seen;
* :func:`noisy_labels`, :func:`with_outliers` and :func:`broken_batch`: faults put into
  data on purpose.
"""

from __future__ import annotations

import functools
import math
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator
from importlib import resources

import numpy as np
import torch
from torch import Tensor, nn

from .train import cross_entropy, evaluating


class Split(namedtuple("Split", ["x_train", "y_train", "x_test", "y_test"])):
    """Train and test tensors: ``x_train, y_train, x_test, y_test``.

    Args:
        x_train: training inputs, one row per example.
        y_train: training targets.
        x_test: test inputs.
        y_test: test targets.
    """

    __slots__ = ()

    def batches(self, batch_size: int, *, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Endless minibatches of the training set: :func:`batches` on
        ``(x_train, y_train)``.

        Args:
            batch_size: examples per batch.
            seed: the seed of the shuffles.
        """
        return batches(self.x_train, self.y_train, batch_size, seed=seed)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def _split(x: np.ndarray, y: np.ndarray, test_size: float, seed: int,
           stratify: bool = False) -> tuple:
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_size, random_state=seed,
                            stratify=y if stratify else None)


def _standardize(x_train: np.ndarray, x_test: np.ndarray):
    """Scale every feature with the *training* mean and std (constant features keep std 1)."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, read from disk once per process."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


def digits(test_size: float = 0.25, seed: int = 0, device=None, flat: bool = True) -> Split:
    """The 8×8 digits, split (stratified) and standardized with the training statistics.

    ``x`` is float32, (N, 64) or with ``flat=False`` (N, 1, 8, 8); ``y`` is int64 in 0..9.
    """
    _check_fraction("test_size", test_size)
    x, y = _load_digits()
    x_tr, x_te, y_tr, y_te = _split(x, y, test_size, seed, stratify=True)
    x_tr, x_te = _standardize(x_tr, x_te)
    shape = (-1, 64) if flat else (-1, 1, 8, 8)

    def tx(a):
        return torch.as_tensor(a, dtype=torch.float32).reshape(shape).to(device)

    def ty(a):
        return torch.as_tensor(a, dtype=torch.int64).to(device)

    return Split(tx(x_tr), ty(y_tr), tx(x_te), ty(y_te))


def regression(n: int = 1000, d: int = 20, noise: float = 0.1, condition: float = 1.0,
               seed: int = 0, test_size: float = 0.2) -> Split:
    """y = x·w* + noise·ε with ε ~ N(0, 1) and w* ~ N(0, I/d).

    The features are Gaussian with covariance eigenvalues spaced geometrically from 1 down
    to 1/``condition``, so the least-squares Hessian has condition number ≈ ``condition``.
    ``y`` has shape (N, 1) to match a ``Linear(d, 1)`` model's output. float32.
    """
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not (isinstance(d, int) and d >= 1):
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not condition >= 1:
        raise ValueError(f"condition must be >= 1, got {condition}")
    _check_fraction("test_size", test_size)
    rng = np.random.default_rng(seed)
    exponents = np.linspace(0.0, 1.0, d) if d > 1 else np.zeros(1)
    scales = condition ** (-exponents / 2)  # std per feature; variances from 1 to 1/condition
    x = rng.standard_normal((n, d)) * scales
    w = rng.standard_normal(d) / math.sqrt(d)
    y = x @ w + noise * rng.standard_normal(n)
    x_tr, x_te, y_tr, y_te = _split(x, y[:, None], test_size, seed)
    f = functools.partial(torch.as_tensor, dtype=torch.float32)
    return Split(f(x_tr), f(y_tr), f(x_te), f(y_te))


def sparse_classification(n: int = 2000, d: int = 500, density: float = 0.02, seed: int = 0,
                          test_size: float = 0.25) -> Split:
    """Binary labels from sparse binary features whose frequencies follow Zipf's law.

    Feature j is present with probability ∝ 1/(j+1) (the mean over features is
    ``density``), and its weight is ∝ 1/sqrt(frequency): every feature contributes about
    the same variance to the logit, so the rare features carry much of the signal but are
    seldom seen, the setting where AdaGrad's per-coordinate steps help. ``y`` is int64
    in {0, 1} (balanced at the median logit); ``x`` float32 (N, d).
    """
    if not (isinstance(n, int) and n >= 4):
        raise ValueError(f"n must be an integer >= 4, got {n!r}")
    if not (isinstance(d, int) and d >= 2):
        raise ValueError(f"d must be an integer >= 2, got {d!r}")
    _check_fraction("density", density)
    _check_fraction("test_size", test_size)
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, d + 1)
    freq = np.clip(zipf / zipf.mean() * density, 0.0, 0.5)
    x = (rng.random((n, d)) < freq).astype(np.float64)
    w = rng.standard_normal(d) / np.sqrt(freq)
    logit = x @ w + 0.5 * rng.standard_normal(n)
    y = (logit > np.median(logit)).astype(np.int64)
    x_tr, x_te, y_tr, y_te = _split(x, y, test_size, seed)
    return Split(torch.as_tensor(x_tr, dtype=torch.float32), torch.as_tensor(y_tr),
                 torch.as_tensor(x_te, dtype=torch.float32), torch.as_tensor(y_te))


@functools.lru_cache(maxsize=1)
def text() -> str:
    """The book's character corpus (about 250 kB of English prose: Python standard-library
    docstrings, PSF-licensed; see ``optlib/book/data/README.md``)."""
    return resources.files("optlib.book").joinpath("data").joinpath("corpus.txt").read_text("utf-8")


class CharDataset:
    """Character-level language modelling on a string.

    The vocabulary is the sorted set of characters; the first ``split`` fraction of the
    text is for training, the rest for validation. :meth:`batch` draws random windows:
    ``x`` is ``block_size`` characters, ``y`` the same window shifted by one.
    """

    def __init__(self, text: str, block_size: int = 64, split: float = 0.9):
        if not (isinstance(block_size, int) and block_size >= 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        _check_fraction("split", split)
        self.block_size = block_size
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        data = torch.tensor(self.encode(text), dtype=torch.int64)
        cut = int(len(data) * split)
        self.data = {"train": data[:cut], "val": data[cut:]}
        for name, part in self.data.items():
            if len(part) <= block_size:
                raise ValueError(
                    f"the {name} part has {len(part)} characters, too few for "
                    f"block_size={block_size}"
                )

    def encode(self, s: str) -> list[int]:
        return [self.stoi[c] for c in s]

    def decode(self, ids) -> str:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def batch(self, batch_size: int, split: str = "train",
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Random windows (x, y), LongTensors of shape (batch_size, block_size)."""
        if split not in self.data:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        data = self.data[split]
        starts = torch.randint(len(data) - self.block_size, (batch_size,), generator=generator)
        offsets = torch.arange(self.block_size)
        x = data[starts[:, None] + offsets]
        y = data[starts[:, None] + offsets + 1]
        return x, y

    def batches(self, batch_size: int, split: str = "train", seed: int = 0) -> Iterator:
        """An endless, deterministic iterator of :meth:`batch` results."""
        g = torch.Generator().manual_seed(seed)
        while True:
            yield self.batch(batch_size, split, generator=g)


def batches(x: Tensor, y: Tensor, batch_size: int, *, seed: int = 0,
            shuffle: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless minibatches of (x, y): epoch after epoch, each reshuffled by a generator
    seeded with ``seed``. Every batch has exactly ``batch_size`` rows (the leftover rows
    of an epoch are dropped, as with ``drop_last=True``); a ``batch_size`` of ``len(x)`` or
    more gives the full batch every time."""
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y differ in length: {n} != {len(y)}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = min(batch_size, n)
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=g).to(x.device) if shuffle else None
        for start in range(0, n - batch_size + 1, batch_size):
            if order is None:
                yield x[start:start + batch_size], y[start:start + batch_size]
            else:
                idx = order[start:start + batch_size]
                yield x[idx], y[idx]


class LMTask:
    """Next-character prediction on the book's corpus with a fixed batch per step.

    ``batch(t)`` is the training batch of step ``t`` (the same for every run with the same
    ``seed``); ``val_loss(model)`` is the mean loss on ``val_batches`` fixed held-out batches,
    the same whatever ``seed`` (which only reorders the training data).
    """

    def __init__(self, block_size: int = 32, batch_size: int = 16, seed: int = 0,
                 val_batches: int = 8):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.data = CharDataset(text(), block_size=block_size)
        self.vocab_size = self.data.vocab_size
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        g = torch.Generator().manual_seed(10_000)
        self._val = [self.data.batch(batch_size, "val", generator=g) for _ in range(val_batches)]

    def batch(self, t: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(1_000_003 * (self.seed + 1) + t)
        return self.data.batch(self.batch_size, "train", generator=g)

    @staticmethod
    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(model(x), y)

    def val_loss(self, model: nn.Module) -> float:
        with evaluating(model):
            return sum(self.loss(model, x, y).item() for x, y in self._val) / len(self._val)


class DigitsTask:
    """Classification of scikit-learn's 8×8 digits with the same interface as :class:`LMTask`:
    ``batch(t)`` is a fixed random minibatch per step (the whole training set when
    ``batch_size`` is at least its size), ``val_loss`` the loss on the held-out quarter,
    ``train_loss`` the loss on the whole training set. ``seed`` orders the minibatches;
    ``split_seed`` chooses the train/test split."""

    def __init__(self, batch_size: int = 32, seed: int = 0, flat: bool = True,
                 split_seed: int = 0):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.split = digits(seed=split_seed, flat=flat)
        self.n_train = len(self.split.x_train)
        self.batch_size = min(batch_size, self.n_train)
        self.seed = seed

    def batch(self, t: int) -> tuple[Tensor, Tensor]:
        x, y = self.split.x_train, self.split.y_train
        if self.batch_size == self.n_train:
            return x, y
        g = torch.Generator().manual_seed(1_000_003 * (self.seed + 1) + t)
        idx = torch.randperm(self.n_train, generator=g)[:self.batch_size]
        return x[idx], y[idx]

    loss = staticmethod(LMTask.loss)

    @staticmethod
    def _inputs(model: nn.Module, x: Tensor) -> Tensor:
        """``x`` in the dtype of the model's parameters (float64 for a ``.double()`` copy)."""
        return x.to(next(model.parameters()).dtype)

    def val_loss(self, model: nn.Module) -> float:
        """The loss on the test set, in the model's dtype (model in eval mode).

        Args:
            model: the classifier.
        """
        with evaluating(model):
            return self.loss(model, self._inputs(model, self.split.x_test),
                             self.split.y_test).item()

    def train_loss(self, model: nn.Module) -> float:
        """The loss on the whole training set, in the model's dtype (model in eval mode).

        Args:
            model: the classifier.
        """
        with evaluating(model):
            return self.loss(model, self._inputs(model, self.split.x_train),
                             self.split.y_train).item()

    def accuracy(self, model: nn.Module) -> float:
        """The test accuracy, in the model's dtype (model in eval mode).

        Args:
            model: the classifier.
        """
        with evaluating(model):
            logits = model(self._inputs(model, self.split.x_test))
        return (logits.argmax(-1) == self.split.y_test).float().mean().item()


def noisy_labels(y: Tensor, fraction: float, num_classes: int = 10, seed: int = 0) -> Tensor:
    """A copy of ``y`` in which a random ``fraction`` of the entries is replaced by a label
    drawn uniformly from ``num_classes`` (so about ``fraction·(1 − 1/num_classes)`` end up
    wrong): training labels that a network can memorize but should not.

    Args:
        y: integer labels.
        fraction: the fraction of entries redrawn, in [0, 1].
        num_classes: the number of classes.
        seed: the seed of the draw.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(y), generator=g) < fraction
    return torch.where(flip, torch.randint(0, num_classes, (len(y),), generator=g).to(y), y)


def with_outliers(batches: Iterable, every: int, scale: float,
                  num_classes: int | None = None) -> Iterator:
    """Pass batches through, but corrupt every ``every``-th one (steps ``every``,
    ``2*every``, ... counting from 1): its inputs are multiplied by ``scale`` and, when
    ``num_classes`` is given, its labels are shifted to the next class. A stand-in for a
    broken batch (unnormalized images with misaligned labels) whose gradient is enormous.

    Args:
        batches: an iterator of ``(x, y)``.
        every: the period of the corrupted batches.
        scale: the factor of a corrupted batch's inputs.
        num_classes: shift a corrupted batch's labels by one class modulo this.
    """
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"every must be a positive integer, got {every!r}")
    for step, (x, y) in enumerate(batches, start=1):
        yield _break(x, y, scale, num_classes) if step % every == 0 else (x, y)


def _break(x: Tensor, y: Tensor, scale: float, num_classes: int | None):
    """The broken batch of :func:`with_outliers` and :func:`broken_batch`."""
    return x * scale, y if num_classes is None else (y + 1) % num_classes


def broken_batch(at: int, scale: float = 1.0, num_classes: int | None = None
                 ) -> Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``corrupt(b, x, y)``, which breaks batch number ``at`` as :func:`with_outliers`
    breaks its batches and passes every other batch through: the ``corrupt`` argument of
    :func:`optlib.book.scale.train_with_rollback`.

    Args:
        at: the index of the batch to break.
        scale: the factor of its inputs (1: inputs left as they are).
        num_classes: shift its labels by one class modulo this (``None``: labels left).
    """
    if not (isinstance(at, int) and at >= 0):
        raise ValueError(f"at must be a non-negative integer, got {at!r}")

    def corrupt(b: int, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return _break(x, y, scale, num_classes) if b == at else (x, y)

    return corrupt
