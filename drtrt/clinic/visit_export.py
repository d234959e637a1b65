"""The visits of a date range as one CSV a programme manager can open: one row per visit.

Columns (:data:`COLUMNS`): the visit, its patient and kind (``station``, or ``session`` for a command's
photos), when it opened and closed (UTC), the operator (the people its audit trail names:
:func:`visit_operator`), the verdict (id and words) and per eye the verdict, grade, R and M,
the photos refused (ungradable or unreadable, retaken ones too), the retakes, the clinicians who read it
(:mod:`.reads`), the latest failsafe outcome (:mod:`.failsafe`) with who recorded it and when, and
whether the results are provisional. A visit belongs to the range by the day it opened (UTC).

Cells that a spreadsheet would run as a formula (starting ``=``, ``+``, ``-``, ``@``) are written with a
leading apostrophe: a patient's name must not become a command on the manager's machine.
"""

from __future__ import annotations

import datetime as dt

from drtrt.clinic import audit
from drtrt.clinic.failsafe import outcomes
from drtrt.clinic.reads import reads_of
from drtrt.clinic.slots import REFUSED, Visit
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError
from drtrt.fileio import to_csv

COLUMNS = ("visit", "patient", "kind", "opened", "closed", "operator", "verdict", "verdict_words",
           "right_verdict", "right_grade", "right_R", "right_M", "left_verdict", "left_grade", "left_R", "left_M",
           "refused_photos", "retakes", "reader", "outcome", "outcome_by", "outcome_at", "provisional")


OPERATOR_ACTIONS = ("open_visit", "to_camera", "capture", "retake_chosen", "move", "close", "finish_anyway")


def visit_operator(book: VisitBook, visit: Visit) -> str:
    """Who screened the visit, as its audit trail names them (the people who opened it, took, retook or moved its
    photos, or finished it), in the order they first acted, ``; `` between; "shared PIN" where the station had
    one PIN for everyone. Empty for a visit with no such entry (a command's visit, or one from before the trail)."""
    people = [e.person for e in audit.entries(book.store, visit.id) if e.action in OPERATOR_ACTIONS]
    return "; ".join(dict.fromkeys(people))


def visit_ids(book: VisitBook, start: dt.date, end: dt.date) -> list[int]:
    """The visits opened from ``start`` to ``end`` (UTC days, inclusive), oldest first."""
    if end < start:
        raise ConfigError(f"--to {end} is before --from {start}")
    rows = book.store.execute("SELECT id FROM visits WHERE substr(opened, 1, 10) BETWEEN ? AND ? ORDER BY opened, id",
                              (start.isoformat(), end.isoformat()))
    return [int(r["id"]) for r in rows]


def visit_row(book: VisitBook, visit: Visit, kind: str) -> list:
    """One visit as :data:`COLUMNS`."""
    photos = [s.row.status for s in visit.slots if s.row is not None] + \
        [r["status"] for s in visit.slots for r in s.replaced]
    eyes = []
    for side in ("right", "left"):
        eye = visit.eyes.get(side)
        gradable = eye is not None and eye.gradable
        eyes += [eye.verdict if eye else "", "" if eye is None or eye.grade is None else eye.grade,
                 (eye.r or "") if gradable else "", (eye.m or "not assessed") if gradable else ""]
    last = (outcomes(book.store, visit.id) or [None])[-1]
    return [visit.id, visit.patient.id, kind, visit.opened, visit.closed or "", visit_operator(book, visit),
            visit.closed_verdict or visit.verdict, visit.closed_words or visit.words, *eyes,
            sum(status in REFUSED for status in photos), sum(len(s.replaced) for s in visit.slots),
            "; ".join(dict.fromkeys(r.reader for r in reads_of(book.store, visit.id))),
            last.words if last else "", last.person if last else "", last.recorded if last else "",
            int(visit.provisional)]


def visits_csv(book: VisitBook, start: dt.date, end: dt.date) -> str:
    """The CSV of every visit opened from ``start`` to ``end`` (module docstring)."""
    kinds = {int(r["id"]): r["kind"] for r in book.store.execute("SELECT id, kind FROM visits")}
    return to_csv(COLUMNS, (visit_row(book, book.visit(i), kinds[i]) for i in visit_ids(book, start, end)))
