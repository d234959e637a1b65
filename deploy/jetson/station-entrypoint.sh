#!/usr/bin/env bash
# The station container's start: the checks that need the running container (TensorRT's libraries,
# which only `docker run --runtime nvidia` mounts; writable cache and sessions volumes, which keep the
# host's owner), then the engine for this device (rebuilt only when stale: a new image, another
# JetPack, another module), its check against the golden files, then `drtrt watch`.
# Volumes: /models (model.onnx, golden/), /cache (engine, timing cache), /sessions, /camera.
# Each failed check is one line on stderr and exit 3.
set -euo pipefail
cache="${DRTRT_CACHE_DIR:-/cache}"
sessions="${DRTRT_SESSIONS_DIR:-/sessions}"
models="${DRTRT_MODELS_DIR:-/models}"
model="${DRTRT_MODEL:-$models/model.onnx}"
engine="${DRTRT_ENGINE:-$cache/model.engine}"

fail() { echo "station-entrypoint: $*" >&2; exit 3; }

uid="$(id -u)" gid="$(id -g)"
for dir in "$cache" "$sessions"; do
  [ -d "$dir" ] || fail "$dir is missing: mount a host folder there (docker run -v HOST_FOLDER:$dir)"
  [ -w "$dir" ] || fail "$dir is not writable by the container's user $uid (a bind mount keeps the host's owner):" \
                        "on the host run: sudo chown -R $uid:$gid HOST_FOLDER (the folder mounted at $dir)"
done
python -c "import tensorrt" 2>/dev/null \
  || fail "TensorRT cannot be loaded: start the container with docker run --runtime nvidia (it mounts the host's libraries)"

drtrt build --onnx "$model" --out "$engine" --if-stale ${DRTRT_PRECISION:+"--$DRTRT_PRECISION"}
if [ -d "$models/golden" ]; then
  drtrt parity --golden "$models/golden" --candidate "$engine"
else
  echo "no $models/golden: the engine is not checked against golden files (drtrt parity --save-golden);" \
       "an engine of another precision than its ONNX is then refused as unchecked" >&2
fi
exec drtrt watch /camera --model "$engine" --out "$sessions/station" "$@"
