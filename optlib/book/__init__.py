"""The book's helpers: toy surfaces, data, tiny models, a training loop, plots, checkers.

A chapter starts with::

    import optlib
    from optlib import book
    device = book.setup(seed=0)

The core library (``optlib.*``) never imports this package; it needs the ``book`` extras
(matplotlib, scikit-learn, tqdm).
"""

from __future__ import annotations

import random

import numpy as np
import torch

from . import checkers, data, models, plots, progress, surfaces, train  # noqa: F401


def setup(seed: int = 0, threads: int = 1) -> torch.device:
    """Seed ``random``, numpy and torch; use ``threads`` CPU threads; apply the plot style.

    One thread by default: the same numbers on any machine, and fast when two chapters
    run side by side on a small CI runner. Returns ``cuda`` when available, else ``cpu``.
    """
    if not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    plots.apply_style()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = ["setup", "checkers", "data", "models", "plots", "progress", "surfaces", "train"]
