"""A photo that a command brings after a clinician read the patient's visit (issue 24 item 3: "a reader's grade is
the visit's final result") never joins the read visit: it opens the patient's next visit, which a clinician reads
whatever the model says; the read visit — its photos, its verdict, its VERIFIED SR — stays exactly what was read,
and a referral read there is answered neither by the new photo nor by a recall. On main the photo joined the read
visit and the read stood as the final result, VERIFIED, over a photo nobody read."""

from __future__ import annotations

import shutil

import pytest

from drtrt.clinic import audit
from drtrt.clinic.accounts import NO_LOGIN, Actor
from drtrt.clinic.failsafe import open_actions
from drtrt.clinic.pathways import NHS, Pathway, keep_pathway
from drtrt.clinic.patients import Assignment
from drtrt.clinic.read_queue import read_queue
from drtrt.clinic.reads import after_read, record_read
from drtrt.clinic.recall import recall_list
from drtrt.clinic.session import ScreeningSession, screen_images
from drtrt.clinic.store import FileEntry, SessionStore
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError
from drtrt.task import TaskSpec

ANA, BEN = Actor("Dr Ana", "reader"), Actor("Dr Ben", "reader")
READ_NEVER_TWICE = {"second_read": "never", "sample_rate": 0.0}      # no negative is sampled: only after_read queues


def _graded(grade: int, study: str | None = None, patient: str | None = None) -> dict:
    """A graded photo's record; ``study``: it came as DICOM, of that camera study and ``patient``."""
    camera = {"dicom": {"study_uid": study, "patient_id": patient}} if study else {}
    return {**camera, "status": "graded", "grade": grade, "grade_name": TaskSpec().grade_names[grade],
            "referable": grade >= 2, "probabilities": None, "lesions": {},
            "macula": {"m": "M0", "fovea": [1, 1], "disc_diameter": 9.0, "reason": "", "exudate_distance_dd": 4.0}}


def _photo(store: SessionStore, book: VisitBook, n: int, patient: str, eye: str | None, grade: int,
           study: str | None = None) -> int:
    """One photo as a command keeps it: its visit from :meth:`VisitBook.visit_for`, then its result."""
    visit = book.visit_for(patient, study_uid=study, day="2026-12-07")
    sha = f"{n:064x}"
    entry = FileEntry(f"/p/{n}.jpg", sha, 1, 1, patient, eye, "screened", visit=visit)
    store.record_image(sha, _graded(grade, study, patient), entry, store.begin_run("test"))
    return visit


@pytest.fixture
def book(tmp_path):
    store = SessionStore(tmp_path / "session.db")
    keep_pathway(store, Pathway.from_dict({**NHS.to_dict(), "reads": READ_NEVER_TWICE}))
    yield VisitBook(store)
    store.close()


def test_a_photo_screened_after_a_read_opens_the_next_visit_and_the_read_stands(tiny_onnx, photo_root, tmp_path):
    """Through ``drtrt screen``'s loop: a read visit keeps exactly the photos it was read over; the later photo is
    its own visit, in the queue, audited; screening the read photos again moves nothing."""
    folder = tmp_path / "camera"
    folder.mkdir()
    found = sorted(photo_root.rglob("*.jpg"))
    right, left, late = (shutil.copy(found[i], folder / f"{name}.jpg") for i, name in
                         enumerate(("right", "left", "late")))
    out = tmp_path / "session"
    screen_images([right], tiny_onnx, out, default=Assignment("P-1", "right"))
    screen_images([left], tiny_onnx, out, default=Assignment("P-1", "left"))
    with SessionStore(out / "session.db") as store:
        keep_pathway(store, Pathway.from_dict({**NHS.to_dict(), "reads": READ_NEVER_TWICE}))
        book = VisitBook(store)
        (read_visit,) = [r["id"] for r in store.execute("SELECT id FROM visits")]
        shown = book.visit(read_visit)                       # a command's visit shows its photos to the reader
        assert sorted(s.name for s in shown.slots if s.row is not None) == ["left/any", "right/any"]
        read = record_read(book, read_visit, {"right": "R3aM0", "left": "R0M0"}, ANA, reason="new vessels at the disc")
        assert read.verdict == "refer_urgent"
        photos = sorted(s.sha256 for s in book.visit(read_visit).slots)

    screen_images([late], tiny_onnx, out, default=Assignment("P-1", "right"))     # a later photo, same day
    screen_images([right, left], tiny_onnx, out, default=Assignment("P-1", "right"))   # the read ones, again
    with SessionStore(out / "session.db") as store:
        book = VisitBook(store)
        visits = [r["id"] for r in store.execute("SELECT id FROM visits ORDER BY id")]
        assert len(visits) == 2
        new_visit = visits[1]
        where = {r["path"].rsplit("/", 1)[-1]: r["visit"] for r in store.execute("SELECT path, visit FROM files")}
        assert where == {"right.jpg": read_visit, "left.jpg": read_visit, "late.jpg": new_visit}
        kept = book.visit(read_visit)
        assert sorted(s.sha256 for s in kept.slots) == photos                     # exactly what was read
        assert store.file(str(left.resolve())).eye == "left"                      # not re-filed under the read
        assert (kept.verdict, kept.reading.final.reader) == ("refer_urgent", "Dr Ana")
        assert after_read(store, new_visit) == read_visit and after_read(store, read_visit) is None
        queued = {item.visit: item for item in read_queue(book)}
        assert read_visit not in queued and queued[new_visit].after_read == read_visit
        entry = next(e for e in audit.entries(store, new_visit) if e.action == "after_read")
        assert (entry.person, entry.patient, entry.details["read_visit"]) == (NO_LOGIN.name, "P-1", read_visit)
        assert [e.action for e in audit.entries(store) if e.action == "after_read"] == ["after_read"]   # once
        assert audit.verify_store(store).ok


