#!/usr/bin/env bash
# One command from a fresh clone to a screening result: set up .venv, then run the demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh" "train,export"
cd "$root"
exec drtrt demo "$@"
