#!/usr/bin/env bash
# Re-run every chapter under another PyTorch, in a venv of its own, and compare with the
# committed outputs (nbval): evidence that the book does not depend on torch 2.13 exactly
# (Colab ships whatever torch is current). Results: notes/torch-2.14.1.md.
#
#   bash scripts/check_other_torch.sh [TORCH_VERSION] [chapters/NN_name.ipynb ...]
#
# Default 2.14.1. The time budgets are lifted: this checks numbers, not speed.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="${1:-2.14.1}"
shift || true
VENV="${VENV:-/tmp/optlib-torch-$TORCH}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "torch==$TORCH" numpy matplotlib scikit-learn tqdm \
        ipykernel nbval pytest
    "$VENV/bin/python" -m pip install -q --no-deps -e .
fi
"$VENV/bin/python" -c "import torch; print('torch', torch.__version__)"
OPTLIB_CHAPTER_BUDGET_S=1e9 OPTLIB_BOOK_BUDGET_S=1e9 \
    "$VENV/bin/python" -m pytest -q --nbval --nbval-current-env "${@:-chapters}"