def test_a_read_given_while_a_photo_is_screened_sends_that_photo_to_the_next_visit(tiny_onnx, photo_root, tmp_path):
    """The photo joined the visit before the read and is kept after it: it still never sits under the read."""
    found = sorted(photo_root.rglob("*.jpg"))
    with ScreeningSession(tiny_onnx, tmp_path / "session") as session:
        keep_pathway(session.store, Pathway.from_dict({**NHS.to_dict(), "reads": READ_NEVER_TWICE}))
        session.submit(found[0], Assignment("P-1", "right"))
        session.submit(found[1], Assignment("P-1", "left"))
        session.flush()
        (read_visit,) = [r["id"] for r in session.store.execute("SELECT id FROM visits")]
        session.submit(found[2], Assignment("P-1", "right"))            # joins the visit, waits for the model
        assert session.store.file(str(found[2].resolve())) is None
        record_read(session.visits, read_visit, {"right": "R2M0", "left": "R0M0"}, ANA, reason="a bleed")
        session.flush()
        late = session.store.file(str(found[2].resolve()))
        assert late.visit != read_visit and after_read(session.store, late.visit) == read_visit
        assert [s.sha256 for s in session.visits.visit(read_visit).slots if s.eye == "right"] == [
            session.store.file(str(found[0].resolve())).sha256]
        assert [i.visit for i in read_queue(session.visits)] == [late.visit]


def test_a_referable_read_stays_referable_and_the_later_negative_is_read_not_recalled(book):
    read_visit = _photo(book.store, book, 1, "P-2", "right", 2)
    _photo(book.store, book, 2, "P-2", "left", 0)
    assert [i.visit for i in read_queue(book)] == [read_visit]                # the model refers: read it
    record_read(book, read_visit, {"right": "R2M0", "left": "R0M0"}, ANA)
    assert read_queue(book) == []
    later = _photo(book.store, book, 3, "P-2", "right", 0)                    # a calm photo after the read
    assert later != read_visit
    assert book.visit(read_visit).verdict == "refer"                          # never undone by a later photo
    (item,) = read_queue(book)                                                # a negative, not sampled: still read
    assert (item.visit, item.after_read, item.sampled, item.model_verdict) == (later, read_visit, False, "incomplete")
    assert [r.patient for r in recall_list(book)] == []                       # the referral is not recalled
    needs = {a.visit: a.need for a in open_actions(book)}
    assert needs == {read_visit: "refer", later: "human_read"}               # the read referral stays open
    record_read(book, later, {"right": "R0M0", "left": "U"}, BEN, reason="the left eye is in the visit read before")
    assert read_queue(book) == [] and book.visit(read_visit).verdict == "refer"
    assert _photo(book.store, book, 4, "P-2", "left", 0) not in (read_visit, later)   # each read visit stays shut


