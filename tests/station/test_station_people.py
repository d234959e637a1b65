"""People at the station: log in by name and PIN when the folder has accounts, roles limit what each may
open, and every action of a visit is an audit entry naming its person (the real app, worker and model)."""

from __future__ import annotations

import shutil

import pytest
from station_helpers import csrf_of, wait_for
from station_helpers import station  # noqa: F401  (the fixture)
from station_helpers import slot_state as _state

from drtrt.clinic import audit
from drtrt.clinic.accounts import Accounts

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")


def with_accounts(tmp_path):
    accounts = Accounts(tmp_path / "station")
    accounts.add("Ana", "screener", "4821")
    accounts.add("Ben", "lead", "a long password")
    accounts.add("Cleo", "reader", "5555")
    return accounts


def login(client, name, pin):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf": token, "name": name, "pin": pin}, follow_redirects=False)


def trail(worker, visit=None):
    return [(e.person, e.action) for e in audit.entries(worker.store, visit)]


def test_people_log_in_by_name_and_a_screener_cannot_see_the_audit_trail(station, tmp_path):
    accounts = with_accounts(tmp_path)
    client, worker, _ = station()                      # loopback, no --pin: accounts still ask who you are
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    page = client.get("/login").text
    assert 'name="name"' in page and "PIN or password" in page
    refused = login(client, "Ana", "0000")
    assert refused.status_code == 401 and "Wrong name or PIN." in refused.text
    assert login(client, "Ana", "4821").status_code == 303
    assert ">Ana · screener<" in client.get("/").text
    token = csrf_of(client.get("/patients/new").text)
    visit = int(client.post("/visits", data={"csrf": token, "patient": "P-001", "fields": "1"},
                            follow_redirects=False).headers["location"].rsplit("/", 1)[1])
    assert 'id="audit-link"' not in client.get(f"/visits/{visit}").text
    refused = client.get(f"/visits/{visit}/audit")
    assert refused.status_code == 403 and "your role may not open this page" in refused.text

    lead = type(client)(client.app)
    assert login(lead, "ben", "a long password").status_code == 303          # names without case
    assert 'id="audit-link"' in lead.get(f"/visits/{visit}").text
    page = lead.get(f"/visits/{visit}/audit")
    assert page.status_code == 200 and "The chain is intact" in page.text and "opened the visit" in page.text
    reader = type(client)(client.app)
    assert login(reader, "Cleo", "5555").status_code == 303
    assert reader.get(f"/visits/{visit}/audit").status_code == 403

    accounts.disable("Ana")                                                   # ends her session at once
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert login(client, "Ana", "4821").status_code == 401
    assert trail(worker)[:2] == [("not logged in", "login_refused"), ("Ana", "login")]
    assert audit.verify_store(worker.store).ok


def test_a_name_is_locked_out_after_wrong_pins(station, tmp_path):
    with_accounts(tmp_path)
    client, worker, _ = station()
    for _ in range(5):
        assert login(client, "Ana", "0000").status_code == 401
    locked = login(client, "Ana", "4821")
    assert locked.status_code == 401 and "Too many wrong PINs" in locked.text
    assert sum(1 for _, action in trail(worker) if action == "login_refused") == 6


