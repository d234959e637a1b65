"""The accuracy check travels with the model (``drtrt.gate``) and every command that screens, serves or
bundles a model refuses one whose check failed or never ran, unless ``--allow-unchecked-model``; then
the session, its reports, the DICOM SR and FHIR say so (issue 22, defect 5).

Models are the conftest's tiny one: its FP32 export, an FP16 conversion and a quick INT8 calibration
(8 images, no bias correction), judged on the few test images of ``photo_root`` with thresholds set so
the verdict is certain either way: all agreement limits at 0 to pass, ``logit_rel_delta=0`` (any change
of a logit at all) to fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from drtrt.calibration.graph import read_info
from drtrt.errors import GateError
from drtrt.fileio import sha256_file
from drtrt.model_info import ModelInfo
from drtrt.preprocess import PreprocessSpec

GATE_KEY = "gate"          # drtrt.gate (the names of drtrt.model_info are imported where used, so every test
                           # here runs, and fails, on a drtrt from before the gate travelled with the model)

PASS = ["--min-agreement", "0", "--min-dice", "0", "--threshold", "referable_agreement=0",
        "--threshold", "metric_drop=1"]
FAIL = ["--threshold", "logit_rel_delta=0"]


def drtrt(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drtrt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def gate_of(path: Path) -> dict:
    return json.loads(dict(read_info(onnx.load(str(path), load_external_data=False)).extra)[GATE_KEY])


@pytest.fixture(scope="module")
def image(photo_root) -> Path:
    return sorted((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def failed(tiny_onnx, photo_root, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``drtrt fp16`` whose gate fails: exit 4, the model renamed *.rejected.onnx."""
    out = tmp_path_factory.mktemp("failed") / "model.fp16.onnx"
    proc = drtrt("fp16", "--onnx", tiny_onnx, "--out", out, "--data", photo_root, "--holdout", 4, *FAIL)
    return proc, out.with_name("model.fp16.rejected.onnx")


# -- the record itself ---------------------------------------------------------------------------------

def test_the_gate_record_round_trips_through_the_metadata_and_is_not_inherited():
    from drtrt.model_info import gate_record, gate_status, require_checked

    record = gate_record("failed", "fp32", "a" * 64, "grade agreement 90% (needs >= 97%)")
    info = ModelInfo(PreprocessSpec(size=64), precision="int8", extra=((GATE_KEY, record),))
    back = ModelInfo.from_metadata(info.to_metadata())
    assert back.to_metadata()[f"drtrt.{GATE_KEY}"] == record
    loaded = json.loads(record)
    assert loaded["status"] == "failed" and loaded["reference_sha256"] == "a" * 64 and loaded["date"].endswith("+00:00")
    status = gate_status(back)
    assert status.status == "failed" and "FAILED its accuracy check against its FP32 reference" in status.reason
    assert "grade agreement 90%" in status.reason
    # a derived model is another model: the check of its source says nothing about it
    assert gate_status(back.derive("int8", source_sha256="b" * 64)).status == "never_checked"
    assert gate_status(ModelInfo(PreprocessSpec(size=64))).status == "never_checked"
    assert gate_status(ModelInfo(PreprocessSpec(size=64), extra=((GATE_KEY, "{not json"),))).status == "unchecked"
    with pytest.raises(GateError, match="FAILED its accuracy check.*--allow-unchecked-model"):
        require_checked(back, "m.onnx", allow=False)
    assert require_checked(back, "m.onnx", allow=True).status == "failed"
    with pytest.raises(ValueError):
        gate_record("maybe", "fp32")


def test_export_records_its_check_against_pytorch(tiny_onnx):
    """The FP32 export is the reference of every FP16/INT8 model; its own check is the one against PyTorch."""
    from drtrt.model_info import gate_status

    gate = gate_of(tiny_onnx)
    info = read_info(onnx.load(str(tiny_onnx), load_external_data=False))
    assert gate["status"] == "passed" and gate["against"] == "pytorch"
    assert gate["reference_sha256"] == info.checkpoint_sha256 and "max |Δ|" in gate["checks"]
    assert gate_status(info).passed


# -- a failed model ------------------------------------------------------------------------------------

def test_a_failed_model_carries_failed_and_screening_refuses_it(failed, tiny_onnx, image):
    proc, rejected = failed
    assert proc.returncode == 4 and rejected.exists(), proc.stderr
    gate = gate_of(rejected)
    assert gate["status"] == "failed" and gate["against"] == "fp32" and gate["enforced"] is True
    assert gate["reference_sha256"] == sha256_file(tiny_onnx) and "FAIL" in gate["checks"]
    screen = drtrt("screen", image, "--model", rejected)
    assert screen.returncode == 4 and "Traceback" not in screen.stderr, screen.stdout + screen.stderr
    (line,) = error_lines(screen)
    assert "FAILED its accuracy check against its FP32 reference" in line and "--allow-unchecked-model" in line
    assert "graded" not in screen.stdout


