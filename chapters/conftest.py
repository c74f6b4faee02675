"""The book's time budget, enforced while nbval re-runs the chapters.

Each chapter must run in at most 3 minutes and the whole book in at most 15 on the
2-core CPU that CI uses. The time of a chapter is the sum of its cells' run times (as
nbval reports them, kernel start included); over budget fails the run, and the table
is printed either way. Run on its own, a single chapter is only checked against its
own budget.
"""

from __future__ import annotations

import os
from collections import defaultdict

CHAPTER_BUDGET_S = float(os.environ.get("OPTLIB_CHAPTER_BUDGET_S", 180))
BOOK_BUDGET_S = float(os.environ.get("OPTLIB_BOOK_BUDGET_S", 900))

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _seconds[report.nodeid.split("::")[0]] += report.duration


def _over_budget() -> list[str]:
    problems = [f"{name}: {s:.0f} s > {CHAPTER_BUDGET_S:.0f} s"
                for name, s in _seconds.items() if s > CHAPTER_BUDGET_S]
    total = sum(_seconds.values())
    if total > BOOK_BUDGET_S:
        problems.append(f"whole book: {total:.0f} s > {BOOK_BUDGET_S:.0f} s")
    return problems


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("chapter run times (budget: 3 min each, 15 min in all)")
    for name, s in sorted(_seconds.items()):
        terminalreporter.write_line(f"{s:7.1f} s  {name}")
    terminalreporter.write_line(f"{sum(_seconds.values()):7.1f} s  total")
    for problem in _over_budget():
        terminalreporter.write_line(f"OVER BUDGET: {problem}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if _seconds and _over_budget() and session.exitstatus == 0:
        session.exitstatus = 1
