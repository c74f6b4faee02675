"""The book's helpers, one module per concept.

* :mod:`~optlib.book.train`: the training loop ``fit`` and its ``History``, and
  ``descend``, the loop of the toy problems (surfaces, a scalar, a matrix quadratic);
* :mod:`~optlib.book.data`: data sets and tasks; :mod:`~optlib.book.models`: the models;
* :mod:`~optlib.book.compare`: one side-by-side runner (a rule beside torch);
* :mod:`~optlib.book.inspect`: looking inside optimizers and training;
* :mod:`~optlib.book.noise`, :mod:`~optlib.book.rates`, :mod:`~optlib.book.surfaces`:
  gradient noise, momentum on quadratics, toy surfaces;
* :mod:`~optlib.book.curvature`, :mod:`~optlib.book.preconditioning`: the curvature
  where training ends, diagonal against Kronecker-factored preconditioning;
* :mod:`~optlib.book.sweeps`, :mod:`~optlib.book.optimizers`: hyperparameter sweeps and
  the table of optimizers the chapters compare;
* :mod:`~optlib.book.scale`, :mod:`~optlib.book.mup`, :mod:`~optlib.book.finetune`:
  training at scale (accumulation, the z-loss, rollback), μP, LoRA and fine-tuning;
* :mod:`~optlib.book.plots`, :mod:`~optlib.book.report`, :mod:`~optlib.book.progress`;
* :mod:`~optlib.book.checking` (exercise checkers) and :mod:`~optlib.book.grading`, both
  running a reader's code through :mod:`~optlib.book.sandbox`;
* :mod:`~optlib.book.numerics`: the pinned numerical environment of recorded runs;
* :mod:`~optlib.book.performance`: memory traffic and timing of a step;
* :mod:`~optlib.book.distributed`: DDP, ZeRO and FSDP2 runs on CPU processes;
* :mod:`~optlib.book.interactive`: figures with a slider over precomputed frames (plotly).

A chapter starts with::

    import optlib
    import optlib.book as book
    device = book.setup(seed=0)

and calls ``book.<module>.<function>``.

The core library (``optlib.*``) never imports this package; it needs the ``book`` extras
(matplotlib, scikit-learn, tqdm).
"""

from __future__ import annotations

import random

import numpy as np
import torch

from . import (  # noqa: F401
    checking,
    compare,
    curvature,
    data,
    distributed,
    finetune,
    inspect,
    interactive,
    models,
    mup,
    noise,
    numerics,
    optimizers,
    performance,
    plots,
    preconditioning,
    progress,
    rates,
    report,
    scale,
    surfaces,
    sweeps,
    train,
)


def setup(seed: int = 0, threads: int = 1) -> torch.device:
    """Seed ``random``, numpy and torch; use ``threads`` CPU threads; apply the plot style.

    One thread by default: a reduction split over threads adds in another order, and
    two chapters run side by side on a small CI runner. When the chapter executes for the
    record, checks that the book's numerical environment is in force and switches oneDNN
    off (``optlib.book.numerics.apply``); elsewhere (Colab, a reader's Jupyter) that
    does nothing and prints nothing.

    Args:
        seed: the seed of ``random``, numpy and torch.
        threads: CPU threads for torch.

    Returns:
        ``cuda`` when available, else ``cpu``.

    Raises:
        RuntimeError: executing for the record without the pinned environment.
    """
    if not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    numerics.apply()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    plots.apply_style()
    _semicolons_silence_under_nbval()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _semicolons_silence_under_nbval() -> None:
    """Make a trailing ``;`` hide a cell's result under nbval too.

    IPython decides whether ``;`` silences a result by reading the cell back from its
    history, but nbval runs cells with ``store_history=False``: the check then reads the
    wrong cell, and ``book.plots.curves(...);`` shows ``<Axes: ...>`` under nbval only, so
    the stored and the fresh outputs differ. This hook remembers the running cell when it
    is not stored in the history and decides from it; everything else is unchanged.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or getattr(shell, "_optlib_semicolon_hook", False):
        return
    hook = shell.displayhook
    original = hook.quiet
    current = {"cell": None}

    def remember(info) -> None:
        current["cell"] = None if info.store_history else info.raw_cell

    def quiet() -> bool:
        if current["cell"] is not None:
            try:
                return hook.semicolon_at_end_of_expression(shell.transform_cell(current["cell"]))
            except Exception:  # an IPython without these internals: keep its behaviour
                pass
        return original()

    shell.events.register("pre_run_cell", remember)
    hook.quiet = quiet
    shell._optlib_semicolon_hook = True


__all__ = ["setup", "checking", "compare", "curvature", "data", "distributed", "finetune",
           "inspect", "interactive", "models", "mup", "noise", "numerics", "optimizers",
           "performance", "plots", "preconditioning", "progress", "rates", "report", "scale",
           "surfaces", "sweeps", "train"]
