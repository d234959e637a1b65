"""Screening sessions: bad input never stops one, results at the original resolution, re-runs resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drtrt.errors import ConfigError
from drtrt.clinic.patients import Assignment
from drtrt.runtime.predictor import Predictor
from drtrt.clinic.session import ScreeningSession, SessionConfig, screen_images
from drtrt.clinic.store import SessionStore


def grading_images(photo_root: Path) -> list[Path]:
    return sorted((photo_root / "B. Disease Grading" / "1. Original Images").glob("*/*.jpg"))


@pytest.fixture(scope="module")
def bad_inputs(photo_root, tmp_path_factory) -> dict[str, Path]:
    """One file per kind of input a clinic produces, good and bad, under a folder with a space."""
    folder = tmp_path_factory.mktemp("inputs") / "camera export"
    folder.mkdir()
    good = grading_images(photo_root)[0]
    rgb = cv2.cvtColor(cv2.imread(str(good)), cv2.COLOR_BGR2RGB)
    files = {"good": folder / "good.jpg", "zero": folder / "zero.jpg", "truncated": folder / "truncated.jpg",
             "text": folder / "notes.jpg", "grey": folder / "grey.png", "rgba": folder / "rgba.png",
             "16bit": folder / "deep16.png", "exif": folder / "rotated.jpg", "unicode": folder / "Ünïcode fundus ü.jpg",
             "duplicate": folder / "copy of good.jpg"}
    shutil.copy(good, files["good"])
    files["zero"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[:3000])
    files["text"].write_text("patient list, not an image")
    cv2.imwrite(str(files["grey"]), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(files["rgba"]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(files["16bit"]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6                                  # stored turned 90° left; viewers turn it back
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb))).save(files["exif"], quality=95, exif=exif)
    shutil.copy(grading_images(photo_root)[1], files["unicode"])
    shutil.copy(good, files["duplicate"])
    return files


EXPECTED = {"good": "graded", "zero": "error", "truncated": "error", "text": "error", "grey": "ungradable",
            "rgba": "graded", "16bit": "graded", "exif": "graded", "unicode": "graded", "duplicate": "duplicate"}
REASONS = {"zero": "empty file", "truncated": "truncated", "text": "not an image drtrt can read", "grey": "greyscale",
           "duplicate": "same image as good.jpg"}


@pytest.fixture(scope="module")
def bad_session(tiny_onnx, bad_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("session") / "out"
    order = list(bad_inputs)
    rows = screen_images([bad_inputs[k] for k in order], tiny_onnx, out,
                         default=Assignment("P-1", "left"), cfg=SessionConfig(batch_size=3)).rows
    return out, dict(zip(order, rows))


def test_every_bad_input_gets_a_status_and_reason(bad_session):
    out, rows = bad_session
    assert {k: r.status for k, r in rows.items()} == EXPECTED
    for key, fragment in REASONS.items():
        assert fragment in rows[key].reason, (key, rows[key].reason)
    for key, row in rows.items():
        if row.status != "graded":
            assert row.reason and row.record.get("grade") is None and row.to_dict()["grade"] is None, key


def test_every_outcome_carries_a_stable_code(bad_session):
    _, rows = bad_session
    codes = {k: r.record.get("code") for k, r in rows.items() if r.status in ("graded", "ungradable", "error")}
    assert codes["grey"] == "greyscale" and codes["truncated"] == codes["text"] == "file_damaged"
    assert codes["good"] is None and rows["good"].record["field_of_view"]["found"]
    assert rows["good"].record["disc"]["eye"] in ("right", "left", None)


def test_an_eye_recorded_against_its_optic_disc_is_flagged_everywhere(tiny_onnx, photo_root, tmp_path):
    """Screened as the eye the disc does not show: the record, the summary, the report, the CLI
    and the watch log all carry the warning; recorded again as the right eye, it goes away."""
    from drtrt.clinic.watch import log_line

    image = tmp_path / "eye.jpg"
    shutil.copy(grading_images(photo_root)[0], image)
    first = screen_images([image], tiny_onnx, tmp_path / "probe").rows[0]
    shown = first.record["disc"]["eye"]
    assert first.status == "graded" and shown in ("right", "left") and not first.warnings
    other = "left" if shown == "right" else "right"
    out = tmp_path / "s"
    row = screen_images([image], tiny_onnx, out, default=Assignment("P-7", other)).rows[0]
    assert len(row.warnings) == 1 and f"recorded as the {other} eye" in row.warnings[0]
    assert row.to_dict()["warnings"] == row.warnings and "eye mismatch" in log_line(row)
    assert "eye mismatch" in (out / "summary.csv").read_text() and "eye mismatch" in (out / "summary.html").read_text()
    assert "eye mismatch" in next((out / "reports").glob("patient-P-7-visit-*.html")).read_text()
    proc = subprocess.run([sys.executable, "-m", "drtrt.cli", "screen", image, "--model", tiny_onnx, "--eye", other,
                           "--patient", "P-8"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "eye mismatch" in proc.stderr, proc.stderr
    fixed = screen_images([image], tiny_onnx, out, default=Assignment("P-7", shown)).rows[0]
    assert fixed.eye == shown and not fixed.warnings and "eye mismatch" not in (out / "summary.csv").read_text()


def test_results_are_at_the_original_resolution(bad_session, bad_inputs):

    out, rows = bad_session
    record = rows["good"].record
    h, w = cv2.imread(str(bad_inputs["good"])).shape[:2]
    assert record["original_size"] == [h, w]
    mask = np.array(Image.open(out / record["mask"]))
    assert mask.shape == (h, w) and record["mask_scale"] == 1 and mask.max() <= 4
    for cls, code in enumerate(("EX", "SE", "MA", "HE"), start=1):
        area = record["lesions"][code]["area_px"]
        assert abs(int((mask == cls).sum()) - area) <= max(8, 0.05 * area), code
    overlay = cv2.imread(str(out / record["overlay"]))
    k = record["overlay_scale"]                                     # drawn on the reduced decode
    assert k in (1, 2, 4, 8) and overlay.shape[1] == -(-w // k) and overlay.shape[0] > -(-h // k)   # + legend band
    assert {"decode", "preprocess", "quality", "inference", "postprocess", "write", "total"} <= set(record["timings_ms"])
    assert sum(record["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert record["referable"] == (record["grade"] >= 2)


def test_exif_rotation_is_applied(bad_session, bad_inputs):
    out, rows = bad_session
    assert rows["exif"].record["original_size"] == rows["good"].record["original_size"]   # upright again
    mask = Image.open(out / rows["exif"].record["mask"])
    assert (mask.height, mask.width) == tuple(rows["good"].record["original_size"])


def test_outputs_have_safe_names_and_session_files(bad_session):
    out, rows = bad_session
    overlay = rows["unicode"].record["overlay"]
    assert overlay.isascii() and " " not in overlay and (out / overlay).is_file()
    for name in ("session.db", "results.jsonl", "summary.csv", "summary.html", "patients.csv"):
        assert (out / name).is_file(), name
    assert len(list((out / "reports").glob("patient-P-1-visit-*.html"))) == 1          # P-1's one visit
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(EXPECTED) and json.loads(lines[0])["patient"] == "P-1"
    assert not list(out.rglob(".*.tmp-*"))


def test_rerun_screens_nothing_twice(bad_session, bad_inputs, tiny_onnx):
    out, first = bad_session
    with SessionStore(out / "session.db") as store:
        before = {r["sha256"]: (r["run_id"], r["screened_at"]) for r in store.db.execute("SELECT * FROM images")}
    with ScreeningSession(tiny_onnx, out) as session:
        again = session.screen(list(bad_inputs.values()), default=Assignment("P-1", "left"))
        assert session.screened == 0
    assert [r.status for r in again] == list(EXPECTED.values())
    with SessionStore(out / "session.db") as store:
        after = {r["sha256"]: (r["run_id"], r["screened_at"]) for r in store.db.execute("SELECT * FROM images")}
        assert after == before and store.count("runs") == 2 and store.integrity_check() == "ok"


def test_a_changed_file_is_screened_again(tiny_onnx, photo_root, tmp_path):
    images = grading_images(photo_root)
    target = tmp_path / "eye.jpg"
    shutil.copy(images[0], target)
    first = screen_images([target], tiny_onnx, tmp_path / "s").rows[0]
    shutil.copy(images[1], target)                        # the camera overwrote it
    second = screen_images([target], tiny_onnx, tmp_path / "s").rows[0]
    assert first.sha256 != second.sha256 and second.status == "graded"
    with SessionStore(tmp_path / "s" / "session.db") as store:
        assert store.count("images") == 2 and store.count("files") == 1


def test_patient_ids_cannot_escape_the_session_folder(tiny_onnx, photo_root, tmp_path):
    out = tmp_path / "deep" / "session"
    image = grading_images(photo_root)[0]
    evil = '../../<script>alert(1)</script>'
    screen_images([image], tiny_onnx, out, default=Assignment(evil, "right"))
    created = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(out in p.parents for p in created), created
    reports = list((out / "reports").iterdir())
    assert len(reports) == 1 and reports[0].name.startswith("patient-script_alert_1_script-")
    page = reports[0].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_model_answering_nan_grades_nobody_and_the_verdict_is_not_calm(tiny_onnx, photo_root, tmp_path):
    """A damaged model file (NaN weights) would argmax to grade 0, "no DR": the photo must be an error
    instead, not judged, and the eye's verdict must send the patient to a person."""
    import onnx
    from onnx import numpy_helper

    from drtrt.clinic.verdicts import RESCREEN, patient_verdicts

    proto = onnx.load(str(tiny_onnx))
    first = next(i for i in proto.graph.initializer if numpy_helper.to_array(i).dtype == np.float32
                 and numpy_helper.to_array(i).ndim == 4)
    first.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(first), np.nan), first.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(proto, str(damaged))
    image = sorted(photo_root.rglob("*.jpg"))[0]
    row = screen_images([image], damaged, tmp_path / "s", default=Assignment("P-1", "right")).rows[0]
    assert row.status == "error" and row.record.get("grade") is None and row.record.get("referable") is None
    assert "NOT judged" in row.reason and "NaN" in row.reason
    (verdict,) = patient_verdicts([row])
    assert verdict.eyes["right"].verdict != RESCREEN and verdict.verdict != RESCREEN


