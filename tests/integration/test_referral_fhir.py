"""The referral as FHIR: a ServiceRequest beside the DiagnosticReport of each referral, valid R4 (fhir.resources),
referring to what is in its Bundle, sent by the same FHIR sender, the same id on every re-send, revoked — never
left standing — when the visit is a referral no more."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("fhir.resources", reason="FHIR needs the integration extra")
from test_sync import FhirStandIn, serve_fhir  # noqa: E402  (the FHIR endpoint the sync tests use)
from visit_fixture import clinic  # noqa: E402

from drtrt.clinic.store import FileEntry, SessionStore  # noqa: E402
from drtrt.clinic.visits import VisitBook  # noqa: E402
from drtrt.integration.fhir import validate_bundle  # noqa: E402
from drtrt.integration.outputs import export_session  # noqa: E402
from drtrt.integration.sync import SyncConfig, sync_session  # noqa: E402


@pytest.fixture
def folder(tmp_path):
    with SessionStore(tmp_path / "session.db") as store:
        store.set_meta("model_name", "tiny-dr")
        store.set_meta("model_sha256", "cd" * 32)
        clinic(VisitBook(store))
    return tmp_path


@pytest.fixture
def fhir_server():
    yield from serve_fhir()


def bundles(folder) -> dict[str, dict]:
    with SessionStore(folder / "session.db") as store:
        found = export_session(store, folder)
    return {o.patient: json.loads((folder / o.path).read_text()) for o in found.objects if o.kind == "fhir"}


def requests_in(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]


def test_each_referral_has_a_valid_service_request_referring_to_its_report(folder):
    found = bundles(folder)
    assert {p for p, b in found.items() if requests_in(b)} == {"U1", "R1"}      # refer urgently, refer; no other
    for patient, priority, due, start in (("U1", "urgent", "2026-03-15", "2026-03-01"),
                                          ("R1", "routine", "2026-05-22", "2026-02-20")):
        bundle = found[patient]
        validate_bundle(bundle)
        (request,) = requests_in(bundle)
        resources = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
        assert (request["status"], request["intent"], request["priority"]) == ("active", "order", priority)
        assert request["occurrencePeriod"] == {"start": start, "end": due}
        assert resources[request["reasonReference"][0]["reference"]]["resourceType"] == "DiagnosticReport"
        assert resources[request["subject"]["reference"]]["identifier"][0]["value"] == patient
        assert resources[request["requester"]["reference"]]["resourceType"] == "Device"
        assert all(resources[r["reference"]]["resourceType"] == "Observation" for r in request["supportingInfo"])
        assert request["category"][0]["coding"][0]["code"] == "3457005"
        assert request["identifier"][0]["value"] == request["id"]
        entry = next(e for e in bundle["entry"] if e["resource"] is request)
        assert entry["request"] == {"method": "PUT", "url": f"ServiceRequest/{request['id']}"}
    assert "hospital eye service — urgent clinic" in json.dumps(requests_in(found["U1"])[0], ensure_ascii=False)
    assert "NOT FOR CLINICAL USE" in json.dumps(requests_in(found["U1"])[0])


def test_the_fhir_sender_sends_it_once_under_the_same_id(folder, fhir_server):
    with SessionStore(folder / "session.db") as store:
        sync_session(store, folder, SyncConfig(fhir=fhir_server))
        first = {k: v for k, v in FhirStandIn.stored.items() if k.startswith("ServiceRequest/")}
        assert len(first) == 2 and {r["priority"] for r in first.values()} == {"urgent", "routine"}
        sent = len(FhirStandIn.received)
        sync_session(store, folder, SyncConfig(fhir=fhir_server))
    assert len(FhirStandIn.received) == sent                               # nothing changed: nothing re-sent
    assert {k for k in FhirStandIn.stored if k.startswith("ServiceRequest/")} == set(first)


def test_a_visit_that_is_a_referral_no_more_revokes_its_request_under_the_same_id(folder):
    before = requests_in(bundles(folder)["R1"])[0]
    with SessionStore(folder / "session.db") as store:     # the referring photo was another patient's: moved
        sha = hashlib.sha256(b"R1/2/left").hexdigest()
        path = store.execute("SELECT path FROM files WHERE sha256=?", (sha,))[0]["path"]
        store.record_file(FileEntry(path, sha, 1, 1, "R9", "left", "screened"), run_id=2)
    after = bundles(folder)["R1"]
    validate_bundle(after)
    (revoked,) = requests_in(after)
    assert revoked["id"] == before["id"] and revoked["status"] == "revoked"
    assert "no longer a referral" in revoked["note"][-1]["text"]
    assert requests_in(bundles(folder)["R1"]) == [revoked]                  # and stays so, the same bytes
