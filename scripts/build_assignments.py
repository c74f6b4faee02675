"""Build the assignments for otter-grader: for each master notebook in assignments/
(one per chapter, its coding exercises with solutions and tests), `otter assign` writes
the student notebook and the autograder.

    python scripts/build_assignments.py [OUT_DIR] [NAME ...]

OUT_DIR defaults to _build/assignments; NAME (for example 05_adam) to every master.
For each NAME it writes OUT_DIR/NAME/student/NAME.ipynb (hand it out) and
OUT_DIR/NAME/autograder/ (the autograder zip for `otter run` or Gradescope, and the
solution notebook). See course_guide.md, "Assignments with otter-grader".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(out_dir: Path, names: list[str] | None = None) -> list[Path]:
    masters = sorted((ROOT / "assignments").glob("*.ipynb"))
    if names:
        masters = [m for m in masters if m.stem in names]
    built = []
    otter = Path(sys.executable).with_name("otter")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for master in masters:
        dest = out_dir / master.stem
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run([str(otter) if otter.exists() else "otter", "assign", "--no-pdfs",
                        str(master), str(dest)], check=True, env=env, cwd=ROOT)
        built.append(dest)
        print(f"{master.relative_to(ROOT)} -> {dest}/student, {dest}/autograder")
    return built


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_build" / "assignments"
    build(out.resolve(), sys.argv[2:] or None)
