"""Everything a visit produces is keyed by the visit (issue 22, defect 2): a returning patient's visits
are two studies, with their own accession numbers, SRs and FHIR reports; last year's result is neither
reused nor carried over, and this year's SR is no "correction" of last year's. On 35c20eb a patient's
every photo ever kept was one study and one verdict."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("highdicom", reason="DICOM output needs the integration extra (pip install 'drtrt[integration]')")

from pydicom import dcmread  # noqa: E402

from drtrt.clinic.store import FileEntry, SessionStore  # noqa: E402
from drtrt.clinic.visits import VisitBook  # noqa: E402
from drtrt.integration.fhir import validate_bundle  # noqa: E402
from drtrt.integration.outputs import export_session  # noqa: E402
from drtrt.task import TaskSpec  # noqa: E402


def _graded(grade: int) -> dict:
    return {"status": "graded", "grade": grade, "grade_name": TaskSpec().grade_names[grade], "referable": grade >= 2,
            "probabilities": None, "lesions": {}, "macula": {"m": "M0", "fovea": [1, 1], "disc_diameter": 9.0,
                                                             "reason": "", "exudate_distance_dd": 4.0}}


def test_a_returning_patients_two_visits_are_two_studies_and_two_reports(tmp_path):
    with SessionStore(tmp_path / "session.db") as store:
        store.bind_model("b" * 64, "test.onnx", TaskSpec())
        book = VisitBook(store)
        before, now = book.visit_for("P-7", day="2025-12-01"), book.visit_for("P-7", day="2026-12-07")
        run = store.begin_run("test")
        for n, (eye, visit, grade) in enumerate((("right", before, 2), ("left", before, 0), ("left", now, 0))):
            sha = f"{n + 1:064x}"
            store.record_image(sha, _graded(grade), FileEntry(f"/p/{n}.jpg", sha, 1, 1, "P-7", eye, "screened",
                                                              visit=visit), run)
        store.record_file(FileEntry("/p/blurred.jpg", None, 1, 1, "P-7", "right", "unreadable", reason="unreadable",
                                    visit=now), run)
        result = export_session(store, tmp_path)
    srs = {o.visit: dcmread(tmp_path / o.path) for o in result.objects if o.kind == "sr"}
    bundles = {o.visit: json.loads((tmp_path / o.path).read_text()) for o in result.objects if o.kind == "fhir"}
    assert set(srs) == set(bundles) == {before, now} and result.patients == 2
    assert srs[before].StudyInstanceUID != srs[now].StudyInstanceUID
    assert srs[before].AccessionNumber != srs[now].AccessionNumber and len(srs[now].AccessionNumber) <= 16
    assert "PredecessorDocumentsSequence" not in srs[now]                # not a correction of last year's
    for bundle in bundles.values():
        validate_bundle(bundle)
    reports = {v: next(e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
               for v, b in bundles.items()}
    assert reports[before]["id"] != reports[now]["id"]
    assert reports[before]["conclusion"].startswith("refer")
    assert reports[now]["conclusion"].startswith("ungradable")           # this year: the blurred right eye
    assert "provisional" in reports[now]["conclusion"]                   # no validation record: said beside it
