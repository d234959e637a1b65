"""A reading centre (issue 24 item 3) reads what a station sent to a real Orthanc over DICOMweb and sends its
read back there: pulled once (photos + the model's SR), pulled again adds nothing, a read that overrules the
model goes back as one VERIFIED SR in the station's series naming the station's SR, pushed twice: no duplicate."""

from __future__ import annotations

import io
import json
import urllib.request
from urllib.parse import parse_qs, urlsplit

import cv2
import pytest

pytest.importorskip("highdicom", reason="the centre needs the integration extra")
from centre_helpers import sending_station  # noqa: E402
from orthanc_helpers import free_port, orthanc  # noqa: E402, F401  (orthanc: the fixture)
from test_sync import FhirStandIn, serve_fhir  # noqa: E402
from pydicom import dcmread  # noqa: E402
from typer.testing import CliRunner  # noqa: E402
from visit_fixture import make_visit  # noqa: E402

from drtrt.cli import app  # noqa: E402
from drtrt.clinic.accounts import Actor  # noqa: E402
from drtrt.clinic.audit import entries  # noqa: E402
from drtrt.clinic.reads import record_read as station_read  # noqa: E402
from drtrt.clinic.store import SessionStore  # noqa: E402
from drtrt.clinic.visits import VisitBook  # noqa: E402
from drtrt.errors import ConfigError  # noqa: E402
from drtrt.integration.centre import pull, push, queue, record_read  # noqa: E402
from drtrt.integration.sync import SyncConfig, sync_session  # noqa: E402



class SearchableFhir(FhirStandIn):
    """The sync tests' FHIR stand-in, which also answers ``GET DiagnosticReport?identifier=SYSTEM|VALUE``."""

    def do_GET(self):
        parts = urlsplit(self.path)
        system, _, value = parse_qs(parts.query)["identifier"][0].partition("|")
        found = [r for url, r in FhirStandIn.stored.items() if url.startswith("DiagnosticReport/")
                 and any((i["system"], i["value"]) == (system, value) for i in r["identifier"])]
        self._answer(200, {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                           "entry": [{"resource": r} for r in found]})


@pytest.fixture
def fhir_server():
    yield from serve_fhir(SearchableFhir)


def reports():
    return [r for url, r in FhirStandIn.stored.items() if url.startswith("DiagnosticReport/")]


def station_sends(tmp_path, orthanc, fhir_server, visits=(("P-900", {"right": 2, "left": 0}),)) -> str:
    """A station's closed visit (right eye R2 by the model, each photo with its overlay picture), synced to Orthanc
    and the FHIR stand-in; returns the visit's SR UID."""
    folder = tmp_path / "station"
    with sending_station(folder) as store:
        for patient, eyes in visits:
            make_visit(VisitBook(store), patient, "2026-03-01T10:00", eyes, extra={"overlay": "overlays/overlay.png"})
        report = sync_session(store, folder, SyncConfig(dicomweb=orthanc.dicomweb, fhir=fhir_server, retry_base=0.01))
    assert report.pending == 0
    return srs(orthanc)[0].SOPInstanceUID