def test_every_action_of_a_visit_names_its_person(station, tmp_path, fundus_photos):
    with_accounts(tmp_path)
    client, worker, camera = station()
    login(client, "Ana", "4821")
    token = csrf_of(client.get("/patients/new").text)
    visit = int(client.post("/visits", data={"csrf": token, "patient": "P-001", "fields": "1"},
                            follow_redirects=False).headers["location"].rsplit("/", 1)[1])
    shutil.copy(fundus_photos["good0"], camera / "IMG_0001.JPG")              # the camera: Ana put the visit there
    wait_for(lambda: _state(client, visit, "right/any")["state"] == "graded", what="the camera photo")
    client.post(f"/visits/{visit}/target", data={"csrf": token, "slot": "right/any", "reason": "eyelid"})
    with open(fundus_photos["good1"], "rb") as handle:                        # the retake, uploaded
        client.post(f"/visits/{visit}/upload", data={"csrf": token}, files={"photo": ("r.jpg", handle, "image/jpeg")})
    wait_for(lambda: _state(client, visit, "right/any")["replaced"] == 1
             and _state(client, visit, "right/any")["state"] == "graded", what="the retake")
    photo = _state(client, visit, "right/any")
    client.post(f"/visits/{visit}/move", data={"csrf": token, "capture": photo["capture"], "eye": "left"})

    lead = type(client)(client.app)
    login(lead, "Ben", "a long password")
    lead_token = csrf_of(lead.get(f"/visits/{visit}").text)
    lead.post(f"/visits/{visit}/close", data={"csrf": lead_token}, follow_redirects=False)   # right eye empty: anyway
    lead.get(f"/visits/{visit}/report")
    shutil.copy(fundus_photos["good1"], camera / "IMG_0003.JPG")              # no visit at the camera: it waits
    waiting = wait_for(lambda: worker.waiting, what="the waiting photo")[0]
    client.post(f"/camera/{waiting.id}/discard", data={"csrf": token})
    client.post("/logout", data={"csrf": token})

    entries = {e.action: e for e in audit.entries(worker.store)}
    assert trail(worker, visit) == [
        ("Ana", "open_visit"), ("Ana", "capture"), ("Ana", "retake_chosen"), ("Ana", "capture"), ("Ana", "move"),
        ("Ben", "finish_anyway"), ("Ben", "print")]
    first, retake = [e for e in audit.entries(worker.store, visit) if e.action == "capture"]
    assert first.details["source"] == "camera:IMG_0001.JPG" and first.details["retake_of"] is None
    assert retake.details["reason"] == "eyelid" and retake.details["retake_of"] == first.image
    assert retake.details["source"] == "upload" and retake.image == photo["sha256"]
    assert entries["move"].details == {"from_visit": visit, "from": "right/any", "to": "left/any"}
    assert entries["finish_anyway"].details["not_graded"] == ["right/any"]
    assert (entries["register"].person, entries["register"].patient) == ("Ana", "P-001")
    assert (entries["discard"].person, entries["discard"].image) == ("Ana", waiting.id)
    assert entries["logout"].person == "Ana" and entries["finish_anyway"].role == "lead"
    assert audit.verify_store(worker.store).ok


def test_the_shared_pin_is_named_as_such(station, fundus_photos):
    client, worker, _ = station(pin="4821")
    token = csrf_of(client.get("/login").text)
    client.post("/login", data={"csrf": token, "pin": "4821"})
    token = csrf_of(client.get("/patients/new").text)
    client.post("/visits", data={"csrf": token, "patient": "P-009", "fields": "1"})
    assert trail(worker) == [("shared PIN", "login"), ("shared PIN", "register"), ("shared PIN", "open_visit")]
    visit = audit.entries(worker.store)[-1].visit
    assert client.get(f"/visits/{visit}/audit").status_code == 200           # one person does everything


def test_accounts_and_a_shared_pin_do_not_mix(station, tmp_path):
    from drtrt.errors import ConfigError

    with_accounts(tmp_path)
    with pytest.raises(ConfigError, match="has accounts: people log in by name"):
        station(pin="4821")


def test_an_outcome_is_recorded_by_the_logged_in_person_and_audited(station, tmp_path):
    from visit_fixture import at, clinic   # noqa: PLC0415  (the failsafe's hand-built clinic)

    with_accounts(tmp_path)
    client, worker, _ = station()
    visits = clinic(worker.book)
    client.app.state.clock = lambda: at("2026-03-16T09:00")
    assert login(client, "Ben", "a long password").status_code == 303
    page = client.get("/actions").text
    assert 'name="person"' not in page                     # the account names the person: nothing to type
    token = csrf_of(page)
    client.post(f"/actions/{visits['U1']}/outcome", data={"csrf": token, "outcome": "attended", "person": "Eve"})
    assert f'<tr id="visit-{visits["U1"]}"' not in client.get("/actions").text
    entry = [e for e in audit.entries(worker.store, visits["U1"]) if e.action == "outcome"]
    assert [(e.person, e.role, e.details["outcome"], e.details["person"]) for e in entry] == [
        ("Ben", "lead", "attended", "Ben")]
    assert "recorded what became of an open action" in client.get(f"/visits/{visits['U1']}/audit").text
    assert audit.verify_store(worker.store).ok
