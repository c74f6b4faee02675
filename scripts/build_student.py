"""Build the student edition: the whole book with every exercise's solution removed.

    make student                                  # or, inside the venv:
    python scripts/build_student.py [--strict] [--output DIR]

The same sources, configuration and table of contents as ``jupyter-book build .``, with
one override: sphinx-exercise's ``hide_solutions = True``, which drops every
``{solution}`` directive from the pages (exercises stay, numbered as in the full book).
The site goes to ``_build/student/html`` (its Sphinx cache to ``_build/student/.doctrees``),
beside the full edition in ``_build/html``.

The Colab buttons of the site still open the repository's notebooks, solutions included,
so the chapters are also written without their solutions, as notebooks to hand out, to
``_build/student/notebooks/`` (plain ``{solution}`` blocks are cut from the markdown;
the cells between ``{solution-start}`` and ``{solution-end}`` are dropped).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml
from jupyter_book.sphinx import build_sphinx

ROOT = Path(__file__).resolve().parents[1]


def overrides(strict: bool, toc: Path) -> dict:
    """Sphinx settings on top of ``_config.yml`` for the student edition."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    settings = {
        "external_toc_path": toc.resolve().as_posix(),
        "latex_individualpages": False,
        "hide_solutions": True,
        "html_title": f"{config['title']} (student edition)",
    }
    if strict:
        settings["nitpicky"] = True
    return settings


SOLUTION = re.compile(  # ```{solution} label ... ``` (or ::: fences), with its options and body
    r"^(?P<fence>`{3,}|:{3,})\{solution\}[^\n]*\n.*?^(?P=fence)[ \t]*$\n?",
    re.MULTILINE | re.DOTALL)
GATED_START = re.compile(r"^(`{3,}|:{3,})\{solution-start\}[^\n]*\n.*?^\1[ \t]*$",
                         re.MULTILINE | re.DOTALL)
GATED_END = re.compile(r"^(`{3,}|:{3,})\{solution-end\}[^\n]*\n(.*?^)?\1[ \t]*$\n?",
                       re.MULTILINE | re.DOTALL)


def strip_solutions(nb: nbformat.NotebookNode) -> int:
    """Remove every solution from a notebook, in place; returns how many were removed."""
    removed, inside, cells = 0, False, []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            if not inside:
                cells.append(cell)
            continue
        text = cell.source
        if inside:  # a gated solution is open: keep only what follows its end
            end = GATED_END.search(text)
            if not end:
                continue
            text, inside = text[end.end():], False
        text, n = SOLUTION.subn("", text)
        removed += n
        start = GATED_START.search(text)
        if start:
            removed += 1
            end = GATED_END.search(text, start.end())
            if end:
                text = text[:start.start()] + text[end.end():]
            else:
                text, inside = text[:start.start()], True
        if text.strip():
            if text != cell.source:
                cell.source = text.strip()
            cells.append(cell)
    nb.cells = cells
    return removed


def write_student_notebooks(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        n = strip_solutions(nb)
        nbformat.write(nb, out / path.name)
        print(f"student edition: {out / path.name} ({n} solutions removed)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "_build" / "student" / "html",
                        help="where the HTML goes (default: _build/student/html)")
    parser.add_argument("--strict", action="store_true",
                        help="warnings are errors, as `jupyter-book build -W -n --keep-going`")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml",
                        help="table of contents (default: _toc.yml)")
    args = parser.parse_args(argv)
    result = build_sphinx(
        ROOT, args.output.resolve(),
        noconfig=True, path_config=str(ROOT / "_config.yml"),
        confoverrides=overrides(args.strict, args.toc), builder="html",
        warningiserror=args.strict, keep_going=args.strict,
    )
    if result != 0:
        print(f"student edition: build failed ({result})", file=sys.stderr)
        return 1
    write_student_notebooks(args.output.resolve().parent / "notebooks")
    print(f"student edition: open {args.output / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