def srs(orthanc):
    found = [dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{i}/file"))) for i in orthanc.instances()]
    return sorted((d for d in found if d.Modality == "SR"), key=lambda d: "PredecessorDocumentsSequence" in d)


def files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_the_centre_reads_what_the_station_sent_and_its_read_goes_back_once(tmp_path, orthanc, fhir_server):
    station_sr = station_sends(tmp_path, orthanc, fhir_server)
    sent_by_station = len(orthanc.instances())
    [station_report] = reports()
    centre = tmp_path / "centre"
    first = pull(orthanc.dicomweb, centre, fhir=fhir_server)
    [folder] = (centre / "visits").iterdir()
    visit = json.loads((folder / "visit.json").read_text())
    assert (first.studies, first.visits, first.reports) == (1, 1, 1)
    assert json.loads((folder / "fhir-report.json").read_text()) == station_report
    assert visit["sr"] == station_sr and visit["patient"] == "P-900" and visit["verification"] == "UNVERIFIED"
    assert visit["verdict"].startswith("R2 pre-proliferative") and visit["model_sha256"] == "b" * 64
    assert visit["eyes"]["right"]["Screening verdict"].startswith("R2")
    assert sorted(p["eye"] for p in visit["photos"]) == ["left", "right"] and visit["referable"] == "Yes"
    assert len(first.added) == 2 * sent_by_station - 1
    for photo in visit["photos"]:                  # the picture to look at is the one the station sent, pixel for pixel
        sent = dcmread(folder / photo["dicom"]).pixel_array
        assert (cv2.cvtColor(cv2.imread(str(folder / photo["png"])), cv2.COLOR_BGR2RGB) == sent).all()
    before = files(centre)
    assert pull(orthanc.dicomweb, centre, fhir=fhir_server).added == []             # pulled twice: nothing new
    assert files(centre) == before

    with pytest.raises(ConfigError, match="grade each eye in one form"):         # never a typo read as R0
        record_read(centre, visit["study"], {"right": "R9M0", "left": "R0M0"}, "Dr Ana Ruiz", "Centro Sur")
    with pytest.raises(ConfigError, match="overrules the model"):
        record_read(centre, visit["study"], {"right": "R1M0", "left": "R0M0"}, "Dr Ana Ruiz", "Centro Sur")
    record_read(centre, visit["study"], {"right": "R1M0", "left": "R0M0"}, "Dr Ana Ruiz", "Centro Sur",
                reason="a dot haemorrhage only: R1")
    down = CliRunner().invoke(app, ["centre", "push", str(centre), "--dicomweb", f"http://127.0.0.1:{free_port()}"])
    assert down.exit_code == 1 and "cannot reach the DICOMweb server" in down.output and "Traceback" not in down.output
    assert len(orthanc.instances()) == sent_by_station
    assert json.loads((folder / "visit.json").read_text())["pushed"] == []
    done = push(orthanc.dicomweb, centre, fhir=fhir_server)
    [uid] = done.sent
    assert done.reports == [station_report["id"]] and done.no_report == []
    again = push(orthanc.dicomweb, centre, fhir=fhir_server)                               # pushed twice: once
    assert (again.sent, again.reports, len(FhirStandIn.received)) == ([], [], 2)
    assert len(orthanc.instances()) == sent_by_station + 1
    old, new = srs(orthanc)
    assert old.SOPInstanceUID == station_sr and new.SOPInstanceUID == uid
    assert new.SeriesInstanceUID == old.SeriesInstanceUID and new.StudyInstanceUID == old.StudyInstanceUID
    assert (new.VerificationFlag, new.PreliminaryFlag) == ("VERIFIED", "FINAL")
    observer = new.VerifyingObserverSequence[0]
    assert (observer.VerifyingObserverName.family_name, observer.VerifyingOrganization) == ("Dr Ana Ruiz", "Centro Sur")
    predecessor = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == station_sr
    said = [item.TextValue for item in new.ContentSequence if "TextValue" in item]
    assert any(t.startswith("R0 no retinopathy") and "read by Dr Ana Ruiz" in t and "dot haemorrhage" in t
               for t in said)

    [report] = reports()                                 # the same DiagnosticReport, corrected: amended, by the reader
    assert report["id"] == station_report["id"] and station_report["status"] == "preliminary"
    assert report["status"] == "amended" and report["performer"] == [{"display": "Dr Ana Ruiz (Centro Sur)"}]
    assert report["conclusionCode"][0]["text"] == "no referable DR"
    assert report["conclusion"].startswith("R0 no retinopathy — rescreen in 12 months — read by Dr Ana Ruiz; the "
                                           "model said: R2 pre-proliferative")
    assert "NOT FOR CLINICAL USE" in report["conclusion"]
    assert report["identifier"][0]["value"] == f"urn:oid:{uid}" and report["subject"] == station_report["subject"]

    pull(orthanc.dicomweb, centre)                      # the centre's own SR comes back: now the visit's result
    visit = json.loads((folder / "visit.json").read_text())
    assert (visit["sr"], visit["verification"], visit["verified_by"]) == (uid, "VERIFIED", "Dr Ana Ruiz^")
    assert visit["read"].startswith("R0 no retinopathy") and visit["verdict"].startswith("R2")   # the model's, beside
    assert push(orthanc.dicomweb, centre, fhir=fhir_server).sent == []
    assert len(orthanc.instances()) == sent_by_station + 1
    assert len(FhirStandIn.received) == 2
    with pytest.raises(ConfigError, match="already read"):
        record_read(centre, visit["study"], {"right": "R2M0", "left": "R0M0"}, "Dr Ben", "Centro Sur")
    checked = CliRunner().invoke(app, ["audit", "verify", str(centre)])        # who read, who sent: in the trail
    assert checked.exit_code == 0 and "3 entries, chain intact" in checked.output, checked.output
    with SessionStore(centre / "session.db") as store:
        trail = [(e.person, e.action, e.patient) for e in entries(store)]
    assert trail == [("Dr Ana Ruiz", "override", "P-900"), ("no login (this machine)", "send", "P-900"),
                     ("no login (this machine)", "send", "P-900")]


def test_an_unreachable_or_malformed_pacs_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    for given, code, said in ((url, 1, "cannot reach the DICOMweb server at"), ("pacs:8042", 2, "--dicomweb needs")):
        result = CliRunner().invoke(app, ["centre", "pull", "--dicomweb", given, "--out", str(tmp_path / "c")])
        assert result.exit_code == code and said in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_centre_read_that_agrees_needs_no_reason_and_makes_the_report_final(tmp_path, orthanc, fhir_server):
    station_sends(tmp_path, orthanc, fhir_server)
    centre = tmp_path / "centre"
    pull(orthanc.dicomweb, centre, fhir=fhir_server)
    [folder] = (centre / "visits").iterdir()
    read = record_read(centre, folder.name, {"right": "R2M0", "left": "R0M0"}, "Dr Ben", "Centro Sur")
    assert read["overrules"] is False and read["reason"] is None
    done = push(orthanc.dicomweb, centre, fhir=fhir_server)
    [report] = reports()
    assert len(done.sent) == 1 and report["status"] == "final" and report["conclusionCode"][0]["text"] == "referable DR"
    assert report["performer"] == [{"display": "Dr Ben (Centro Sur)"}]


def test_a_read_visit_whose_report_was_not_pulled_is_said_and_the_sr_still_goes(tmp_path, orthanc, fhir_server):
    station_sends(tmp_path, orthanc, fhir_server)
    centre = tmp_path / "centre"
    pull(orthanc.dicomweb, centre)                                   # without --fhir: no DiagnosticReport kept
    [folder] = (centre / "visits").iterdir()
    record_read(centre, folder.name, {"right": "R2M0", "left": "R0M0"}, "Dr Ben", "Centro Sur")
    result = CliRunner().invoke(app, ["centre", "push", str(centre), "--dicomweb", orthanc.dicomweb, "--fhir",
                                      fhir_server])
    assert result.exit_code == 0, result.output
    assert "1 verified report(s) sent, 0 DiagnosticReport(s) corrected" in result.output
    assert "have no DiagnosticReport pulled" in result.output and reports()[0]["status"] == "preliminary"


def test_the_centre_queue_puts_what_the_model_refers_first_and_drops_what_is_read(tmp_path, orthanc, fhir_server):
    station_sends(tmp_path, orthanc, fhir_server, (("P-1", {"right": 0, "left": 0}), ("P-2", {"right": 2, "left": 0}),
                                                   ("P-3", {"right": "ungradable", "left": "ungradable"})))
    centre = tmp_path / "centre"
    pull(orthanc.dicomweb, centre)
    assert [v["patient"] for v in queue(centre)] == ["P-2", "P-3", "P-1"]
    listed = CliRunner().invoke(app, ["centre", "list", str(centre)])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[1] for line in listed.output.splitlines() if line.startswith("2.25.")] == ["P-2", "P-3", "P-1"]
    assert ".png (right)" in listed.output and "3 visit(s) waiting for a read" in listed.output
    [p2] = [v for v in queue(centre) if v["patient"] == "P-2"]
    read = CliRunner().invoke(app, ["centre", "read", str(centre), "--study", p2["study"], "--right", "R2M0",
                                    "--left", "R0M0", "--reader", "Dr Ben", "--organisation", "Centro Sur"])
    assert read.exit_code == 0 and "read by Dr Ben" in read.output, read.output
    assert [v["patient"] for v in queue(centre)] == ["P-3", "P-1"]
    unknown = CliRunner().invoke(app, ["centre", "read", str(centre), "--study", "1.2.3", "--right", "R0M0",
                                       "--left", "R0M0", "--reader", "Dr Ben", "--organisation", "Centro Sur"])
    assert unknown.exit_code == 1 and "no pulled visit of study 1.2.3" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1


