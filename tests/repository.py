"""The repository's Python files that are not part of the ``optlib`` package (the
benchmarks, the scripts, the book's Sphinx extensions), loaded as modules by the tests."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(path: str, name: str):
    """The file ``ROOT / path`` as the module ``name``, registered in ``sys.modules`` as an
    import would register it (dataclasses look their module up there).

    Args:
        path: the file, relative to the repository's root.
        name: the module's name.
    """
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
