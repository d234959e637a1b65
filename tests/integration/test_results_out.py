"""Results out: a patient's DICOM SR and SC and FHIR Bundle say what the session says, validly, and the same
way on every build (derived UIDs, fixed dates: a resend is the same object)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("highdicom", reason="results out needs the integration extra")
from pydicom import dcmread  # noqa: E402
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage  # noqa: E402
from results_helpers import PATIENTS, grading_images, screen_into  # noqa: E402
from results_helpers import screened_session_fixture, session_fixture  # noqa: E402, F401
from study_helpers import programme_keys, signed_record  # noqa: E402

from drtrt import __version__  # noqa: E402
from drtrt.fileio import sha256_file  # noqa: E402
from drtrt.integration import codes as C  # noqa: E402
from drtrt.integration.outputs import export_session  # noqa: E402
from drtrt.integration.fhir import validate_bundle  # noqa: E402
from drtrt.integration.outbox import pending_count  # noqa: E402
from drtrt.integration.results import patient_results  # noqa: E402
from drtrt.integration.uids import session_id  # noqa: E402
from drtrt.clinic.patients import Assignment, safe_patient_id  # noqa: E402
from drtrt.clinic.visits import VisitBook  # noqa: E402
from drtrt.clinic.store import FileEntry, SessionStore  # noqa: E402

UID = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def export(folder: Path, **kw):
    with SessionStore(folder / "session.db") as store:
        return export_session(store, folder, **kw), store.rows(), store.meta()


def by_kind(result, patient: str, kind: str) -> list:
    return [o for o in result.objects if o.patient == patient and o.kind == kind]


def content(item) -> list:
    return list(getattr(item, "ContentSequence", []))


def concept(item) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodeValue, code.CodingSchemeDesignator


def find(items, code: str, scheme: str = C.LOCAL_SCHEME) -> list:
    return [i for i in items if concept(i) == (code, scheme)]


def coded(item) -> tuple[str, str]:
    code = item.ConceptCodeSequence[0]
    return code.CodeValue, code.CodingSchemeDesignator


def test_every_patient_gets_an_sr_pictures_and_a_bundle(session):
    result, rows, meta = export(session)
    assert result.patients == len(PATIENTS)
    for patient in PATIENTS:
        graded_or_ungradable = [r for r in rows if r.patient == patient and r.status in ("graded", "ungradable")]
        assert len(by_kind(result, patient, "sc")) == len(graded_or_ungradable)
        assert len(by_kind(result, patient, "sr")) == 1 and len(by_kind(result, patient, "fhir")) == 1
        for obj in by_kind(result, patient, "sc") + by_kind(result, patient, "sr"):
            assert UID.match(obj.uid) and len(obj.uid) <= 64
            assert obj.path == f"dicom/{safe_patient_id(patient)}/{obj.kind}-{obj.uid}.dcm"
            assert sha256_file(session / obj.path) == obj.sha256
    assert len(list((session / "fhir").glob("patient-P-1-visit-*.json"))) == 1


def test_building_again_gives_the_same_bytes_and_queues_nothing(session):
    first, _, _ = export(session)
    files = {o.path: (session / o.path).read_bytes() for o in first.objects}
    second, _, _ = export(session)
    assert second.written == [] and [(o.uid, o.sha256) for o in second.objects] == \
        [(o.uid, o.sha256) for o in first.objects]
    shutil.rmtree(session / "dicom")
    shutil.rmtree(session / "fhir")
    third, _, _ = export(session)                            # rebuilt from scratch: byte for byte the same
    assert sorted(third.written) == sorted(files)
    assert {o.path: (session / o.path).read_bytes() for o in third.objects} == files
    with SessionStore(session / "session.db") as store:
        assert session_id(store) == session_id(store)
        assert pending_count(store) == 0                     # building queues nothing: sync does


def test_screening_the_same_photo_again_changes_nothing(session, tiny_onnx, photo_root, tmp_path):
    photo = tmp_path / "again.jpg"
    shutil.copy(grading_images(photo_root)[6], photo)
    screen_into(tiny_onnx, session, {photo: Assignment("P-1", "left")})
    first, _, _ = export(session)
    os.utime(photo, (1e9, 1e9))                              # the file touched: read again, same image
    screen_into(tiny_onnx, session, {photo: Assignment("P-1", "left")})
    again, _, _ = export(session)
    assert again.written == [] and [o.sha256 for o in again.objects] == [o.sha256 for o in first.objects]


def test_another_session_gets_other_uids(session, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(session, other)
    a, _, _ = export(session)
    b, _, _ = export(other)                                  # copied before either had a session ID
    assert not {o.uid for o in a.objects} & {o.uid for o in b.objects}


def test_the_sr_says_what_the_session_says(session):
    result, rows, meta = export(session)
    row = {(r.patient, r.eye, r.status): r for r in rows}
    sr = dcmread(session / by_kind(result, "P-2", "sr")[0].path)
    sc_uids = {o.uid for o in by_kind(result, "P-2", "sc")}
    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.Modality == "SR"
    assert sr.PatientID == "P-2" and sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.PreliminaryFlag == "PRELIMINARY"                # the tiny model has no validation record
    assert concept(sr) == C.REPORT_TITLE[:1] + ("LN",)
    top = content(sr)
    observer = {concept(i)[0]: i for i in top if i.RelationshipType == "HAS OBS CONTEXT"}
    assert coded(observer["121005"]) == ("121007", "DCM")                          # observer type: device
    assert observer["121016"].TextValue == meta["model_sha256"]
    texts = {concept(i)[0]: i.TextValue for i in top if i.ValueType == "TEXT"}
    assert texts["model-name"] == meta["model_name"] and texts["model-sha256"] == meta["model_sha256"]
    assert texts["software-version"] == f"drtrt {__version__}"
    assert "not a validated clinical model" in texts["validation"] and "NOT FOR CLINICAL USE" in texts["validation"]
    assert texts["verdict"].startswith("ungradable")
    assert not find(top, "referable-dr")                     # one eye ungradable: "not referable" cannot be said

    eyes = find(top, "eye-result")
    assert len(eyes) == 2
    right, left = eyes
    assert coded(find(content(right), "363698007", "SCT")[0]) == ("18944008", "SCT")
    assert coded(find(content(left), "363698007", "SCT")[0]) == ("8966001", "SCT")
    graded = row[("P-2", "right", "graded")].record
    severity = find(content(right), "71491-5", "LN")[0]
    assert coded(severity) == (C.GRADE_LOINC[graded["grade"]][0], "LN")
    assert coded(find(content(right), "referable-dr")[0]) == (C.YES if graded["referable"] else C.NO)[:1] + ("SCT",)
    image = find(content(right), "image-result")[0]
    for code, finding in graded["lesions"].items():
        assert float(find(content(image), f"count-{code}")[0].MeasuredValueSequence[0].NumericValue) == finding["count"]
    overlay = find(content(image), "lesion-overlay")[0].ReferencedSOPSequence[0]
    assert overlay.ReferencedSOPClassUID == SecondaryCaptureImageStorage and overlay.ReferencedSOPInstanceUID in sc_uids

    assert not find(content(left), "71490-7", "LN")          # nothing gradable: no grade
    reasons = [find(content(i), "not-graded")[0].TextValue for i in find(content(left), "image-result")]
    assert row[("P-2", "left", "ungradable")].reason in reasons and row[("P-2", "left", "error")].reason in reasons
    evidence = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for series in s.ReferencedSeriesSequence for r in series.ReferencedSOPSequence}
    assert evidence == sc_uids                               # every picture, and nothing else
    assert {s.StudyInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence} == {sr.StudyInstanceUID}


def test_the_pictures_are_the_overlays_in_the_same_study(session):
    result, rows, _ = export(session)
    sr = dcmread(session / by_kind(result, "P-1", "sr")[0].path)
    overlays = {r.eye: session / r.record["overlay"] for r in rows if r.patient == "P-1"}
    for obj in by_kind(result, "P-1", "sc"):
        sc = dcmread(session / obj.path)
        assert sc.SOPClassUID == SecondaryCaptureImageStorage and sc.SOPInstanceUID == obj.uid
        assert sc.StudyInstanceUID == sr.StudyInstanceUID and sc.PatientID == "P-1"
        eye = {"R": "right", "L": "left"}[sc.Laterality]
        png = cv2.cvtColor(cv2.imread(str(overlays[eye])), cv2.COLOR_BGR2RGB)
        assert sc.pixel_array.shape == png.shape and np.array_equal(sc.pixel_array, png)
        assert sc.PhotometricInterpretation == "RGB" and sc.Modality == "OT"


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dciodvfy is not installed (apt-get install dicom3tools)")
def test_every_dicom_file_passes_dciodvfy(session):
    result, _, _ = export(session)
    dicom = [o for o in result.objects if o.kind in ("sc", "sr")]
    assert dicom
    for obj in dicom:
        proc = subprocess.run(["dciodvfy", str(session / obj.path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (obj.kind, errors)


def test_every_bundle_is_valid_fhir_and_says_what_the_session_says(session):
    result, rows, meta = export(session)
    for patient in PATIENTS:
        obj = by_kind(result, patient, "fhir")[0]
        bundle = json.loads((session / obj.path).read_text())
        validate_bundle(bundle)
        assert bundle["type"] == "transaction" and bundle["id"] == obj.uid
        resources = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
        for entry in bundle["entry"]:
            refs = re.findall(r'"reference": "([^"]+)"', json.dumps(entry["resource"]))
            assert all(ref in resources for ref in refs), refs          # every reference resolves in the Bundle
        kinds = [r["resourceType"] for r in resources.values()]
        assert kinds[:2] == ["Patient", "Device"] and kinds[-1] == "DiagnosticReport"
        pat = next(r for r in resources.values() if r["resourceType"] == "Patient")
        assert pat["identifier"] == [{"system": C.DEFAULT_PATIENT_SYSTEM, "value": patient}]
        device = next(r for r in resources.values() if r["resourceType"] == "Device")
        assert meta["model_sha256"] in json.dumps(device) and __version__ in json.dumps(device)
        assert "not a validated clinical model" in device["note"][0]["text"]
        report = next(r for r in resources.values() if r["resourceType"] == "DiagnosticReport")
        sr_uid = by_kind(result, patient, "sr")[0].uid
        assert {"system": "urn:dicom:uid", "type": {"text": "DICOM SR SOP Instance UID"},
                "value": f"urn:oid:{sr_uid}"} in report["identifier"]
        assert report["status"] == "preliminary"
        observations = [resources[r["reference"]] for r in report["result"]]
        for obs in observations:
            eye = {"18944008": "right", "8966001": "left"}[obs["bodySite"]["coding"][0]["code"]]
            assert obs["code"]["coding"][0]["code"] == C.EYE_SEVERITY[eye][0]
            eye_rows = [r for r in rows if r.patient == patient and r.eye == eye and r.status == "graded"]
            if eye_rows:
                grade = max(r.record["grade"] for r in eye_rows)
                assert obs["valueCodeableConcept"]["coding"][0] == {"system": C.LOINC, "code": C.GRADE_LOINC[grade][0],
                                                                     "display": C.GRADE_LOINC[grade][1]}
                referable = next(c for c in obs["component"] if c["code"]["coding"][0]["code"] == "referable-dr")
                assert referable["valueBoolean"] == any(r.record["referable"] for r in eye_rows)
            else:
                assert obs["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
                assert "valueCodeableConcept" not in obs
    p2 = json.loads(next((session / "fhir").glob("patient-P-2-visit-*.json")).read_text())
    left = next(e["resource"] for e in p2["entry"]
                if e["resource"].get("bodySite", {}).get("coding", [{}])[0].get("code") == "8966001")
    assert any("greyscale" in n["text"] for n in left["note"])            # the quality refusal, in words


def test_a_validated_model_makes_final_results(session):
    """Only a whole validation record makes results final (issue 22): the free text older sessions kept
    ("any non-empty string") leaves them preliminary; the statement names study, population, date and model."""
    with SessionStore(session / "session.db") as store, store.transaction():
        store.execute("INSERT OR REPLACE INTO meta VALUES ('validation', 'site study 2026, sensitivity 0.91')")
    result, _, _ = export(session)
    assert dcmread(session / by_kind(result, "P-1", "sr")[0].path).PreliminaryFlag == "PRELIMINARY"
    with SessionStore(session / "session.db") as store, store.transaction():
        sha = store.meta()["model_sha256"]
        record = signed_record(sha, programme_keys()[0], population="adults with diabetes, Region X")
        store.execute("INSERT OR REPLACE INTO meta VALUES ('validation', ?)", (record.to_json(),))
        store.execute("INSERT OR REPLACE INTO meta VALUES ('validation_key', ?)", (record.signature.public_key,))
    result, _, _ = export(session)
    sr = dcmread(session / by_kind(result, "P-1", "sr")[0].path)
    assert sr.PreliminaryFlag == "FINAL"
    statement = next(i.TextValue for i in content(sr) if concept(i)[0] == "validation")
    assert statement == (f"validated clinical model: study RX-DR-01, adults with diabetes, Region X, ended 2026-10-31; "
                         f"model sha256 {sha[:12]}")
    bundle = json.loads(next((session / "fhir").glob("patient-P-1-visit-*.json")).read_text())
    assert {e["resource"].get("status") for e in bundle["entry"]} - {None, "active"} == {"final"}


def test_new_results_make_a_new_sr_that_names_the_one_before(session, tiny_onnx, photo_root):
    before, _, _ = export(session)
    old_sr = by_kind(before, "P-1", "sr")[0]
    old_bundle = by_kind(before, "P-1", "fhir")[0]
    screen_into(tiny_onnx, session, {grading_images(photo_root)[4]: Assignment("P-1", "left")})   # a second left photo
    after, _, _ = export(session)
    new_sr = by_kind(after, "P-1", "sr")[0]
    assert new_sr.uid != old_sr.uid
    sr = dcmread(session / new_sr.path)
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == old_sr.uid
    assert {o.uid for o in by_kind(before, "P-1", "sc")} < {o.uid for o in by_kind(after, "P-1", "sc")}
    assert by_kind(after, "P-1", "fhir")[0].uid == old_bundle.uid                  # same Bundle, updated
    assert by_kind(after, "P-1", "fhir")[0].sha256 != old_bundle.sha256
    assert [o.uid for o in by_kind(after, "P-2", "sr")] == [o.uid for o in by_kind(before, "P-2", "sr")]
    assert (session / old_sr.path).is_file()


CAMERA = {"study_uid": "1.2.826.0.1.3680043.8.498.1", "series_uid": "1.2.826.0.1.3680043.8.498.2",
          "sop_instance_uid": "1.2.826.0.1.3680043.8.498.3", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.77.1.5.1",
          "patient_id": "MRN-77", "eye": "right", "modality": "OP"}
CAMERA_PATIENT = {"PatientName": "Doe^Jane", "PatientBirthDate": "19600131", "PatientSex": "F",
                  "AccessionNumber": "ACC-9", "StudyDate": "20260102", "StudyTime": "101500"}


def add_camera_photo(folder: Path, patient: str, dicom: dict) -> None:
    """A screened photo whose record carries the camera's DICOM identifiers, as the DICOM intake writes them."""
    with SessionStore(folder / "session.db") as store:
        source = next(r for r in store.rows() if r.patient == "P-1" and r.eye == "right")
        sha = hashlib.sha256(json.dumps(dicom).encode()).hexdigest()
        study = dicom["study_uid"] if dicom.get("patient_id", patient) == patient else None   # as the session does
        entry = FileEntry(str(folder / f"{sha[:8]}.dcm"), sha, 1, 1, patient, "right", "screened",
                          visit=VisitBook(store).visit_for(patient, study))
        store.record_image(sha, {**source.record, "dicom": dicom}, entry, store.begin_run("test"))


