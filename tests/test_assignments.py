"""The assignments for otter-grader: `otter assign` builds the student notebook and the
autograder from each master in assignments/, and `otter run` (locally, no Docker) gives a
correct submission full marks and a wrong one the points of the questions it gets right.

Slow for a unit test (each `otter run` starts a kernel that imports torch; about 10 s of
CPU per submission): it is the check that the real tool grades what the course guide
says it grades."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import repository

ROOT = Path(__file__).resolve().parent.parent
OTTER = Path(sys.executable).with_name("otter")

pytestmark = pytest.mark.skipif(shutil.which("otter") is None and not OTTER.exists(),
                                reason="otter-grader is not installed")

# (master, {question: points}, edits that make a wrong submission, its expected score)
CASES = {
    "02_sgd": ({"q1": 4}, [("        if maximize:\n            g = -g\n"
                            "        p -= lr * (g + weight_decay * p)",
                            "        d = g + weight_decay * p\n"
                            "        p -= lr * (-d if maximize else d)")], 0),
    "05_adam": ({"q1": 4, "q2": 3, "q3": 3}, [
        ("p -= lr * m_hat / (v_hat.sqrt() + eps)", "p -= lr * m_hat / (v_hat + eps).sqrt()"),
        ("torch.maximum(v_max, v, out=v_max)\n        denom = (v_max / (1 - beta2**t)).sqrt()",
         "torch.maximum(v_max, v / (1 - beta2**t), out=v_max)\n        denom = v_max.sqrt()"),
    ], 3),
}


def load_builder():
    return repository.load("scripts/build_assignments.py", "build_assignments")


def wrong_copy(solution: Path, edits, dest: Path) -> Path:
    nb = nbformat.read(solution, as_version=4)
    for old, new in edits:
        cells = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(cells) == 1, old
        cells[0].source = cells[0].source.replace(old, new)
    nbformat.write(nb, dest)
    return dest


def otter_run(autograder: Path, submission: Path, out: Path) -> dict:
    out.mkdir()
    subprocess.run([str(OTTER), "run", "--no-logo", "-a", str(autograder), "-o", str(out),
                    str(submission)], check=True, cwd=out, capture_output=True)
    results = json.loads((out / "results.json").read_text())
    return {t["name"]: t.get("score") for t in results["tests"] if t["name"] != "Public Tests"}


def test_assignments_build_and_grade(tmp_path):
    built = load_builder().build(tmp_path / "build")
    assert {b.name for b in built} == set(CASES)
    for name, (points, edits, wrong_score) in CASES.items():
        student = tmp_path / "build" / name / "student" / f"{name}.ipynb"
        solution = tmp_path / "build" / name / "autograder" / f"{name}.ipynb"
        (zip_path,) = (tmp_path / "build" / name / "autograder").glob("*.zip")
        text = student.read_text()
        assert "# BEGIN SOLUTION" not in text and "weight_decay * p)" not in text
        assert "grading.grade_update" in text          # the public checks stay
        right = otter_run(zip_path, solution, tmp_path / f"{name}-right")
        assert right == {q: float(p) for q, p in points.items()}, right
        wrong = otter_run(zip_path, wrong_copy(solution, edits, tmp_path / f"{name}.ipynb"),
                          tmp_path / f"{name}-wrong")
        assert sum(wrong.values()) == wrong_score, wrong