def test_a_session_is_tied_to_its_model(tiny_onnx, photo_root, tmp_path):
    import onnx

    other = tmp_path / "other.onnx"
    proto = onnx.load(str(tiny_onnx))
    proto.doc_string = "another model"
    onnx.save(proto, str(other))
    image = grading_images(photo_root)[0]
    screen_images([image], tiny_onnx, tmp_path / "s")
    with pytest.raises(ConfigError, match="was screened with model model.onnx"):
        screen_images([image], other, tmp_path / "s")


def test_one_process_per_session_folder(tiny_onnx, tmp_path):
    with ScreeningSession(tiny_onnx, tmp_path / "s"):
        with pytest.raises(ConfigError, match="in use by another drtrt process"):
            ScreeningSession(tiny_onnx, tmp_path / "s")


def test_batched_and_single_results_agree(tiny_onnx, photo_root):
    images = grading_images(photo_root)[:3]
    with Predictor(tiny_onnx, batch_size=1) as one, Predictor(tiny_onnx, batch_size=3) as three:
        singles = [one.screen(p) for p in images]
        batched = three.screen_batch(images)
    assert [r.batch_size for r in batched] == [3, 3, 3] and [r.batch_size for r in singles] == [1, 1, 1]
    for a, b in zip(singles, batched):
        assert a.grade == b.grade and np.allclose(a.probabilities, b.probabilities, atol=1e-5)
        assert {k: v.count for k, v in a.lesions.items()} == {k: v.count for k, v in b.lesions.items()}


