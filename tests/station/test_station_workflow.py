"""The station's workflow over a real worker, model and camera folder (Starlette's test client): a graded
photo retaken only for a reason and its referral standing, camera photos asked about rather than
attached, a registered patient never renamed silently, a photo moved to the other eye or patient,
and the advice escalating after refused tries.

The demo model grades every test photo 0: where a test needs a referable photo, the real result of a
screened photo gets grade 2 written into its record through the session's own store."""

from __future__ import annotations

import json
import shutil
import time

import cv2
import pytest
from station_helpers import open_visit, slot_state, wait_for
from station_helpers import station  # noqa: F401  (the fixture)

from drtrt.clinic.verdicts import REFER

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")


def _grade(worker, sha: str, grade: int) -> None:
    """The screened photo ``sha`` reads ``grade`` from now on (its lesion map left as the model drew it)."""
    row = worker.store.execute("SELECT record FROM images WHERE sha256=?", (sha,))[0]
    record = {**json.loads(row["record"]), "grade": grade, "referable": grade >= 2}
    with worker.store.transaction():
        worker.store.execute("UPDATE images SET record=? WHERE sha256=?", (json.dumps(record), sha))
    worker.changed()


def _camera_photo(client, camera, source, name, visit_id, slot, replaced=0):
    """The camera writes ``source``; returns the slot's state once the photo there is screened."""
    shutil.copy(source, camera / name)
    return wait_for(lambda: (s := slot_state(client, visit_id, slot))["state"] in ("graded", "retake")
                    and s["replaced"] == replaced and s, what=f"{name} in {slot}")


def test_a_graded_photo_is_retaken_for_a_reason_and_its_referral_stands(station, fundus_photos):
    client, worker, camera = station()
    visit_id, token = open_visit(client, patient="P-R")
    first = _camera_photo(client, camera, fundus_photos["good0"], "1.jpg", visit_id, "right/any")
    _grade(worker, first["sha256"], 2)
    assert client.get(f"/api/visits/{visit_id}").json()["eyes"]["right"] == REFER

    target = f"/visits/{visit_id}/target"
    refused = client.post(target, data={"csrf": token, "slot": "right/any"}, follow_redirects=False)
    assert "say%20why" in refused.headers["location"]                    # no reason: not retaken
    assert client.get(f"/api/visits/{visit_id}").json()["target"] == "left/any"
    assert 'name="reason"' in client.get(f"/visits/{visit_id}").text      # the page asks why
    client.post(target, data={"csrf": token, "slot": "right/any", "reason": "eyelid"})
    assert client.get(f"/api/visits/{visit_id}").json()["target"] == "right/any"

    retake = _camera_photo(client, camera, fundus_photos["good1"], "2.jpg", visit_id, "right/any", replaced=1)
    assert retake["grade"] == 0 and retake["reason"] == "eyelid"
    earlier = retake["retaken"][0]
    assert (earlier["grade"], earlier["stands"], earlier["reason"], earlier["verdict"]) == (2, True, "eyelid", REFER)
    state = client.get(f"/api/visits/{visit_id}").json()
    assert state["eyes"]["right"] == REFER and state["verdict"] == REFER       # a retake does not undo it
    panel = client.get(f"/visits/{visit_id}/panel").text
    assert "grade 2" in panel and "eyelid or lashes in the way" in panel
    assert "This result stands: a retake does not undo a referral; only a clinician can." in panel
    client.post(f"/visits/{visit_id}/close", data={"csrf": token})
    assert client.get(f"/api/visits/{visit_id}").json()["closed_verdict"] == REFER
    client.cookies.set("lang", "es")
    spanish = client.get(f"/visits/{visit_id}/panel").text
    assert "párpado" in spanish and "Este resultado se mantiene" in spanish


def test_camera_photos_wait_to_be_asked_about_never_attached(station, fundus_photos, tmp_path):
    camera = tmp_path / "camera"
    camera.mkdir()
    shutil.copy(fundus_photos["good0"], camera / "OLD.JPG")                # there before the station started
    client, worker, camera = station()
    visit_a, token = open_visit(client, patient="P-A")
    time.sleep(1.0)                                                          # several scans of the folder
    assert [s["state"] for s in client.get(f"/api/visits/{visit_a}").json()["slots"]] == ["missing", "missing"]
    old = wait_for(lambda: worker.waiting, what="the old photo waiting")[0]
    assert (old.name, old.before) == ("OLD.JPG", True)
    client.post(f"/visits/{visit_a}/close", data={"csrf": token})
    shutil.copy(fundus_photos["good1"], camera / "LATE.JPG")                # a late retake: no visit at the camera
    wait_for(lambda: len(worker.waiting) == 2, what="the late photo waiting")
    visit_b, token = open_visit(client, patient="P-B")
    time.sleep(1.0)                                                          # several scans of the folder
    state = client.get(f"/api/visits/{visit_b}").json()
    assert [s["state"] for s in state["slots"]] == ["missing", "missing"]   # nothing attached by itself
    assert [s["state"] for s in client.get(f"/api/visits/{visit_a}").json()["slots"]] == ["missing", "missing"]

    page = client.get(f"/visits/{visit_b}").text
    assert "whose are they?" in page and "OLD.JPG" in page and "LATE.JPG" in page
    assert "in the camera folder before the station started" in page and "taken while no visit was at the camera" in page
    late = next(w for w in worker.waiting if w.name == "LATE.JPG")
    assert f"/camera/{late.id}/view.jpg" in page and "LATE.JPG" in client.get("/").text
    thumb = client.get(f"/camera/{late.id}/view.jpg")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    for path in (f"/camera/{'0' * 64}/view.jpg", "/camera/..%2fOLD.JPG/view.jpg", f"/camera/{camera}/view.jpg"):
        assert client.get(path).status_code == 404, path

    client.post(f"/visits/{visit_b}/attach", data={"csrf": token, "photo": late.id, "slot": "left/any"})
    wait_for(lambda: slot_state(client, visit_b, "left/any")["state"] == "graded", what="the attached photo")
    response = client.post(f"/visits/{visit_b}/discard", data={"csrf": token, "photo": old.id},
                           follow_redirects=False)
    assert response.status_code == 303 and "error" not in response.headers["location"]
    assert worker.waiting == [] and (camera / "OLD.JPG").is_file()           # kept on disk, never taken
    assert slot_state(client, visit_b, "right/any")["state"] == "missing"
    worker.stop()
    client, worker, _ = station(data=worker.cfg.data_dir)                    # a restart asks about neither again
    time.sleep(1.0)
    assert worker.waiting == []


