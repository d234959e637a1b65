#!/usr/bin/env bash
# One command from a fresh clone to a full test run: set up .venv, then run pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh" "train,export,station,integration,test"
cd "$root"
exec python -m pytest -q "$@"
