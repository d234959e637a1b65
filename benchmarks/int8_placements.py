"""INT8 Q/DQ placements and formats on ONNX Runtime's CPU provider (issue 26), one interleaved run.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_placements.py --work DIR [--runs 7]

``DIR`` holds the full model's FP32 ONNX (``model.onnx``, as ``int8_integer_path.py --work DIR`` leaves
it). The graph is prepared and its ranges collected once (``calibrate_int8``'s steps: min-max over
4 images, the default exclusions, no bias correction), then ``quantize_static`` writes each variant:

* QDQ, signed symmetric activations (what ``calibrate_int8`` writes), run as written;
* the same file with its activations shifted to unsigned at load (``OrtRunner``'s CPU path);
* QDQ with ``DedicatedQDQPair`` (one Q/DQ pair per consumer);
* QDQ, unsigned asymmetric activations + signed weights (ONNX Runtime's x86 recommendation; not what
  TensorRT accepts);
* QOperator, signed/signed (not what TensorRT accepts).

Each runs with 1 intra-op thread, no spin-waiting; wall and process CPU milliseconds, medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drtrt.calibration.graph import load_onnx, read_info  # noqa: E402
from drtrt.calibration.quantize import (DEFAULT_EXCLUDE, QUANT_OPTIONS, collect_ranges,  # noqa: E402
                                        op_types_to_quantize, ort_method, prepare_graph, resolve_exclude)
from drtrt.calibration.source import calibration_set  # noqa: E402
from drtrt.runtime.backends.ort import open_session  # noqa: E402
from drtrt.runtime.backends.ort_u8 import unsigned_activations  # noqa: E402


def variants() -> dict[str, dict]:
    from onnxruntime.quantization import QuantFormat, QuantType

    return {"QDQ, signed symmetric activations (calibrate_int8's file, as written)": {},
            "QDQ, DedicatedQDQPair": {"extra": {"DedicatedQDQPair": True}},
            "QDQ, unsigned asymmetric activations (not TensorRT-acceptable)":
                {"act": QuantType.QUInt8, "extra": {"ActivationSymmetric": False}},
            "QOperator, signed/signed (not TensorRT-acceptable)": {"fmt": QuantFormat.QOperator}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "idrid-samples")
    args = parser.parse_args()
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fp32, work = args.work / "model.onnx", args.work / "placements"
    work.mkdir(exist_ok=True)
    info = read_info(load_onnx(fp32))
    prepared, cache = prepare_graph(fp32, work / "prepared.onnx"), work / "ranges.json"
    if not cache.exists():
        collect_ranges(prepared, calibration_set(args.data, 4, 0), info, "minmax", cache)
    excluded = resolve_exclude(onnx.load(str(prepared), load_external_data=False), DEFAULT_EXCLUDE, "image")
    files = {}
    for i, (name, v) in enumerate(variants().items()):
        files[name] = work / f"variant{i}.onnx"
        quantize_static(str(prepared), str(files[name]), None, quant_format=v.get("fmt", QuantFormat.QDQ),
                        per_channel=True, activation_type=v.get("act", QuantType.QInt8), weight_type=QuantType.QInt8,
                        op_types_to_quantize=op_types_to_quantize(), nodes_to_exclude=list(excluded),
                        calibrate_method=ort_method("minmax"), extra_options={**QUANT_OPTIONS, **v.get("extra", {})},
                        calibration_cache_path=str(cache))
    first = next(iter(files.values()))
    sessions = {name: open_session(path, threads=1, spin=False) for name, path in files.items()}
    sessions = {**dict(list(sessions.items())[:1]),
                "the same file, activations shifted to unsigned at load (OrtRunner's CPU path)":
                    open_session(unsigned_activations(first), threads=1, spin=False),
                **dict(list(sessions.items())[1:])}
    size = info.preprocess.size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for s in sessions.values():
        s.run(None, {"image": x})
    wall = {k: [] for k in sessions}
    cpu = {k: [] for k in sessions}
    load = [os.getloadavg()]
    for _ in range(args.runs):
        for name, s in sessions.items():
            tick, cpu_tick = time.perf_counter(), time.process_time()
            s.run(None, {"image": x})
            wall[name].append((time.perf_counter() - tick) * 1e3)
            cpu[name].append((time.process_time() - cpu_tick) * 1e3)
    load.append(os.getloadavg())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average (1/5/15 min) {load[0]} -> {load[1]}; "
          f"{args.runs} interleaved runs, 1 thread, no spin-waiting\n")
    print("| INT8 variant | wall ms, median (min–max) | CPU ms, median (min–max) |\n|---|---|---|")
    for k in sessions:
        print(f"| {k} | {statistics.median(wall[k]):,.0f} ({min(wall[k]):,.0f}–{max(wall[k]):,.0f}) | "
              f"{statistics.median(cpu[k]):,.0f} ({min(cpu[k]):,.0f}–{max(cpu[k]):,.0f}) |")


if __name__ == "__main__":
    main()
