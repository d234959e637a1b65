#!/usr/bin/env bash
# Turn "not run on hardware" into figures: run this on a Jetson or any machine with an NVIDIA GPU.
#
#   bash scripts/hardware-check.sh [--onnx MODEL.onnx --golden DIR] [--work DIR] [--no-record]
#        [--release-file FILE]
#
# 1. drtrt doctor (GPU, CUDA, TensorRT, board, JetPack);
# 2. the CUDA memory path on the real GPU (tests/runtime/test_cuda_gpu.py);
# 3. with TensorRT: build FP16 and INT8 engines, pytest --real-trt, parity of each engine against
#    golden files, drtrt bench (without --onnx: the demo model and golden files, made first);
# 4. without TensorRT (an x86 GPU box): the CUDA path and GPU training speed only.
# drtrt[gpu] is installed with the pins of this device (python -m drtrt.runtime.jetpack: the L4T release,
# else the driver's CUDA), so a CUDA 12 driver never gets cuda-python 13.
# Each check appends a row (date, device, check, result, figures) to docs/hardware-results.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
onnx="" golden="" work="${TMPDIR:-/tmp}/drtrt-hardware-check" record=1 release_file="/etc/nv_tegra_release"
while [ $# -gt 0 ]; do
  case "$1" in
    --onnx) onnx="${2:?}"; shift 2 ;;
    --golden) golden="${2:?}"; shift 2 ;;
    --work) work="${2:?}"; shift 2 ;;
    --no-record) record=0; shift ;;
    --release-file) release_file="${2:?}"; shift 2 ;;
    *) echo "usage: $0 [--onnx MODEL.onnx --golden DIR] [--work DIR] [--no-record] [--release-file FILE]" >&2
       exit 2 ;;
  esac
done
if { [ -n "$onnx" ] && [ -z "$golden" ]; } || { [ -z "$onnx" ] && [ -n "$golden" ]; }; then
  echo "give --onnx and --golden together (or neither: the demo model is used)" >&2; exit 2
fi
cd "$root"
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
mkdir -p "$work"
results="$root/docs/hardware-results.md"
today="$(date -u +%Y-%m-%d)"
device="$(drtrt doctor --json | python -c 'import json, sys
rows = {f["item"]: f["value"] for f in json.load(sys.stdin)["findings"]}
power = rows.get("power mode")
print((rows.get("GPU", "no GPU") + (", " + power if power else "")).replace("|", "/"))')"

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
summary="$(drtrt doctor --json | python -c 'import json, sys
rows = {f["item"]: f["value"] for f in json.load(sys.stdin)["findings"]}
print("; ".join(f"{k} {rows[k]}" for k in ("Jetson", "TensorRT", "CUDA runtime", "CUDA driver") if k in rows))')"
row "doctor" "ran" "${summary//|//}"
check "CUDA memory path" python -m pytest -q -p no:cacheprovider tests/runtime/test_cuda_gpu.py -rs

if python -c "import tensorrt" 2>/dev/null; then
  if [ -z "$onnx" ]; then
    drtrt demo --out "$work/demo"
    onnx="$work/demo/model.onnx" golden="$work/golden"
    [ -d "$golden" ] || drtrt parity --reference "$work/demo/run/best.pt" --data "$work/demo/data" \
                          --save-golden "$golden" --candidate "$onnx"
  fi
  check "build FP16" drtrt build --onnx "$onnx" --fp16 --out "$work/fp16.engine"
  calib=()                                # the demo's FP32 model is calibrated on its images; a given ONNX is Q/DQ
  [ -d "$work/demo/data" ] && calib=(--calib-data "$work/demo/data")
  check "build INT8" drtrt build --onnx "$onnx" --int8 "${calib[@]}" --out "$work/int8.engine"
  check "pytest --real-trt" python -m pytest -q -p no:cacheprovider --real-trt tests/runtime/test_trt.py
  for engine in fp16 int8; do
    [ -f "$work/$engine.engine" ] && check "parity $engine" drtrt parity --golden "$golden" --candidate "$work/$engine.engine"
  done
  check "bench" drtrt bench --model "$onnx" --model "$work/fp16.engine" --model "$work/int8.engine" --batch 1,4
else
  row "TensorRT" "absent" "CUDA paths only on this machine"
  if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    check "GPU training speed" python benchmarks/train_throughput.py --device cuda --steps 3 --batch 4 \
      --json "$work/train_throughput_gpu.json"
  fi
fi
if [ "$record" = 1 ]; then echo "rows appended to $results (commit them with the date and the device)"; fi
