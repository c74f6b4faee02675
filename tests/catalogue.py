"""The optimizers the tests cover, in one place: how each is built, on which shapes it is
tested, what it is compared with, and what it supports.

``ENTRIES[name]`` is an :class:`Entry`. Tests iterate over :data:`ENTRIES` (or a slice of
it: :data:`TORCH_FAMILY`, :func:`with_reference`) instead of keeping lists of their own, so
an optimizer added here is covered by every generic test at once: the contract
(``test_contract.py``), the drop-in checks (``test_dropin.py``), ``optlib.compile``
(``test_compiled.py``), and, for torch.optim's classes, torch's own test data
(``test_vs_torch_optim_db.py``). Where the numbers come from is in ``reference``: torch.optim
(``test_vs_torch.py``), the authors' packages (``test_vs_packages.py``), or the papers'
equations written out (``test_vs_papers.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

import optlib
from optlib import _torch_version

SHAPES = ((4, 5), (6,), (2, 3, 4))
MATRICES = ((4, 5), (6, 3), (5, 5))
#: Muon's: matrices of repeated shapes with both sides at least 8 too, which it
#: orthogonalises as one stack per shape (optlib.matrix.STACK_MIN_SIDE).
MUON_MATRICES = MATRICES + ((12, 8), (8, 10), (12, 8), (8, 10), (8, 10))

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
    constructor accepts.

    ``variants`` names further settings that switch on more state or branches (amsgrad, a
    centered RMSprop, Shampoo's SGD graft): the contract runs them too. ``second_group``
    the options of a second parameter group that differ from the first (default: half the
    learning rate). ``groups`` says whether ``build`` takes parameter groups (MuonWithAdamW's
    factory makes its own two); ``eager_state`` that state is made for every parameter at
    construction (Adagrad, as torch's). ``non_finite`` is what a NaN and an infinite
    gradient entry do to its coordinate, decided per optimizer and written in its
    docstring ("nan": it becomes NaN; "bounded": it moves by at most one lr; "raises": the
    step raises); ``None`` for torch.optim's classes: what torch's does. ``compiles``
    whether ``optlib.compile`` traces the rule with torch 2.13 (``None``: either way, the
    eager numbers). ``same_errors``: the reference refuses bad hyperparameters with the same
    exception and message."""

    name: str
    build: Callable
    kwargs: dict = field(default_factory=dict)
    shapes: tuple = SHAPES
    reference: Callable | None = None
    torch_name: str | None = None
    complex: bool = True
    sparse: bool = False
    flags: tuple[str, ...] = ()
    variants: dict = field(default_factory=dict)
    second_group: dict | None = None
    groups: bool = True
    eager_state: bool = False
    non_finite: tuple[str, str] | None = None
    compiles: bool | None = False
    same_errors: bool = False

    def __str__(self):
        return self.name

    def make(self, params, **overrides):
        """The optimizer with the entry's hyperparameters (``overrides`` win)."""
        return self.build(params, **{**self.kwargs, **overrides})

    def make_reference(self, params, **overrides):
        return self.reference(params, **{**self.kwargs, **overrides})

    def make_groups(self, first, second, **overrides):
        """Two parameter groups: ``first`` with the entry's hyperparameters, ``second``
        with :attr:`second_group`'s changes on top."""
        return self.build([dict(params=first), dict(params=second, **self.other_group())],
                          **{**self.kwargs, **overrides})

    def other_group(self) -> dict:
        """The options in which a second parameter group differs (default: half the lr)."""
        return self.second_group or dict(lr=self.kwargs.get("lr", 1e-2) / 2)

    def settings(self):
        """``(id, overrides)`` for the entry's own hyperparameters and each variant."""
        return [(self.name, {})] + [(f"{self.name}-{v}", kw) for v, kw in self.variants.items()]

    @property
    def cls(self) -> type:
        return getattr(optlib, self.name)


def missing_from_torch(name: str) -> str | None:
    """Why torch.optim's class ``name`` is not in this torch (it came later), else ``None``.

    Tests that need it as their reference skip with this reason (optlib's class itself
    works on the older torch)."""
    feature = f"torch.optim.{name}"
    if feature in _torch_version.FIRST and not _torch_version.has(feature):
        first = ".".join(map(str, _torch_version.FIRST[feature]))
        return f"{feature} (the reference) needs torch >= {first}; this is torch {torch.__version__}"
    return None


def _torch_reference(name: str) -> Callable:
    """torch.optim's class, on its single-tensor path where it has a choice (a test that
    calls it on a torch without the class skips, saying which torch has it)."""
    if missing_from_torch(name):
        def skip(params, **kwargs):
            pytest.skip(missing_from_torch(name))
        return skip
    cls = getattr(torch.optim, name)
    single = {"foreach": False} if "foreach" in inspect.signature(cls).parameters else {}
    return lambda params, **kwargs: cls(params, **{**single, **kwargs})


def _torch_family(name: str, shapes=SHAPES, **options) -> Entry:
    cls = getattr(torch.optim, name, None)
    flags = tuple(f for f in FLAGS if cls is not None and f in inspect.signature(cls).parameters)
    return Entry(name, getattr(optlib, name), reference=_torch_reference(name), torch_name=name,
                 shapes=shapes, flags=flags, same_errors=True, **options)


def _lion_reference(params, **kwargs):
    import lion_pytorch

    return lion_pytorch.Lion(params, use_triton=False, **kwargs)


def _sophia_reference(params, **kwargs):
    import sophia_opt

    return sophia_opt.SophiaG(params, **kwargs)


