"""The optimizers the tests cover, in one place: how each is built, on which shapes it is
tested, what it is compared with, and what it supports.

``ENTRIES[name]`` is an :class:`Entry`. Tests iterate over :data:`ENTRIES` (or a slice of
it: :data:`TORCH_FAMILY`, :func:`with_reference`) instead of keeping lists of their own, so
an optimizer added here is covered by every generic test at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import optlib

SHAPES = ((4, 5), (6,), (2, 3, 4))
MATRICES = ((4, 5), (6, 3), (5, 5))

#: torch.optim's implementation flags (see optlib.optimizer's docstring for what each does)
FLAGS = ("foreach", "fused", "capturable", "differentiable")


@dataclass(frozen=True)
class Entry:
    """One optimizer as the tests see it.

    ``build(params, **kwargs)`` makes optlib's optimizer (ready to step: schedule-free is put
    in train mode); ``kwargs`` are the hyperparameters generic tests use; ``shapes`` the
    parameter shapes it accepts (Muon: matrices only). ``reference(params, **kwargs)``
    makes the implementation whose numbers optlib's equal (``None``: tested against the
    paper's equations only); ``torch_name`` names torch.optim's class of the same name and
    its ``optim_db`` entry. ``complex`` and ``sparse`` say whether complex parameters and
    sparse gradients are supported; ``flags`` which of torch's implementation flags the
    constructor accepts."""

    name: str
    build: Callable
    kwargs: dict = field(default_factory=dict)
    shapes: tuple = SHAPES
    reference: Callable | None = None
    torch_name: str | None = None
    complex: bool = True
    sparse: bool = False
    flags: tuple[str, ...] = ()

    def make(self, params, **overrides):
        """The optimizer with the entry's hyperparameters (``overrides`` win)."""
        return self.build(params, **{**self.kwargs, **overrides})

    def make_reference(self, params, **overrides):
        return self.reference(params, **{**self.kwargs, **overrides})

    @property
    def cls(self) -> type:
        return getattr(optlib, self.name)


def _torch_reference(name: str) -> Callable:
    """torch.optim's class, on its single-tensor path where it has a choice."""
    cls = getattr(torch.optim, name)
    single = {"foreach": False} if "foreach" in inspect.signature(cls).parameters else {}
    return lambda params, **kwargs: cls(params, **{**single, **kwargs})


def _torch_family(name: str, shapes=SHAPES, **options) -> Entry:
    flags = tuple(f for f in FLAGS if f in inspect.signature(getattr(torch.optim, name)).parameters)
    return Entry(name, getattr(optlib, name), reference=_torch_reference(name), torch_name=name,
                 shapes=shapes, flags=flags, **options)


def _lion_reference(params, **kwargs):
    import lion_pytorch

    return lion_pytorch.Lion(params, use_triton=False, **kwargs)


def _sophia_reference(params, **kwargs):
    import sophia

    return sophia.SophiaG(params, **kwargs)


def _in_train_mode(opt):
    opt.train()
    return opt


def _schedule_free(params, **kwargs):
    return _in_train_mode(optlib.AdamWScheduleFree(params, **kwargs))


def _schedule_free_reference(params, **kwargs):
    import schedulefree

    return _in_train_mode(schedulefree.AdamWScheduleFree(params, **kwargs))


def _muon_with_adamw(params, muon_lr=0.02, lr=1e-2):
    return optlib.MuonWithAdamW([dict(params=[p for p in params if p.ndim == 2], use_muon=True),
                                 dict(params=[p for p in params if p.ndim != 2], use_muon=False)],
                                muon_kwargs=dict(lr=muon_lr), adamw_kwargs=dict(lr=lr))


ENTRIES: dict[str, Entry] = {e.name: e for e in [
    # ---- torch.optim's classes of the same name: same numbers, arguments and errors
    _torch_family("SGD", kwargs=dict(lr=0.05, momentum=0.9), sparse=True),
    _torch_family("Adagrad", kwargs=dict(lr=0.05), sparse=True),
    _torch_family("RMSprop", kwargs=dict(lr=1e-2)),
    _torch_family("Adadelta", kwargs=dict(lr=1.0)),
    _torch_family("Adam", kwargs=dict(lr=1e-2)),
    _torch_family("AdamW", kwargs=dict(lr=1e-2)),
    _torch_family("NAdam", kwargs=dict(lr=1e-2)),
    _torch_family("RAdam", kwargs=dict(lr=1e-2)),
    _torch_family("Adamax", kwargs=dict(lr=1e-2)),
    _torch_family("Adafactor", kwargs=dict(weight_decay=0.1), complex=False),
    _torch_family("Muon", kwargs=dict(lr=1e-2), shapes=MATRICES, complex=False),
    # ---- beyond torch.optim
    Entry("Lion", optlib.Lion, dict(lr=1e-2, weight_decay=0.1), reference=_lion_reference,
          complex=False),
    Entry("LAMB", optlib.LAMB, dict(lr=1e-2, weight_decay=0.1)),
    Entry("LARS", optlib.LARS, dict(lr=0.5, weight_decay=1e-3)),
    Entry("SophiaG", optlib.SophiaG, dict(lr=1e-2), reference=_sophia_reference),
    Entry("AdamWScheduleFree", _schedule_free, dict(lr=1e-2, warmup_steps=3),
          reference=_schedule_free_reference),
    Entry("Adam8bit", optlib.Adam8bit, dict(lr=1e-2, min_8bit_size=8, block_size=8),
          complex=False),
    Entry("MuonWithAdamW", _muon_with_adamw, dict(muon_lr=0.02, lr=1e-2)),
    # (pytorch-optimizer's Shampoo equals optlib's only without grafting: test_shampoo_soap.py)
    Entry("Shampoo", optlib.Shampoo, dict(lr=1e-2), complex=False),
    Entry("SOAP", optlib.SOAP, dict(lr=1e-2), complex=False),
]}

#: The names of the torch.optim family (the optimizers with a ``torch_name``).
TORCH_FAMILY = [name for name, e in ENTRIES.items() if e.torch_name]


def with_reference() -> list[str]:
    """The names of the entries that are compared with a reference implementation."""
    return [name for name, e in ENTRIES.items() if e.reference is not None]


def optim_info(name: str):
    """torch's own test metadata for ``name`` (``optim_db``: configurations, error inputs)."""
    from torch.testing._internal.common_optimizers import optim_db

    return next(info for info in optim_db if info.optim_cls.__name__ == ENTRIES[name].torch_name)
