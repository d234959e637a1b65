"""Visits in the session store: the protocol's slots, captures and retakes, the visit's verdict, and
what a restart finds."""

from __future__ import annotations

import pytest

from drtrt.errors import ConfigError
from drtrt.clinic.verdicts import INCOMPLETE, NOT_PHOTOGRAPHED, REFER, RESCREEN, UNGRADABLE
from drtrt.clinic.store import FileEntry, SessionStore
from drtrt.clinic.patients import validate_birth_date
from drtrt.clinic.verdicts import SCREENING
from drtrt.clinic.pathways import ICDR
from drtrt.clinic.visits import PatientConflict, Protocol, VisitBook, retake_reason


def _record(store: SessionStore, path: str, sha: str, status: str, grade: int | None = None, code: str | None = None,
            centred: str | None = None, patient: str = "P1", eye: str = "right", visit: int | None = None) -> None:
    record = {"status": status, "grade": grade, "referable": None if grade is None else grade >= 2, "lesions": {},
              "code": code, "reason": None if status == "graded" else "blurred — refocus, hold still and retake",
              "disc": {"x": 10, "y": 10, "radius": 5, "centred": centred, "eye": eye} if centred else None}
    store.record_image(sha, record, FileEntry(path, sha, 1, 1, patient, eye, "screened", visit=visit), run_id=1)


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


def _photo(book, visit_id, name, status, grade=None, slot=None, patient="P1", reason=None):
    """A capture in ``slot`` of ``visit_id`` and its result (a refused one is blurred)."""
    slot = book.add_capture(visit_id, f"/p/{name}.jpg", name * 64, "upload", slot, reason)
    _record(book.store, f"/p/{name}.jpg", name * 64, status, grade=grade, code=None if grade is not None else "blurred",
            patient=patient, eye=slot.split("/")[0], visit=visit_id)
    return slot


def test_a_graded_photo_is_retaken_only_for_a_reason_and_its_referral_stands(book):
    book.register("P1")
    visit_id = book.open_visit("P1", Protocol(1))
    _photo(book, visit_id, "a", "graded", grade=2, slot="right/any")
    with pytest.raises(ConfigError, match="say why"):
        book.set_target(visit_id, "right/any")                       # a graded photo: the reason first
    with pytest.raises(ConfigError, match="say in a few words"):
        retake_reason("other", "  ")
    book.set_target(visit_id, "right/any", retake_reason("other", "patient  blinked"))
    _photo(book, visit_id, "b", "graded", grade=0)                    # the retake goes to the target
    visit = book.visit(visit_id)
    slot = visit.slots[0]
    assert slot.row.sha256 == "b" * 64 and slot.reason == "other: patient blinked"
    [earlier] = slot.replaced
    assert (earlier["grade"], earlier["stands"], earlier["verdict"], earlier["reason"]) == \
        (2, True, REFER, "other: patient blinked")
    assert visit.eyes["right"].verdict == REFER and visit.verdict == REFER
    assert book.close_visit(visit_id).closed_verdict == REFER


def test_a_registered_id_is_never_renamed_without_the_change_confirmed(book):
    book.register("P-1", "Ana Pérez", "1961-03-04")
    for name, born in (("Juana Gómez", None), (None, "1970-01-01"), ("Juana Gómez", "1961-03-04")):
        with pytest.raises(PatientConflict) as raised:
            book.register("P-1", name, born)
        assert raised.value.patient.name == "Ana Pérez"
    assert (book.patient("P-1").name, book.patient("P-1").birth_date) == ("Ana Pérez", "1961-03-04")
    assert book.register("P-1", "Ana Pérez", None).name == "Ana Pérez"          # the same: no conflict
    assert book.register("P-1", "Juana Gómez", None, change=True).name == "Juana Gómez"


def test_a_moved_photo_takes_its_result_to_the_visit_it_goes_to(book):
    book.register("PA"), book.register("PB")
    visit_a, visit_b = book.open_visit("PA", Protocol(1)), book.open_visit("PB", Protocol(1))
    _photo(book, visit_a, "a", "graded", grade=2, slot="left/any", patient="PA")
    _photo(book, visit_b, "b", "graded", grade=0, slot="right/any", patient="PB")
    assert book.visit(visit_a).verdict == REFER and book.visit(visit_b).eyes["right"].verdict == RESCREEN
    moved = book.visit(visit_a).slots[1].capture_id
    book.move_capture(moved, visit_b, "right/any")                  # into a filled slot: replaces it, as a retake
    a, b = book.visit(visit_a), book.visit(visit_b)
    assert a.verdict != REFER and a.slots[1].state == "missing" and a.eyes["left"].verdict == NOT_PHOTOGRAPHED
    assert b.eyes["right"].verdict == REFER and b.slots[0].moved_from == f"visit {visit_a} left/any"
    assert [r["sha256"] for r in b.slots[0].replaced] == ["b" * 64]
    kept = book.store.file("/p/a.jpg")
    assert (kept.patient, kept.eye, kept.visit) == ("PB", "right", visit_b)
    book.move_capture(moved, visit_b, "left/any")                   # then to the other eye
    b = book.visit(visit_b)
    assert b.eyes["left"].verdict == REFER and b.eyes["right"].verdict == NOT_PHOTOGRAPHED   # the one it replaced
    assert b.slots[0].state == "missing" and len(b.slots[0].replaced) == 1                   # stays replaced
    with pytest.raises(ConfigError, match="already there"):
        book.move_capture(moved, visit_b, "left/any")
    book.close_visit(visit_b)
    with pytest.raises(ConfigError, match="closed"):
        book.move_capture(moved, visit_a, "left/any")


def test_the_advice_escalates_after_the_pathways_failed_tries(book):
    book.register("P1")
    visit_id = book.open_visit("P1", Protocol(1))
    _photo(book, visit_id, "a", "ungradable", slot="left/any")
    slot = book.visit(visit_id).slots[1]
    assert (slot.state, slot.tries, slot.escalation) == ("retake", 1, None)        # the quality advice still
    _photo(book, visit_id, "b", "ungradable", slot="left/any")
    slot = book.visit(visit_id).slots[1]
    assert (slot.tries, slot.escalation) == (2, ICDR.escalation) and ICDR.escalate_after == 2
    assert book.visit(visit_id).slots[0].escalation is None                        # the other eye: untouched
