"""The optimizers the chapters compare, built by name: one table for chapters 6 and 9.

``build(name, model, lr)`` returns the optimizer for a model; every entry takes its
library defaults except weight decay, which is 0 (to compare the rules alone), and the
customary momentum 0.9 for SGD and LARS. Muon trains the hidden matrices and hands the rest
(embeddings, head, biases, norms) to AdamW at lr 1e-2. Also the three ways of writing
Adam's weight decay of chapter 5.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import optlib

__all__ = ["TABLE", "build", "factory", "takes_model", "fit", "make_adam_l2",
           "make_adamw_torch", "make_adamw_paper"]

#: name -> ``(target, lr, warmup_steps) -> optimizer``; ``target`` is the parameters, or the
#: model for the entries of :func:`takes_model`.
TABLE: dict[str, Callable] = {
    "SGD + momentum": lambda p, lr, w: optlib.SGD(p, lr=lr, momentum=0.9),
    "AdamW": lambda p, lr, w: optlib.AdamW(p, lr=lr, weight_decay=0.0),
    "Adafactor": lambda p, lr, w: optlib.Adafactor(p, lr=lr),
    "Adam8bit": lambda p, lr, w: optlib.Adam8bit(p, lr=lr),
    "LAMB": lambda p, lr, w: optlib.LAMB(p, lr=lr),
    "Lion": lambda p, lr, w: optlib.Lion(p, lr=lr),
    "SophiaG": lambda p, lr, w: optlib.SophiaG(p, lr=lr, weight_decay=0.0),
    "Muon (+ AdamW)": lambda model, lr, w: optlib.MuonWithAdamW(
        model, muon_kwargs=dict(lr=lr, weight_decay=0.0),
        adamw_kwargs=dict(lr=1e-2, weight_decay=0.0)),
    "AdamW schedule-free": lambda p, lr, w: optlib.AdamWScheduleFree(p, lr=lr, warmup_steps=w),
    "Shampoo": lambda p, lr, w: optlib.Shampoo(p, lr=lr, precondition_frequency=10),
    "SOAP": lambda p, lr, w: optlib.SOAP(p, lr=lr, weight_decay=0.0),
    "LARS": lambda p, lr, w: optlib.LARS(p, lr=lr, momentum=0.9),
}


def takes_model(name: str) -> bool:
    """Whether the entry is built from the model (it splits it by modules) rather than
    from its parameters.

    Args:
        name: a key of :data:`TABLE`.
    """
    return name.startswith("Muon")


def factory(name: str, lr: float, warmup_steps: int = 0) -> Callable:
    """``target -> optimizer`` for the entry ``name`` at ``lr``.

    Args:
        name: a key of :data:`TABLE`.
        lr: the learning rate.
        warmup_steps: the schedule-free optimizer's warmup.
    """
    if name not in TABLE:
        raise ValueError(f"name must be one of {sorted(TABLE)}, got {name!r}")
    return lambda target: TABLE[name](target, lr, warmup_steps)


def build(name: str, model: nn.Module, lr: float, warmup_steps: int = 0
          ) -> torch.optim.Optimizer:
    """The optimizer ``name`` at ``lr`` for ``model``.

    Args:
        name: a key of :data:`TABLE`.
        model: the model to train.
        lr: the learning rate.
        warmup_steps: the schedule-free optimizer's warmup.
    """
    target = model if takes_model(name) else model.parameters()
    return factory(name, lr, warmup_steps)(target)


def fit(name: str, model: nn.Module, lr: float, data, steps: int, schedule=None, *,
        warmup_steps: int = 0, hessian_every: int = 10, **kwargs):
    """Train ``model`` with the entry ``name`` at ``lr`` through :func:`optlib.book.train.fit`.

    What the entries need is added here, so that a comparison treats them alike: a
    schedule-free optimizer gets no schedule (it has its own warmup and no decay), and
    SophiaG gets its Hessian refreshed every ``hessian_every`` steps
    (:class:`~optlib.book.train.SophiaHessian`).

    Args:
        name: a key of :data:`TABLE`.
        model: the model to train.
        lr: the learning rate.
        data: a task or an iterator of batches (see :func:`optlib.book.train.fit`).
        steps: the number of steps.
        schedule: a ``t -> multiplier`` callable.
        warmup_steps: the schedule-free optimizer's warmup.
        hessian_every: steps between two Hessian refreshes of SophiaG.
        **kwargs: more arguments of :func:`optlib.book.train.fit`.
    """
    from . import train

    optimizer = build(name, model, lr, warmup_steps)
    if "schedule-free" in name:
        schedule = None
    hooks = list(kwargs.pop("hooks", ()))
    if name == "SophiaG":
        hooks.insert(0, train.SophiaHessian(every=hessian_every))
    return train.fit(model, optimizer, data, steps, schedule=schedule, hooks=hooks, **kwargs)


def make_adam_l2(params, lr: float, wd: float):
    """``Adam`` with L2 regularization: ``wd`` is added as ``wd·θ`` to the gradient."""
    return optlib.Adam(params, lr=lr, weight_decay=wd)


def make_adamw_torch(params, lr: float, wd: float):
    """``AdamW`` with PyTorch's ``weight_decay``: θ shrinks by ``lr·wd`` per step."""
    return optlib.AdamW(params, lr=lr, weight_decay=wd)


def make_adamw_paper(params, lr: float, wd: float):
    """``AdamW`` in the paper's parametrization: θ shrinks by ``wd`` per step (times the
    schedule multiplier), whatever the learning rate; PyTorch's ``weight_decay = wd / lr``."""
    return optlib.AdamW(params, lr=lr, weight_decay=wd / lr)