def test_a_centre_read_of_a_report_the_station_replaced_is_never_sent(tmp_path, orthanc, fhir_server):
    station_sends(tmp_path, orthanc, fhir_server)
    centre = tmp_path / "centre"
    pull(orthanc.dicomweb, centre)
    [folder] = (centre / "visits").iterdir()
    record_read(centre, folder.name, {"right": "R2M0", "left": "R0M0"}, "Dr Ben", "Centro Sur")
    with SessionStore(tmp_path / "station" / "session.db") as store:       # meanwhile the station's reader reads it
        book = VisitBook(store)
        [visit] = [v["id"] for v in store.execute("SELECT id FROM visits")]
        station_read(book, visit, {"right": "R1M0", "left": "R0M0"}, Actor("Dr Local", "reader"), reason="R1 only")
        sync_session(store, tmp_path / "station", SyncConfig(dicomweb=orthanc.dicomweb, retry_base=0.01))
    pull(orthanc.dicomweb, centre)
    result = CliRunner().invoke(app, ["centre", "push", str(centre), "--dicomweb", orthanc.dicomweb])
    assert result.exit_code == 0 and "0 verified report(s) sent" in result.output, result.output
    assert "read and verified at the station since" in result.output
    assert [d.VerifyingObserverSequence[0].VerifyingObserverName.family_name for d in srs(orthanc)
            if "VerifyingObserverSequence" in d] == ["Dr Local"]                  # the centre's read did not go
    assert queue(centre) == []


