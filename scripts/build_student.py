"""Build the student edition: the whole book with every exercise's solution removed.

    make student                                  # or, inside the venv:
    python scripts/build_student.py [--strict] [--output DIR]

The same sources, configuration and table of contents as ``jupyter-book build .``, with
one override: sphinx-exercise's ``hide_solutions = True``, which drops every
``{solution}`` directive from the pages (exercises stay, numbered as in the full book).
The site goes to ``_build/student/html`` (its Sphinx cache to ``_build/student/.doctrees``),
beside the full edition in ``_build/html``. Note that the Colab buttons still open the
full notebooks, solutions included: hand students the HTML of this edition.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    print(f"student edition: open {args.output / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
