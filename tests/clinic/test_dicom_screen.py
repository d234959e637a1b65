"""DICOM through screening: ``drtrt screen`` on a folder of DICOM files and ``drtrt watch`` on a camera
folder grade them, take patient and eye from the files, warn when the laterality contradicts the
optic disc, record the DICOM identifiers, and refuse a bad file with its code."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("pydicom", reason="DICOM needs the integration extra")

from dicom_files import bad_variants, op_image, sc_image, vl_image, write  # noqa: E402
from drtrt.preprocess import decode_image  # noqa: E402
from drtrt.runtime.predictor import Predictor  # noqa: E402
from drtrt.clinic.store import SessionStore  # noqa: E402
from drtrt.clinic.watch import WatchConfig, watch_folder  # noqa: E402

CODE = {"right": "R", "left": "L"}
OTHER = {"right": "left", "left": "right"}


def drtrt(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "drtrt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def sources(photo_root, tiny_onnx) -> list[tuple[Path, str]]:
    """(photo, the eye its optic disc shows) for the synthetic photos whose eye the disc tells."""
    paths = sorted((photo_root / "A. Segmentation" / "1. Original Images").glob("*/*.jpg"))
    with Predictor(tiny_onnx) as predictor:
        results = predictor.screen_batch(paths)
    found = [(p, r.disc.eye) for p, r in zip(paths, results) if r.status == "graded" and r.disc and r.disc.eye]
    assert len(found) >= 4, [(p.name, r.status, r.disc) for p, r in zip(paths, results)]
    return found


def test_screen_a_folder_of_dicom_files(sources, tiny_onnx, tmp_path):
    folder = tmp_path / "camera"
    (p0, e0), (p1, e1), (p2, e2), (p3, e3) = sources[:4]
    rgb = [decode_image(p, None)[0] for p in (p0, p1, p2, p3)]
    files = {
        "a.dcm": write(folder / "a.dcm", op_image(rgb[0], patient="P-A", laterality=CODE[e0])),
        # mirrored: the other eye, as JPEG baseline, its laterality says so
        "b.dcm": write(folder / "b.dcm", op_image(rgb[1][:, ::-1], patient="P-B", laterality=CODE[OTHER[e1]]), "jpeg"),
        "c.dcm": write(folder / "c.dcm", op_image(rgb[2], patient="P-C", laterality=CODE[OTHER[e2]])),  # wrong eye
        "d.dicom": write(folder / "d.dicom", vl_image(rgb[3], patient="P-D", laterality=CODE[e3])),
        "e.dcm": write(folder / "e.dcm", sc_image(rgb[0], patient="P-E", laterality=CODE[e0])),
        "grey.dcm": write(folder / "grey.dcm", op_image(rgb[0][..., 1], patient="P-G", laterality="R")),
    }
    (folder / "bad.dcm").write_bytes(bad_variants(rgb[0])["16-bit"][0])
    session = tmp_path / "session"
    proc = drtrt("screen", folder, "--model", tiny_onnx, "--out", session, "--json")
    assert proc.returncode == 3, proc.stderr                          # the grey and the 16-bit one are not graded
    rows = {Path(r["image"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == {*files, "bad.dcm"}

    expected = {"a.dcm": ("P-A", e0), "b.dcm": ("P-B", OTHER[e1]), "c.dcm": ("P-C", OTHER[e2]),
                "d.dicom": ("P-D", e3), "e.dcm": ("P-E", e0)}
    for name, (patient, eye) in expected.items():
        row = rows[name]
        assert row["status"] == "graded" and row["grade"] is not None, row
        assert (row["patient"], row["eye"]) == (patient, eye)
        assert row["disc"]["eye"] == (e2 if name == "c.dcm" else eye)   # c.dcm: the disc says the other eye
        assert row["dicom"]["patient_id"] == patient and row["dicom"]["eye"] == eye
    mismatch = [w for w in rows["c.dcm"]["warnings"] if w.startswith("eye mismatch")]
    assert mismatch and f"recorded as the {OTHER[e2]} eye" in mismatch[0], rows["c.dcm"]["warnings"]
    assert not [w for n in expected if n != "c.dcm" for w in rows[n]["warnings"] if "eye mismatch" in w]
    assert "warning: c.dcm: eye mismatch" in " ".join(proc.stderr.split())

    a = rows["a.dcm"]["dicom"]
    ds = op_image(rgb[0])                                               # the attributes the helper writes
    assert a["modality"] == "OP" and a["sop_class_uid"] == ds.SOPClassUID and a["acquired"] == "2024-01-31T14:25:30"
    from pydicom import dcmread

    written = dcmread(files["a.dcm"], stop_before_pixels=True)
    assert (a["study_uid"], a["series_uid"], a["sop_instance_uid"]) == (
        written.StudyInstanceUID, written.SeriesInstanceUID, written.SOPInstanceUID)
    assert rows["b.dcm"]["dicom"]["sop_class_uid"] == ds.SOPClassUID
    assert rows["d.dicom"]["dicom"]["modality"] == "XC" and rows["e.dcm"]["dicom"]["modality"] == "OT"

    assert rows["grey.dcm"]["status"] == "ungradable" and rows["grey.dcm"]["code"] == "greyscale"
    bad = rows["bad.dcm"]
    assert bad["status"] == "error" and bad["code"] == "dicom_bit_depth" and "bad.dcm: 16-bit" in bad["reason"]
    assert (bad["patient"], bad["dicom"]["sop_class_uid"]) == ("P-001", ds.SOPClassUID)   # its header was readable
    assert next((session / "reports").glob("patient-P-C-visit-*.html")).is_file()

    with SessionStore(session / "session.db") as store:               # the store holds the same
        stored = {Path(r.path).name: r for r in store.rows()}
    assert (stored["c.dcm"].patient, stored["c.dcm"].eye) == ("P-C", OTHER[e2])
    assert stored["c.dcm"].record["dicom"]["sop_instance_uid"] == rows["c.dcm"]["dicom"]["sop_instance_uid"]

    again = drtrt("screen", folder, "--model", tiny_onnx, "--out", session, "--json")   # nothing screened twice
    assert "7 of 7 image(s) were screened by an earlier run" in " ".join(again.stderr.split())


def test_what_the_user_gives_wins_over_the_file(sources, tiny_onnx, tmp_path):
    (path, eye) = sources[0]
    dcm = write(tmp_path / "x.dcm", op_image(decode_image(path, None)[0], patient="FROM-FILE",
                                             laterality=CODE[OTHER[eye]]))
    proc = drtrt("screen", dcm, "--model", tiny_onnx, "--json", "--patient", "TYPED")
    row = json.loads(proc.stdout.splitlines()[0])
    assert (row["patient"], row["eye"]) == ("TYPED", OTHER[eye])      # the eye was not given: the file's
    assert any(w.startswith("eye mismatch") for w in row["warnings"])
    proc = drtrt("screen", dcm, "--model", tiny_onnx, "--json", "--eye", eye)
    row = json.loads(proc.stdout.splitlines()[0])
    assert (row["patient"], row["eye"], row["warnings"]) == ("FROM-FILE", eye, [])


def test_watch_screens_dicom_the_camera_writes_without_a_suffix(sources, tiny_onnx, tmp_path):
    (path, eye) = sources[0]
    folder = tmp_path / "camera"
    folder.mkdir()
    lines: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_folder, args=(folder, tiny_onnx, tmp_path / "session"),
                               kwargs={"cfg": WatchConfig(poll_s=0.05, settle_s=0.2), "log": lines.put, "stop": stop})
    watcher.start()
    try:
        tmp = write(folder / ".IM0001.tmp", op_image(decode_image(path, None)[0], patient="W-1",
                                                      laterality=CODE[eye]))
        tmp.rename(folder / "IM0001")                                  # as a camera finishes a file
        (folder / "README").write_text("the camera's notes")
        seen = []
        while not any("IM0001" in line for line in seen):
            seen.append(lines.get(timeout=60))
    finally:
        stop.set()
        watcher.join(timeout=60)
    line = next(line for line in seen if "IM0001" in line)
    assert f"[W-1 {eye}]  graded" in line, line
    with SessionStore(tmp_path / "session" / "session.db") as store:
        names = [Path(r.path).name for r in store.rows()]
    assert names == ["IM0001"]


def test_dicom_photos_join_the_visit_of_their_study(sources, tiny_onnx, tmp_path):
    """Issue 22, defect 2: a command's DICOM photos are grouped into visits by their StudyInstanceUID — two
    studies of one patient are two visits with two reports — and a JPEG of the patient joins the visit of
    the day (not a study's)."""
    from drtrt.clinic.session import ScreeningSession, SessionConfig
    from drtrt.clinic.patients import Assignment

    folder = tmp_path / "camera"
    (p0, e0), (p1, e1) = sources[:2]
    rgb = [decode_image(p, None)[0] for p in (p0, p1)]
    last_year, this_year = "1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102"
    write(folder / "a.dcm", op_image(rgb[0], patient="P-S", laterality=CODE[e0], study=last_year))
    write(folder / "b.dcm", op_image(rgb[1], patient="P-S", laterality=CODE[e1], study=this_year))
    write(folder / "c.dcm", op_image(rgb[1], patient="P-S", laterality=CODE[e1], study=this_year,
                                     series="1.2.826.0.1.3680043.8.498.103", when="20240131142531"))
    with ScreeningSession(tiny_onnx, tmp_path / "session", SessionConfig(batch_size=1)) as session:
        rows = session.screen(sorted(folder.glob("*.dcm")) + [p0], {p0.resolve(): Assignment("P-S", e0)})
        session.write_reports()
    visit = {Path(r.path).name: r.visit for r in rows}
    assert visit["b.dcm"] == visit["c.dcm"] != visit["a.dcm"]            # one visit per study
    assert visit[p0.name] not in (visit["a.dcm"], visit["b.dcm"])        # a JPEG: the patient's visit of today
    reports = sorted(p.name for p in (tmp_path / "session" / "reports").glob("patient-P-S-visit-*.html"))
    assert len(reports) == 3
