"""The clinician's pages at the station: the readers' queue (reader and lead only), the read page with the
photos at full resolution and the previous visit, a read that overrules the model (the real app, worker, model)."""

from __future__ import annotations

import re

import pytest
from station_helpers import csrf_of
from station_helpers import station  # noqa: F401  (the fixture)
from test_station_people import login, with_accounts
from visit_fixture import clinic, make_visit, next_visit_sampled

from drtrt.clinic import audit
from drtrt.clinic.pathways import ICDR, Pathway, keep_pathway
from drtrt.clinic.read_queue import sampled

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")


def queue_ids(html: str) -> list[int]:
    return [int(v) for v in re.findall(r'<tr id="queue-(\d+)"', html)]


def test_a_reader_reads_from_the_queue_and_a_screener_is_refused(station, tmp_path):
    with_accounts(tmp_path)
    client, worker, _ = station()
    keep_pathway(worker.store, Pathway.from_dict({**ICDR.to_dict(), "reads": {"second_read": "never",
                                                                             "sample_rate": 0.0}}))
    visits = clinic(worker.book)
    again = make_visit(worker.book, "R1", "2026-03-20T09:00", {"right": 0, "left": 2})     # R1's second visit
    assert login(client, "Ana", "4821").status_code == 303                          # a screener
    assert client.get("/reads").status_code == 403 and client.get(f"/reads/{again}").status_code == 403
    assert 'id="nav-reads"' not in client.get("/").text

    reader = type(client)(client.app)
    assert login(reader, "Cleo", "5555").status_code == 303
    page = reader.get("/reads").text
    assert 'id="nav-reads"' in page
    assert queue_ids(page) == [visits["U1"], visits["R1"], again, visits["G1"]]   # urgent first; no negatives at 0 %
    read = reader.get(f"/reads/{again}")
    assert read.status_code == 200 and 'id="previous-visit"' in read.text and "/image/" in read.text
    sha = next(s.sha256 for s in worker.book.visit(again).slots if s.sha256)
    assert f"/image/{sha}/full.jpg" in read.text and 'name="right_icdr"' in read.text

    token = csrf_of(read.text)
    form = {"csrf": token, "right_icdr": "0", "left_icdr": "1"}
    refused = reader.post(f"/reads/{again}/read", data=form)
    assert 'id="read-error"' in refused.text and "give the reason" in refused.text
    done = reader.post(f"/reads/{again}/read", data={**form, "reason": "a laser scar, not new disease"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/reads"
    assert again not in queue_ids(reader.get("/reads").text)
    seen = worker.book.visit(again)
    assert (seen.closed_verdict, seen.model_verdict) == ("rescreen", "refer")
    visit_page = reader.get(f"/visits/{again}").text
    assert 'id="read-by"' in visit_page and "Read by Cleo; the model said: refer" in visit_page
    assert 'id="provisional"' not in visit_page
    entry = audit.entries(worker.store, again)[-1]
    assert (entry.person, entry.role, entry.action, entry.details["reason"]) == (
        "Cleo", "reader", "override", "a laser scar, not new disease")
    assert audit.verify_store(worker.store).ok


def test_the_sample_of_negatives_is_stable_and_near_its_rate(station, tmp_path):
    chosen = [v for v in range(1, 2001) if sampled(v, 0.1)]
    assert chosen == [v for v in range(1, 2001) if sampled(v, 0.1)]              # the same after a restart
    assert 150 <= len(chosen) <= 250 and not any(sampled(v, 0.0) for v in range(100))
    with_accounts(tmp_path)
    client, worker, _ = station()
    keep_pathway(worker.store, Pathway.from_dict({**ICDR.to_dict(), "reads": {"sample_rate": 1.0}}))
    visits = clinic(worker.book)
    assert login(client, "Ben", "a long password").status_code == 303             # the lead reads too
    page = client.get("/reads").text
    order = queue_ids(page)
    assert order[:3] == [visits["U1"], visits["R1"], visits["G1"]] and set(order[3:]) == {visits["N1"], visits["N2"]}
    assert "quality sample of negatives" in page


def test_the_dashboard_alerts_when_the_readers_find_what_the_model_missed(station, tmp_path):
    from study_helpers import programme_keys, signed_record

    from drtrt.clinic.accounts import Actor
    from drtrt.clinic.reads import record_read

    def read(patient, model_grade, grades):
        visit = make_visit(worker.book, patient, "2026-03-02T10:00", {"right": model_grade, "left": 0})
        record_read(worker.book, visit, grades, Actor("Dr Ana", "reader"), reason="the reader's own grade")

    client, worker, _ = station()
    keep_pathway(worker.store, Pathway.from_dict({**ICDR.to_dict(), "reads": {"second_read": "never",
                                                                             "sample_rate": 0.1,
                                                                             "grading": "nhs"}}))
    assert 'id="agreement-none"' in client.get("/").text                       # no read yet
    record = signed_record(worker.store.meta()["model_sha256"], programme_keys()[0])    # sensitivity from 84 %
    worker.store.set_meta("validation", record.to_json())
    worker.store.set_meta("validation_key", record.signature.public_key)
    referable = {"right": "R2M0", "left": "R0M0"}
    for n in range(4):
        read(f"M{n}", 2, referable)
    next_visit_sampled(worker.book, 0.1)                                      # a negative the sample draws:
    read("N0", 0, referable)                                                  # referable by the read
    page = client.get("/").text
    assert 'id="agreement-alert"' in page and 'id="agreement"' in page
    assert "sensitivity on the readers' sample 29% is below the validation record's lower bound 84%" in page


def test_a_second_reader_reads_blind_and_the_arbitrator_sees_both_reads(station, tmp_path):
    from drtrt.clinic.accounts import Actor
    from drtrt.clinic.reads import record_read

    with_accounts(tmp_path)
    client, worker, _ = station()
    keep_pathway(worker.store, Pathway.from_dict({**ICDR.to_dict(), "reads": {"second_read": "always"}}))
    visit = make_visit(worker.book, "B1", "2026-03-02T10:00", {"right": 2, "left": 0})
    record_read(worker.book, visit, {"right": "ICDR2", "left": "ICDR0"}, Actor("Dr First", "reader"))
    assert login(client, "Ben", "a long password").status_code == 303
    page = client.get(f"/reads/{visit}").text
    assert 'id="reads-so-far"' not in page and "Dr First" not in page              # blind: no anchoring
    assert "a second read" in client.get("/reads").text
    record_read(worker.book, visit, {"right": "ICDR1", "left": "ICDR0"}, Actor("Dr Second", "reader"),
                reason="a single haemorrhage")
    page = client.get(f"/reads/{visit}").text
    assert 'id="reads-so-far"' in page and "Dr First" in page and "Dr Second" in page   # arbitration


def test_a_photo_a_command_brings_after_a_read_is_its_own_visit_in_the_queue(station, tmp_path):
    """A command's visit (drtrt receive into the station's session) is read with its photos; a photo that comes after
    the read opens the next visit, in the queue whatever the model says, marked so; the read visit stays read."""
    from drtrt.clinic.store import FileEntry

    with_accounts(tmp_path)
    client, worker, _ = station()
    keep_pathway(worker.store, Pathway.from_dict({**ICDR.to_dict(), "reads": {"second_read": "never",
                                                                             "sample_rate": 0.0}}))

    def photo(n: int, eye: str, grade: int) -> int:
        visit = worker.book.visit_for("C1", day="2026-03-01")
        sha = f"{n:064x}"
        record = {"status": "graded", "grade": grade, "referable": grade >= 2, "lesions": {}, "reason": None}
        worker.store.record_image(sha, record, FileEntry(f"/in/{n}.jpg", sha, 1, 1, "C1", eye, "screened",
                                                         visit=visit), run_id=1)
        return visit

    read_visit = photo(1, "right", 2)
    photo(2, "left", 0)
    reader = type(client)(client.app)
    assert login(reader, "Cleo", "5555").status_code == 303
    assert queue_ids(reader.get("/reads").text) == [read_visit]
    page = reader.get(f"/reads/{read_visit}").text
    assert f"/image/{1:064x}/full.jpg" in page and f"/image/{2:064x}/full.jpg" in page      # the command's photos
    form = {"csrf": csrf_of(page), "right_icdr": "2", "left_icdr": "0"}
    assert reader.post(f"/reads/{read_visit}/read", data=form, follow_redirects=False).status_code == 303
    later = photo(3, "right", 0)                                    # a calm photo after the read
    queue = reader.get("/reads").text
    assert later != read_visit and queue_ids(queue) == [later]
    assert f"photos that came after visit {read_visit} was read" in queue
    page = reader.get(f"/reads/{later}").text
    this_visit = page.split('id="previous-visit"')[0]                # the read visit's photo is not under this read
    assert f"/image/{3:064x}/full.jpg" in this_visit and f"/image/{1:064x}/full.jpg" not in this_visit
    assert worker.book.visit(read_visit).verdict == "refer"
    assert reader.get(f"/visits/{read_visit}").status_code == reader.get(f"/visits/{later}").status_code == 200
