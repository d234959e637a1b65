#!/usr/bin/env bash
# Install a drtrt screening station on a bare Jetson (JetPack 6.x or 7): one script, run as root.
#
#   sudo deploy/jetson/install.sh --model model.onnx --golden golden/ [--source CHECKOUT|WHEEL|FOLDER]
#        [--precision fp16|int8] [--camera /srv/fundus-camera] [--dry-run]
#
# Steps: detect the L4T release (/etc/nv_tegra_release) → check Python and the system TensorRT →
# a service user in the video/render groups → a virtual environment that sees the system TensorRT →
# drtrt without torch (+ the cuda-python release of this JetPack) → model and golden files on
# persistent storage → the engine built on this device → parity against the golden files →
# a systemd unit for `drtrt watch` (restart on failure, but 5 failed starts in a row stop it;
# started once the camera and data folders are mounted; journald; `drtrt build --if-stale` before
# every start, so a JetPack update rebuilds the engine). Idempotent: every step checks first and
# says "ok" (nothing to do) or "changed". --dry-run prints every step and changes nothing.
# JetPack 5.1 is refused with the options it has. Not yet run on a Jetson: see deploy/README.md.
set -euo pipefail

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  echo "Options: --model ONNX --golden DIR [--source PATH] [--precision fp16|int8] [--camera DIR]"
  echo "         [--user NAME] [--prefix DIR] [--data DIR] [--release-file FILE] [--root DIR] [--dry-run]"
}

die() { echo "install.sh: $*" >&2; exit 2; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_path="$(cd "$script_dir/../.." && pwd)"      # default: this checkout
model="" golden="" precision="" camera="/srv/fundus-camera" user="drtrt"
prefix="/opt/drtrt" data="/var/lib/drtrt" release_file="/etc/nv_tegra_release" root="" dry_run=0

while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="${2:?}"; shift 2 ;;
    --golden) golden="${2:?}"; shift 2 ;;
    --source) source_path="${2:?}"; shift 2 ;;
    --precision) precision="${2:?}"; shift 2 ;;
    --camera) camera="${2:?}"; shift 2 ;;
    --user) user="${2:?}"; shift 2 ;;
    --prefix) prefix="${2:?}"; shift 2 ;;
    --data) data="${2:?}"; shift 2 ;;
    --release-file) release_file="${2:?}"; shift 2 ;;
    --root) root="${2:?}"; shift 2 ;;             # install under this folder (tests); system paths stay real
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
[ -n "$model" ] || die "--model ONNX is required (the model to screen with)"
[ -n "$golden" ] || die "--golden DIR is required (from \`drtrt parity --save-golden\`: the engine is checked against it)"
case "$precision" in ""|fp16|int8) ;; *) die "--precision must be fp16 or int8, found $precision" ;; esac
for path in "$camera" "$data" "$prefix"; do         # the unit lists them space-separated (RequiresMountsFor)
  case "$path" in /*) ;; *) die "--camera, --data and --prefix must be absolute paths, found $path" ;; esac
  case "$path" in
    *[[:space:]]*) die "--camera, --data and --prefix cannot hold spaces (systemd splits on them): $path" ;;
  esac
done
[ "$dry_run" = 1 ] || [ -f "$model" ] || die "model not found: $model"
[ "$dry_run" = 1 ] || [ -d "$golden" ] || die "golden folder not found: $golden"

# ---------------------------------------------------------------- which JetPack

[ -f "$release_file" ] || die "$release_file not found: this is not a Jetson (or not L4T); see deploy/README.md"
release_line="$(head -n 1 "$release_file")"
l4t_major="$(sed -n 's/^# R\([0-9]*\) (release).*/\1/p' <<<"$release_line")"
l4t_revision="$(sed -n 's/.*REVISION: \([0-9.]*\).*/\1/p' <<<"$release_line")"
if [ -z "$l4t_major" ] || [ -z "$l4t_revision" ]; then
  die "cannot read the L4T release from $release_file: $release_line"
fi
l4t="$l4t_major.$l4t_revision"
case "$l4t" in
  35.*)
    cat >&2 <<EOF
