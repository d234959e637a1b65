"""`drtrt demo`: every stage at toy scale, and the real demo model's parity in every precision."""

import io
import json

import pytest
from rich.console import Console

from drtrt.cli.common import progress
from drtrt.cli.demo import DemoConfig, run_demo

pytestmark = pytest.mark.numeric
INT8_GRADE, INT8_DICE = 0.97, 0.95   # the gate's own thresholds; the measured figures are in the docstring below


def test_demo_runs_every_stage(tmp_path):
    cfg = DemoConfig(grading=12, segmentation=6, synth_size=512, image_size=64, width=0.0625, epochs=1,
                     batch_size=4, screen_count=2)
    console = Console(record=True, width=120)
    metrics = run_demo(tmp_path, console=console, progress_factory=progress, cfg=cfg)
    for path in ("data/synthetic-truth.csv", "run/best.pt", "run/history.csv", "model.onnx", "metrics.json",
                 "screening/results.jsonl"):
        assert (tmp_path / path).exists(), path
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written.keys() == metrics.keys() and written["accuracy"] == metrics["accuracy"]
    assert {"accuracy", "majority_rate", "mean_dice"} <= set(metrics)
    stages = metrics["stage_seconds"]                         # issue 26: where the demo's time goes
    assert list(stages) == ["synthesis", "training", "export", "evaluation", "screening"]
    assert all(s >= 0 for s in stages.values()) and abs(sum(stages.values()) - metrics["seconds"]) <= 0.3
    rows = (tmp_path / "screening" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2 and all(json.loads(r)["status"] == "graded" for r in rows)
    text = console.export_text()
    assert "not for clinical use" in text.lower() and "held-out" in text and "training" in text[text.index("held-out"):]
    assert "grade probabilities not calibrated" in text        # 2 graded validation images at this scale


@pytest.mark.slow
def test_demo_model_passes_its_own_gates_and_parity_in_every_precision(tmp_path):
    """Issue 20: the README's path on the demo's own model with the defaults (width 0.125, 256², 30 epochs;
    ~4 min). ``drtrt fp16`` and ``drtrt calibrate --onnx model.onnx --data data`` pass their gates on
    100 held-out images (GateError would fail this test), and `drtrt parity` passes FP32, FP16 and INT8
    against the checkpoint on all 129 test images. Measured over the demo's seeds 0-4 on this machine
    kind (docs/reproducibility.md): every seed passes; INT8 grade agreement 0.98-1.00, referable 1.00,
    lesion Dice on decided pixels 0.966-0.995. Not every CPU: with AVX2 kernels seed 0's INT8 model
    flips three decided grades and the gate refuses it, as it should."""
    from typer.testing import CliRunner

    from drtrt.calibration.api import CalibrateConfig, calibrate, convert_fp16_checked
    from drtrt.cli import app

    run_demo(tmp_path, console=Console(file=io.StringIO()), progress_factory=progress)
    data, fp32 = tmp_path / "data", tmp_path / "model.onnx"
    from drtrt.model_info import grade_calibration
    from drtrt.runtime.registry import load_runner

    with load_runner(fp32) as runner:                            # issue 22: the demo's model is calibrated
        assert grade_calibration(runner.info).n == 16
    fp16 = convert_fp16_checked(fp32, tmp_path / "model.fp16.onnx", data)
    int8 = calibrate(CalibrateConfig(onnx=fp32, out=tmp_path / "model.int8.onnx", data=data))
    gate = int8.report.agreement
    assert int8.report.passed and gate.n_images == 100 and not any("judged only" in w for w in int8.warnings)
    assert gate.grade_agreement >= INT8_GRADE and gate.referable_agreement >= 0.99
    assert gate.lesions["decided_mean_dice"] >= INT8_DICE
    result = CliRunner().invoke(app, ["parity", "--reference", str(tmp_path / "run" / "best.pt"),
                                      *(a for m in (fp32, fp16.path, int8.path) for a in ("--candidate", str(m))),
                                      "--data", str(data), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)
    assert [c["precision"] for c in parity["candidates"]] == ["fp32", "fp16", "int8"]
    assert all(c["passed"] for c in parity["candidates"]) and parity["passed"]
    int8_agreement = parity["candidates"][2]["agreement"]
    assert int8_agreement["n_images"] == 129 and int8_agreement["grade_agreement"] >= INT8_GRADE
    assert int8_agreement["logits"]["lesion_logits"]["max"] > 0.05      # really quantised, not a copy of FP32
