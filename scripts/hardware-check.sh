#!/usr/bin/env bash
# Turn "not run on hardware" into figures: run this on a Jetson or any machine with an NVIDIA GPU.
#
#   bash scripts/hardware-check.sh [--onnx MODEL.onnx --golden DIR] [--work DIR] [--no-record]
#        [--release-file FILE] [--no-install] [--bindings-wheel FILE|DIR] [--device N]
#
# 1. drtrt doctor (GPU, CUDA, TensorRT, board, JetPack);
# 2. the CUDA memory path on the real GPU (tests/runtime/test_cuda_gpu.py);
# 3. the CUDA layer without TensorRT (tests/hardware/cuda_check.py, seconds): device identity, pinned and
#    mapped buffers byte-exact, two threads, a missing device, the TensorRT double on the device's memory
#    (staged = zero-copy) — with the machine's cuda-bindings, then with cuda-bindings 12.9 from a wheel;
# 4. with TensorRT: build FP16 and INT8 engines, the FP16 engine staged vs zero-copy
#    (tests/hardware/zero_copy_bench.py), pytest --real-trt, parity of each engine against golden files,
#    drtrt bench (without --onnx: the demo model and golden files, made first);
# 5. without TensorRT (an x86 GPU box): GPU training speed when torch sees the GPU.
# drtrt[gpu] is installed with the pins of this device (python -m drtrt.runtime.jetpack: the L4T release,
# else the driver's CUDA), so a CUDA 12 driver never gets cuda-python 13; the cuda-bindings 12.9 wheel
# is downloaded into the work folder (pip download), never installed.
# --no-install: no venv, no pip, no network: $PYTHON (default python3) with the machine's packages and
# this checkout on PYTHONPATH; the 12.9 wheel only from --bindings-wheel or $DRTRT_CUDA_BINDINGS_WHEEL
# (a .whl, or a folder of them with cuda-pathfinder's), else that row says it was skipped.
# Each check appends a row (date, device, check, result, figures) to docs/hardware-results.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
onnx="" golden="" work="${TMPDIR:-/tmp}/drtrt-hardware-check" record=1 release_file="/etc/nv_tegra_release"
install=1 wheel="${DRTRT_CUDA_BINDINGS_WHEEL:-}" gpu_index=0
usage="usage: $0 [--onnx MODEL.onnx --golden DIR] [--work DIR] [--no-record] [--release-file FILE] [--no-install] [--bindings-wheel FILE|DIR] [--device N]"
while [ $# -gt 0 ]; do
  case "$1" in
    --onnx) onnx="${2:?$usage}"; shift 2 ;;
    --golden) golden="${2:?$usage}"; shift 2 ;;
    --work) work="${2:?$usage}"; shift 2 ;;
    --no-record) record=0; shift ;;
    --release-file) release_file="${2:?$usage}"; shift 2 ;;
    --no-install) install=0; shift ;;
    --bindings-wheel) wheel="${2:?$usage}"; shift 2 ;;
    --device) gpu_index="${2:?$usage}"; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
if { [ -n "$onnx" ] && [ -z "$golden" ]; } || { [ -z "$onnx" ] && [ -n "$golden" ]; }; then
  echo "give --onnx and --golden together (or neither: the demo model is used)" >&2; exit 2
fi
[[ "$gpu_index" =~ ^[0-9]+$ ]] || { echo "--device takes a GPU number (0, 1, ...), not '$gpu_index'" >&2; exit 2; }
if [ -n "$wheel" ] && [ ! -e "$wheel" ]; then
  echo "cuda-bindings wheel not found: $wheel (--bindings-wheel or DRTRT_CUDA_BINDINGS_WHEEL)" >&2; exit 2
fi
cd "$root"
if [ "$install" = 1 ]; then
  # the system's TensorRT (apt on a Jetson) must be visible; the demo model needs training extras
  export DRTRT_SYSTEM_SITE=1
  extras="gpu,convert,test"          # convert: onnx, which `drtrt build --fp16` needs (no torch)
  [ -n "$onnx" ] || extras="$extras,train,export"
  # the cuda-python pin (and nothing else) for this device, from the same function install.sh uses
  DRTRT_PINS="$(PYTHONPATH="$root" python3 -m drtrt.runtime.jetpack --release-file "$release_file" | tr '\n' ' ')"
  export DRTRT_PINS
  echo "pins for this device: ${DRTRT_PINS:-none (no NVIDIA driver found)}"
  # shellcheck source=scripts/env.sh
  source "$root/scripts/env.sh" "$extras"
  python=python
else
  python="${PYTHON:-python3}"
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
  drtrt() { "$python" -m drtrt.cli "$@"; }
  echo "--no-install: $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])') and its packages; nothing installed, no network"
fi
mkdir -p "$work"
results="$root/docs/hardware-results.md"
today="$(date -u +%Y-%m-%d)"
doctor="$(drtrt doctor --json)" || {
  status=$?; echo "drtrt doctor failed (exit $status) with $python: is drtrt installed with its dependencies?" >&2
  exit "$status"; }
device="$("$python" -c 'import json, sys
rows = {f["item"]: f["value"] for f in json.load(sys.stdin)["findings"]}
power = rows.get("power mode")
print((rows.get("GPU", "no GPU") + (", " + power if power else "")).replace("|", "/"))' <<< "$doctor")"