def test_photos_from_the_camera_join_the_camera_study(session):
    """The outputs take the camera's study and patient attributes, and point back at the camera's image."""
    add_camera_photo(session, "MRN-77", {**CAMERA, **CAMERA_PATIENT})
    result, _, _ = export(session)
    sr = dcmread(session / by_kind(result, "MRN-77", "sr")[0].path)
    sc = dcmread(session / by_kind(result, "MRN-77", "sc")[0].path)
    for ds in (sr, sc):
        assert ds.StudyInstanceUID == CAMERA["study_uid"] and ds.PatientID == "MRN-77"
        assert str(ds.PatientName) == "Doe^Jane" and ds.AccessionNumber == "ACC-9" and ds.StudyDate == "20260102"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == CAMERA["sop_instance_uid"]
    refs = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
            for series in s.ReferencedSeriesSequence for r in series.ReferencedSOPSequence}
    assert refs == {sc.SOPInstanceUID, CAMERA["sop_instance_uid"]}
    bundle = json.loads(next((session / "fhir").glob("patient-MRN-77-visit-*.json")).read_text())
    validate_bundle(bundle)
    patient = bundle["entry"][0]["resource"]
    assert patient["name"][0]["family"] == "Doe" and patient["birthDate"] == "1960-01-31"
    assert patient["gender"] == "female"
    assert {"system": "urn:dicom:uid", "type": {"text": "DICOM Study Instance UID"},
            "value": f"urn:oid:{CAMERA['study_uid']}"} in bundle["entry"][-1]["resource"]["identifier"]


def test_the_camera_study_is_not_joined_for_a_photo_given_to_another_patient(session):
    """Only the intake's identifiers (no patient name, no dates): still the camera's study. A photo whose
    header names another patient than the one it was screened for: a study of drtrt's own."""
    add_camera_photo(session, "MRN-77", CAMERA)
    add_camera_photo(session, "MRN-78", {**CAMERA, "sop_instance_uid": "1.2.826.0.1.3680043.8.498.4"})
    result, _, _ = export(session)
    joined = dcmread(session / by_kind(result, "MRN-77", "sr")[0].path)
    assert joined.StudyInstanceUID == CAMERA["study_uid"] and joined.StudyDate == "" and joined.PatientName == ""
    own = dcmread(session / by_kind(result, "MRN-78", "sr")[0].path)
    assert own.StudyInstanceUID != CAMERA["study_uid"] and own.PatientID == "MRN-78"


def test_patient_results_leave_out_rows_without_a_patient(session, tiny_onnx, photo_root):
    screen_into(tiny_onnx, session, {grading_images(photo_root)[5]: Assignment()})
    with SessionStore(session / "session.db") as store:
        assert [p.patient for p in patient_results(store, session)] == list(PATIENTS)
