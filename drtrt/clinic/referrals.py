"""A referral: a visit whose verdict is *refer* or *refer urgently*, with where it goes and by when.

One place says what the referral letter (:mod:`.letters`) and the FHIR ServiceRequest
(:mod:`drtrt.integration.fhir_referral`) say, so the two never disagree: the urgency, the destination and
the timescale from the session's pathway, and the due date as the failsafe counts it (:mod:`.failsafe`:
from the day the visit opened, or from the day a *did not attend → rebook* was recorded).

A visit the station still has open is not a referral yet: its verdict may still change with the next
photo, so no letter is written for it (:func:`find_referral` says to close it first); nor for a visit
that closed with another verdict than its photos now give (a result came in after it closed: the failsafe
asks a person to read it).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from drtrt.clinic.failsafe import outcomes
from drtrt.clinic.pathways import Pathway, stored_pathway
from drtrt.clinic.reads import reads_of, state_of, words_of
from drtrt.clinic.reports import visit_date, visit_verdicts
from drtrt.clinic.store import SessionStore
from drtrt.clinic.verdicts import REFER, REFER_URGENT, PatientVerdict
from drtrt.errors import ConfigError

URGENCIES = (REFER_URGENT, REFER)


@dataclass(frozen=True)
class Reader:
    """A clinician who read the visit's photos (:mod:`.reads`): their name, when, and what their read asks for."""

    name: str
    read_at: str
    words: str


@dataclass(frozen=True)
class Referral:
    verdict: PatientVerdict                   # the visit's verdict, eyes and photos (urgency: verdict.verdict)
    name: str | None                          # the patient's name, when the station registered one
    opened: str                               # UTC stamp (or the day of the first photo)
    destination: str                          # the pathway's words: who acts on it
    days: int                                 # the pathway's timescale
    due: dt.date
    readers: tuple[Reader, ...] = ()
    urgency: str = ""                         # refer_urgent | refer: the clinicians' reads' where they decide

    @property
    def urgent(self) -> bool:
        return (self.urgency or self.verdict.verdict) == REFER_URGENT

    @property
    def patient(self) -> str:
        return self.verdict.patient

    @property
    def visit(self) -> int | None:
        return self.verdict.visit


def referral_of(store: SessionStore, verdict: PatientVerdict, pathway: Pathway | None = None) -> Referral | None:
    """``verdict``'s referral (None when the visit is not one: not refer / refer urgently, or still open at
    the station). Clinicians' reads decide over the model (:mod:`.reads`): a read that refers makes a referral of
    a visit the model would rescreen, one that does not ends it; while reads disagree, the most urgent stands."""
    pathway = pathway or stored_pathway(store.meta())
    kept = reads_of(store, verdict.visit) if verdict.visit is not None else []
    urgency = state_of(kept, pathway).shown_verdict(verdict.verdict) if kept else verdict.verdict
    if urgency not in URGENCIES:
        return None
    row = None
    if verdict.visit is not None:
        found = store.execute("SELECT v.opened, v.closed, v.kind, v.verdict, p.name FROM visits v LEFT JOIN patients p "
                              "ON p.id = v.patient WHERE v.id=?", (verdict.visit,))
        row = found[0] if found else None
    if row is not None and row["kind"] == "station" and row["closed"] is None:
        return None                          # open: the next photo may change it
    if not kept and row is not None and row["closed"] is not None and \
            json.loads(row["verdict"] or "{}").get("verdict") != verdict.verdict:
        return None                          # closed with another verdict (a result came in after): a person reads it
    opened = row["opened"] if row is not None else visit_date(verdict)
    start = dt.date.fromisoformat(opened[:10])
    if verdict.visit is not None:            # did not attend → rebook: the timescale starts again that day
        for o in outcomes(store, verdict.visit):
            if o.need == urgency and o.outcome == "did_not_attend" and o.then == "rebook":
                start = dt.date.fromisoformat(o.recorded[:10])
    days = pathway.due_in(urgency)
    readers = tuple(Reader(r.reader, r.recorded, words_of(r.verdict, pathway)) for r in kept)
    return Referral(verdict, row["name"] if row is not None else None, opened, pathway.destination(urgency),
                    days, start + dt.timedelta(days=days), readers, urgency)


def find_referral(store: SessionStore, patient: str, visit: int | None = None) -> Referral:
    """The referral of ``patient``'s visit ``visit`` (None: their latest visit); a one-line ConfigError when
    there is no such patient or visit, or when it is not a referral."""
    mine = [v for v in visit_verdicts(store.rows(), store.meta()) if v.patient == patient]
    if not mine:
        raise ConfigError(f"no patient {patient!r} in this session")
    if visit is None:
        chosen = mine[-1]
    else:
        chosen = next((v for v in mine if v.visit == visit), None)
        if chosen is None:
            raise ConfigError(f"patient {patient!r} has no visit {visit} (visits: "
                              f"{', '.join(str(v.visit) for v in mine)})")
    found = referral_of(store, chosen)
    if found is None:
        where = "" if chosen.visit is None else f"visit {chosen.visit} of "
        kept = reads_of(store, chosen.visit) if chosen.visit is not None else []
        if kept:
            pathway = stored_pathway(store.meta())
            shown = state_of(kept, pathway).shown_verdict(chosen.verdict)
            raise ConfigError(f"{where}patient {patient!r} is not a referral: a clinician's read says "
                              f"{words_of(shown, pathway)}")
        if chosen.verdict in URGENCIES:
            raise ConfigError(f"{where}patient {patient!r} is open at the station, or closed with another verdict "
                              "than its photos now give: close it, or have a person read it, before a letter")
        raise ConfigError(f"{where}patient {patient!r} is not a referral (its verdict: {chosen.words}); a letter is "
                          "written only for refer or refer urgently")
    return found
