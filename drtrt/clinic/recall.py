"""Call and recall: who is due for rescreening in a date range, and who is overdue — the clinic's phone list.

Each patient is judged by their latest visit that has a verdict (a closed station visit, or a visit a
command screened; a visit still open at the station does not count yet). When that verdict is
*rescreen*, the patient is due on the visit's day (UTC) plus the recall interval the pathway gives the
worst grade of its eyes (ICDR and NHS: 12 months); the shortest interval of the eyes wins. A visit
that needs something else (a referral, a human read, ungradable, incomplete) is the failsafe's
(:mod:`.failsafe`), not recall's: the patient is not called for rescreening while it is open. A visit
that a photo opened after a clinician read the patient's visit of that study or day
(:func:`~drtrt.clinic.reads.after_read`) counts with the read visit: a referral read there is not
answered by a recall.

While the model has no validation record the station gives a negative no interval on screen (only a
clinician's read does); the phone list still lists the patient, at the pathway's interval, marked
``provisional``, so nobody is forgotten for want of a validation record.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

from drtrt.clinic.failsafe import utc_now
from drtrt.clinic.pathways import ICDR, Pathway, stored_pathway
from drtrt.clinic.reads import after_read
from drtrt.clinic.slots import Visit
from drtrt.clinic.verdicts import RESCREEN
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError
from drtrt.fileio import to_csv

CSV_COLUMNS = ("patient", "name", "birth_date", "last_visit", "screened", "verdict", "recall_months", "due",
               "overdue", "provisional")


@dataclass(frozen=True)
class Recall:
    patient: str
    name: str | None
    birth_date: str | None
    visit: int                                 # the latest visit with a verdict
    screened: dt.date                          # its day (UTC)
    words: str                                 # its verdict, in the pathway's words
    recall_months: int
    due: dt.date
    overdue: bool
    provisional: bool

    def csv_row(self) -> list:
        return [self.patient, self.name or "", self.birth_date or "", self.visit, self.screened.isoformat(),
                self.words, self.recall_months, self.due.isoformat(), int(self.overdue), int(self.provisional)]


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus ``months`` calendar months (the 31st becomes the month's last day)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def recall_months(visit: Visit, pathway: Pathway = ICDR) -> int:
    """The visit's recall interval: the shortest its rescreened eyes' grades give (the pathway's shortest
    rescreen interval when no eye has a grade — a lesion-only model)."""
    months = [pathway.rule(e.grade).recall_months for e in visit.eyes.values()
              if e.verdict == RESCREEN and e.grade is not None and e.grade < len(pathway.grades)]
    fallback = [r.recall_months for r in pathway.grades if r.recall_months]
    return min([m for m in months if m] or fallback or [12])


def _latest_visits(book: VisitBook) -> list[int]:
    """Each patient's latest visit with a verdict (closed, or a command's), in patient order."""
    rows = book.store.execute("SELECT patient, MAX(id) AS id FROM visits WHERE closed IS NOT NULL OR kind <> 'station' "
                              "GROUP BY patient ORDER BY patient")
    return [int(r["id"]) for r in rows]


def recall_list(book: VisitBook, start: dt.date | None = None, end: dt.date | None = None,
                now: dt.datetime | None = None, overdue_only: bool = False) -> list[Recall]:
    """Patients due for rescreening from ``start`` to ``end`` (inclusive; None: open-ended), by due date;
    ``overdue_only``: only those due before today (``now``'s UTC date)."""
    if start is not None and end is not None and end < start:
        raise ConfigError(f"--to {end} is before --from {start}")
    today = (now or utc_now()).astimezone(dt.timezone.utc).date()
    pathway = stored_pathway(book.store.meta())
    found = []
    for visit_id in _latest_visits(book):
        visit = book.visit(visit_id)
        verdict, before = visit.closed_verdict if visit.closed else visit.verdict, after_read(book.store, visit_id)
        while before is not None and verdict == RESCREEN:    # a photo after a read: the read visit's result stands
            earlier = book.visit(before)
            verdict = earlier.closed_verdict if earlier.closed else earlier.verdict
            before = after_read(book.store, before)
        if verdict != RESCREEN:
            continue
        screened = dt.date.fromisoformat(visit.opened[:10])
        months = recall_months(visit, pathway)
        due = add_months(screened, months)
        if (start and due < start) or (end and due > end) or (overdue_only and not due < today):
            continue
        found.append(Recall(visit.patient.id, visit.patient.name, visit.patient.birth_date, visit.id, screened,
                            visit.closed_words or visit.words, months, due, due < today, visit.provisional))
    return sorted(found, key=lambda r: (r.due, r.patient))


def recall_csv(entries: list[Recall]) -> str:
    """The phone list as CSV (:data:`CSV_COLUMNS`)."""
    return to_csv(CSV_COLUMNS, (r.csv_row() for r in entries))
