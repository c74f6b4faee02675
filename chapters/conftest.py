"""The nbval run of the chapters: the book's numerical environment, and its time budget.

Every chapter's kernel starts under the profile it was recorded with
(``optlib.book.numerics``: the pinned ``record`` environment, or ``timing`` for the
performance appendix). The variables must be in the kernel's environment before it
imports torch, so they are set here, in the process that starts the kernel, just before
nbval starts it (when the notebook's first cell is set up).

The whole book must run in at most 25 minutes on the 2-core CPU that CI uses, and each
chapter in at most 3, under the pins. MKL's portable code path (``MKL_CBWR=COMPATIBLE``)
makes matrix products several times slower than the machine's own kernels, and bfloat16
products (Muon's Newton-Schulz iteration) run without oneDNN, so the chapters that train
the tiny transformer keep their runs short (notes/numerics.md has the measured cost).
The time of a chapter is the sum of its cells' run times (as nbval reports them, kernel
start included): wall time, which a busy runner inflates (two chapters share the two
cores, and anything else running on the machine takes its share). So a chapter over its
3 minutes is reported, and fails the run only beyond a third more (4 minutes; the book
beyond 25 minutes): the measured times on a quiet machine are in notes/numerics.md, and
a chapter that needs the tolerance there is over budget. Run on its own, a single
chapter is only checked against its own budget.
"""

from __future__ import annotations

import os
from collections import defaultdict

import pytest

from optlib.book import numerics

CHAPTER_BUDGET_S = float(os.environ.get("OPTLIB_CHAPTER_BUDGET_S", 180))
BOOK_BUDGET_S = float(os.environ.get("OPTLIB_BOOK_BUDGET_S", 1500))
# A chapter fails the run beyond this multiple of its budget (wall time on a shared
# runner).
RUNNER_TOLERANCE = 4 / 3

_seconds: dict[str, float] = defaultdict(float)
_ORIGINAL_ENVIRONMENT = dict(os.environ)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before nbval starts a notebook's kernel (the setup of its first cell), give this
    process the environment of the notebook's profile: the kernel inherits it."""
    path = item.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        profile = numerics.profile_for(path)
        if os.environ.get(numerics.MARKER) != profile:
            os.environ.clear()
            os.environ.update(
                numerics.kernel_environment(profile, _ORIGINAL_ENVIRONMENT))


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _seconds[report.nodeid.split("::")[0]] += report.duration


def _over_budget(limit: float = 1.0) -> list[str]:
    """Chapters (and the book) over ``limit`` times their budget."""
    problems = [f"{name}: {s:.0f} s > {limit * CHAPTER_BUDGET_S:.0f} s"
                for name, s in _seconds.items() if s > limit * CHAPTER_BUDGET_S]
    total = sum(_seconds.values())
    if total > BOOK_BUDGET_S:
        problems.append(f"whole book: {total:.0f} s > {BOOK_BUDGET_S:.0f} s")
    return problems


def _failing() -> list[str]:
    return _over_budget(RUNNER_TOLERANCE)


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section(
        f"chapter run times (budget: {CHAPTER_BUDGET_S / 60:g} min each, "
        f"{BOOK_BUDGET_S / 60:g} min in all)")
    for name, s in sorted(_seconds.items()):
        terminalreporter.write_line(f"{s:7.1f} s  {name}")
    terminalreporter.write_line(f"{sum(_seconds.values()):7.1f} s  total")
    for name, s in sorted(_seconds.items()):
        if CHAPTER_BUDGET_S < s <= RUNNER_TOLERANCE * CHAPTER_BUDGET_S:
            terminalreporter.write_line(
                f"over budget, within the runner tolerance: {name}: "
                f"{s:.0f} s > {CHAPTER_BUDGET_S:.0f} s", yellow=True)
    for problem in _failing():
        terminalreporter.write_line(f"OVER BUDGET: {problem}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if _seconds and _failing() and session.exitstatus == 0:
        session.exitstatus = 1
