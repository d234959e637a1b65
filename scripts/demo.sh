#!/usr/bin/env bash
# One command from a fresh clone to a screening result: set up .venv, then run the demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# every extra the README's tour uses, so `drtrt station`, `receive`, `sync` and triton:// work after the demo
source "$root/scripts/env.sh" "train,export,station,integration,study,triton"
cd "$root"
exec drtrt demo "$@"
