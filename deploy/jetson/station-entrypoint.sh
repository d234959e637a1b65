#!/usr/bin/env bash
# The station container's start: the engine for this device (rebuilt only when stale: a new image,
# another JetPack, another module), its check against the golden files, then `drtrt watch`.
# Volumes: /models (model.onnx, golden/), /cache (engine, timing cache), /sessions, /camera.
set -euo pipefail
model="${DRTRT_MODEL:-/models/model.onnx}"
engine="${DRTRT_ENGINE:-/cache/model.engine}"
drtrt build --onnx "$model" --out "$engine" --if-stale ${DRTRT_PRECISION:+"--$DRTRT_PRECISION"}
if [ -d /models/golden ]; then
  drtrt parity --golden /models/golden --candidate "$engine"
else
  echo "no /models/golden: the engine is not checked against golden files (drtrt parity --save-golden);" \
       "an engine of another precision than its ONNX is then refused as unchecked" >&2
fi
exec drtrt watch /camera --model "$engine" --out /sessions/station "$@"
