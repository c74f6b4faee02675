"""Every chapter follows the book's notebook conventions (CONTRIBUTING.md).

Static checks on the committed ``.ipynb`` files (nothing is executed; nbval re-runs them):

- the first code cell is the Colab install cell, installing the distribution named in
  ``pyproject.toml`` from ``repository.url`` of ``_config.yml`` (the same URL the launch
  buttons use), tagged ``remove-cell`` so that the web page does not show it;
- at least three ``{exercise}`` directives, each with a labelled ``{solution}``;
- execution counts 1, 2, 3, ... in cell order (``scripts/run_notebook.py`` writes them; nbval
  fails a cell whose count is None but has outputs: "Unrun reference cell has outputs"),
  kernelspec ``python3``;
- no output on stderr (nbval compares it, and a warning in the book is a bug);
- ``nbval-ignore-output`` only on cells whose output cannot be stable: timings, hardware;
- nothing is downloaded at run time (Colab installs optlib and that is all);
- the book imported one way, ``import optlib.book as book`` (``book.<module>.<function>``);
- every chapter named in ``_toc.yml`` exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPOSITORY = CONFIG["repository"]["url"]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

# The distribution is optlib-torch (PyPI's "optlib" is an unrelated package); pip refuses
# a direct reference whose name differs from the project's, so the two change together.
DISTRIBUTION = re.search(r'^name = "(.+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
                         re.MULTILINE)[1]
COLAB_CELL = f'''\
# In Colab, install optlib (the book's library) from the book's repository.
import sys

if "google.colab" in sys.modules:
    REPOSITORY = "{REPOSITORY}"
    %pip install -q "{DISTRIBUTION}[book] @ git+{{REPOSITORY}}"'''

# A directive in backtick or colon fences: ```{exercise} Title  /  :::{solution} ex-label
DIRECTIVE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{(?P<kind>exercise|solution)(?:-start)?\}[ \t]*(?P<arg>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
LABEL = re.compile(r"^:label:[ \t]*(\S+)", re.MULTILINE)
# What may make a cell's output unstable from one machine or run to the next.
UNSTABLE = re.compile(
    r"time|timeit|perf_counter|elapsed|second|speed|throughput|bandwidth|benchmark|"
    r"cuda|gpu|cpu|device|hardware|platform|processor|version|memory|bytes|"
    r"compile|fused|foreach",
    re.IGNORECASE,
)


# Code that fetches something from the network.
DOWNLOAD = re.compile(
    r"download\s*=\s*True|urlretrieve|urlopen|requests\.get|\bwget\b|\bcurl\b|"
    r"hf_hub_download|from_pretrained\(|load_dataset\(|fetch_openml|torch\.hub"
)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _exercises_and_solutions(nb) -> tuple[list[str | None], list[str]]:
    exercises, solutions = [], []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for match in DIRECTIVE.finditer(cell.source):
            if match["kind"] == "exercise":
                label = LABEL.search(match["body"])
                exercises.append(label.group(1) if label else None)
            else:
                solutions.append(match["arg"].strip())
    return exercises, solutions


ids = [p.stem for p in CHAPTERS]


def test_there_are_chapters():
    assert CHAPTERS, "no chapters/*.ipynb"


def test_every_chapter_in_the_toc_exists():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    for name in re.findall(r"file:\s*(chapters/\S+)", toc):
        assert (ROOT / f"{Path(name).with_suffix('')}.ipynb").is_file(), f"_toc.yml names {name}"


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_first_code_cell_installs_optlib_in_colab_only(path):
    cells = _code_cells(_read(path))
    assert cells, f"{path.name} has no code"
    first = cells[0].source.strip()
    assert first == COLAB_CELL, (
        f"{path.name}: the first code cell must be exactly the Colab install cell, with the "
        f"URL of repository.url in _config.yml ({REPOSITORY}):\n{COLAB_CELL}\n--- found:\n{first}")
    assert not cells[0].get("outputs"), f"{path.name}: the install cell prints nothing outside Colab"
    assert "remove-cell" in cells[0].metadata.get("tags", []), (
        f"{path.name}: tag the Colab install cell remove-cell (it only distracts on the web page)")


ASSIGNMENTS = sorted((ROOT / "assignments").glob("*.ipynb"))


@pytest.mark.parametrize("path", ASSIGNMENTS, ids=[p.stem for p in ASSIGNMENTS])
def test_assignment_installs_the_distribution_by_its_name(path):
    # otter's requirements and the Colab cell: pip refuses "optlib[book] @ git+..." since
    # the project's metadata names it optlib-torch (a wrong name once sat in both)
    nb = _read(path)
    wanted = f"{DISTRIBUTION}[book] @ git+"
    config, first = nb.cells[0].source, _code_cells(nb)[0].source
    assert f"  - {wanted}{REPOSITORY}" in config.splitlines(), f"{path.name}: {config}"
    assert "google.colab" in first and f"{wanted}{{REPOSITORY}}" in first, first
    assert f'REPOSITORY = "{REPOSITORY}"' in first, first


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_at_least_three_exercises_each_with_a_solution(path):
    exercises, solutions = _exercises_and_solutions(_read(path))
    assert len(exercises) >= 3, f"{path.name}: {len(exercises)} exercises, at least 3 expected"
    unlabelled = exercises.count(None)
    assert not unlabelled, f"{path.name}: {unlabelled} exercise(s) without :label: (a solution needs one)"
    missing = [e for e in exercises if e not in solutions]
    assert not missing, f"{path.name}: exercises without a solution: {missing}"
    orphans = [s for s in solutions if s not in exercises]
    assert not orphans, f"{path.name}: solutions for no exercise in this chapter: {orphans}"
    assert len(set(exercises)) == len(exercises), f"{path.name}: duplicate exercise labels"


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_tidy_for_git_and_for_nbval(path):
    nb = _read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: kernelspec must be python3")
    code = [c for c in nb.cells if c.cell_type == "code"]
    unrun = [c.get("execution_count") is None and not c.get("outputs") for c in code]
    stray = [i for i, c in enumerate(code, start=1) if not unrun[i - 1] and (
        c.get("execution_count") != i
        or any(o.get("execution_count") not in (None, i) for o in c.get("outputs", [])))]
    assert not stray, (f"{path.name}: code cells {stray} are not numbered 1, 2, 3, ... in order; "
                       "run scripts/run_notebook.py to execute and tidy")
    stderr = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
        o.get("output_type") == "stream" and o.get("name") == "stderr" for o in c.get("outputs", []))]
    assert not stderr, f"{path.name}: output on stderr in cells {stderr} (warnings? progress bars?)"
    errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
        o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert not errors, f"{path.name}: cells {errors} raised"


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_ignore_output_only_for_timings_and_hardware(path):
    nb = _read(path)
    suspicious = [
        i for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and "nbval-ignore-output" in c.metadata.get("tags", [])
        and not UNSTABLE.search(c.source)
    ]
    assert not suspicious, (
        f"{path.name}: cells {suspicious} are tagged nbval-ignore-output but do not look like "
        "timings or hardware names; make their output deterministic instead")


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_nothing_is_downloaded(path):
    cells = _code_cells(_read(path))[1:]  # the first installs optlib in Colab, nothing else
    fetching = [c.source.splitlines()[0] for c in cells if DOWNLOAD.search(c.source)]
    assert not fetching, f"{path.name}: cells that download: {fetching}"


# Any other way to reach the book's modules: ``from optlib.book import x``, ``from optlib
# import book``, ``import optlib.book.x``, or the book under another name.
OTHER_BOOK_IMPORT = re.compile(
    r"^\s*(?:from\s+optlib\.book\b|from\s+optlib\s+import\s+.*\bbook\b|"
    r"import\s+optlib\.book\.|import\s+optlib\.book\s+as\s+(?!book\s*$))",
    re.MULTILINE,
)


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_the_book_is_imported_one_way(path):
    """CONTRIBUTING: every chapter imports the book as ``import optlib.book as book`` and
    calls ``book.<module>.<function>``, so a reader finds every helper the same way."""
    cells = _code_cells(_read(path))
    other = [line.strip() for c in cells for line in c.source.splitlines()
             if OTHER_BOOK_IMPORT.match(line)]
    assert not other, f"{path.name}: import the book as `import optlib.book as book`: {other}"
    uses = any(re.search(r"(?<![\w.])book\.", c.source) for c in cells)
    imports = any(re.search(r"^import optlib\.book as book$", c.source, re.MULTILINE)
                  for c in cells)
    assert imports or not uses, f"{path.name}: uses book.* without `import optlib.book as book`"