def test_another_makers_objects_are_left_and_since_limits_the_studies(tmp_path, orthanc, fhir_server):
    station_sends(tmp_path, orthanc, fhir_server)
    sc = next(d for d in (dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{i}/file"))) for i in orthanc.instances())
              if d.Modality != "SR")
    sc.Manufacturer, sc.SOPInstanceUID = "OtherCo", "1.2.826.0.1.3680043.8.498.1"    # another system's screenshot
    sc.file_meta.MediaStorageSOPInstanceUID = sc.SOPInstanceUID
    buffer = io.BytesIO()
    sc.save_as(buffer, enforce_file_format=True)
    urllib.request.urlopen(urllib.request.Request(f"{orthanc.url}/instances", data=buffer.getvalue(), method="POST"))
    centre = tmp_path / "centre"
    first = pull(orthanc.dicomweb, centre)
    assert (centre / "foreign.txt").read_text() == "1.2.826.0.1.3680043.8.498.1\n"
    assert not any("1.2.826.0.1.3680043.8.498.1" in f for f in first.added) and len(first.added) == 5
    later = CliRunner().invoke(app, ["centre", "pull", "--dicomweb", orthanc.dicomweb, "--out", str(centre),
                                     "--since", "29991231"])
    assert later.exit_code == 0 and "0 studies at the PACS" in later.output, later.output
    bad = CliRunner().invoke(app, ["centre", "pull", "--dicomweb", orthanc.dicomweb, "--out", str(centre),
                                   "--since", "2026-13-01"])
    assert bad.exit_code == 2 and "--since needs a date as YYYYMMDD" in bad.output
    assert pull(orthanc.dicomweb, centre, since="20000101").added == []