row() {                                   # check, result, figures
  printf '| %s | %s | %s | %s | %s |\n' "$today" "$device" "$1" "$2" "$3"
  if [ "$record" = 1 ]; then
    [ -f "$results" ] || { echo "missing $results" >&2; exit 1; }
    printf '| %s | %s | %s | %s | %s |\n' "$today" "$device" "$1" "$2" "$3" >> "$results"
  fi
}
check() {                                 # name, command...: run it, record pass/fail and its last line
  local name="$1"; shift
  local log="$work/${name// /-}.log"
  local last
  if "$@" > "$log" 2>&1; then
    last="$(tail -n 1 "$log" | tr '|' '/')"
    case "$last" in *skipped*) [[ "$last" == *passed* ]] || { row "$name" skipped "$last"; return; } ;; esac
    row "$name" pass "$last"
  else row "$name" "FAIL (exit $?)" "$(tail -n 1 "$log" | tr '|' '/')"; fi
}

echo "device: $device"
summary="$("$python" -c 'import json, sys
rows = {f["item"]: f["value"] for f in json.load(sys.stdin)["findings"]}
print("; ".join(f"{k} {rows[k]}" for k in ("Jetson", "TensorRT", "CUDA runtime", "CUDA driver") if k in rows))' \
  <<< "$doctor")"
row "doctor" "ran" "${summary//|//}"
check "CUDA memory path" "$python" -m pytest -q -p no:cacheprovider tests/runtime/test_cuda_gpu.py -rs

own_rows() {                              # name, command...: a check under tests/hardware/ that prints its own rows
  local name="$1" log="$work/${1// /-}.log" rc=0; shift
  "$@" > "$log" 2>&1 || rc=$?
  local line found=0 failed=0
  while IFS= read -r line; do
    [[ "$line" == "| "* ]] || continue
    found=1; echo "$line"
    [[ "$line" == *" | FAIL | "* ]] && failed=1
    if [ "$record" = 1 ]; then echo "$line" >> "$results"; fi
  done < "$log"
  # no rows, a timeout (124), or a non-zero exit no FAIL row explains (a crash part-way): one more row
  if [ "$found" = 0 ] || [ "$rc" = 124 ] || { [ "$rc" != 0 ] && [ "$failed" = 0 ]; }; then
    row "$name" "FAIL (exit $rc)" "$(tail -n 1 "$log" | tr '|' '/')"
  fi
}
cuda_layer() {                            # name, [VAR=value...]: the CUDA layer with that environment (seconds;
  own_rows "$1" timeout 420 env "${@:2}" "$python" "$root/tests/hardware/cuda_check.py" \
    --device "$gpu_index" --date "$today"   # a hang is a FAIL row after 7 minutes)
}
cuda_layer "CUDA layer"
bindings="$work/cuda-bindings-12.9" wheel_result=skipped
wheel_why="no wheel: --no-install downloads nothing; give --bindings-wheel FILE or DRTRT_CUDA_BINDINGS_WHEEL"
if [ -z "$wheel" ] && [ "$install" = 1 ]; then  # never installed: unpacked in the work folder, first on PYTHONPATH
  if "$python" -m pip download --quiet --only-binary=:all: --dest "$work/wheels" "cuda-bindings==12.9.*"; then
    wheel="$work/wheels"
  else wheel_result=FAIL wheel_why="pip download cuda-bindings==12.9.* failed (offline? give --bindings-wheel FILE)"; fi
fi
wheels=()
if [ -d "$wheel" ]; then
  for file in "$wheel"/*.whl; do if [ -f "$file" ]; then wheels+=("$file"); fi; done
  [ "${#wheels[@]}" -gt 0 ] || wheel_result=FAIL wheel_why="no .whl file in $wheel"
elif [ -n "$wheel" ]; then wheels=("$wheel"); fi
if [ "${#wheels[@]}" -gt 0 ]; then
  rm -rf "$bindings"
  "$python" -c 'import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])' "$bindings" "${wheels[@]}"
  cuda_layer "CUDA layer (cuda-bindings 12.9)" PYTHONPATH="$bindings:$root" DRTRT_EXPECT_BINDINGS=12.9
else
  row "CUDA layer (cuda-bindings 12.9)" "$wheel_result" "$wheel_why"
fi

if "$python" -c "import tensorrt" 2>/dev/null; then
  if [ -z "$onnx" ]; then
    drtrt demo --out "$work/demo"
    onnx="$work/demo/model.onnx" golden="$work/golden"
    [ -d "$golden" ] || drtrt parity --reference "$work/demo/run/best.pt" --data "$work/demo/data" \
                          --save-golden "$golden" --candidate "$onnx"
  fi
  check "build FP16" drtrt build --onnx "$onnx" --fp16 --out "$work/fp16.engine"
  calib=()                                # the demo's FP32 model is calibrated on its images; a given ONNX is Q/DQ
  [ -d "$work/demo/data" ] && calib=(--calib-data "$work/demo/data")
  if [ -f "$work/fp16.engine" ]; then
    own_rows "zero-copy vs staged" "$python" "$root/tests/hardware/zero_copy_bench.py" --engine "$work/fp16.engine" \
      --date "$today"
  fi
  check "build INT8" drtrt build --onnx "$onnx" --int8 "${calib[@]}" --out "$work/int8.engine"
  check "pytest --real-trt" "$python" -m pytest -q -p no:cacheprovider --real-trt tests/runtime/test_trt.py
  for engine in fp16 int8; do
    [ -f "$work/$engine.engine" ] && check "parity $engine" drtrt parity --golden "$golden" --candidate "$work/$engine.engine"
  done
  check "bench" drtrt bench --model "$onnx" --model "$work/fp16.engine" --model "$work/int8.engine" --batch 1,4
else
  row "TensorRT" "absent" "CUDA paths only on this machine"
  if "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    check "GPU training speed" "$python" benchmarks/train_throughput.py --device cuda --steps 3 --batch 4 \
      --json "$work/train_throughput_gpu.json"
  fi
fi
if [ "$record" = 1 ]; then echo "rows appended to $results (commit them with the date and the device)"; fi
