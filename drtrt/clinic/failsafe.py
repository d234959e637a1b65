"""The failsafe: every visit that still needs something, across days, until a named person records its outcome.

A visit needs something (:data:`~drtrt.clinic.pathways.NEEDS`, most urgent first) when it closed as
*refer urgently*, *refer*, *needs a human read*, *ungradable* or *incomplete*, when it is still open at
the station (*not closed*), or — for a visit a command screened (never closed) — when its verdict is
one of those. A clinician's read (:mod:`.reads`) is taken over the model's verdict: a read answers "needs
a human read", and what it asks for is what the visit needs. A visit a photo opened after a clinician read the
patient's visit (:func:`~drtrt.clinic.reads.after_read`) needs a human read (or what is more urgent) until read. A visit that closed with a verdict the kit does not know, or while a photo was still being
screened, needs a human read: a person looks. Each item is due within the pathway's timescale from the
day the visit opened (UTC) and is overdue the day after. An open visit is ranked by the worse of
"not closed" and what its photos say so far, so an urgent referral waiting to be closed comes first.

The list is read from the session store every time (:func:`open_actions`): nothing is kept in memory, so
it survives midnight and a restart. An item leaves it only with an outcome recorded by a named person
(:func:`record_outcome`, kept in ``action_outcomes``, rows only added): *attended*, *treated*, or *did
not attend* then *discharge* with a reason. *Letter sent* and *appointment booked* are steps shown
with the item, which stays until the patient is seen; *did not attend* then *rebook* keeps it and
starts its timescale again from that day. An outcome answers the need it was recorded against: a
visit that closes later with another need is listed again.

The clock is the caller's (``now``, an aware UTC datetime), so tests move it across midnight and past
a timescale.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from drtrt.clinic import audit
from drtrt.clinic.accounts import Actor
from drtrt.clinic.pathways import NEEDS, Pathway, stored_pathway
from drtrt.clinic.reads import after_read
from drtrt.clinic.store import SessionStore
from drtrt.clinic.verdicts import LABELS
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError
from drtrt.fileio import to_csv

OUTCOMES = ("letter_sent", "appointment_booked", "attended", "treated", "did_not_attend")
THEN = ("rebook", "discharge")                 # after did_not_attend
CLOSING = ("attended", "treated")              # and did_not_attend + discharge
OUTCOME_WORDS = {"letter_sent": "letter sent", "appointment_booked": "appointment booked", "attended": "attended",
                 "treated": "treated", "did_not_attend": "did not attend", "rebook": "rebook",
                 "discharge": "discharge"}
NEED_WORDS = {**{k: LABELS[k] for k in NEEDS if k in LABELS}, "not_closed": "visit not closed"}
CLOSED_UNREAD = "closed before every result was in — a person must read its photos"
MAX_PERSON, MAX_REASON = 80, 200
CSV_COLUMNS = ("visit", "patient", "name", "opened", "closed", "need", "verdict", "words", "destination", "due",
               "overdue", "last_step", "last_step_by", "last_step_at")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class Outcome:
    visit: int
    need: str
    outcome: str                               # one of OUTCOMES
    then: str | None                           # did_not_attend: rebook | discharge
    reason: str | None                         # discharge: why
    person: str                                # who recorded it, by name
    recorded: str                              # UTC stamp

    @property
    def closes(self) -> bool:
        return self.outcome in CLOSING or (self.outcome == "did_not_attend" and self.then == "discharge")

    @property
    def words(self) -> str:
        return OUTCOME_WORDS[self.outcome] + (f" → {OUTCOME_WORDS[self.then]}" if self.then else "")


@dataclass(frozen=True)
class Action:
    """One visit that still needs something."""

    visit: int
    patient: str
    name: str | None
    opened: str                                # UTC stamp
    closed: str | None
    need: str                                  # one of NEEDS
    verdict: str                               # the visit's verdict id (closed, or so far)
    words: str                                 # the verdict in the pathway's words
    destination: str
    due: dt.date
    overdue: bool
    rank: int                                  # 0 most urgent
    steps: tuple[Outcome, ...] = ()            # outcomes recorded for this need, oldest first (none closing)

    @property
    def last(self) -> Outcome | None:
        return self.steps[-1] if self.steps else None


def _need_of(closed: str | None, verdict: str, kind: str) -> str | None:
    """What a visit needs (None: nothing), from its closed verdict or, open, its kind and verdict so far."""
    if closed is not None:
        if verdict == "rescreen":
            return None
        return verdict if verdict in NEEDS else "human_read"     # unknown, or closed while screening
    if kind == "station":
        return "not_closed"
    return verdict if verdict in NEEDS else None                 # a command's visit: never closed


def outcomes(store: SessionStore, visit: int | None = None) -> list[Outcome]:
    """Every outcome recorded (of one visit), oldest first."""
    where, params = ("WHERE visit=?", (int(visit),)) if visit is not None else ("", ())
    rows = store.execute(f"SELECT * FROM action_outcomes {where} ORDER BY id", params)
    return [Outcome(r["visit"], r["need"], r["outcome"], r["then_what"], r["reason"], r["person"], r["recorded"])
            for r in rows]


def _day(stamp: str) -> dt.date:
    return dt.date.fromisoformat(stamp[:10])


def open_actions(book: VisitBook, now: dt.datetime | None = None, overdue_only: bool = False) -> list[Action]:
    """Every visit that still needs something (module docstring), most urgent first, then by due date."""
    now = now or utc_now()
    store = book.store
    pathway = stored_pathway(store.meta())
    recorded: dict[int, list[Outcome]] = {}
    for outcome in outcomes(store):
        recorded.setdefault(outcome.visit, []).append(outcome)
    read_visits = {r["visit"] for r in store.execute("SELECT DISTINCT visit FROM reads")}
    found = []
    for row in store.execute("SELECT v.id, v.kind, v.opened, v.closed, v.verdict, v.patient, p.name FROM visits v "
                             "LEFT JOIN patients p ON p.id = v.patient ORDER BY v.id"):
        if row["closed"] is not None and row["id"] in read_visits:    # a clinician's read decides (clinic.reads)
            visit = book.visit(row["id"])
            need = _need_of(row["closed"], visit.closed_verdict or "", row["kind"])
            verdict, words = visit.closed_verdict, visit.closed_words
        elif row["closed"] is not None:        # what it closed with (no photo can change it)
            kept = json.loads(row["verdict"]) if row["verdict"] else {"verdict": None, "words": None}
            need = _need_of(row["closed"], kept["verdict"] or "", row["kind"])
            verdict, words = kept["verdict"], kept["words"]
            if need is not None and verdict != need:       # closed while screening, or unknown: a person reads it
                verdict, words = need, CLOSED_UNREAD
        else:                                  # what its photos say so far
            visit = book.visit(row["id"])
            need = _need_of(None, visit.verdict, row["kind"])
            verdict, words = visit.verdict, visit.words
            if (visit.reading is None or visit.reading.final is None) and after_read(store, row["id"]) is not None:
                need = min((n for n in (need, "human_read") if n), key=NEEDS.index)    # a photo after a read
        if need is None:
            continue
        action = _action(row, need, verdict, words, recorded.get(row["id"], []), pathway, now)
        if action is not None and (action.overdue or not overdue_only):
            found.append(action)
    return sorted(found, key=lambda a: (a.rank, a.due, a.visit))


def _action(row, need: str, verdict: str, words: str, recorded: list[Outcome], pathway: Pathway,
            now: dt.datetime) -> Action | None:
    steps = [o for o in recorded if o.need == need]
    if any(o.closes for o in steps):
        return None
    start = _day(row["opened"])
    for o in steps:                            # did not attend → rebook: the timescale starts again that day
        if o.outcome == "did_not_attend" and o.then == "rebook":
            start = _day(o.recorded)
    worst = min((n for n in (need, verdict) if n in NEEDS), key=NEEDS.index)
    due = start + dt.timedelta(days=min(pathway.due_in(need), pathway.due_in(worst)))
    return Action(row["id"], row["patient"], row["name"], row["opened"], row["closed"], need, verdict, words,
                  pathway.destination(worst), due, now.date() > due, NEEDS.index(worst), tuple(steps))


def record_outcome(book: VisitBook, visit_id: int, outcome: str, person: str, then: str | None = None,
                   reason: str | None = None, now: dt.datetime | None = None, actor: Actor | None = None) -> Outcome:
    """Keep what ``person`` (by name) says happened to visit ``visit_id``'s open action (one of :data:`OUTCOMES`;
    did_not_attend needs ``then``, a discharge needs ``reason``). Refused for a visit that needs nothing.
    ``actor``: who is logged in; the outcome is then an entry of the audit trail, in the same transaction."""
    person = " ".join((person or "").split())
    if not person or len(person) > MAX_PERSON or not person.isprintable():
        raise ConfigError(f"give the name of the person recording the outcome (at most {MAX_PERSON} characters)")
    if outcome not in OUTCOMES:
        raise ConfigError(f"the outcome must be one of {', '.join(OUTCOMES)}")
    if (outcome == "did_not_attend") != (then is not None):
        raise ConfigError("did not attend: say what then — rebook or discharge" if then is None
                          else "only did not attend takes rebook or discharge")
    if then is not None and then not in THEN:
        raise ConfigError(f"after did not attend: {' or '.join(THEN)}")
    reason = " ".join((reason or "").split()) or None
    if then == "discharge" and (reason is None or len(reason) > MAX_REASON or not reason.isprintable()):
        raise ConfigError(f"a discharge needs its reason (at most {MAX_REASON} characters)")
    now = now or utc_now()
    with book.store.transaction():
        action = next((a for a in open_actions(book, now) if a.visit == int(visit_id)), None)
        if action is None:
            raise ConfigError("this visit needs nothing now: there is no outcome to record")
        stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        book.store.execute("INSERT INTO action_outcomes(visit, need, outcome, then_what, reason, person, recorded) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", (action.visit, action.need, outcome, then, reason, person,
                                                            stamp))
        if actor is not None:
            audit.append(book.store, actor, "outcome", visit=action.visit, patient=action.patient,
                         details={"need": action.need, "outcome": outcome, "then": then, "reason": reason,
                                  "person": person})
    return Outcome(action.visit, action.need, outcome, then, reason, person, stamp)


def actions_csv(actions: list[Action]) -> str:
    """The open actions as CSV (:data:`CSV_COLUMNS`), in the list's order."""
    return to_csv(CSV_COLUMNS, ([a.visit, a.patient, a.name or "", a.opened, a.closed or "", a.need, a.verdict, a.words,
                                 a.destination, a.due.isoformat(), int(a.overdue), a.last.words if a.last else "",
                                 a.last.person if a.last else "", a.last.recorded if a.last else ""] for a in actions))