def test_a_camera_studys_photo_after_a_read_opens_a_visit_of_the_same_study(book):
    """``drtrt receive`` groups by the camera's DICOM study: the read study visit is not joined either."""
    read_visit = _photo(book.store, book, 1, "P-3", "right", 0, study="1.2.3")
    _photo(book.store, book, 2, "P-3", "left", 0, study="1.2.3")
    record_read(book, read_visit, {"right": "R0M0", "left": "R0M0"}, ANA)
    later = _photo(book.store, book, 3, "P-3", "left", 4, study="1.2.3")
    assert later != read_visit and after_read(book.store, later) == read_visit
    assert book.visit(read_visit).verdict == "rescreen" and book.visit(later).model_verdict == "refer_urgent"
    assert [i.visit for i in read_queue(book)] == [later]
    unread = _photo(book.store, book, 4, "P-3", "right", 0, study="1.2.4")     # another study: its own visit
    assert after_read(book.store, unread) is None and _photo(book.store, book, 5, "P-3", "left", 0, "1.2.4") == unread


def test_a_verified_sr_never_describes_a_photo_its_reader_did_not_see(book, tmp_path):
    """The read visit's VERIFIED SR is not rebuilt by the later photo; the later photo's SR is its own, UNVERIFIED."""
    pytest.importorskip("highdicom", reason="DICOM output needs the integration extra (pip install "
                                            "'drtrt[integration]')")
    from pydicom import dcmread

    from drtrt.integration.outputs import export_session

    store = book.store
    store.bind_model("b" * 64, "test.onnx", TaskSpec())
    read_visit = _photo(store, book, 1, "P-4", "right", 2)
    _photo(store, book, 2, "P-4", "left", 0)
    record_read(book, read_visit, {"right": "R2M0", "left": "R0M0"}, ANA)
    first = {o.visit: o for o in export_session(store, tmp_path).objects if o.kind == "sr"}
    verified = dcmread(tmp_path / first[read_visit].path)
    assert verified.VerificationFlag == "VERIFIED"
    later = _photo(store, book, 3, "P-4", "right", 0)
    again = export_session(store, tmp_path)
    srs = {o.visit: o for o in again.objects if o.kind == "sr"}
    assert srs[read_visit] == first[read_visit] and first[read_visit].path not in again.written    # untouched
    own = dcmread(tmp_path / srs[later].path)
    assert own.VerificationFlag == "UNVERIFIED" and "VerifyingObserverSequence" not in own
    assert "PredecessorDocumentsSequence" not in own and own.SOPInstanceUID != verified.SOPInstanceUID
    assert "Dr Ana" not in str(own)


def test_the_later_photo_of_a_read_camera_study_is_reported_in_a_study_of_its_own(book, tmp_path):
    """One study holds one visit's reports: the read visit's VERIFIED SR stays alone in the camera's study (a reading
    centre reads a study as one visit)."""
    pytest.importorskip("highdicom", reason="DICOM output needs the integration extra (pip install "
                                            "'drtrt[integration]')")
    from pydicom import dcmread

    from drtrt.integration.outputs import export_session

    book.store.bind_model("b" * 64, "test.onnx", TaskSpec())
    read_visit = _photo(book.store, book, 1, "P-5", "right", 2, study="1.2.5")
    _photo(book.store, book, 2, "P-5", "left", 0, study="1.2.5")
    record_read(book, read_visit, {"right": "R2M0", "left": "R0M0"}, ANA)
    later = _photo(book.store, book, 3, "P-5", "left", 0, study="1.2.5")
    objects = export_session(book.store, tmp_path).objects
    studies = {(o.visit, o.kind): dcmread(tmp_path / o.path, stop_before_pixels=True).StudyInstanceUID
               for o in objects if o.kind == "sr"}
    assert studies[(read_visit, "sr")] == "1.2.5" and studies[(later, "sr")] != "1.2.5"


def test_a_commands_visit_with_a_photo_of_no_eye_is_not_read_until_its_eye_is_said(book):
    """The read page shows a visit's right and left photos; a photo of no eye would be under the read unseen."""
    visit = _photo(book.store, book, 1, "P-6", "right", 2)
    _photo(book.store, book, 2, "P-6", None, 0)
    with pytest.raises(ConfigError, match="a photo of this visit has no eye"):
        record_read(book, visit, {"right": "R2M0", "left": "U"}, ANA)
    assert not book.has_reads(visit) and not [e for e in audit.entries(book.store, visit) if e.action == "read"]
