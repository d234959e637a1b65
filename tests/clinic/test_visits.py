"""Visits in the session store: the protocol's slots, captures and retakes, the visit's verdict, and
what a restart finds."""

from __future__ import annotations

import pytest

from drtrt.errors import ConfigError
from drtrt.clinic.verdicts import INCOMPLETE, NOT_PHOTOGRAPHED, REFER, RESCREEN, UNGRADABLE
from drtrt.clinic.store import FileEntry, SessionStore
from drtrt.clinic.patients import validate_birth_date
from drtrt.clinic.verdicts import SCREENING
from drtrt.clinic.visits import Protocol, VisitBook


def _record(store: SessionStore, path: str, sha: str, status: str, grade: int | None = None, code: str | None = None,
            centred: str | None = None, patient: str = "P1", eye: str = "right") -> None:
    record = {"status": status, "grade": grade, "referable": None if grade is None else grade >= 2, "lesions": {},
              "code": code, "reason": None if status == "graded" else "blurred — refocus, hold still and retake",
              "disc": {"x": 10, "y": 10, "radius": 5, "centred": centred, "eye": eye} if centred else None}
    store.record_image(sha, record, FileEntry(path, sha, 1, 1, patient, eye, "screened"), run_id=1)


@pytest.fixture
def book(tmp_path):
    store = SessionStore(tmp_path / "session.db")
    yield VisitBook(store)
    store.close()


def test_a_visit_fills_its_slots_and_retakes_replace_visibly(book):
    book.register("P1", "Ana Pérez", "1961-03-04")
    visit_id = book.open_visit("P1", Protocol(2))
    assert book.open_visit("P1", Protocol(2)) == visit_id          # one open visit per patient
    visit = book.visit(visit_id)
    assert [s.name for s in visit.slots] == ["right/disc", "right/macula", "left/disc", "left/macula"]
    assert visit.target == "right/disc" and visit.verdict == INCOMPLETE
    assert {e: v.verdict for e, v in visit.eyes.items()} == {"right": NOT_PHOTOGRAPHED, "left": NOT_PHOTOGRAPHED}

    assert book.add_capture(visit_id, "/p/a.jpg", "a" * 64, "camera:IMG1.JPG") == "right/disc"
    visit = book.visit(visit_id)
    assert visit.slots[0].state == "screening" and visit.verdict == SCREENING and visit.target == "right/macula"
    assert [p for p, *_ in book.unscreened()] == ["/p/a.jpg"]            # what a restart screens
    _record(book.store, "/p/a.jpg", "a" * 64, "ungradable", code="blurred")
    visit = book.visit(visit_id)
    assert visit.slots[0].state == "retake" and visit.target == "right/disc"    # the refused photo comes first
    assert book.unscreened() == []

    book.add_capture(visit_id, "/p/b.jpg", "b" * 64, "camera:IMG2.JPG")          # the retake
    _record(book.store, "/p/b.jpg", "b" * 64, "graded", grade=0, centred="macula")
    slot = book.visit(visit_id).slots[0]
    assert slot.state == "graded" and slot.row.sha256 == "b" * 64
    assert [r["status"] for r in slot.replaced] == ["ungradable"]                # not silently
    assert any("macula-centred" in w for w in slot.warnings)                    # the field is checked

    for name, sha, eye, grade in (("c", "c", "right", 0), ("d", "d", "left", 2), ("e", "e", "left", 1)):
        book.add_capture(visit_id, f"/p/{name}.jpg", sha * 64, "upload")
        _record(book.store, f"/p/{name}.jpg", sha * 64, "graded", grade=grade, eye=eye)
    visit = book.visit(visit_id)
    assert visit.complete and visit.target is None and visit.verdict == REFER
    assert {e: v.verdict for e, v in visit.eyes.items()} == {"right": RESCREEN, "left": REFER}
    with pytest.raises(ConfigError, match="choose the photo to retake"):
        book.add_capture(visit_id, "/p/f.jpg", "f" * 64, "upload")
    with pytest.raises(ConfigError, match="already in the visit"):
        book.add_capture(visit_id, "/p/c.jpg", "c" * 64, "upload", slot="left/disc")
    closed = book.close_visit(visit_id)
    assert closed.closed and closed.closed_verdict == REFER and closed.target is None
    with pytest.raises(ConfigError, match="closed"):
        book.add_capture(visit_id, "/p/g.jpg", "9" * 64, "upload", slot="left/disc")


def test_one_eye_refused_and_one_missing(book):
    book.register("P2")
    visit_id = book.open_visit("P2", Protocol(1))
    book.add_capture(visit_id, "/p/x.jpg", "1" * 64, "upload", slot="left/any")
    _record(book.store, "/p/x.jpg", "1" * 64, "ungradable", code="too_dark", patient="P2", eye="left")
    visit = book.visit(visit_id)
    assert {e: v.verdict for e, v in visit.eyes.items()} == {"right": NOT_PHOTOGRAPHED, "left": UNGRADABLE}
    assert visit.verdict == UNGRADABLE and visit.waiting and not visit.complete
    other = book.open_visit(book.register("P3").id, Protocol(1))
    with pytest.raises(ConfigError, match="another visit"):
        book.add_capture(other, "/p/x.jpg", "1" * 64, "upload")


def test_patients_are_validated_and_found(book, tmp_path):
    book.register("P-9", "  Ana   Pérez ", None)
    assert book.patient("P-9").name == "Ana Pérez"
    book.register("P-9", None, "1950-01-31")                     # adds the date, keeps the name
    assert (book.patient("P-9").name, book.patient("P-9").birth_date) == ("Ana Pérez", "1950-01-31")
    assert [p.id for p in book.find_patients("pér")] == ["P-9"] and book.find_patients("%") == []
    for bad in ("", "x" * 65, "a\nb"):
        with pytest.raises(ConfigError, match="patient ID"):
            book.register(bad)
    for bad in ("31/01/1950", "2999-01-01"):
        with pytest.raises(ConfigError, match="date of birth"):
            validate_birth_date(bad)
    with pytest.raises(ConfigError, match="not registered"):
        book.open_visit("nobody", Protocol(1))
    with pytest.raises(ConfigError, match="1 or 2"):
        Protocol(3)


def test_visits_survive_reopening_the_store(tmp_path):
    store = SessionStore(tmp_path / "session.db")
    book = VisitBook(store)
    book.register("P1")
    visit_id = book.open_visit("P1", Protocol(1))
    book.add_capture(visit_id, "/p/a.jpg", "a" * 64, "upload")
    store.close()
    store = SessionStore(tmp_path / "session.db")
    again = VisitBook(store).visit(visit_id)
    assert again.slots[0].state == "screening" and again.patient.id == "P1"
    store.close()