install.sh: L4T $l4t is JetPack 5.1, which this installer does not support: its TensorRT 8.5 Python
bindings (python3-libnvinfer) are built for Python 3.8 only and drtrt needs Python 3.10 or newer.
Your options:
  1. upgrade the Jetson to JetPack 6.x (L4T 36.x), then run this script again;
  2. screen on the CPU: a Python 3.10 environment, \`pip install drtrt\`, and the ONNX model
     (\`drtrt screen --model model.onnx\`, INT8 from \`drtrt calibrate\`) — slower, no TensorRT;
  3. build TensorRT 8.5's Python bindings for Python 3.10 from NVIDIA's TensorRT OSS sources
     (python/ in the TensorRT repository) — untested with drtrt.
EOF
    exit 2 ;;
  36.*) python_version="3.10" ;;            # JetPack 6.x, any minor: the pins come from drtrt.runtime.jetpack
  38.*) python_version="3.12" ;;            # JetPack 7.x
  *) die "L4T $l4t is not a JetPack this installer knows (6: L4T 36.x, 7: L4T 38.x); see deploy/README.md" ;;
esac

# the JetPack's name and the cuda-python pin come from drtrt itself (standard-library Python, run from the
# source before anything is installed): one function decides the pins for install.sh, hardware-check.sh and
# the "TensorRT is not installed" hint
pins_path="$source_path"
if [ -d "$source_path/wheelhouse" ]; then
  pins_path="$(find "$source_path/wheelhouse" -maxdepth 1 -name 'drtrt-*.whl' | head -n 1)"
elif [ -f "$source_path" ]; then pins_path="$source_path"
fi
pins() {                                  # python -m drtrt.runtime.jetpack ARGS, from the source or its wheel
  PYTHONPATH="$pins_path" python3 -m drtrt.runtime.jetpack --release-file "$release_file" "$@" \
    || die "cannot read the pins for L4T $l4t from $pins_path (drtrt.runtime.jetpack)"
}
jetpack="$(pins --describe | cut -d' ' -f2-)"
cuda_python="$(pins)"
[ -n "$cuda_python" ] || die "drtrt.runtime.jetpack gave no cuda-python pin for L4T $l4t"

venv="$root$prefix/venv"
models="$root$data/models"
engine="$models/model.engine"
sessions="$root$data/sessions"
cache="$root$data/cache"
unit_file="$root/etc/systemd/system/drtrt-watch.service"
changes=0

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
run() {                                   # a command that changes the system (printed in a dry run)
  if [ "$dry_run" = 1 ]; then printf '+ %s\n' "$*"; else "$@"; fi
}
changed() { changes=$((changes + 1)); say "changed: $*"; }
ok() { say "ok: $*"; }

say "L4T $l4t: JetPack $jetpack (Python $python_version, $cuda_python; TensorRT: the system's, checked below)"

# ---------------------------------------------------------------- Python and TensorRT

step "python$python_version and the system TensorRT"
python="python$python_version"
if [ "$dry_run" = 1 ]; then
  say "+ $python -c 'import tensorrt'   # from apt: python3-libnvinfer (not from pip)"
  say "+ $python -c 'import ensurepip, venv'   # from apt: python3-venv"
elif ! command -v "$python" >/dev/null; then
  die "$python not found; JetPack $jetpack ships it (apt install $python $python-venv)"
elif ! "$python" -c "import tensorrt" 2>/dev/null; then
  die "TensorRT's Python bindings are missing: apt install python3-libnvinfer (JetPack $jetpack)"
elif ! "$python" -c "import ensurepip, venv" 2>/dev/null; then   # python -m venv fails without it
  die "$python cannot create a virtual environment: apt install python3-venv ($python-venv) (JetPack $jetpack)"
else
  ok "$("$python" -c 'import sys, tensorrt; print("Python", sys.version.split()[0], "TensorRT", tensorrt.__version__)')"
fi

# ---------------------------------------------------------------- the service user

step "service user $user (groups video, render)"
if id -u "$user" >/dev/null 2>&1; then
  missing=""
  for group in video render; do
    id -nG "$user" | tr ' ' '\n' | grep -qx "$group" || missing="$missing,$group"
  done
  if [ -n "$missing" ]; then run usermod -a -G "${missing#,}" "$user"; changed "added $user to ${missing#,}"
  else ok "$user exists"; fi
else
  run useradd --system --create-home --home-dir "$data" --shell /usr/sbin/nologin --groups video,render "$user"
  changed "created $user"
fi

# ---------------------------------------------------------------- virtual environment and drtrt

step "virtual environment $venv (sees the system TensorRT)"
if [ -x "$venv/bin/python" ]; then ok "$venv exists"
else run "$python" -m venv --system-site-packages "$venv"; changed "created $venv"; fi

step "drtrt (no torch) and $cuda_python from $source_path"
pip_args=()
if [ -d "$source_path/wheelhouse" ]; then                 # offline: every wheel from the folder, none from the net
  if [ -f "$source_path/manifest.json" ]; then              # a `drtrt bundle`: check every file before using any
    wheel="$(find "$source_path/wheelhouse" -maxdepth 1 -name 'drtrt-*.whl' | head -n 1)"
    [ -n "$wheel" ] || die "$source_path/wheelhouse holds no drtrt wheel"
    # the verifier is standard-library Python: it runs from the bundle's own wheel before anything is installed
    # (read-only, so a dry run runs it too, with any python3 when this JetPack's is not there)
    checker="$python"; "$checker" -c "" 2>/dev/null || checker=python3
    "$checker" -I -c 'import sys
sys.path.insert(0, sys.argv[1])
from drtrt.errors import DrtrtError
from drtrt.export.bundle import verify_bundle
try:
    manifest = verify_bundle(sys.argv[2])
except DrtrtError as exc:
    sys.exit(f"install.sh: {exc}")
print("ok: bundle intact,", len(manifest["files"]), "files for JetPack", manifest["jetpack"])' "$wheel" "$source_path" \
      || exit 2
  fi
  pip_args=(--no-index --find-links "$source_path/wheelhouse" "drtrt[gpu]" "$cuda_python")
elif [ -f "$source_path" ] && [ "${source_path##*.}" = whl ]; then
  pip_args=("${source_path}[gpu]" "$cuda_python")
elif [ -f "$source_path/pyproject.toml" ]; then
  pip_args=("${source_path}[gpu]" "$cuda_python")
else
  die "--source must be a drtrt checkout, a drtrt wheel or a folder with a wheelhouse/, found $source_path"
fi
wanted="$(sed -n 's/^version = "\(.*\)"/\1/p' "$source_path/pyproject.toml" 2>/dev/null || true)"
have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("drtrt"))' 2>/dev/null || true)"
if [ -n "$have" ] && { [ -z "$wanted" ] || [ "$have" = "$wanted" ]; } \
   && "$venv/bin/python" -c "import cuda.bindings.runtime" 2>/dev/null; then
  ok "drtrt $have installed"
else
  run "$venv/bin/pip" install --quiet "${pip_args[@]}"
  changed "installed drtrt ${wanted:-from $source_path}"
fi

# ---------------------------------------------------------------- model, golden files, folders

step "model and golden files in $models"
for dir in "$models" "$sessions" "$cache" "$root$camera"; do
  if [ -d "$dir" ]; then ok "$dir exists"; else run install -d -o "$user" -g "$user" -m 0750 "$dir"; changed "created $dir"; fi
done
copy() {                                  # copy $1 to $2 unless identical
  if [ -e "$2" ] && cmp -s "$1" "$2"; then ok "$2 is current"
  else run install -o "$user" -g "$user" -m 0640 "$1" "$2"; changed "copied $(basename "$1")"; fi
}
copy "$model" "$models/model.onnx"
if [ -d "$models/golden" ] && diff -rq "$golden" "$models/golden" >/dev/null 2>&1; then ok "$models/golden is current"
else
  run rm -rf "$models/golden"
  run cp -r "$golden" "$models/golden"
  run chown -R "$user:$user" "$models/golden"
  changed "copied the golden files"
fi

# ---------------------------------------------------------------- engine, parity

build_args=(build --onnx "$models/model.onnx" --out "$engine" --if-stale)
[ -n "$precision" ] && build_args+=("--$precision")
step "TensorRT engine $engine (built on this device)"
run runuser -u "$user" -- env DRTRT_CACHE_DIR="$cache" "$venv/bin/drtrt" "${build_args[@]}"

step "parity of the engine against the golden files"
run runuser -u "$user" -- "$venv/bin/drtrt" parity --golden "$models/golden" --candidate "$engine"

# ---------------------------------------------------------------- systemd unit

step "systemd unit drtrt-watch.service"
# a try lasts at most TimeoutStartSec (a first build) + RestartSec: the window holds 5 even of the slowest,
# so a start that fails every time stops after 5 tries however long each takes
restart_sec=10 timeout_start_sec=1800 start_limit_burst=5
start_limit_interval=$((start_limit_burst * (timeout_start_sec + restart_sec)))
unit="[Unit]
Description=drtrt: screen fundus photos as the camera writes them into $camera
After=local-fs.target
Wants=local-fs.target
# the camera's folder and drtrt's data may be a USB disk or a network share: start only once mounted
RequiresMountsFor=$camera $data/models $data/sessions $data/cache
# a failed parity check fails on every start: after $start_limit_burst failed starts within $start_limit_interval s
# systemd stops trying (the unit shows failed; fix it, then \`systemctl reset-failed drtrt-watch\`)
StartLimitIntervalSec=$start_limit_interval
StartLimitBurst=$start_limit_burst

[Service]
Type=simple
User=$user
Group=$user
SupplementaryGroups=video render
Environment=DRTRT_CACHE_DIR=$data/cache
# after a JetPack update the engine is stale: rebuild it, and check it, before screening starts
ExecStartPre=$prefix/venv/bin/drtrt ${build_args[*]//$root/}
ExecStartPre=$prefix/venv/bin/drtrt parity --golden $data/models/golden --candidate ${engine#"$root"}
ExecStart=$prefix/venv/bin/drtrt watch $camera --model ${engine#"$root"} --out $data/sessions/station
Restart=on-failure
RestartSec=$restart_sec
TimeoutStartSec=$timeout_start_sec
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target"
if [ -f "$unit_file" ] && [ "$(cat "$unit_file")" = "$unit" ]; then ok "$unit_file is current"
elif [ "$dry_run" = 1 ]; then printf '+ write %s:\n%s\n' "$unit_file" "$unit"; changed "wrote $unit_file"
else mkdir -p "$(dirname "$unit_file")"; printf '%s\n' "$unit" > "$unit_file"; changed "wrote $unit_file"; fi
if [ -z "$root" ] || [ "$dry_run" = 1 ]; then
  run systemctl daemon-reload
  run systemctl enable --now drtrt-watch.service
fi

say ""
say "done: $changes change(s). Logs: journalctl -u drtrt-watch -f · status: systemctl status drtrt-watch"
