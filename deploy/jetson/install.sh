#!/usr/bin/env bash
# Install a drtrt screening station on a bare Jetson (JetPack 6.x or 7): one script, run as root.
#
#   sudo deploy/jetson/install.sh --model model.onnx --golden golden/ [--service station|watch|receive]
#        [--source CHECKOUT|WHEEL|FOLDER] [--precision fp16|int8] [--camera /srv/fundus-camera] [--dry-run]
#
# --service: station (default: the health worker's web app, on 127.0.0.1:8080 unless --host/--port;
# its operator PIN asked on the terminal or read from --pin-file, kept in /etc/drtrt/station.env),
# watch (screens what the camera writes into its folder, results in the journal) or receive (the
# camera pushes DICOM: --host is required, port 11112, --ae-title DRTRT).
# --validation RECORD (default: MODEL.validation.json when there is one) and --validation-key PUB: the
# model's signed validation record and the programme's public key (docs/model-trust.md); with both, and the
# record signed by that key for this model, results are no longer NOT FOR CLINICAL USE.
# Steps: detect the L4T release (/etc/nv_tegra_release) → check Python and the system TensorRT →
# a service user in the video/render groups → a virtual environment that sees the system TensorRT →
# drtrt and the service's extras without torch (+ the cuda-python release of this JetPack) → model
# and golden files on persistent storage → the engine built on this device → parity against the
# golden files → a systemd unit drtrt-SERVICE (restart on failure, but 5 failed starts in a row stop it;
# started once the camera and data folders are mounted; journald; `drtrt build --if-stale` before
# every start, so a JetPack update rebuilds the engine). Idempotent: every step checks first and
# says "ok" (nothing to do) or "changed"; the unit of another service is stopped and removed.
# --dry-run prints every step and changes nothing.
# JetPack 5.1 is refused with the options it has. Not yet run on a Jetson: see deploy/README.md.
set -euo pipefail

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  echo "Options: --model ONNX --golden DIR [--service station|watch|receive] [--source PATH] [--precision fp16|int8]"
  echo "         [--camera DIR] [--host ADDR] [--port N] [--pin-file FILE] [--ae-title AET]"
  echo "         [--validation RECORD] [--validation-key PUB]"
  echo "         [--user NAME] [--prefix DIR] [--data DIR] [--release-file FILE] [--root DIR] [--dry-run]"
}

die() { echo "install.sh: $*" >&2; exit 2; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_path="$(cd "$script_dir/../.." && pwd)"      # default: this checkout
model="" golden="" precision="" camera="/srv/fundus-camera" user="drtrt"
prefix="/opt/drtrt" data="/var/lib/drtrt" release_file="/etc/nv_tegra_release" root="" dry_run=0
service="station" host="" port="" pin_file="" ae_title="" validation="" validation_key=""

while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="${2:?}"; shift 2 ;;
    --golden) golden="${2:?}"; shift 2 ;;
    --source) source_path="${2:?}"; shift 2 ;;
    --precision) precision="${2:?}"; shift 2 ;;
    --camera) camera="${2:?}"; shift 2 ;;
    --service) service="${2:?}"; shift 2 ;;
    --host) host="${2:?}"; shift 2 ;;
    --port) port="${2:?}"; shift 2 ;;
    --pin-file) pin_file="${2:?}"; shift 2 ;;
    --ae-title) ae_title="${2:?}"; shift 2 ;;
    --validation) validation="${2:?}"; shift 2 ;;
    --validation-key) validation_key="${2:?}"; shift 2 ;;
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
# which program the unit runs, and where it listens: the station serves this machine's screen unless --host
# names another address (then its PIN guards it); the receiver listens where the camera sends; watch listens nowhere
case "$service" in
  station)
    host="${host:-127.0.0.1}" port="${port:-8080}"
    [ -z "$ae_title" ] || die "--ae-title is for --service receive (the AE title the camera calls)" ;;
  receive)
    [ -n "$host" ] || die "--service receive needs --host ADDR: the address the camera sends to (0.0.0.0: every network)"
    port="${port:-11112}" ae_title="${ae_title:-DRTRT}"
    [ -z "$pin_file" ] || die "--pin-file is for --service station (the receiver has no PIN)" ;;
  watch)
    { [ -z "$host" ] && [ -z "$port" ]; } || die "--host and --port are for station and receive: drtrt watch listens on nothing"
    { [ -z "$pin_file" ] && [ -z "$ae_title" ]; } || die "--pin-file and --ae-title are for station and receive, not watch" ;;
  *) die "--service must be station, watch or receive, found $service" ;;
