"""The programme's numbers for a date range: what a programme manager reports each quarter.

Computed once, here, from the visits (:mod:`.visit_export`'s range: a visit belongs by the UTC day it
opened) of one or more sessions, and the failsafe's outcomes (:mod:`.failsafe`). The CLI's
``programme-report`` and the station's Programme page draw the same :class:`Programme`
(:mod:`.programme_report`). Every table is plain rows a test counts by hand.

Definitions (said on the report too):

- *screened*: a visit with a final verdict — closed at the station, or screened by a command. A visit
  still open at the station is counted as a visit, not as screened.
- *referred*: screened with the verdict *refer urgently* or *refer*. Referral rate = referred / screened.
- *pathway grade* of a screened visit: the worst grade of its gradable eyes, in the pathway's code
  (NHS: R0–R3) or "ICDR n"; "no grade" when no eye was gradable.
- *imageable patient*: in at least one visit of the range every photographed eye had a gradable photo.
- *refusal*: a photo refused (ungradable or unreadable), retaken ones included, by the quality gate's
  code, by camera (the way the photo came in: the station's camera folder, an upload, or a command;
  the kit does not know camera models) and by operator (the first person the visit's audit trail names;
  "shared PIN" or "no login" where the station could not tell who).
- *time to outcome*: days from the day a referred visit opened (its photos) to the outcome that closed
  its referral (attended, treated, or did not attend then discharge), against the pathway's timescale.
- *overdue referral*: a referral still open past its due date at ``now``.
- *reader agreement*: the model's referral against the clinicians' final read (:mod:`.reads`), over the
  visits read: the share where both refer or both do not, and the two ways they differ.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from drtrt.clinic.accounts import NO_LOGIN, SHARED_PIN
from drtrt.clinic.failsafe import open_actions, outcomes, utc_now
from drtrt.clinic.pathways import Pathway, stored_pathway
from drtrt.clinic.slots import REFUSED
from drtrt.clinic.verdicts import LABELS, REFER, REFER_URGENT
from drtrt.clinic.visit_export import visit_ids, visit_operator
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError
from drtrt.messages import Message, message

REFERRALS = (REFER_URGENT, REFER)
DEFINITIONS = (
    message("Screened: a visit with a final verdict (closed, or screened by a command); a visit still open is "
            "counted as a visit only."),
    message("Referral rate: visits referred (refer urgently or refer) out of visits screened."),
    message("Pathway grade: the worst grade of a visit's gradable eyes; no grade when no eye was gradable."),
    message("Imageable patient: in at least one visit every photographed eye had a gradable photo."),
    message("Camera: how the photo came in (camera folder, upload, command); the kit does not know camera models. "
            "Operator: the first person the visit's audit trail names."),
    message("Time to outcome: days from the day the referred visit opened to the outcome that closed the referral "
            "(attended, treated, or did not attend then discharge), against the pathway's timescale."),
)
NOT_RECORDED = message("not recorded")
NO_GRADE = message("no grade")
NO_READS = message("no reads")
_SPECIAL = {SHARED_PIN.name: message("shared PIN"), NO_LOGIN.name: message("no login (this machine)")}
# The quality gate's refusal codes (drtrt.runtime.quality.CODES) in a few words; an unknown code shows as itself.
REASON_WORDS = {"file_damaged": message("file damaged or unreadable"),
                "no_field_of_view": message("no field of view"), "too_small": message("too small"), "too_dark": message("too dark"), "overexposed": message("overexposed"),
                "greyscale": message("greyscale"), "not_a_fundus": message("not a fundus photo"),
                "blurred": message("blurred"), "low_contrast": message("low contrast")}
WITHIN, LATE, NO_OUTCOME = message("within timescale"), message("late"), message("no outcome yet")


@dataclass(frozen=True)
class Chart:
    """What a table's picture draws: ``kind`` (line: a trend over ``labels``; bar: a count per label) and
    each series as (name, one value per label)."""

    kind: str
    labels: tuple[str, ...]
    series: tuple[tuple[str, tuple[float, ...]], ...]


@dataclass(frozen=True)
class Table:
    """One of the report's numbers: ``rows`` under ``columns``, pictured by ``chart`` (None: a table only)."""

    key: str                                   # file name of its CSV, id on the page
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    chart: Chart | None = None
    note: str = ""


