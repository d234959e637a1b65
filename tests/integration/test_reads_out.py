"""A clinician's read goes out (issue 24 item 3): the SR becomes VERIFIED with the reader as verifying observer, a
new instance in the same series naming its predecessor; the FHIR DiagnosticReport keeps its id and becomes
`amended` with the reader as performer. Sent to a real Orthanc and the FHIR stand-in: sent again, nothing doubles."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("highdicom", reason="sync needs the integration extra")
from orthanc_helpers import orthanc  # noqa: E402, F401  (the fixture)
from pydicom import dcmread  # noqa: E402
from test_sync import FhirStandIn, fhir_server  # noqa: E402, F401  (the stand-in and its fixture)
from visit_fixture import make_visit  # noqa: E402

from drtrt.clinic.accounts import Actor  # noqa: E402
from drtrt.clinic.pathways import NHS, Pathway, keep_pathway  # noqa: E402
from drtrt.clinic.reads import record_read  # noqa: E402
from drtrt.clinic.store import SessionStore  # noqa: E402
from drtrt.clinic.visits import VisitBook  # noqa: E402
from drtrt.integration.outputs import export_session  # noqa: E402
from drtrt.integration.sync import SyncConfig, sync_session  # noqa: E402
from drtrt.task import TaskSpec  # noqa: E402



def srs(orthanc):
    found = [dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{i}/file"))) for i in orthanc.instances()]
    return sorted((d for d in found if d.Modality == "SR"), key=lambda d: "PredecessorDocumentsSequence" in d)


def reports():
    return {url: r for url, r in FhirStandIn.stored.items() if url.startswith("DiagnosticReport/")}


def test_a_read_goes_out_as_a_verified_sr_and_an_amended_report_without_duplicates(tmp_path, orthanc, fhir_server):
    folder = tmp_path / "session"
    folder.mkdir()
    cfg = SyncConfig(dicomweb=orthanc.dicomweb, fhir=fhir_server, retry_base=0.01)
    with SessionStore(folder / "session.db") as store:
        store.bind_model("b" * 64, "test.onnx", TaskSpec())
        store.set_meta("organisation", "Clínica Norte screening")
        keep_pathway(store, Pathway.from_dict({**NHS.to_dict(), "reads": {"second_read": "never"}}))
        book = VisitBook(store)
        visit = make_visit(book, "P-900", "2026-03-01T10:00", {"right": 2, "left": 0})
        sync_session(store, folder, cfg)
        [first] = srs(orthanc)
        assert first.VerificationFlag == "UNVERIFIED" and first.CompletionFlag == "COMPLETE"
        [before] = reports().values()
        assert before["status"] == "preliminary" and "performer" not in before

        record_read(book, visit, {"right": "R1M0", "left": "R0M0"}, Actor("Dr Ana Ruiz", "reader"),
                    reason="a dot haemorrhage only: R1")
        sync_session(store, folder, cfg)
        sync_session(store, folder, cfg)                                   # sent again: nothing doubles
    old, new = srs(orthanc)
    assert old.SOPInstanceUID == first.SOPInstanceUID and len(orthanc.instances()) == 2
    assert new.SeriesInstanceUID == old.SeriesInstanceUID and new.SOPInstanceUID != old.SOPInstanceUID
    assert (new.VerificationFlag, new.PreliminaryFlag) == ("VERIFIED", "FINAL")
    observer = new.VerifyingObserverSequence[0]
    assert (observer.VerifyingObserverName.family_name, observer.VerifyingOrganization) == (
        "Dr Ana Ruiz", "Clínica Norte screening")
    predecessor = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == old.SOPInstanceUID
    said = [item.TextValue for item in new.ContentSequence if "TextValue" in item]
    assert any(t.startswith("R0 no retinopathy") and "read by Dr Ana Ruiz" in t for t in said)
    [after] = reports().values()                                            # the same id: updated, not added
    assert after["id"] == before["id"] and after["status"] == "amended"
    assert after["performer"] == [{"display": "Dr Ana Ruiz (Clínica Norte screening)"}]
    assert after["conclusionCode"][0]["text"] == "no referable DR"
    assert "the model said: R2 pre-proliferative" in after["conclusion"]


def test_a_read_that_agrees_makes_the_report_final_with_its_reader(tmp_path):
    import json

    with SessionStore(tmp_path / "session.db") as store:
        store.bind_model("b" * 64, "test.onnx", TaskSpec())
        keep_pathway(store, Pathway.from_dict({**NHS.to_dict(), "reads": {"second_read": "never"}}))
        book = VisitBook(store)
        visit = make_visit(book, "P-901", "2026-03-01T10:00", {"right": 0, "left": 0})
        record_read(book, visit, {"right": "R0M0", "left": "R0M0"}, Actor("Dr Ben", "lead"))
        result = export_session(store, tmp_path)
    bundle = json.loads((tmp_path / next(o.path for o in result.objects if o.kind == "fhir")).read_text())
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert report["status"] == "final" and report["performer"][0]["display"].startswith("Dr Ben (organisation not")
    sr = dcmread(tmp_path / next(o.path for o in result.objects if o.kind == "sr"))
    assert sr.VerificationFlag == "VERIFIED" and "PredecessorDocumentsSequence" not in sr