def in_train_mode(opt):
    """A schedule-free optimizer in train mode: its gradients are taken at y."""
    opt.train()
    return opt


def _schedule_free(params, **kwargs):
    return in_train_mode(optlib.AdamWScheduleFree(params, **kwargs))


def _schedule_free_reference(params, **kwargs):
    import schedulefree

    return in_train_mode(schedulefree.AdamWScheduleFree(params, **kwargs))


def _muon_with_adamw(params, muon_lr=0.02, lr=1e-2):
    return optlib.MuonWithAdamW([dict(params=[p for p in params if p.ndim == 2], use_muon=True),
                                 dict(params=[p for p in params if p.ndim != 2], use_muon=False)],
                                muon_kwargs=dict(lr=muon_lr), adamw_kwargs=dict(lr=lr))


#: with a scalar: Shampoo's and SOAP's factors of every order, none included
KRONECKER_SHAPES = SHAPES + ((),)

ENTRIES: dict[str, Entry] = {e.name: e for e in [
    # ---- torch.optim's classes of the same name: same numbers, arguments and errors
    _torch_family("SGD", kwargs=dict(lr=0.05, momentum=0.9), sparse=True, compiles=True,
                  variants=dict(dampening=dict(dampening=0.1),
                                nesterov=dict(nesterov=True, weight_decay=0.01))),
    _torch_family("Adagrad", kwargs=dict(lr=0.05), sparse=True, eager_state=True, compiles=True,
                  variants=dict(lr_decay=dict(lr_decay=0.01))),
    _torch_family("RMSprop", kwargs=dict(lr=1e-2), compiles=True,
                  variants=dict(centered=dict(momentum=0.9, centered=True))),
    _torch_family("Adadelta", kwargs=dict(lr=1.0), compiles=True,
                  variants=dict(decay=dict(rho=0.95, weight_decay=0.01))),
    _torch_family("Adam", kwargs=dict(lr=1e-2), compiles=True,
                  variants=dict(amsgrad=dict(amsgrad=True, weight_decay=0.1))),
    _torch_family("AdamW", kwargs=dict(lr=1e-2), compiles=True),
    _torch_family("NAdam", kwargs=dict(lr=1e-2), compiles=True),
    _torch_family("RAdam", kwargs=dict(lr=1e-2), compiles=True),
    _torch_family("Adamax", kwargs=dict(lr=1e-2), compiles=True,
                  variants=dict(decay=dict(weight_decay=0.1))),
    _torch_family("Adafactor", kwargs=dict(weight_decay=0.1), complex=False, compiles=True),
    _torch_family("Muon", kwargs=dict(lr=1e-2), shapes=MUON_MATRICES, complex=False, compiles=True),
    # ---- beyond torch.optim
    Entry("Lion", optlib.Lion, dict(lr=1e-2, weight_decay=0.1), reference=_lion_reference,
          complex=False, non_finite=("bounded", "bounded"), compiles=True),
    Entry("LAMB", optlib.LAMB, dict(lr=1e-2, weight_decay=0.1), non_finite=("nan", "nan"),
          compiles=True),
    Entry("LARS", optlib.LARS, dict(lr=0.5, weight_decay=1e-3), non_finite=("nan", "nan"),
          compiles=True),
    Entry("SophiaG", optlib.SophiaG, dict(lr=1e-2), reference=_sophia_reference,
          non_finite=("nan", "bounded"), compiles=True, same_errors=True),
    Entry("AdamWScheduleFree", _schedule_free, dict(lr=1e-2, warmup_steps=3),
          reference=_schedule_free_reference, non_finite=("nan", "nan"), compiles=True),
    Entry("Adam8bit", optlib.Adam8bit, dict(lr=1e-2, min_8bit_size=8, block_size=8),
          complex=False, non_finite=("nan", "nan")),
    Entry("MuonWithAdamW", _muon_with_adamw, dict(muon_lr=0.02, lr=1e-2), groups=False,
          non_finite=("nan", "nan"), compiles=None),
    # (pytorch-optimizer's Shampoo equals optlib's only without grafting: test_vs_packages.py)
    Entry("Shampoo", optlib.Shampoo, dict(lr=1e-2), shapes=KRONECKER_SHAPES, complex=False,
          non_finite=("raises", "raises"), compiles=None,
          variants=dict(sgd_graft=dict(graft="sgd"),
                        momentum=dict(momentum=0.9, weight_decay=1e-3, precondition_frequency=3)),
          second_group=dict(lr=0.05, weight_decay=0.1, precondition_frequency=2)),
    Entry("SOAP", optlib.SOAP, dict(lr=1e-2), shapes=KRONECKER_SHAPES, complex=False,
          non_finite=("nan", "nan"), compiles=None,
          variants=dict(precondition_1d=dict(precondition_frequency=3, precondition_1d=True)),
          second_group=dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.0,
                            precondition_frequency=1)),
]}

#: The names of the torch.optim family (the optimizers with a ``torch_name``).
TORCH_FAMILY = [name for name, e in ENTRIES.items() if e.torch_name]


def with_reference() -> list[str]:
    """The names of the entries that are compared with a reference implementation."""
    return [name for name, e in ENTRIES.items() if e.reference is not None]


def optim_info(name: str):
    """torch's own test metadata for ``name`` (``optim_db``: configurations, error inputs);
    ``None`` where this torch has no such class yet (:func:`missing_from_torch`)."""
    from torch.testing._internal.common_optimizers import optim_db

    return next((info for info in optim_db if info.optim_cls.__name__ == ENTRIES[name].torch_name),
                None)
