"""Per-eye and per-patient verdicts, the HTML reports, and how a real browser renders and prints them."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from drtrt.errors import ConfigError, DataError
from drtrt.runtime.consistency import heads_disagree
from drtrt.clinic.patients import Assignment, normalise_eye, read_patient_list, safe_patient_id, validate_patient_id
from drtrt.clinic.verdicts import HUMAN_READ, INCOMPLETE, NOT_PHOTOGRAPHED, REFER, REFER_URGENT, RESCREEN, UNGRADABLE, patient_verdicts
from drtrt.task import TaskSpec
from drtrt.clinic.reports import gradable_share, patients_csv, summary_csv
from drtrt.clinic.session import screen_images
from drtrt.clinic.store import SessionRow


def row(patient, eye, status, grade=None, name="x.jpg", lesions=None) -> SessionRow:
    record = {} if grade is None else {"grade": grade, "referable": grade >= 2, "grade_name": str(grade),
                                       "probabilities": [0.2] * 5,
                                       "lesions": {c: {"count": 3, "area_px": 900, "area_fov_pct": pct}
                                                   for c, pct in (lesions or {}).items()}}
    return SessionRow(f"/c/{name}", "a" * 64, patient, eye, status, None if status == "graded" else "why", record)


@pytest.mark.parametrize("rows, verdict, eyes", [
    ([row("P", "right", "graded", 0), row("P", "left", "graded", 1)], RESCREEN, {"right": RESCREEN, "left": RESCREEN}),
    ([row("P", "right", "graded", 2), row("P", "left", "ungradable")], REFER, {"right": REFER, "left": UNGRADABLE}),
    ([row("P", "right", "graded", 0), row("P", "left", "ungradable")], UNGRADABLE,
     {"right": RESCREEN, "left": UNGRADABLE}),
    # a retake of the left eye that worked makes the eye gradable
    ([row("P", "right", "graded", 0), row("P", "left", "ungradable"), row("P", "left", "graded", 1)], RESCREEN,
     {"right": RESCREEN, "left": RESCREEN}),
    ([row("P", "right", "graded", 4), row("P", "right", "graded", 0), row("P", "left", "error")], REFER_URGENT,
     {"right": REFER_URGENT, "left": UNGRADABLE}),
    # the right eye not photographed yet: "take it", never "ungradable"; the visit is incomplete
    ([row("P", "left", "graded", 0)], INCOMPLETE, {"right": NOT_PHOTOGRAPHED, "left": RESCREEN}),
    ([row("P", "left", "graded", 2)], REFER, {"right": NOT_PHOTOGRAPHED, "left": REFER}),
    ([row("P", "left", "graded", 3)], REFER_URGENT, {"right": NOT_PHOTOGRAPHED, "left": REFER_URGENT}),
    ([row("P", "left", "ungradable")], UNGRADABLE, {"right": NOT_PHOTOGRAPHED, "left": UNGRADABLE}),
    # 31 % of the field painted as soft exudate next to "no referable DR": a human reads it
    ([row("P", "right", "graded", 0, lesions={"SE": 31.0}), row("P", "left", "graded", 0)], HUMAN_READ,
     {"right": HUMAN_READ, "left": RESCREEN}),
    ([row("P", "right", "graded", 1, lesions={"HE": 0.8, "EX": 0.5}), row("P", "left", "graded", 0)], HUMAN_READ,
     {"right": HUMAN_READ, "left": RESCREEN}),
    ([row("P", "right", "graded", 1, lesions={"MA": 0.3, "HE": 0.4}), row("P", "left", "graded", 0)], RESCREEN,
     {"right": RESCREEN, "left": RESCREEN}),
    ([row("P", "right", "graded", 2, lesions={"HE": 8.0, "EX": 4.0}), row("P", "left", "graded", 0, lesions={"SE": 9})],
     REFER, {"right": REFER, "left": HUMAN_READ}),
    ([row("P", None, "graded", 1)], RESCREEN, {"unspecified": RESCREEN}),
    ([row("P", "right", "graded", 0), row("P", "left", "duplicate")], UNGRADABLE,
     {"right": RESCREEN, "left": UNGRADABLE}),
])
def test_verdicts(rows, verdict, eyes):
    (result,) = patient_verdicts(rows)
    assert result.verdict == verdict
    assert {e: v.verdict for e, v in result.eyes.items()} == eyes
    assert list(result.eyes)[0] in ("right", "unspecified")                    # right eye first (OD, OS)


def test_heads_disagree_says_why_and_warns_in_the_row():
    assert heads_disagree({"grade": 0, "referable": False, "lesions": {}}) is None
    assert "31% of the field as SE" in heads_disagree({"grade": 0, "referable": False,
                                                       "lesions": {"SE": {"area_fov_pct": 31.0}}})
    both = {"HE": {"area_fov_pct": 1.0}, "EX": {"area_fov_pct": 0.5}}
    assert "1.5% of the field" in heads_disagree({"grade": 1, "referable": False, "lesions": both})
    assert heads_disagree({"grade": 3, "referable": True, "lesions": {"HE": {"area_fov_pct": 20.0}}}) is None
    graded = row("P", "right", "graded", 0, lesions={"SE": 31.0})
    assert any("human must read" in w for w in graded.warnings)
    assert "human must read" in graded.to_dict()["warnings"][0]


def test_rows_without_patient_have_no_verdict_and_share_counts_judged_images():
    rows = [row(None, None, "graded", 0), row(None, None, "ungradable"), row(None, None, "duplicate"),
            row(None, None, "error")]
    assert patient_verdicts(rows) == []
    assert gradable_share(rows) == (1, 3)
    csv = summary_csv(rows, [], TaskSpec()).splitlines()
    assert len(csv) == 5 and csv[0].startswith("file,path,sha256,patient,visit,eye,status")


def test_a_patient_id_a_spreadsheet_would_run_is_written_as_text():
    rows = [row("=HYPERLINK(1)", "right", "graded", 0), row("@SUM(1)", "left", "graded", 2)]
    verdicts = patient_verdicts(rows)
    summary = list(csv.DictReader(summary_csv(rows, verdicts, TaskSpec()).splitlines()))
    patients = list(csv.DictReader(patients_csv(verdicts).splitlines()))
    assert [r["patient"] for r in summary] == ["'=HYPERLINK(1)", "'@SUM(1)"]
    assert sorted(r["patient"] for r in patients) == ["'=HYPERLINK(1)", "'@SUM(1)"]


@pytest.mark.parametrize("raw, safe", [("P-001", "P-001"), ("../../etc/passwd", "etc_passwd-"), ("a b", "a_b-"),
                                       ("..", "patient-"), ("Ünal", "nal-"), ("x" * 64, "x" * 48 + "-")])
def test_safe_patient_ids(raw, safe):
    out = safe_patient_id(raw)
    assert out.startswith(safe) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", out) and ".." not in out
    assert len(out) <= 57


def test_patient_id_and_eye_validation(tmp_path):
    assert validate_patient_id("  Ünal 7 ") == "Ünal 7" and validate_patient_id("") is None
    for bad in ("x" * 65, "a\nb", "a\x00b"):
        with pytest.raises(ConfigError):
            validate_patient_id(bad)
    assert [normalise_eye(e) for e in ("L", "os", "Right", "OD", "")] == ["left", "left", "right", "right", None]
    with pytest.raises(ConfigError, match="left or right"):
        normalise_eye("both")
    patient_list = tmp_path / "m.csv"
    patient_list.write_text("\ufefffile,patient,eye\nimg/a.jpg,P1,OD\n/abs/b.jpg,P2,\n")
    assert read_patient_list(patient_list) == {(tmp_path / "img" / "a.jpg").resolve(): Assignment("P1", "right"),
                                       Path("/abs/b.jpg"): Assignment("P2", None)}
    patient_list.write_text("file,patient,eye\na.jpg,P1,up\n")
    with pytest.raises(DataError, match="line 2"):
        read_patient_list(patient_list)
    patient_list.write_text("name,id\na.jpg,P1\n")
    with pytest.raises(DataError, match="columns file, patient"):
        read_patient_list(patient_list)


@pytest.fixture(scope="module")
def patient_session(tiny_onnx, photo_root, tmp_path_factory):
    images = sorted((photo_root / "B. Disease Grading" / "1. Original Images").glob("*/*.jpg"))[:2]
    out = tmp_path_factory.mktemp("report") / "session"
    grey = out.parent / "grey.png"
    import cv2
    import numpy as np
    cv2.imwrite(str(grey), np.full((300, 400, 3), 128, np.uint8))
    assignments = {images[0].resolve(): Assignment("R-1", "right"), images[1].resolve(): Assignment("R-1", "left"),
                   grey.resolve(): Assignment("R-1", "left")}
    screen_images([*images, grey], tiny_onnx, out, assignments=assignments)
    return out


def test_patient_report_is_self_contained(patient_session):
    page = next((patient_session / "reports").glob("patient-R-1-visit-*.html")).read_text()
    assert page.startswith("<!DOCTYPE html>") and "@page { size: A4" in page
    assert page.count("data:image/jpeg;base64,") == 3                  # two overlays and the ungradable picture
    assert not re.search(r'(src|href)="(?!data:)', page)               # nothing outside the file
    assert "<script" not in page
    assert "Right eye (OD)" in page and "Left eye (OS)" in page and "blank image" in page
    summary = (patient_session / "summary.html").read_text()
    assert "2 of 3 (67%)" in summary and re.search(r'href="reports/patient-R-1-visit-\d+\.html"', summary)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("chromium is not installed (apt-get install -y chromium); the browser rendering is not checked")


def _browser(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def test_report_renders_and_prints_on_a4_in_a_real_browser(patient_session, tmp_path):
    page = next((patient_session / "reports").glob("patient-R-1-visit-*.html"))
    pdf, png = tmp_path / "report.pdf", tmp_path / "report.png"
    _browser("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri(), profile=tmp_path / "profile")
    data = pdf.read_bytes()
    boxes = {tuple(round(float(v)) for v in m) for m in
             re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", data)}
    assert boxes == {(595, 842)}, boxes                                 # A4 in points, every page
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages == 1, pages                                            # one patient, one sheet
    _browser(f"--screenshot={png}", "--window-size=794,1123", page.as_uri(), profile=tmp_path / "profile")
    import cv2
    shot = cv2.imread(str(png))
    assert shot is not None and shot.shape[:2] == (1123, 794)
    assert shot.std() > 20 and (shot < 250).mean() > 0.1                # pictures and text drawn, not a blank page


def test_overlay_rings_the_optic_disc():
    import numpy as np

    from drtrt.preprocess import FieldOfView, Geometry, OpticDisc
    from drtrt.runtime.postprocess import DISC_COLOUR, overlay

    task = TaskSpec()
    rgb = np.full((400, 600, 3), 40, np.uint8)
    geometry = Geometry.from_fov(FieldOfView(299.5, 199.5, 190.0, True), (800, 1200), 64)   # rgb at half scale
    labels = np.zeros((64, 64), np.int64)
    disc = OpticDisc(x=900.0, y=400.0, radius=40.0, dx=0.6, dy=0.0, score=6.0, centred="macula", eye="right")
    plain, marked = overlay(rgb, labels, geometry, task), overlay(rgb, labels, geometry, task, disc=disc)
    ring = (marked != plain).any(axis=2)
    ys, xs = np.nonzero(ring)
    assert ring[200, 450] and abs(xs.mean() - 450) < 3 and abs(ys.mean() - 200) < 3     # centred on the disc
    assert xs.max() - xs.min() == pytest.approx(40, abs=8)                 # radius 40 at half scale, plus the line
    assert (marked[ring] == DISC_COLOUR).all(axis=1).mean() > 0.3                 # drawn in the disc's colour