def test_a_registered_patient_is_opened_never_renamed_silently(station):
    client, worker, camera = station()
    visit_id, token = open_visit(client, patient="P-1", name="Ana Pérez", birth_date="1961-03-04")
    client.post(f"/visits/{visit_id}/close", data={"csrf": token})
    response = client.post("/visits", data={"csrf": token, "patient": "P-1", "name": "Juana Gómez", "fields": "1"})
    assert response.status_code == 409
    assert "Patient P-1 is already registered as Ana Pérez, born 1961-03-04." in response.text
    assert 'id="open-existing"' in response.text and 'name="change"' in response.text
    assert worker.book.patient("P-1").name == "Ana Pérez"                     # not renamed
    assert client.get(f"/api/visits/{visit_id}").json()["closed"]              # and no visit opened
    opened, _ = open_visit(client, patient="P-1")                              # "open their visit"
    assert opened != visit_id and worker.book.patient("P-1").name == "Ana Pérez"
    open_visit(client, patient="P-1", name="Juana Gómez", change="yes")       # changed on purpose
    assert (worker.book.patient("P-1").name, worker.book.patient("P-1").birth_date) == ("Juana Gómez", "1961-03-04")


def test_a_photo_moved_to_another_patients_visit_takes_its_referral_along(station, fundus_photos):
    client, worker, camera = station()
    visit_a, token = open_visit(client, patient="P-A")
    client.post(f"/visits/{visit_a}/target", data={"csrf": token, "slot": "left/any"})
    photo = _camera_photo(client, camera, fundus_photos["good0"], "1.jpg", visit_a, "left/any")
    _grade(worker, photo["sha256"], 2)
    assert client.get(f"/api/visits/{visit_a}").json()["verdict"] == REFER
    visit_b, token = open_visit(client, patient="P-B")

    response = client.post(f"/visits/{visit_a}/move", data={"csrf": token, "capture": photo["capture"],
                                                            "patient": "P-B", "eye": "right"}, follow_redirects=False)
    assert response.headers["location"] == f"/visits/{visit_b}"
    a, b = (client.get(f"/api/visits/{v}").json() for v in (visit_a, visit_b))
    assert a["verdict"] != REFER and a["slots"][1]["state"] == "missing"
    assert b["eyes"]["right"] == REFER and b["verdict"] == REFER
    assert b["slots"][0]["moved_from"] == f"visit {visit_a} left/any"
    kept = worker.store.file(worker.store.execute("SELECT path FROM captures WHERE id=?", (photo["capture"],))[0][0])
    assert (kept.patient, kept.eye, kept.visit) == ("P-B", "right", visit_b)
    assert f"moved here from visit {visit_a}: Left eye (OS)" in client.get(f"/visits/{visit_b}/panel").text

    client.post(f"/visits/{visit_b}/move", data={"csrf": token, "capture": photo["capture"], "eye": "left"})
    b = client.get(f"/api/visits/{visit_b}").json()                           # then to the other eye
    assert b["eyes"] == {"right": "not_photographed", "left": REFER}


def test_the_advice_escalates_after_the_pathways_failed_tries(station, fundus_photos, tmp_path):
    client, worker, camera = station()
    visit_id, token = open_visit(client, patient="P-U")
    blurred_again = tmp_path / "blurred-again.jpg"
    cv2.imwrite(str(blurred_again), cv2.GaussianBlur(cv2.imread(str(fundus_photos["good1"])), (0, 0), 6))
    first = _camera_photo(client, camera, fundus_photos["blurred"], "1.jpg", visit_id, "right/any")
    panel = client.get(f"/visits/{visit_id}/panel").text
    assert "refocus, hold still and retake" in panel and "still ungradable" not in panel
    response = client.post(f"/visits/{visit_id}/target", data={"csrf": token, "slot": "right/any"},
                           follow_redirects=False)
    assert "error" not in response.headers["location"]                      # a refused photo needs no reason
    second = _camera_photo(client, camera, blurred_again, "2.jpg", visit_id, "right/any", replaced=1)
    panel = client.get(f"/visits/{visit_id}/panel").text
    words = "still ungradable after 2 tries: dim the room and wait for the pupil to widen"
    assert second["state"] == "retake" and words in panel and "refocus, hold still and retake" not in panel
    assert (first["tries"], first["escalation"], second["tries"]) == (1, None, 2)
