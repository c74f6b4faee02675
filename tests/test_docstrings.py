"""Every public function and class of the core (``optlib/*.py``) documents its arguments in
an ``Args:`` section (Google style; ruff's pydocstyle rule D417, enabled for the core in
pyproject.toml, checks that the section names every argument of a function)."""

from __future__ import annotations

import ast
import pathlib

import pytest

CORE = sorted((pathlib.Path(__file__).parent.parent / "optlib").glob("*.py"))


def _arguments(fn: ast.FunctionDef | None, method: bool) -> list[str]:
    if fn is None:
        return []
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return names[1:] if method and names[:1] in (["self"], ["cls"]) else names


def _undocumented(path: pathlib.Path) -> list[str]:
    missing = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef | ast.ClassDef) or node.name.startswith("_"):
            continue
        if isinstance(node, ast.FunctionDef):
            names = _arguments(node, method=False)
        else:
            init = next((n for n in node.body
                         if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
            names = _arguments(init, method=True)
        doc = ast.get_docstring(node) or ""
        if names and "Args:" not in doc:
            missing.append(f"{node.name} (line {node.lineno}): no Args section")
        elif names and isinstance(node, ast.ClassDef):     # D417 checks functions only
            section = doc.split("Args:", 1)[1]
            missing += [f"{node.name}: argument {n} not in Args" for n in names
                        if f"\n    {n}:" not in f"\n{section}"]
    return missing


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_public_functions_and_classes_document_their_arguments(path):
    assert _undocumented(path) == []
