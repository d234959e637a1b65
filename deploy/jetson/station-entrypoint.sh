#!/usr/bin/env bash
# The station container's start: the checks that need the running container (TensorRT's libraries,
# which only `docker run --runtime nvidia` mounts; writable cache and sessions volumes, which keep the
# host's owner), then the engine for this device (rebuilt only when stale: a new image, another
# JetPack, another module), its check against the golden files, then the program DRTRT_SERVICE names:
#   station (default) the health worker's screen on 0.0.0.0:${DRTRT_PORT:-8080} inside the container (publish it
#                     with docker run -p 127.0.0.1:8080:8080, or the clinic's address), guarded by
#                     DRTRT_STATION_PIN or by the people in /sessions/station/accounts.json (drtrt accounts);
#   receive           DICOM C-STORE from the camera on port ${DRTRT_PORT:-11112}, AE title ${DRTRT_AE_TITLE:-DRTRT};
#   watch             screens what the camera writes into /camera; results in the log.
# Volumes: /models (model.onnx, golden/), /cache (engine, timing cache), /sessions, /camera.
# Each failed check is one line on stderr and exit 3.
set -euo pipefail
cache="${DRTRT_CACHE_DIR:-/cache}"
sessions="${DRTRT_SESSIONS_DIR:-/sessions}"
models="${DRTRT_MODELS_DIR:-/models}"
model="${DRTRT_MODEL:-$models/model.onnx}"
engine="${DRTRT_ENGINE:-$cache/model.engine}"
service="${DRTRT_SERVICE:-station}"

fail() { echo "station-entrypoint: $*" >&2; exit 3; }

case "$service" in
  station|receive|watch) ;;
  *) fail "DRTRT_SERVICE must be station, receive or watch, found '$service'" ;;
esac
# the station listens on every address of the container: someone must answer for each login
if [ "$service" = station ] && [ -z "${DRTRT_STATION_PIN:-}" ] && [ ! -f "$sessions/station/accounts.json" ]; then
  fail "the station needs an operator PIN: docker run -e DRTRT_STATION_PIN=... (4 or more digits)," \
       "or people added with drtrt accounts add NAME --data-dir $sessions/station"
fi
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
case "$service" in
  station) exec drtrt station --model "$engine" --data-dir "$sessions/station" --camera-dir /camera \
             --host 0.0.0.0 --port "${DRTRT_PORT:-8080}" "$@" ;;
  receive) exec drtrt receive --out "$sessions/station" --model "$engine" --ae-title "${DRTRT_AE_TITLE:-DRTRT}" \
             --host 0.0.0.0 --port "${DRTRT_PORT:-11112}" "$@" ;;
  watch) exec drtrt watch /camera --model "$engine" --out "$sessions/station" "$@" ;;
esac
