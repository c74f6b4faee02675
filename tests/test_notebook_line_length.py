"""Nothing on the book's pages scrolls sideways: code and printed output fit in 88 columns.

At the theme's width a code cell shows about 88 characters; a longer line needs a
horizontal scrollbar. Every line of a chapter's code cells and of its printed output
(streams and plain-text results) must be at most ``MAX_COLUMNS`` characters.

Wrapping code needs no re-run (the stamp hashes outputs only); shortening printed
lines means re-running the chapter (scripts/run_notebook.py). The chapters not yet done
are listed below; a listed chapter that already fits fails the test, so the lists only
shrink. The browser test (tests/test_book_site.py) checks the same on the built pages.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
MAX_COLUMNS = 88

# Chapters whose code cells still have longer lines (to wrap: no re-run needed).
CODE_NOT_YET_WRAPPED: set[str] = set()
# Chapters that still print longer lines (to shorten and re-run).
OUTPUT_NOT_YET_WRAPPED: set[str] = set()


def long_lines(path: Path) -> tuple[list[str], list[str]]:
    """(code lines, printed lines) of the notebook longer than MAX_COLUMNS, as 'cell N: line'."""
    nb = nbformat.read(path, as_version=4)
    code, printed = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        code += [f"cell {i}: {line}" for line in cell.source.splitlines()
                 if len(line) > MAX_COLUMNS]
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out.get("text", "")
            else:
                data = out.get("data", {})
                # A figure or an HTML table shows its own rendering, not the plain text.
                rich = {"image/png", "image/svg+xml", "text/html"} & set(data)
                text = "" if rich else data.get("text/plain", "")
            printed += [f"cell {i}: {line}" for line in text.splitlines()
                        if len(line) > MAX_COLUMNS]
    return code, printed


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_code_and_output_fit_the_page(path):
    code, printed = long_lines(path)
    for lines, pending, what in ((code, CODE_NOT_YET_WRAPPED, "code"),
                                 (printed, OUTPUT_NOT_YET_WRAPPED, "printed output")):
        if path.stem in pending:
            assert lines, (f"{path.stem}: its {what} fits in {MAX_COLUMNS} columns now; "
                           f"remove it from the list of chapters not yet wrapped")
        else:
            assert not lines, (f"{path.stem}: {len(lines)} {what} lines longer than "
                               f"{MAX_COLUMNS} characters:\n" + "\n".join(lines[:10]))


def test_the_lists_name_chapters():
    stems = {p.stem for p in CHAPTERS}
    assert CODE_NOT_YET_WRAPPED <= stems and OUTPUT_NOT_YET_WRAPPED <= stems
