#!/usr/bin/env bash
# One command from a fresh clone to a full test run: set up .venv, then run pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh" "train,export,station,integration,study,triton,test"
# The Triton tests' server: the nvidia-pytriton wheel's tritonserver and Python backend. Only its
# server is used, so it goes in without its dependencies (it pins numpy<2, which OpenCV 5 refuses).
# Its Python backend stub is built against NumPy 1: the test server reads NumPy 1 from its own
# folder (tests/triton_helpers.py), while everything else keeps this venv's NumPy.
# (found, not imported: without its dependencies the pytriton package does not import)
if [ ! -d "$root/.venv/triton-numpy1/numpy" ] || \
   ! python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('pytriton') is None)"; then
  # 0.7.x: the release (Triton 2.51) the tests were written against
  python -m pip install --quiet --no-deps --no-warn-conflicts "nvidia-pytriton>=0.7,<0.8"
  python -m pip install --quiet --no-warn-conflicts --target "$root/.venv/triton-numpy1" "numpy>=1.24,<2"
fi
cd "$root"
exec python -m pytest -q "$@"