def _columns(rows, labels_at: int, *series: tuple[str, int], kind: str = "line") -> Chart:
    """A chart of ``rows``: labels from column ``labels_at``, each series (name, column) as numbers; an empty
    cell (a rate of no visits) is a gap in the line, not a zero."""
    return Chart(kind, tuple(str(r[labels_at]) for r in rows),
                 tuple((name, tuple(math.nan if r[i] == "" else float(r[i]) for r in rows)) for name, i in series))


def _bars(name: str, counts: dict) -> Chart:
    """One series of counts by label (a label that is a :class:`Message` stays one, to be translated)."""
    return Chart("bar", tuple(k if isinstance(k, str) else str(k) for k in counts),
                 ((name, tuple(float(v) for v in counts.values())),))


@dataclass(frozen=True)
class VisitFacts:
    """What the numbers need of one visit. ``read``: (the model's verdict, the clinicians' final read's) of a
    read visit."""

    session: str
    visit: int
    patient: str
    opened: dt.date
    verdict: str | None                        # final (closed, or a command's); None: open at the station
    eyes: tuple[tuple[int | None, bool], ...]  # (grade, gradable) of each photographed eye
    refusals: tuple[tuple[str, str], ...]      # (code, camera) of each refused photo
    operator: str
    outcome: tuple[str, dt.date] | None = None # the closing outcome's words and day (a referral)
    read: tuple[str, str] | None = None
    label: str = ""                            # "session/visit", or the visit alone for one session

    @property
    def referred(self) -> bool:
        return self.verdict in REFERRALS

    @property
    def imageable(self) -> bool:
        return bool(self.eyes) and all(gradable for _, gradable in self.eyes)

    @property
    def worst_grade(self) -> int | None:
        grades = [g for g, gradable in self.eyes if gradable and g is not None]
        return max(grades) if grades else None


@dataclass(frozen=True)
class Programme:
    start: dt.date
    end: dt.date
    now: dt.datetime
    sessions: tuple[str, ...]
    tables: tuple[Table, ...] = field(default=())

    def table(self, key: str) -> Table:
        return next(t for t in self.tables if t.key == key)


def _reason(code: str | None) -> str:
    return REASON_WORDS.get(code, code) if code else NOT_RECORDED


def _camera(source: str | None) -> str:
    if source is None:
        return message("command (drtrt screen / watch / receive)")
    return message("camera folder") if source.startswith("camera:") else message("upload at the station")


def visit_facts(book: VisitBook, session: str, start: dt.date, end: dt.date) -> list[VisitFacts]:
    """The facts of every visit of ``book`` opened from ``start`` to ``end``."""
    kinds = {int(r["id"]): r["kind"] for r in book.store.execute("SELECT id, kind FROM visits")}
    found = []
    for visit_id in visit_ids(book, start, end):
        visit = book.visit(visit_id)
        captures = book.store.execute("SELECT path, source FROM captures WHERE visit=? ORDER BY id", (visit_id,))
        if captures:                           # every photo taken in the visit, retaken ones included
            results = {r.path: r for r in book.store.rows([c["path"] for c in captures])}
            photos = [(results.get(c["path"]), c["source"]) for c in captures]
        else:                                  # a command's visit: its photos, no capture rows
            photos = [(s.row, None) for s in visit.slots if s.row is not None]
        refusals = tuple((_reason((row.record or {}).get("code")), _camera(source))
                         for row, source in photos if row is not None and row.status in REFUSED)
        eyes = tuple((e.grade, e.gradable > 0) for e in visit.eyes.values() if e.images or e.replaced)
        verdict = visit.closed_verdict if visit.closed else (visit.verdict if kinds[visit_id] != "station" else None)
        closing = [o for o in outcomes(book.store, visit_id) if o.closes and o.need in REFERRALS]
        outcome = (closing[0].words, dt.date.fromisoformat(closing[0].recorded[:10])) if closing else None
        final = visit.reading.final if visit.reading is not None else None
        read = (visit.model_verdict, final.verdict) if final is not None else None
        found.append(VisitFacts(session, visit_id, visit.patient.id, dt.date.fromisoformat(visit.opened[:10]),
                                verdict, eyes, refusals, _operator(book, visit), outcome, read=read))
    return found


