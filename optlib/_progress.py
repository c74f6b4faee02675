"""Progress bars that stay out of the way (shared by ``lr_range_test`` and ``optlib.book``).

A bar is drawn with ``tqdm`` on stderr, except when that would be noise:

* ``OPTLIB_PROGRESS=0`` (or ``false``/``off``/``no``) in the environment;
* under pytest or nbval: pytest sets ``PYTEST_CURRENT_TEST`` while a test runs, and the
  kernel that nbval starts inherits it. nbval compares each cell's stderr with the
  stored one, so a bar there would fail the check;
* ``tqdm`` is not installed (it is an optional dependency of the core).

``OPTLIB_PROGRESS=1`` forces bars on; ``enabled=True/False`` overrides everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_OFF = {"0", "false", "off", "no"}
_ON = {"1", "true", "on", "yes"}


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar should be drawn now (see the module docstring for the rules).

    Args:
        enabled: True or False to decide; None for the rules.
    """
    if enabled is not None:
        return bool(enabled)
    setting = os.environ.get("OPTLIB_PROGRESS", "").strip().lower()
    if setting in _OFF:
        return False
    if setting in _ON:
        return True
    return "PYTEST_CURRENT_TEST" not in os.environ


def progress(iterable: Iterable | None = None, total: int | None = None,
             desc: str | None = None, enabled: bool | None = None, **kwargs):
    """``tqdm(iterable, total=..., desc=...)`` when bars are enabled, else ``iterable`` itself.

    With ``iterable=None`` it returns ``range(total)`` wrapped the same way.

    Args:
        iterable: what to iterate over (None: range(total)).
        total: the number of items, for the bar.
        desc: the bar's label.
        enabled: as in progress_enabled.
        kwargs: other keyword arguments of tqdm.
    """
    if iterable is None:
        if total is None:
            raise ValueError("progress needs an iterable or a total, got neither")
        iterable = range(total)
    if not progress_enabled(enabled):
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional for the core
        return iterable
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, **kwargs)
