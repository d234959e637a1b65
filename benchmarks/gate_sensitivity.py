"""Does the INT8 gate still refuse harmful models? Faithful and deliberately broken candidates,
judged by the gate over every pixel (the lesion Dice before issue 20) and over the pixels the
reference decides (the gate's lesion Dice since).

    PYTHONPATH=. .venv/bin/python benchmarks/gate_sensitivity.py --onnx demo-out/model.onnx \
        --int8 demo-out/model.int8.onnx --data demo-out/data [--every 12] [--json OUT]

Candidates, each against the FP32 ``--onnx`` on the test split of ``--data`` (100 images,
stratified, as ``drtrt calibrate`` judges):

* the faithful INT8 model ``--int8``;
* perturbed weights: the FP32 model with Gaussian noise of 2 %, 5 % and 10 % of each conv's weight
  standard deviation (seeded);
* broken scales: the INT8 model with one activation QuantizeLinear's scale (shared with its
  DequantizeLinear) multiplied by 0.25 (three quarters of the calibrated range clipped) or by 4
  (a quarter of the grid used), at every ``--every``-th quantised tensor.

Printed per candidate: grade and referable agreement, lesion Dice over every pixel and over the
decided pixels, and whether the gate refuses it on the lesion check alone and in all.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--every", type=int, default=12)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import onnx
    from onnx import numpy_helper

    from drtrt.calibration.gate import judge
    from drtrt.calibration.source import idrid_samples

    held = list(idrid_samples(args.data, "test", 100, 0))
    rows = []

    def show(name: str, path: Path) -> None:
        report = judge(args.onnx, path, held, {}, threads=None)
        a, lesion = report.agreement, next(c for c in report.checks if c.name == "mean lesion Dice vs reference")
        row = {"candidate": name, "grade": a.grade_agreement, "referable": a.referable_agreement,
               "dice_all_pixels": a.lesions["mean_dice"], "dice_decided": a.lesions["decided_mean_dice"],
               "near_tie_share": a.lesions["near_tie_share"], "refused_all_pixels": a.lesions["mean_dice"] < 0.95,
               "refused_decided": not lesion.passed, "refused": not report.passed}
        rows.append(row)
        print(f"{name:44s} grade {row['grade']:.3f} ref {row['referable']:.3f} Dice all {row['dice_all_pixels']:.3f} "
              f"decided {row['dice_decided']:.3f}  lesion check refuses: all-pixel {row['refused_all_pixels']!s:5} "
              f"decided {row['refused_decided']!s:5}  gate refuses {row['refused']}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        show("faithful INT8", args.int8)
        rng = np.random.default_rng(0)
        for rel in (0.02, 0.05, 0.10):
            model = onnx.load(str(args.onnx))
            for init in model.graph.initializer:
                w = numpy_helper.to_array(init)
                if w.ndim == 4:
                    noisy = w + rng.standard_normal(w.shape).astype(w.dtype) * np.float32(rel * w.std())
                    init.CopyFrom(numpy_helper.from_array(noisy.astype(w.dtype), init.name))
            path = Path(tmp) / f"noise{rel}.onnx"
            onnx.save(model, str(path))
            show(f"FP32 weights + {rel:.0%} noise", path)
        base = onnx.load(str(args.int8))
        quantizers = [n for n in base.graph.node if n.op_type == "QuantizeLinear"]
        for index in range(0, len(quantizers), args.every):
            for factor in (0.25, 4.0):
                model = copy.deepcopy(base)
                inits = {i.name: i for i in model.graph.initializer}
                node = [n for n in model.graph.node if n.op_type == "QuantizeLinear"][index]
                scale = inits[node.input[1]]
                scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
                path = Path(tmp) / f"scale{index}-{factor}.onnx"
                onnx.save(model, str(path))
                show(f"scale x{factor:g} at {node.input[0][:30]}", path)
    broken = rows[1:]
    print(f"\nharmful candidates refused by the lesion check: all-pixel {sum(r['refused_all_pixels'] for r in broken)}, "
          f"decided {sum(r['refused_decided'] for r in broken)}; by the whole gate {sum(r['refused'] for r in broken)} "
          f"of {len(broken)}; faithful model passes: {not rows[0]['refused']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