esac
if [ -n "$port" ]; then
  if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    die "--port must be 1-65535, found $port"
  fi
fi
case "$host$ae_title" in *[[:space:]]*) die "--host and --ae-title cannot hold spaces" ;; esac
[ -z "$pin_file" ] || [ -f "$pin_file" ] || die "PIN file not found: $pin_file"
for path in "$camera" "$data" "$prefix"; do         # the unit lists them space-separated (RequiresMountsFor)
  case "$path" in /*) ;; *) die "--camera, --data and --prefix must be absolute paths, found $path" ;; esac
  case "$path" in
    *[[:space:]]*) die "--camera, --data and --prefix cannot hold spaces (systemd splits on them): $path" ;;
  esac
done
[ "$dry_run" = 1 ] || [ -f "$model" ] || die "model not found: $model"
[ "$dry_run" = 1 ] || [ -d "$golden" ] || die "golden folder not found: $golden"
# the validation record travels with the model (drtrt looks for it beside the model it screens with)
[ -n "$validation" ] || [ ! -f "$model.validation.json" ] || validation="$model.validation.json"
[ -z "$validation" ] || [ -f "$validation" ] || die "validation record not found: $validation"
[ -z "$validation_key" ] || [ -f "$validation_key" ] || die "validation key not found: $validation_key"
if [ -n "$validation_key" ] && ! grep -q -- "-----BEGIN PUBLIC KEY-----" "$validation_key"; then
  die "--validation-key takes the programme's public key (PEM, from \`drtrt validate keygen\`), not $validation_key"
fi

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
extras="$(pins --extras "$service")"       # what the service needs: drtrt[gpu,convert,...], never torch

venv="$root$prefix/venv"
models="$root$data/models"
engine="$models/model.engine"
sessions="$root$data/sessions"
cache="$root$data/cache"
units="$root/etc/systemd/system"
unit_file="$units/drtrt-$service.service"
env_file="$root/etc/drtrt/station.env"     # the station's PIN: root-only, systemd hands it to the service
key_file="$root/etc/drtrt/validation-key.pem"   # the programme's public key: validation records are checked with it
changes=0

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
run() {                                   # a command that changes the system (printed in a dry run)
  if [ "$dry_run" = 1 ]; then printf '+ %s\n' "$*"; else "$@"; fi
}
changed() { changes=$((changes + 1)); say "changed: $*"; }
ok() { say "ok: $*"; }

say "L4T $l4t: JetPack $jetpack (Python $python_version, $cuda_python; TensorRT: the system's, checked below)"
say "service: drtrt $service${host:+ on $host:$port} (drtrt[$extras])"

# ---------------------------------------------------------------- the station's PIN (asked first, kept after)

pin=""
if [ "$service" = station ]; then
  if [ -n "$pin_file" ]; then pin="$(head -n 1 "$pin_file" | tr -d '[:space:]')"
  elif [ -f "$env_file" ] && grep -q '^DRTRT_STATION_PIN=[0-9]' "$env_file"; then :     # set at an earlier install
  elif [ "$dry_run" = 1 ]; then say "+ ask for the station's operator PIN (or --pin-file FILE)"
  elif [ -t 0 ]; then
    read -r -s -p "Operator PIN for the station (4 or more digits): " pin; echo
  else
    die "the station needs an operator PIN: run on a terminal to be asked, or give --pin-file FILE (first line: the digits)"
  fi
  if [ -n "$pin" ] && ! [[ "$pin" =~ ^[0-9]{4,64}$ ]]; then die "the operator PIN must be 4 to 64 digits"; fi
fi

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

step "drtrt[$extras] (no torch) and $cuda_python from $source_path"
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
from drtrt.export.bundle import check_fits, describe, verify_bundle
try:
    manifest = verify_bundle(sys.argv[2])
    check_fits(manifest, sys.argv[3], sys.argv[4])
except DrtrtError as exc:
    sys.exit(f"install.sh: {exc}")
print("ok: bundle intact,", len(manifest["files"]), "files for", describe(manifest))' \
      "$wheel" "$source_path" "$service" "$python_version" || exit 2
  fi
  pip_args=(--no-index --find-links "$source_path/wheelhouse" "drtrt[$extras]" "$cuda_python")
elif [ -f "$source_path" ] && [ "${source_path##*.}" = whl ]; then
  pip_args=("${source_path}[$extras]" "$cuda_python")
elif [ -f "$source_path/pyproject.toml" ]; then
  pip_args=("${source_path}[$extras]" "$cuda_python")
else
  die "--source must be a drtrt checkout, a drtrt wheel or a folder with a wheelhouse/, found $source_path"
fi
wanted="$(sed -n 's/^version = "\(.*\)"/\1/p' "$source_path/pyproject.toml" 2>/dev/null || true)"
have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("drtrt"))' 2>/dev/null || true)"
if [ -n "$have" ] && { [ -z "$wanted" ] || [ "$have" = "$wanted" ]; } \
   && "$venv/bin/python" -m drtrt.runtime.jetpack --missing "$service" >/dev/null 2>&1; then
  ok "drtrt $have installed, with what drtrt $service needs"
else
  run "$venv/bin/pip" install --quiet "${pip_args[@]}"
  changed "installed drtrt ${wanted:-from $source_path}"
fi

# ---------------------------------------------------------------- model, golden files, folders

step "model and golden files in $models"
folders=("$models" "$sessions" "$cache")
[ "$service" = receive ] || folders+=("$root$camera")      # the receiver gets photos over DICOM, not from a folder
for dir in "${folders[@]}"; do
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
if [ -n "$validation" ]; then copy "$validation" "$models/model.validation.json"; fi
if [ -n "$validation_key" ]; then
  if [ -e "$key_file" ] && cmp -s "$validation_key" "$key_file"; then ok "${key_file#"$root"} is current"
  else
    run mkdir -p "$(dirname "$key_file")"
    run cp "$validation_key" "$key_file"
    run chmod 0644 "$key_file"                  # a public key: readable by the service user
    changed "copied the programme's validation key to ${key_file#"$root"}"
  fi
fi
if [ -n "$validation" ] && [ -z "$validation_key" ] && [ ! -e "$key_file" ]; then
  say "note: no --validation-key: the record is kept, but results stay NOT FOR CLINICAL USE until the programme's key is given"
fi

# ---------------------------------------------------------------- engine, parity

build_args=(build --onnx "$models/model.onnx" --out "$engine" --if-stale)
[ -n "$precision" ] && build_args+=("--$precision")
step "TensorRT engine $engine (built on this device)"
run runuser -u "$user" -- env DRTRT_CACHE_DIR="$cache" "$venv/bin/drtrt" "${build_args[@]}"

step "parity of the engine against the golden files"
run runuser -u "$user" -- "$venv/bin/drtrt" parity --golden "$models/golden" --candidate "$engine"

# ---------------------------------------------------------------- the station's PIN file

if [ "$service" = station ]; then
  step "the station's operator PIN in ${env_file#"$root"} (root only, mode 0600)"
  if [ -z "$pin" ]; then ok "${env_file#"$root"} keeps the PIN set before (give --pin-file to change it)"
  elif [ -f "$env_file" ] && [ "$(cat "$env_file")" = "DRTRT_STATION_PIN=$pin" ]; then ok "${env_file#"$root"} is current"
  elif [ "$dry_run" = 1 ]; then say "+ write ${env_file#"$root"} (mode 0600)"; changed "wrote the PIN"
  else
    mkdir -p "$(dirname "$env_file")"
    (umask 077; printf 'DRTRT_STATION_PIN=%s\n' "$pin" > "$env_file")
    chmod 0600 "$env_file"
    changed "wrote the PIN"
  fi
fi

# ---------------------------------------------------------------- systemd unit

engine_path="${engine#"$root"}"
mounts="$data/models $data/sessions $data/cache"
case "$service" in
  station)
    description="the screening station's web app on $host:$port (camera folder $camera)"
    exec_start="station --model $engine_path --data-dir $data/sessions/station --camera-dir $camera --host $host --port $port"
    mounts="$camera $mounts" ;;
  receive)
    description="receive fundus photos over DICOM on $host:$port (AE title $ae_title) and screen them"
    exec_start="receive --out $data/sessions/station --model $engine_path --ae-title $ae_title --host $host --port $port" ;;
  watch)
    description="screen fundus photos as the camera writes them into $camera"
    exec_start="watch $camera --model $engine_path --out $data/sessions/station"
    mounts="$camera $mounts" ;;
esac
# the record beside the model and the key (this run's, or one an earlier install left) go to the program
if [ -n "$validation" ] || [ -e "$models/model.validation.json" ]; then
  exec_start+=" --validation $data/models/model.validation.json"
fi
extra_service=""
if [ -n "$validation_key" ] || [ -e "$key_file" ]; then
  extra_service+=$'\n'"Environment=DRTRT_VALIDATION_KEY=/etc/drtrt/validation-key.pem"
fi
[ "$service" != station ] || extra_service+=$'\n'"EnvironmentFile=/etc/drtrt/station.env"
if [ -n "$port" ] && [ "$port" -lt 1024 ]; then            # DICOM's own port 104: bound by the unprivileged user
  extra_service+=$'\n'"AmbientCapabilities=CAP_NET_BIND_SERVICE"
fi

step "systemd unit drtrt-$service.service"
# a try lasts at most TimeoutStartSec (a first build) + RestartSec: the window holds 5 even of the slowest,
# so a start that fails every time stops after 5 tries however long each takes
restart_sec=10 timeout_start_sec=1800 start_limit_burst=5
start_limit_interval=$((start_limit_burst * (timeout_start_sec + restart_sec)))
unit="[Unit]
Description=drtrt: $description
After=local-fs.target network-online.target
Wants=local-fs.target network-online.target
# the camera's folder and drtrt's data may be a USB disk or a network share: start only once mounted
RequiresMountsFor=$mounts
# a failed parity check fails on every start: after $start_limit_burst failed starts within $start_limit_interval s
# systemd stops trying (the unit shows failed; fix it, then \`systemctl reset-failed drtrt-$service\`)
StartLimitIntervalSec=$start_limit_interval
StartLimitBurst=$start_limit_burst

[Service]
Type=simple
User=$user
Group=$user
SupplementaryGroups=video render
Environment=DRTRT_CACHE_DIR=$data/cache$extra_service
# after a JetPack update the engine is stale: rebuild it, and check it, before screening starts
ExecStartPre=$prefix/venv/bin/drtrt ${build_args[*]//$root/}
ExecStartPre=$prefix/venv/bin/drtrt parity --golden $data/models/golden --candidate $engine_path
ExecStart=$prefix/venv/bin/drtrt $exec_start
Restart=on-failure
RestartSec=$restart_sec
TimeoutStartSec=$timeout_start_sec
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target"
# one service at a time: the unit of another service (an earlier install) is stopped and removed
for other in station watch receive; do
  if [ "$other" = "$service" ] || [ ! -f "$units/drtrt-$other.service" ]; then continue; fi
  if [ -z "$root" ] || [ "$dry_run" = 1 ]; then run systemctl disable --now "drtrt-$other.service"; fi
  run rm -f "$units/drtrt-$other.service"
  changed "removed drtrt-$other.service (this install runs drtrt $service)"
done
if [ -f "$unit_file" ] && [ "$(cat "$unit_file")" = "$unit" ]; then ok "$unit_file is current"
elif [ "$dry_run" = 1 ]; then printf '+ write %s:\n%s\n' "$unit_file" "$unit"; changed "wrote $unit_file"
else mkdir -p "$(dirname "$unit_file")"; printf '%s\n' "$unit" > "$unit_file"; changed "wrote $unit_file"; fi
if [ -z "$root" ] || [ "$dry_run" = 1 ]; then
  run systemctl daemon-reload
  run systemctl enable --now "drtrt-$service.service"
fi

say ""
say "done: $changes change(s). Logs: journalctl -u drtrt-$service -f · status: systemctl status drtrt-$service"