def _operator(book: VisitBook, visit) -> str | Message:
    """The first person the visit's audit trail names; the shared PIN and no login in the operator's words."""
    first = (visit_operator(book, visit) or "").split("; ")[0]
    return _SPECIAL.get(first, first) or NOT_RECORDED


def _agreement(facts: list[VisitFacts]) -> tuple[tuple, tuple]:
    """(summary value, table rows) of the model's referral against the clinicians' final reads."""
    read = [(m in REFERRALS, r in REFERRALS) for f in facts if f.read for m, r in (f.read,)]
    if not read:
        return NO_READS, ((message("reads"), NO_READS),)
    agree = sum(m == r for m, r in read)
    return f"{_pct(agree, len(read))} % ({len(read)})", (
        (message("visits read"), len(read)), (message("model and read agree (%%)"), _pct(agree, len(read))),
        (message("read refers, the model did not"), sum(r and not m for m, r in read)),
        (message("the model referred, the read did not"), sum(m and not r for m, r in read)))


def _pct(part: int, whole: int) -> float | str:
    return round(100 * part / whole, 1) if whole else ""


def _weeks(start: dt.date, end: dt.date) -> list[dt.date]:
    monday = start - dt.timedelta(days=start.weekday())
    return [monday + dt.timedelta(weeks=i) for i in range((end - monday).days // 7 + 1)]


def _counted(key: str, title: str, what: str, counts: Counter) -> Table:
    rows = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))
    return Table(key, title, (what, message("photos refused")), rows, _bars(message("photos refused"), dict(rows)))


def _gather(books: Sequence[tuple[str, VisitBook]], start: dt.date, end: dt.date, now: dt.datetime):
    """The range's visit facts, its overdue referrals ((label, action)) and the pathway (the first session's)."""
    facts, overdue, pathway = [], [], None
    several = len(books) > 1
    for session, book in books:
        pathway = pathway or stored_pathway(book.store.meta())
        for f in visit_facts(book, session, start, end):
            facts.append(VisitFacts(**{**f.__dict__, "label": f"{session}/{f.visit}" if several else str(f.visit)}))
        ids = set(visit_ids(book, start, end))
        overdue += [(f"{session}/{a.visit}" if several else str(a.visit), a)
                    for a in open_actions(book, now, overdue_only=True) if a.need in REFERRALS and a.visit in ids]
    return facts, overdue, pathway or stored_pathway({})


def _weekly(facts: list[VisitFacts], start: dt.date, end: dt.date) -> list[tuple]:
    """Per week (Monday): visits, screened, referred, referral rate (empty when nothing was screened)."""
    weeks = []
    for monday in _weeks(start, end):
        inside = [f for f in facts if monday <= f.opened < monday + dt.timedelta(weeks=1)]
        done = [f for f in inside if f.verdict is not None]
        refs = sum(f.referred for f in done)
        weeks.append((monday.isoformat(), len(inside), len(done), refs, _pct(refs, len(done))))
    return weeks


def _grade_name(grade: int | None, pathway: Pathway) -> str:
    if grade is None:
        return NO_GRADE
    try:
        return pathway.rule(grade).code or f"ICDR {grade}"
    except ConfigError:                        # a grade the pathway does not name
        return f"ICDR {grade}"


def _by_grade(screened: list[VisitFacts], pathway: Pathway) -> tuple[tuple, ...]:
    """Per pathway grade (worst gradable eye; no grade last): screened, referred, referral rate."""
    groups: dict[str, list[VisitFacts]] = {}
    for f in sorted(screened, key=lambda f: (f.worst_grade is None, f.worst_grade or 0)):
        groups.setdefault(_grade_name(f.worst_grade, pathway), []).append(f)
    return tuple((name, len(fs), sum(f.referred for f in fs), _pct(sum(f.referred for f in fs), len(fs)))
                 for name, fs in groups.items())


def _timing(referred: list[VisitFacts], pathway: Pathway) -> tuple[tuple, ...]:
    """Each referral: its outcome and the days to it against the pathway's timescale, or no outcome yet."""
    rows = []
    for f in referred:
        due = pathway.due_in(f.verdict)
        days = (f.outcome[1] - f.opened).days if f.outcome else ""
        result = (WITHIN if days <= due else LATE) if f.outcome else NO_OUTCOME
        rows.append((f.label, f.patient, Message(LABELS[f.verdict]), f.opened.isoformat(),
                     f.outcome[0] if f.outcome else "", days, due, result))
    return tuple(rows)


