#!/usr/bin/env bash
# `make package` (and the release workflow): the library as PyPI will get it.
#
# 1. build the sdist and the wheel into DIST (default dist/);
# 2. `twine check --strict` them (metadata, README rendering);
# 3. install the wheel into a fresh virtual environment, torch==2.13.0 first (as a reader
#    who already has torch), and import it there, outside the working tree, with a smoke
#    step, the distribution's name and version, and the book's data files.
#
# Fast by design: `build --no-isolation` uses the setuptools and wheel already installed
# (build still checks that they satisfy pyproject.toml's build-system.requires) instead
# of downloading them into a throw-away environment; the fresh venv is made
# `--without-pip` and filled by the outer pip (`pip --python`), which reuses its wheel
# cache, instead of bootstrapping a pip of its own.
#
# Usage: scripts/check_package.sh [DIST]   (PYTHON: the outer python, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=${PYTHON:-python3}
DIST=${1:-dist}
TORCH=torch==2.13.0

rm -rf "$DIST" && mkdir -p "$DIST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" -m build --no-isolation --sdist --wheel --outdir "$DIST" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
rm -rf build ./*.egg-info
"$PY" -m twine check --strict "$DIST"/*

# What each archive must hold: the licence, the package and its data, nothing else of
# the book (chapters, tests).
"$PY" - "$DIST" <<'EOF'
import sys, tarfile, zipfile
from pathlib import Path

dist = Path(sys.argv[1])
(wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
names = zipfile.ZipFile(wheel).namelist()
sdist_names = tarfile.open(sdist).getnames()
for required in ("optlib/__init__.py", "optlib/book/__init__.py"):
    assert required in names, f"{wheel.name} lacks {required}"
assert any(n.startswith("optlib/book/data/") for n in names), f"{wheel.name}: no book data"
licences = [n for n in names if n.endswith("/LICENSE")]
assert len(licences) == 1, f"{wheel.name}: licence files {licences}"
assert not [n for n in names if n.startswith(("tests/", "chapters/"))], "wheel holds the book"
assert not [n for n in sdist_names if "/tests/" in n or "/chapters/" in n], "sdist holds the book"
for required in ("LICENSE", "pyproject.toml", "README.md"):
    assert any(n.endswith("/" + required) for n in sdist_names), f"{sdist.name} lacks {required}"
print(f"{wheel.name}: {len(names)} files; {sdist.name}: {len(sdist_names)} files")
EOF

"$PY" -m venv --without-pip "$work/venv"
pip_in_venv() {  # pip's notes on the machine's extra indexes are noise here
    "$PY" -m pip --python "$work/venv/bin/python" install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}
pip_in_venv "$TORCH"
pip_in_venv "$DIST"/*.whl

cd "$work"
env -u PYTHONPATH "$work/venv/bin/python" - "$TORCH" "$root/pyproject.toml" <<'EOF'
import importlib.metadata, importlib.resources, sys, tomllib
from pathlib import Path

import torch

import optlib

here = Path(optlib.__file__).resolve()
assert "site-packages" in here.parts, f"imported {here}, not the installed wheel"
name = tomllib.loads(Path(sys.argv[2]).read_text(encoding="utf-8"))["project"]["name"]
meta = importlib.metadata.metadata(name)
assert meta["Version"] == optlib.__version__, (meta["Version"], optlib.__version__)
assert torch.__version__.split("+")[0] == sys.argv[1].split("==")[1], torch.__version__
data = importlib.resources.files("optlib") / "book" / "data"  # without importing optlib.book
assert any(data.iterdir()), "the book's data files are missing"

w = torch.nn.Parameter(torch.ones(3))
opt = optlib.AdamW([w], lr=0.1)
w.sum().backward()
opt.step()
assert torch.allclose(w.detach(), torch.full((3,), 0.9 - 0.1 * 0.01 * 1.0), atol=1e-6), w
print(f"installed {meta['Name']} {meta['Version']} (import optlib) with torch "
      f"{torch.__version__}: ok")
EOF