def test_with_the_flag_a_failed_model_screens_and_every_report_says_so(failed, image, tmp_path):
    from drtrt.clinic.store import SessionStore
    from drtrt.integration.results import model_identity

    _, rejected = failed
    out = tmp_path / "session"
    proc = drtrt("screen", image, "--model", rejected, "--out", out, "--patient", "P1", "--allow-unchecked-model")
    assert proc.returncode in (0, 3), proc.stderr
    assert "FAILED its accuracy check" in proc.stderr and "used anyway" in proc.stderr
    headline = "THIS MODEL FAILED ITS ACCURACY CHECK against its reference"
    assert headline in (out / "summary.html").read_text()
    assert headline in next((out / "reports").glob("patient-*.html")).read_text()
    with SessionStore(out / "session.db") as store:
        meta = json.loads(store.meta()["model_gate"])
        assert meta["status"] == "failed" and meta["allowed"] is True
        assert headline in model_identity(store).statement       # what the DICOM SR and FHIR carry


def test_serving_and_bundling_refuse_a_failed_model(failed, tmp_path):
    _, rejected = failed
    triton = drtrt("export-triton", "--onnx", rejected, "--out", tmp_path / "repo")
    assert triton.returncode == 4 and not (tmp_path / "repo").exists(), triton.stderr
    (line,) = error_lines(triton)
    assert "serving it is refused" in line
    golden = tmp_path / "golden"
    golden.mkdir()
    (golden / "golden.json").write_text("{}")
    bundle = drtrt("bundle", "--model", rejected, "--golden", golden, "--out", tmp_path / "bundle", "--wheels", "none")
    assert bundle.returncode == 4 and not (tmp_path / "bundle").exists(), bundle.stderr
    (line,) = error_lines(bundle)
    assert "bundling it is refused" in line
    allowed = drtrt("bundle", "--model", rejected, "--golden", golden, "--out", tmp_path / "bundle", "--wheels", "none",
                    "--allow-unchecked-model")
    assert allowed.returncode == 0, allowed.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["model_gates"][rejected.name]["status"] == "failed"


# -- --no-gate -----------------------------------------------------------------------------------------

def test_no_gate_models_are_unchecked_or_failed_and_refused(tiny_onnx, photo_root, image, tmp_path):
    unchecked = tmp_path / "plain.fp16.onnx"
    proc = drtrt("fp16", "--onnx", tiny_onnx, "--out", unchecked, "--no-gate")        # no held-out images
    assert proc.returncode == 0 and gate_of(unchecked)["status"] == "unchecked", proc.stderr
    screen = drtrt("screen", image, "--model", unchecked)
    assert screen.returncode == 4 and "was not checked against its FP32 reference" in error_lines(screen)[0]
    failing = tmp_path / "failing.fp16.onnx"          # --no-gate: the check runs and fails, the file keeps its name
    proc = drtrt("fp16", "--onnx", tiny_onnx, "--out", failing, "--data", photo_root, "--holdout", 4, *FAIL,
                 "--no-gate")
    assert proc.returncode == 0 and failing.exists(), proc.stderr
    assert gate_of(failing)["status"] == "failed" and gate_of(failing)["enforced"] is False
    screen = drtrt("screen", image, "--model", failing, "--json")
    assert screen.returncode == 4 and "FAILED its accuracy check" in error_lines(screen)[0]


# -- a model that passed -------------------------------------------------------------------------------

def test_a_model_calibrate_passed_screens_without_the_flag(tiny_onnx, photo_root, image, tmp_path):
    out = tmp_path / "model.int8.onnx"
    proc = drtrt("calibrate", "--onnx", tiny_onnx, "--out", out, "--data", photo_root, "--images", 8, "--holdout", 4,
                 "--bias-correction", 0, *PASS)
    assert proc.returncode == 0, proc.stderr
    gate = gate_of(out)
    assert gate["status"] == "passed" and gate["reference_sha256"] == sha256_file(tiny_onnx)
    assert gate["images"] >= 1 and "PASS" in gate["checks"]
    screen = drtrt("screen", image, "--model", out, "--out", tmp_path / "session")
    assert screen.returncode in (0, 3) and "error:" not in screen.stderr, screen.stderr
    assert "ACCURACY CHECK" not in (tmp_path / "session" / "summary.html").read_text()
