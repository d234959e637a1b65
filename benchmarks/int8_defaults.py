"""The INT8 defaults of issue 20 against the INT8 model drtrt made before, in the same run: the full
network at 512x512, batch 1, ONNX Runtime CPU.

    PYTHONPATH=. .venv/bin/python benchmarks/int8_defaults.py [--runs 7] [--images 4] [--work DIR] [--json OUT]

* before: min-max, first conv + heads + softmax in FP32, no bias correction;
* after (today's default): the conv feeding the lesion head in FP32 too, and the bias correction
  (:mod:`drtrt.calibration.bias_correction`), whose cost is reported as calibration time.

Times are medians of ``--runs`` interleaved runs (FP32, before, after, round-robin, so other load
falls on every path alike), ratios against FP32 in the same run. Random weights (seeded): speed does
not depend on them. Helpers shared with ``benchmarks/precision_cpu.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision_cpu import (ROOT, add_full_model_args, calibration_root, export_full_model, machine,  # noqa: E402
                           ort_session, time_interleaved)

sys.path.insert(0, str(ROOT))
from drtrt.calibration.quantize import calibrate_int8  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=4, help="calibration images")
    add_full_model_args(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        _, fp32 = export_full_model(work, args.width, args.size)
        data = calibration_root(work, None)
        made = {}
        for name, kwargs in (("before", {"exclude": ("first-conv", "heads", "softmax"), "bias_correction": 0}),
                             ("after", {})):
            start = time.perf_counter()
            result = calibrate_int8(fp32, work / f"{name}.onnx", data, images=args.images, **kwargs)
            made[name] = {"path": result.path, "calibration_s": round(time.perf_counter() - start, 1),
                          "excluded": list(result.excluded),
                          "bias_correction": result.bias_correction.to_dict() if result.bias_correction else None}
            print(f"{name}: calibrated in {made[name]['calibration_s']} s, {len(result.excluded)} node(s) in FP32",
                  flush=True)
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        paths = {"FP32": ort_session(fp32, args.threads),
                 **{f"INT8 {name}": ort_session(m["path"], args.threads) for name, m in made.items()}}
        times = time_interleaved(paths, x, args.warmup, args.runs)
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{machine()}; {args.threads} threads; medians of {args.runs} interleaved runs")
    for name, ms in medians.items():
        print(f"{name:12s} {ms:8.0f} ms  ({min(times[name]):.0f}-{max(times[name]):.0f})  "
              f"{medians['FP32'] / ms:.2f}x FP32")
    print(f"after / before: {medians['INT8 after'] / medians['INT8 before']:.3f} (time ratio)")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "threads": args.threads, "runs": args.runs,
                                         "ms": times, "medians_ms": medians,
                                         "calibration": {k: {kk: vv for kk, vv in v.items() if kk != "path"}
                                                         for k, v in made.items()}}, indent=2))


if __name__ == "__main__":
    main()