def test_in_memory_session_writes_nothing(tiny_onnx, photo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = screen_images(grading_images(photo_root)[:2], tiny_onnx, None).rows
    assert [r.status for r in rows] == ["graded", "graded"] and not list(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc (Linux)")
def test_huge_image_keeps_memory_bounded(tiny_onnx, tmp_path):
    """A 12000x9000 JPEG: decoded at 1/8 scale, mask at 1/2, so peak memory grows far less than one
    full-resolution decode (324 MB)."""
    huge = tmp_path / "huge 12000x9000.jpg"
    code = ("import cv2, numpy as np, sys\n"
            "from drtrt.data.synthetic_fundus import render_fundus\n"
            "small, _ = render_fundus(np.random.default_rng(5), 1500, 1125, grade=3)\n"
            "img = cv2.resize(small, (12000, 9000), interpolation=cv2.INTER_NEAREST)\n"
            "cv2.imwrite(sys.argv[1], cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])\n"
            "cv2.imwrite(sys.argv[2], cv2.cvtColor(small, cv2.COLOR_RGB2BGR))\n")
    small = tmp_path / "small.jpg"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, "-c", code, str(huge), str(small)], check=True, timeout=180, env=env)
    # VmHWM is this process's own peak (ru_maxrss would include the parent's, inherited through exec)
    probe = ("import json, re, sys\n"
             "from drtrt.clinic.session import screen_images\n"
             "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024\n"
             "a = screen_images([sys.argv[2]], sys.argv[1], sys.argv[4]).rows[0]; base = hwm()\n"
             "b = screen_images([sys.argv[3]], sys.argv[1], sys.argv[4]).rows[0]\n"
             "print(json.dumps({'base': base, 'peak': hwm(), 'status': b.status, 'reason': b.reason, "
             "'size': b.record.get('original_size'), 'mask_scale': b.record.get('mask_scale')}))\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(tiny_onnx), str(small), str(huge), str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["size"] == [9000, 12000] and result["status"] == "graded", result
    assert result["mask_scale"] == 2, result
    assert result["peak"] - result["base"] < 150, result          # MB; one full-resolution decode is 324 MB


def test_mask_of_a_huge_original_is_written_at_a_reduced_scale():
    from drtrt.runtime.postprocess import lesion_mask_original
    from drtrt.preprocess import FieldOfView, Geometry

    geometry = Geometry.from_fov(FieldOfView(5999.5, 4499.5, 4400, True), (9000, 12000), 64)
    labels = np.zeros((64, 64), np.uint8)
    labels[30:34, 30:34] = 3
    mask, scale = lesion_mask_original(labels, geometry)
    assert scale == 2 and mask.shape == (4500, 6000)
    full, one = lesion_mask_original(labels, geometry, max_pixels=10**9)
    assert one == 1 and abs(int((full == 3).sum()) - 4 * int((mask == 3).sum())) < 0.02 * (full == 3).sum()


def test_screen_cli_with_patient_and_patient_list(tiny_onnx, photo_root, tmp_path):
    images = grading_images(photo_root)[:3]
    patient_list = tmp_path / "visit.csv"
    patient_list.write_text("file,patient,eye\n" + "".join(f"{p},{pid},{eye}\n" for p, pid, eye in
                                                      zip(images, ("A1", "A1", "B2"), ("OD", "OS", "left"))))
    proc = subprocess.run([sys.executable, "-m", "drtrt.cli", "screen", "--patients", patient_list, "--model", tiny_onnx,
                           "--out", tmp_path / "s", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["patient"], r["eye"]) for r in rows] == [("A1", "right"), ("A1", "left"), ("B2", "left")]
    patients = (tmp_path / "s" / "patients.csv").read_text().splitlines()
    assert patients[0].startswith("patient,visit,date,verdict") and len(patients) == 3
    assert "right eye not photographed" in patients[2]          # B2 has only a left-eye image
    bad = subprocess.run([sys.executable, "-m", "drtrt.cli", "screen", images[0], "--model", tiny_onnx,
                          "--eye", "middle"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "eye must be left or right" in bad.stderr and "Traceback" not in bad.stderr
