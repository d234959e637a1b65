"""A hand-built clinic: visits with known opening days, grades and closings, for the failsafe, recall and
export tests. Stamps are set by hand after the book wrote its own (the clock is the test's)."""

from __future__ import annotations

import datetime as dt
import hashlib

from drtrt.clinic.read_queue import sampled
from drtrt.clinic.store import FileEntry
from drtrt.clinic.visits import Protocol, VisitBook


def at(stamp: str) -> dt.datetime:
    """"2026-03-01T10:00" → an aware UTC datetime."""
    return dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.timezone.utc)


def make_visit(book: VisitBook, patient: str, opened: str, eyes: dict[str, int | str], close: bool = True,
               name: str | None = None, extra: dict | None = None) -> int:
    """A station visit of ``patient`` opened at ``opened`` (UTC, "YYYY-MM-DDTHH:MM"); ``eyes``: eye → grade, or
    "ungradable"; closed (an hour later) unless ``close`` is False; ``extra``: more keys of every photo's record."""
    book.register(patient, name)
    visit = book.open_visit(patient, Protocol(1))
    for eye, grade in eyes.items():
        sha = hashlib.sha256(f"{patient}/{visit}/{eye}".encode()).hexdigest()
        path = f"/photos/{patient}-{visit}-{eye}.jpg"
        book.add_capture(visit, path, sha, "upload", slot=f"{eye}/any")
        graded = grade != "ungradable"
        record = {"status": "graded" if graded else "ungradable", "grade": grade if graded else None,
                  "referable": (grade >= 2) if graded else None, "lesions": {},
                  "reason": None if graded else "blurred — refocus, hold still and retake",
                  "code": None if graded else "blurred", **(extra or {})}
        book.store.record_image(sha, record, FileEntry(path, sha, 1, 1, patient, eye, "screened", visit=visit),
                                run_id=1)
    if close:
        book.close_visit(visit)
    closed = (at(opened) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    book.store.execute("UPDATE visits SET opened=?, closed=CASE WHEN closed IS NULL THEN NULL ELSE ? END WHERE id=?",
                       (at(opened).strftime("%Y-%m-%dT%H:%M:%SZ"), closed, visit))
    return visit


def clinic(book: VisitBook) -> dict[str, int]:
    """Six patients: name → their visit."""
    return {
        "U1": make_visit(book, "U1", "2026-03-01T10:00", {"right": 4, "left": 0}, name="Uma Urgent"),
        "R1": make_visit(book, "R1", "2026-02-20T09:00", {"right": 0, "left": 2}),
        "N1": make_visit(book, "N1", "2026-03-01T11:00", {"right": 0, "left": 0}),
        "N2": make_visit(book, "N2", "2025-03-10T11:00", {"right": 1, "left": 1}, name="=cmd|' /C calc'!A0"),
        "G1": make_visit(book, "G1", "2026-02-27T12:00", {"right": "ungradable", "left": "ungradable"}),
        "O1": make_visit(book, "O1", "2026-03-01T23:59", {"right": 0}, close=False),
    }


def next_visit_sampled(book: VisitBook, rate: float, drawn: bool = True) -> int:
    """Make the next visit's id one the quality sample of negatives at ``rate`` draws (``drawn``) or does not, as
    the readers' queue would have it (:func:`drtrt.clinic.read_queue.sampled`); returns that id."""
    store = book.store
    last = store.execute("SELECT seq FROM sqlite_sequence WHERE name = 'visits'")
    following = (int(last[0]["seq"]) if last else 0) + 1
    while sampled(following, rate) != drawn:
        following += 1
    with store.transaction():                           # AUTOINCREMENT continues from sqlite_sequence's seq
        if last:
            store.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'visits'", (following - 1,))
        else:
            store.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('visits', ?)", (following - 1,))
    return following
