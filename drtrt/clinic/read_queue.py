"""The readers' queue: the visits a clinician is to read, most urgent first.

In the queue (:func:`read_queue`): every visit whose model result is *refer urgently*, *refer*, *needs
a human read* or *ungradable*, and a sample of the negatives (*rescreen*) at the pathway's
``reads.sample_rate`` — the quality sample of a screening programme. Whether a negative is sampled
depends only on its visit id (:func:`sampled`: the SHA-256 of the id as a number in [0, 1) below the
rate), so the sample is the same after a restart and on every page. A visit leaves the queue when
its reading is final (:mod:`.reads`); one waiting for a second read or arbitration stays, marked so.
A visit still at the camera (open at the station) or still being screened is not read yet.

A photo that a command (``drtrt screen``, ``watch``, ``receive``) brings for a visit a clinician has already
read does not join that visit: it opens the patient's next visit
(:meth:`~drtrt.clinic.visits.VisitBook.visit_for`), so the read stands over exactly the photos it saw. That visit
(:func:`~drtrt.clinic.reads.after_read`) is in the queue whatever the model says of it — a negative too, and one
with an eye missing (the read visit holds that eye): a clinician sees the photo that came after.

During a validation study (``study``: its period, from a station started with ``--study``) every visit of the
period is read by people — the study's reference standard — so each visit whose day
(:func:`~drtrt.clinic.visits.visit_days`, the study cohort's own date rule) falls in the period is in the queue
whatever the model says or the sample, marked ``study``; a visit of the period still unread after it ended stays.
A visit after the period is back to the sample.

Order: the model's verdict (refer urgently, refer, a human read, ungradable, an eye missing, negatives),
then the oldest visit first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from drtrt.clinic.pathways import Pathway, stored_pathway
from drtrt.clinic.reads import ReadState, after_read
from drtrt.clinic.verdicts import HUMAN_READ, INCOMPLETE, REFER, REFER_URGENT, RESCREEN, UNGRADABLE
from drtrt.clinic.visits import visit_days

QUEUED = (REFER_URGENT, REFER, HUMAN_READ, UNGRADABLE, RESCREEN)       # in this order; rescreen: sampled only
ORDER = (REFER_URGENT, REFER, HUMAN_READ, UNGRADABLE, INCOMPLETE, RESCREEN)   # incomplete: after a read only


@dataclass(frozen=True)
class QueueItem:
    visit: int
    patient: str
    name: str | None
    opened: str
    model_verdict: str                         # the model's verdict (one of ORDER)
    model_words: str
    sampled: bool                              # a negative in the quality sample
    next_stage: str                            # primary | secondary | arbitration
    readers: tuple[str, ...]                   # who has read it so far
    after_read: int | None = None              # the read visit whose photos came before this one's (after_read)
    study: bool = False                        # a visit of the validation study's period: every one is read


def sampled(visit_id: int | str, rate: float) -> bool:
    """Whether negative visit ``visit_id`` (a station's visit id, or a reading centre's study UID) is in the quality
    sample at ``rate`` (stable: from the id's hash)."""
    key = visit_id if isinstance(visit_id, str) else int(visit_id)
    digest = hashlib.sha256(f"drtrt-read-sample:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def read_queue(book, pathway: Pathway | None = None, study: tuple[str, str] | None = None) -> list[QueueItem]:
    """The visits waiting for a read (``book``: a :class:`~drtrt.clinic.visits.VisitBook`), in the module's order;
    ``study``: the validation study's period (first and last day, ISO, both included) the station follows."""
    pathway = pathway or stored_pathway(book.store.meta())
    days = visit_days(book.store) if study is not None else {}
    rows = book.store.execute("SELECT id FROM visits WHERE closed IS NOT NULL OR kind != 'station' ORDER BY opened, id")
    found = []
    for row in rows:
        visit = book.visit(row["id"])
        model, before = visit.model_verdict, after_read(book.store, row["id"])
        in_study = study is not None and study[0] <= days.get(visit.id, "") <= study[1]
        wanted = model in QUEUED and (model != RESCREEN or sampled(visit.id, pathway.sample_rate))
        if model not in ORDER or not (wanted or in_study or before is not None):    # not in ORDER: being screened
            continue
        reading: ReadState | None = visit.reading
        if reading is not None and reading.next_stage is None:
            continue
        found.append(QueueItem(visit.id, visit.patient.id, visit.patient.name, visit.opened, model,
                               visit.model_words or "", model == RESCREEN and before is None and not in_study,
                               reading.next_stage if reading is not None else "primary",
                               tuple(r.reader for r in reading.reads) if reading is not None else (), before,
                               in_study))
    return sorted(found, key=lambda item: (ORDER.index(item.model_verdict), item.opened, item.visit))


def previous_visit(book, visit_id: int) -> int | None:
    """The same patient's visit before ``visit_id``, if there is one."""
    rows = book.store.execute("SELECT v.id FROM visits v JOIN visits this ON this.id=? WHERE v.patient=this.patient "
                              "AND v.id < this.id ORDER BY v.id DESC LIMIT 1", (int(visit_id),))
    return rows[0]["id"] if rows else None