def programme(books: Sequence[tuple[str, VisitBook]], start: dt.date, end: dt.date,
              now: dt.datetime | None = None) -> Programme:
    """The numbers of the visits opened from ``start`` to ``end`` in ``books`` ((session name, book) pairs)."""
    now = now or utc_now()
    facts, overdue, pathway = _gather(books, start, end, now)
    screened = [f for f in facts if f.verdict is not None]
    referred = [f for f in screened if f.referred]
    patients = sorted({f.patient for f in facts})
    imageable = {p for p in patients if any(f.imageable for f in facts if f.patient == p)}
    weeks, grades, timing = _weekly(facts, start, end), _by_grade(screened, pathway), _timing(referred, pathway)
    results, needs = Counter(row[-1] for row in timing), Counter(a.need for _, a in overdue)
    rate = message("referral rate (%%)")
    agreement, agreement_rows = _agreement(facts)
    week_cols = (message("week (Monday)"), message("visits"), message("screened"), message("referred"), rate)
    summary = ((message("visits"), len(facts)), (message("screened"), len(screened)),
               (message("patients"), len(patients)), (message("imageable patients"), len(imageable)),
               (message("imageable patients (%%)"), _pct(len(imageable), len(patients))),
               (message("photos refused"), sum(len(f.refusals) for f in facts)),
               (message("referred"), len(referred)), (rate, _pct(len(referred), len(screened))),
               (message("overdue referrals"), len(overdue)), (message("reader agreement"), agreement))
    tables = (
        Table("summary", message("The programme at a glance"), (message("measure"), message("value")), summary),
        Table("visits_by_week", message("Visits per week"), week_cols, tuple(weeks),
              _columns(weeks, 0, (message("visits"), 1), (message("screened"), 2))),
        Table("referral_rate_by_week", message("Referral rate by week"), week_cols, tuple(weeks),
              _columns(weeks, 0, (rate, 4))),
        Table("referral_by_grade", message("Referrals by pathway grade"),
              (message("pathway grade"), message("screened"), message("referred"), rate),
              grades, _columns(grades, 0, (message("screened"), 1), (message("referred"), 2), kind="bar")),
        Table("imageability", message("Per-patient imageability"),
              (message("patient"), message("visits"), message("imageable")),
              tuple((p, sum(f.patient == p for f in facts), message("yes") if p in imageable else message("no"))
                    for p in patients),
              _bars(message("patients"), {message("imageable"): len(imageable),
                                          message("not imageable"): len(patients) - len(imageable)})),
        _counted("refusals_by_reason", message("Refusals by reason"), message("reason"),
                 Counter(code for f in facts for code, _ in f.refusals)),
        _counted("refusals_by_camera", message("Refusals by camera"), message("camera"),
                 Counter(camera for f in facts for _, camera in f.refusals)),
        _counted("refusals_by_operator", message("Refusals by operator"), message("operator"),
                 Counter(f.operator for f in facts for _ in f.refusals)),
        Table("time_to_outcome", message("Time from photo to referral outcome"),
              (message("visit"), message("patient"), message("referral"), message("opened"), message("outcome"),
               message("days"), message("timescale (days)"), message("result")), timing,
              _bars(message("referrals"), {r: results[r] for r in (WITHIN, LATE, NO_OUTCOME)})),
        Table("overdue_referrals", message("Overdue referrals"),
              (message("visit"), message("patient"), message("referral"), message("due"), message("days overdue")),
              tuple((label, a.patient, Message(LABELS[a.need]), a.due.isoformat(), (now.date() - a.due).days)
                    for label, a in overdue),
              _bars(message("overdue referrals"), {Message(LABELS[n]): needs[n] for n in REFERRALS})),
        Table("reader_agreement", message("Reader agreement"), (message("measure"), message("value")),
              agreement_rows, note=message("the model's referral against the clinicians' final reads")),
    )
    return Programme(start, end, now, tuple(s for s, _ in books), tables)
