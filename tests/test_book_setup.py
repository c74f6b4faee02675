"""optlib.book.setup's IPython hook: a trailing ';' hides a result even when the cell is
run without history, as nbval runs it."""

import pytest
import torch

from optlib import book

interactiveshell = pytest.importorskip("IPython.core.interactiveshell")


def test_semicolon_silences_results_without_history():
    shell = interactiveshell.InteractiveShell.instance()
    threads = torch.get_num_threads()
    try:
        shown = shell.run_cell("40 + 2;", store_history=False)
        assert shown.result == 42  # IPython alone: the ';' is ignored without history
        book.setup(seed=0)
        assert shell.run_cell("40 + 2;", store_history=False).result is None
        assert shell.run_cell("40 + 2", store_history=False).result == 42
        assert shell.run_cell("40 + 2;", store_history=True).result is None
        assert shell.run_cell("40 + 2", store_history=True).result == 42
        book.setup(seed=0)  # idempotent: one hook
        assert shell.events.callbacks["pre_run_cell"].count(
            shell.events.callbacks["pre_run_cell"][-1]) == 1
    finally:
        torch.set_num_threads(threads)
        interactiveshell.InteractiveShell.clear_instance()
