#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv with the given extras.
# Usage: source scripts/env.sh EXTRAS   (e.g. "train,export,test")
# DRTRT_SYSTEM_SITE=1: the new venv sees the system's packages (a Jetson's apt-installed TensorRT).
# DRTRT_PINS="cuda-python==12.6.*": requirements installed with the extras (python -m drtrt.runtime.jetpack).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-train,export}"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv ${DRTRT_SYSTEM_SITE:+--system-site-packages} "$root/.venv"
fi
read -r -a pins <<<"${DRTRT_PINS:-}"
stamp="$root/.venv/.drtrt-installed-$extras$(printf '%s' "${DRTRT_PINS:-}" | tr -c 'A-Za-z0-9.' '_')"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
  "$root/.venv/bin/python" -m pip install --quiet -e "${root}[$extras]" "${pins[@]}"
  touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
