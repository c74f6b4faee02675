"""Execute chapters in place for the record, the way CI re-runs them, and tidy them for git.

    python scripts/run_notebook.py [--timeout SECONDS] chapters/01_foundations.ipynb [more ...]

Runs each notebook top to bottom in a fresh kernel (the current environment's python3)
started under the book's numerical environment (``optlib.book.numerics``: the pinned
``record`` profile, or ``timing`` for the performance appendix), stores the outputs,
renumbers execution counts 1, 2, 3, ... and strips per-cell timing metadata so diffs stay
readable, writes the stamp of the environment and of the outputs into the notebook's
metadata (``tests/test_numerics.py`` checks it), and prints the wall time (the budget is
3 minutes per chapter). The kernel runs with ``OPTLIB_PROGRESS=0``: no progress bars in
the stored outputs (under nbval the bars are off anyway, because the kernel inherits
``PYTEST_CURRENT_TEST``).

``--timeout`` is the wall-clock limit of one cell (600 s by default), there to stop a hung
kernel. On a loaded shared machine a long cell can pass it without hanging (chapter 9's cell
of 33 training runs, about 100 s of CPU, got a tenth of a core beside benchmarks at normal
priority): raise it there; the chapter's cost is its CPU time, not its wall time.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from optlib.book import numerics

KEEP_NOTEBOOK_METADATA = {"kernelspec", "language_info", numerics.STAMP_KEY}

# The kernel inherits this process's environment: keep tqdm bars out of stored outputs.
os.environ["OPTLIB_PROGRESS"] = "0"
# ... and knows it executes for the record (figures of measured timings are written only then).
os.environ[numerics.RECORDING] = "1"


def coalesce_streams(outputs: list) -> list:
    """Merge consecutive stdout (or stderr) chunks: how the kernel happened to flush a
    print loop should not show up in diffs (nbval merges them too before comparing)."""
    merged = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None
                and prev.get("output_type") == "stream" and prev.get("name") == out.get("name")):
            prev["text"] = prev["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def tidy(nb: nbformat.NotebookNode) -> None:
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP_NOTEBOOK_METADATA}
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata.get("language_info", {}).pop("version", None)
    # Number code cells 1, 2, 3, ... in order: stable diffs, and not None, because nbval
    # treats a cell whose execution_count is None as never run and fails it if it has outputs.
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = coalesce_streams(cell.get("outputs", []))
            for out in cell.get("outputs", []):
                if "execution_count" in out:
                    out["execution_count"] = count


def run(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    profile = numerics.profile_for(path)
    start = time.perf_counter()
    # The kernel gets the profile's variables at its start, before it imports torch; its
    # first cells (optlib.book.setup) check them and stop the run if they are not in force.
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute(
        env=numerics.kernel_environment(profile))
    elapsed = time.perf_counter() - start
    tidy(nb)
    nb.metadata[numerics.STAMP_KEY] = numerics.stamp(nb, profile, importlib.metadata.version("torch"))
    nbformat.write(nb, path)
    return elapsed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=int, default=600,
                        help="wall-clock limit of one cell in seconds (default 600)")
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args()
    for name in args.notebooks:
        seconds = run(name, timeout=args.timeout)
        print(f"{name}: {seconds:.1f} s")
