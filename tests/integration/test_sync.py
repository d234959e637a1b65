"""Store-and-forward against a real Orthanc: everything arrives and reads back the same, a server killed in the
middle of a sync loses nothing and duplicates nothing, an unreachable server is one line and leaves the
items pending, failures back off and retry until sent; C-STORE as the alternative; FHIR Bundles to a server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("highdicom", reason="sync needs the integration extra")
from orthanc_helpers import Orthanc, free_port, orthanc  # noqa: E402, F401  (orthanc: the fixture)
from pydicom import dcmread  # noqa: E402
from results_helpers import PATIENTS, screened_session_fixture, session_fixture  # noqa: E402, F401

from drtrt.integration.fhir import validate_bundle  # noqa: E402
from drtrt.integration.outbox import items, pending_count  # noqa: E402
from drtrt.integration.sync import SyncConfig, sync_session  # noqa: E402
from drtrt.clinic.patients import safe_patient_id  # noqa: E402
from drtrt.clinic.store import SessionStore  # noqa: E402



def drtrt(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "drtrt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def outbox(folder: Path, status: str | None = None):
    with SessionStore(folder / "session.db") as store:
        return items(store, status=status)


def dicom_objects(folder: Path) -> dict[str, Path]:
    """SOP Instance UID → file, for every DICOM object the session holds."""
    return {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in (folder / "dicom").rglob("*.dcm")}


def assert_pacs_holds_exactly(orthanc: Orthanc, folder: Path) -> None:
    """Every object once, and each read back equal to what was sent (WADO-RS and Orthanc's REST API)."""
    local = dicom_objects(folder)
    stored = orthanc.sop_uids()
    assert sorted(stored) == sorted(local), "missing or duplicated instances"
    for instance in orthanc.instances():
        tags = orthanc.get(f"/instances/{instance}")["MainDicomTags"]
        sent = dcmread(local[tags["SOPInstanceUID"]])
        got = dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{instance}/file")))
        assert got.PatientID == sent.PatientID and got.StudyInstanceUID == sent.StudyInstanceUID
        assert got.SeriesInstanceUID == sent.SeriesInstanceUID and got.SOPClassUID == sent.SOPClassUID
        if sent.Modality == "SR":
            assert got.ContentSequence == sent.ContentSequence
            assert got.CurrentRequestedProcedureEvidenceSequence == sent.CurrentRequestedProcedureEvidenceSequence
        else:
            assert got.pixel_array.shape == sent.pixel_array.shape and (got.pixel_array == sent.pixel_array).all()


def test_sync_sends_every_object_once_and_they_read_back_the_same(session, orthanc):
    proc = drtrt("sync", session, "--dicomweb", orthanc.dicomweb, "--once")
    assert proc.returncode == 0, proc.stderr
    sent = outbox(session, "sent")
    assert sent and not outbox(session, "pending")
    assert f"{len(sent)} sent, 0 pending" in proc.stdout
    assert all(i.attempts == 1 and i.sent_at for i in sent)
    assert_pacs_holds_exactly(orthanc, session)
    # every patient once, with one study holding the SR and the pictures (QIDO-RS by study: Orthanc 1.10
    # does not match non-ASCII patient IDs in QIDO queries, so patients are listed by its REST API)
    patients = {orthanc.get(f"/patients/{p}")["MainDicomTags"]["PatientID"]: p for p in orthanc.get("/patients")}
    assert sorted(patients) == sorted(PATIENTS)
    for patient in PATIENTS:
        (study,) = orthanc.get(f"/patients/{patients[patient]}")["Studies"]
        uid = orthanc.get(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
        found = json.loads(orthanc.get_bytes(f"/dicom-web/studies?StudyInstanceUID={uid}", "application/dicom+json"))
        assert [s["00100020"]["Value"][0] for s in found] == [patient]
        modalities = {s["00080060"]["Value"][0] for s in json.loads(orthanc.get_bytes(
            f"/dicom-web/studies/{uid}/series", "application/dicom+json"))}
        assert modalities == {"SR", "OT"}
    again = drtrt("sync", session, "--dicomweb", orthanc.dicomweb, "--once")
    assert again.returncode == 0, again.stderr
    assert "0 queued, 0 sent, 0 pending" in again.stdout          # idempotent: nothing new, nothing resent
    assert len(orthanc.instances()) == len(sent)


def test_a_server_killed_mid_sync_loses_nothing_and_duplicates_nothing(session, orthanc):
    cfg = SyncConfig(dicomweb=orthanc.dicomweb, retry_base=0.01, timeout=5)
    killed = []

    def log(line: str) -> None:                             # SIGKILL the PACS once the first item is confirmed
        if " sent " in line and not killed:
            orthanc.kill()
            killed.append(line)

    with SessionStore(session / "session.db") as store:
        report = sync_session(store, session, cfg, once=True, log=log)
        assert killed and report.sent == 1 and report.pending == pending_count(store) > 0
        assert report.unreachable
    pending = outbox(session, "pending")
    assert pending[0].attempts == 1 and "cannot reach" in pending[0].last_error
    assert all(i.attempts == 0 for i in pending[1:])               # not tried: the server was known down
    orthanc.start()                                                # same storage folder
    assert len(orthanc.instances()) == 1
    with SessionStore(session / "session.db") as store:
        report = sync_session(store, session, cfg, once=True)
        assert report.pending == 0 and report.sent == len(pending)
    assert_pacs_holds_exactly(orthanc, session)


def test_a_crash_between_the_servers_yes_and_the_mark_resends_harmlessly(session, orthanc):
    assert drtrt("sync", session, "--dicomweb", orthanc.dicomweb, "--once").returncode == 0
    count = len(orthanc.instances())
    with SessionStore(session / "session.db") as store, store.transaction():      # as if the marks were lost
        store.execute("UPDATE outbox SET status='pending', sent_at=NULL")
    proc = drtrt("sync", session, "--dicomweb", orthanc.dicomweb, "--once")
    assert proc.returncode == 0, proc.stderr
    assert f"{count} sent, 0 pending" in proc.stdout
    assert len(orthanc.instances()) == count                     # same UIDs: the PACS kept one of each
    assert_pacs_holds_exactly(orthanc, session)


def test_an_unreachable_server_is_one_line_and_the_items_stay_pending(session):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    start = time.time()
    proc = drtrt("sync", session, "--dicomweb", url, "--once", "--retry-base", "30")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: cannot reach the DICOMweb server") and "connection refused" in lines[0]
    pending = outbox(session, "pending")
    assert pending and not outbox(session, "sent")
    assert f"{len(pending)} item(s) still pending" in lines[0]
    assert pending[0].attempts == 1 and pending[0].next_try_at >= start + 30
    proc = drtrt("sync", session, "--dicomweb", url, "--once")          # --once tries now, backoff or not
    assert proc.returncode == 1
    assert outbox(session, "pending")[0].attempts == 2


def test_bad_options_are_usage_errors(session):
    for args, fragment in ((["--dicomweb", "pacs:8042"], "needs an http:// or https:// URL"),
                           (["--cstore", "pacs"], "--cstore needs HOST:PORT"),
                           (["--cstore", "pacs:104", "--called-ae", "A" * 17], "--called-ae must be 1-16")):
        proc = drtrt("sync", session, *args, "--once")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
    proc = drtrt("sync", session.parent, "--once")
    assert proc.returncode == 1 and "is not a session folder" in proc.stderr


def test_failures_back_off_and_retry_until_the_server_answers(session, tmp_path):
    server = Orthanc(tmp_path / "late")                    # not started yet: every try fails at first
    cfg = SyncConfig(dicomweb=server.dicomweb, retry_base=0.05, retry_max=0.4, timeout=5)
    lines: list[tuple[float, str]] = []
    done = threading.Event()
    result = {}
    deadline = time.monotonic() + 120

    def run() -> None:
        with SessionStore(session / "session.db") as store:
            result["report"] = sync_session(store, session, cfg, once=False,
                                            log=lambda line: lines.append((time.monotonic(), line)),
                                            should_stop=lambda: time.monotonic() > deadline)
            result["left"] = pending_count(store)
        done.set()

    def failures() -> list[float]:
        return [t for t, line in lines if "cannot reach" in line]

    thread = threading.Thread(target=run)
    thread.start()
    try:
        while len(failures()) < 5 and not done.is_set():
            time.sleep(0.01)
        server.start()
        assert done.wait(90), lines[-5:]
    finally:
        deadline = 0
        thread.join(30)
        server_count = len(server.instances()) if server.proc else 0
        server.stop()
    assert result["left"] == 0 and result["report"].pending == 0
    assert any("item(s) pending; next try in" in line for _, line in lines)
    gaps = [b - a for a, b in zip(failures(), failures()[1:])]
    for n, gap in enumerate(gaps[:4], start=1):            # 0.05, 0.1, 0.2, then at most 0.4 s apart
        assert min(0.4, 0.05 * 2 ** (n - 1)) * 0.9 <= gap < min(0.4, 0.05 * 2 ** (n - 1)) + 1.0, gaps
    first = outbox(session)[0]
    assert first.status == "sent" and first.attempts == len(failures()) + 1     # every failure on the first item
    assert server_count == len(dicom_objects(session))


def test_c_store_is_the_alternative(session, orthanc):
    proc = drtrt("sync", session, "--cstore", f"127.0.0.1:{orthanc.dicom_port}", "--called-ae", orthanc.aet,
                 "--ae-title", "DRTRT-TEST", "--once")
    assert proc.returncode == 0, proc.stderr
    sent = outbox(session, "sent")
    assert sent and {i.destination for i in sent} == {f"cstore {orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"}
    assert_pacs_holds_exactly(orthanc, session)
    closed = drtrt("sync", session, "--cstore", f"127.0.0.1:{free_port()}", "--once")
    assert closed.returncode == 1 and "cannot reach the DICOM server" in closed.stderr


class FhirStandIn(BaseHTTPRequestHandler):
    """A FHIR endpoint that checks a transaction Bundle as a server's parser would (fhir.resources R4B),
    keeps the resources PUT by id, and answers a transaction-response: not HAPI, but real HTTP and real parsing.
    ``refuse``: answer 422 with an OperationOutcome instead."""

    received: list[dict] = []
    stored: dict[str, dict] = {}
    refuse = False

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        bundle = json.loads(body)
        if self.refuse or self.headers["Content-Type"] != "application/fhir+json; charset=utf-8":
            return self._answer(422, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "processing", "diagnostics": "Patient identifier system unknown here"}]})
        validate_bundle(bundle)
        type(self).received.append(bundle)
        entries = []
        for entry in bundle["entry"]:
            resource, request = entry["resource"], entry["request"]
            if request["method"] == "PUT":
                created = request["url"] not in self.stored
                type(self).stored[request["url"]] = resource
                entries.append({"response": {"status": "201 Created" if created else "200 OK"}})
            else:
                entries.append({"response": {"status": "201 Created"}})
        self._answer(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries})

    def _answer(self, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def serve_fhir(handler=None):
    """A FHIR stand-in (``handler``: FhirStandIn or a subclass) on a free localhost port, emptied first; yields
    its base URL and stops it after (use as a fixture's body: ``yield from serve_fhir()``)."""
    FhirStandIn.received, FhirStandIn.stored, FhirStandIn.refuse = [], {}, False
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler or FhirStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fhir_server():
    yield from serve_fhir()


def test_fhir_bundles_are_posted_once_and_again_only_when_they_change(session, orthanc, fhir_server):
    proc = drtrt("sync", session, "--dicomweb", orthanc.dicomweb, "--fhir", fhir_server, "--once",
                 "--patient-system", "urn:oid:1.2.3.4")
    assert proc.returncode == 0, proc.stderr
    assert len(FhirStandIn.received) == len(PATIENTS)
    for bundle in FhirStandIn.received:
        patient = bundle["entry"][0]
        assert patient["request"]["ifNoneExist"].startswith("identifier=urn:oid:1.2.3.4|")
        assert bundle == json.loads(next(p for p in (session / "fhir").glob("*.json")
                                         if json.loads(p.read_text())["id"] == bundle["id"]).read_text())
    assert len([k for k in FhirStandIn.stored if k.startswith("Observation/")]) == 2 * len(PATIENTS)
    again = drtrt("sync", session, "--dicomweb", orthanc.dicomweb, "--fhir", fhir_server, "--once",
                  "--patient-system", "urn:oid:1.2.3.4")
    assert again.returncode == 0 and len(FhirStandIn.received) == len(PATIENTS)     # nothing sent twice
    changed = drtrt("sync", session, "--fhir", fhir_server, "--once", "--patient-system", "urn:oid:9.9")
    assert changed.returncode == 0, changed.stderr
    assert len(FhirStandIn.received) == 2 * len(PATIENTS)                         # changed Bundles: sent again
    assert len([k for k in FhirStandIn.stored if k.startswith("Observation/")]) == 2 * len(PATIENTS)   # updated


def test_a_bundle_the_fhir_server_refuses_stays_pending_with_its_reason(session, fhir_server):
    FhirStandIn.refuse = True
    proc = drtrt("sync", session, "--fhir", fhir_server, "--once")
    assert proc.returncode == 1
    assert "not accepted and still pending" in proc.stderr and "identifier system unknown" in proc.stderr
    pending = outbox(session, "pending")
    assert len(pending) == len(PATIENTS) and all("HTTP 422" in i.last_error for i in pending)
    FhirStandIn.refuse = False
    assert drtrt("sync", session, "--fhir", fhir_server, "--once").returncode == 0
    assert not outbox(session, "pending")


def test_without_a_server_the_files_are_written_and_nothing_is_queued(session):
    proc = drtrt("sync", session)
    assert proc.returncode == 0, proc.stderr
    assert "no server given" in proc.stdout
    names = sorted(p.name for p in (session / "fhir").iterdir())       # one Bundle per visit: one visit each
    assert [n.rsplit("-visit-", 1)[0] for n in names] == sorted(f"patient-{safe_patient_id(n)}" for n in PATIENTS)
    assert not outbox(session)


def test_pending_count_is_what_the_station_shows(session):
    with SessionStore(session / "session.db") as store:
        assert pending_count(store) == 0                                 # never synced: 0, and nothing written
        assert not store.execute("SELECT * FROM outbox") and not store.execute("SELECT * FROM exported")
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    drtrt("sync", session, "--dicomweb", url, "--once")
    pending = len(outbox(session, "pending"))
    with SessionStore(session / "session.db") as store:
        assert pending_count(store) == pending > 0
        assert pending_count(store, f"dicomweb {url}") == pending and pending_count(store, "fhir http://x") == 0


def test_a_session_in_use_is_refused_with_one_line(session):
    with SessionStore(session / "session.db"):              # as `drtrt watch` or the station would hold it
        proc = drtrt("sync", session, "--once")
    assert proc.returncode == 2 and "in use by another drtrt process" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
