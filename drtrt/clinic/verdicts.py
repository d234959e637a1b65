"""Verdicts: what a screening result means for an eye, a patient and a visit — the one place they are made.

Per eye, from its images, under a referral pathway (:mod:`drtrt.clinic.pathways`; ICDR by
default): **refer urgently** / **refer** when the worst gradable grade's action says so (ICDR:
grade 3–4 / grade 2); otherwise **needs a human read** when a gradable image's grade and lesion map
contradict each other (:func:`heads_disagree`); otherwise **rescreen** (ICDR: "no referable DR —
rescreen in 12 months") when at least one image was gradable; otherwise **ungradable — retake or
refer**; an eye with no photo at all is **not photographed — take it** (never "ungradable":
nothing was judged). Per patient, the first that applies: refer urgently, refer, a human read,
ungradable, **incomplete** when an eye is still to be photographed (when eyes are recorded),
rescreen. This mirrors how deployed DR screeners (for example IDx-DR's "more than mild DR /
negative / insufficient quality") report one outcome per visit.

The unit is the visit: a patient's photos of one visit are judged together, never with another
visit's (a returning patient's last result is neither reused nor carried over). Within a visit, a
photo retaken at the station still counts when its result asks for a person — refer, refer urgently,
a human read (:func:`_stands`): a referable result is never undone by a retake, only by a named
clinician's read. Maculopathy (M1: hard exudate within a disc diameter of the fovea, from the
record's ``macula``) refers an eye whatever its grade; R and M are kept apart (``r``,
``m``). While the model has no validation record (``provisional``), a negative reads "no DR
detected by the model" with no recall interval, and every verdict is shown as provisional.

Every report, the station, DICOM and FHIR read verdicts from here; none derives one again.

``verdict`` is the outcome's id (one of :data:`VERDICTS`: ``refer_urgent``, ``refer``,
``human_read``, ``ungradable``, ``incomplete``, ``rescreen``; an eye may also be
``not_photographed``, a visit ``screening``), stable whatever the pathway: code compares it and the
record keeps it. ``words`` is what the pathway calls it for this eye or patient (reports show
those); :data:`LABELS` words each id where no pathway does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from drtrt.clinic.pathways import ICDR, Pathway
from drtrt.clinic.patients import EYES
from drtrt.clinic.store import SessionRow
from drtrt.errors import ConfigError
from drtrt.runtime.consistency import heads_disagree
from drtrt.validation_record import validation_of

# A verdict's id is a key code compares and the record keeps (the pathway's own action and outcome
# keys); what a person reads is the pathway's words for it, or its label below.
REFER_URGENT = "refer_urgent"
REFER = "refer"
RESCREEN = "rescreen"
UNGRADABLE = "ungradable"
HUMAN_READ = "human_read"
NOT_PHOTOGRAPHED = "not_photographed"
INCOMPLETE = "incomplete"
SCREENING = "screening"                        # a visit's, while a photo is being screened
VERDICTS = (REFER_URGENT, REFER, HUMAN_READ, UNGRADABLE, INCOMPLETE, RESCREEN)   # a patient's, most urgent first
LABELS = {REFER_URGENT: "refer urgently", REFER: "refer", RESCREEN: "no referable DR — rescreen in 12 months",
          UNGRADABLE: "ungradable — retake or refer",
          HUMAN_READ: "needs a human read — the grade and the lesion map disagree",
          NOT_PHOTOGRAPHED: "not photographed — take it", INCOMPLETE: "incomplete — photograph the missing eye",
          SCREENING: "screening — the result follows in seconds"}
# While the model has no validation record (every result provisional), a negative is what the model
# saw, nothing more: no recall interval is given, and it is shown beside PROVISIONAL.
PROVISIONAL = "provisional — awaiting a clinician's read"
NO_DR_SEEN = "no DR detected by the model"
NO_REFERABLE_DR_SEEN = "no referable DR detected by the model"
# How urgent a verdict looks (the class reports and the station colour it with).
TONE = {REFER_URGENT: "refer", REFER: "refer", HUMAN_READ: "refer", RESCREEN: "ok", UNGRADABLE: "retake",
        NOT_PHOTOGRAPHED: "retake", INCOMPLETE: "retake", SCREENING: "busy"}
_OUTCOMES = (UNGRADABLE, HUMAN_READ, NOT_PHOTOGRAPHED, INCOMPLETE)     # worded by the pathway's outcomes


def label(verdict: str, provisional: bool = True) -> str:
    """A verdict id's words where no pathway words it (a negative, while provisional, says only what the model saw)."""
    return NO_REFERABLE_DR_SEEN if provisional and verdict == RESCREEN else LABELS.get(verdict, verdict)


def tone(verdict: str | None, provisional: bool = False) -> str:
    """refer | ok | provisional | retake | busy: how a verdict is shown (an unknown one as a retake: a
    person looks). A provisional negative is not shown as all clear."""
    found = TONE.get(verdict or "", "retake")
    return "provisional" if provisional and found == "ok" else found


@dataclass
class EyeVerdict:
    eye: str                                   # right | left | unspecified
    verdict: str                               # one of VERDICTS
    grade: int | None                          # worst grade among the photos judged
    images: list[SessionRow] = field(default_factory=list)    # the photos judged (see eye_verdict)
    words: str = ""                            # the pathway's words for it (default: the verdict's label)
    recall_months: int | None = None           # rescreen: when (None while provisional)
    m: str | None = None                       # maculopathy: M1 | M0 | None (not assessed)
    r: str | None = None                       # the pathway's short grade (NHS: R0-R3), apart from M
    m_words: str = ""                          # the maculopathy's words (M)
    replaced: list[SessionRow] = field(default_factory=list)  # retaken photos whose result did not stand
    provisional: bool = True                   # the model has no validation record

    def __post_init__(self) -> None:
        self.words = self.words or LABELS.get(self.verdict, self.verdict)

    @property
    def gradable(self) -> int:
        return sum(r.status == "graded" for r in self.images)

    @property
    def referable(self) -> bool | None:
        """Referable: DR by the model's own flag (grade ≥ 2), or maculopathy (M1); None when no gradable
        photo of it gave a grade and no maculopathy was seen."""
        flags = [r.record["referable"] for r in self.images
                 if r.status == "graded" and r.record.get("referable") is not None]
        if self.m == "M1":
            return True
        return any(flags) if flags else None


@dataclass
class PatientVerdict:
    """The verdict of one visit of a patient (a visit is the unit: nothing of another visit counts)."""

    patient: str
    verdict: str                               # one of VERDICTS
    eyes: dict[str, EyeVerdict]
    note: str = ""
    words: str = ""
    recall_months: int | None = None
    visit: int | None = None                   # the visit (None: rows kept before visits, or no store)
    provisional: bool = True

    def __post_init__(self) -> None:
        self.words = self.words or LABELS.get(self.verdict, self.verdict)

    @property
    def referable(self) -> bool | None:
        """Referable DR: yes when an eye is referable; no when every eye has a grade and none is; else None
        (an eye ungradable or not photographed: "not referable" cannot be said)."""
        found = [eye.referable for eye in self.eyes.values()]
        return True if any(found) else None if not found or None in found else False


def _rule(grade: int | None, pathway: Pathway):
    if grade is None:
        return None
    try:
        return pathway.rule(grade)
    except ConfigError:     # a model with more grades than the pathway: its own referable flag decides
        return None


def _m(row: SessionRow) -> str | None:
    return (row.record.get("macula") or {}).get("m") if row.status == "graded" else None


def _stands(row: SessionRow, pathway: Pathway) -> bool:
    """A retaken photo's result stands for its visit when it is gradable and asks for a person: a
    referral (by grade or maculopathy) or a human read. Only a named clinician's read undoes it."""
    if row.status != "graded":
        return False
    rule = _rule(row.record.get("grade"), pathway)
    refers = rule.action != RESCREEN if rule is not None else bool(row.record.get("referable"))
    return refers or _m(row) == "M1" or heads_disagree(row.record) is not None


def eye_verdict(eye: str, rows: list[SessionRow], pathway: Pathway = ICDR, provisional: bool = True) -> EyeVerdict:
    """The verdict of one eye of one visit from its rows (duplicates do not count: their original does).

    The photos judged are the current ones plus every retaken photo whose result stands
    (:func:`_stands`): a grade-2 photo retaken until it reads grade 0 still refers. ``provisional``
    (no validation record): a negative reads "no DR detected by the model", with no recall interval."""
    judged = [r for r in rows if not r.replaced or _stands(r, pathway)]
    replaced = [r for r in rows if r not in judged]
    graded = [r for r in judged if r.status == "graded" and r.record.get("grade") is not None]   # lesion-only models
    grade = max((r.record["grade"] for r in graded), default=None)                             # give no grade
    rule = _rule(grade, pathway)
    found_m = {_m(r) for r in judged if r.status == "graded"}
    m = "M1" if "M1" in found_m else "M0" if "M0" in found_m else None
    if not judged:
        verdict = NOT_PHOTOGRAPHED
    elif rule is not None and rule.action != RESCREEN:
        verdict = rule.action                  # refer | refer_urgent: the pathway's actions are verdict ids
    elif rule is None and any(r.record.get("referable") for r in graded):
        verdict = REFER
    elif m == "M1":
        verdict = pathway.m1_action
    elif any(heads_disagree(r.record) for r in judged if r.status == "graded"):
        verdict = HUMAN_READ
    elif graded:
        verdict = RESCREEN
    else:
        verdict = UNGRADABLE
    m_words = pathway.m_words(m) if any(r.status == "graded" for r in judged) else ""
    recall = rule.recall_months if rule is not None and verdict == RESCREEN else None
    if verdict in _OUTCOMES:
        words = pathway.outcome_words(verdict)
    elif verdict == RESCREEN and provisional:
        words, recall = (NO_DR_SEEN if grade == 0 else NO_REFERABLE_DR_SEEN), None
    elif m == "M1" and (rule is None or rule.action == RESCREEN) and verdict == pathway.m1_action:
        words = m_words                        # referred for the maculopathy alone
    else:
        words = rule.words if rule is not None else LABELS[verdict]
    return EyeVerdict(eye, verdict, grade, judged, words, recall, m, rule.code if rule is not None else None,
                      m_words, replaced, provisional)


def patient_verdicts(rows: Iterable[SessionRow], pathway: Pathway = ICDR, provisional: bool = True
                     ) -> list[PatientVerdict]:
    """One verdict per visit of each patient (in order of first appearance): a visit's photos only —
    a returning patient's earlier visits neither calm nor alarm this one. Rows without a patient are
    skipped; rows kept before visits (``visit`` None) form one visit per patient."""
    by_visit: dict[tuple[str, int | None], list[SessionRow]] = {}
    for row in rows:
        if row.patient:
            by_visit.setdefault((row.patient, row.visit), []).append(row)
    verdicts = []
    for (patient, visit), items in by_visit.items():
        groups: dict[str, list[SessionRow]] = {}
        for row in items:
            groups.setdefault(row.eye or "unspecified", []).append(row)
        eyes = {eye: eye_verdict(eye, groups[eye], pathway, provisional)
                for eye in (*EYES, "unspecified") if eye in groups}
        note = ""
        if any(e in groups for e in EYES):
            for eye in EYES:
                if eye not in eyes:
                    eyes[eye] = eye_verdict(eye, [], pathway, provisional)
                    note = f"{eye} eye not photographed"
        verdict, words, recall = combine(list(eyes.values()), pathway)
        verdicts.append(PatientVerdict(patient, verdict, dict(sorted(eyes.items(), key=_eye_order)), note,
                                       words, recall, visit, provisional))
    return verdicts


def combine(eyes: list[EyeVerdict], pathway: Pathway = ICDR) -> tuple[str, str, int | None]:
    """The patient's (verdict, words, recall months) from the eyes' (the module docstring gives the
    order); for a referral or a rescreen, the words of the eye with the worst grade."""
    found = {e.verdict for e in eyes}
    for verdict in (REFER_URGENT, REFER, HUMAN_READ, UNGRADABLE, INCOMPLETE, RESCREEN):
        if verdict == INCOMPLETE and NOT_PHOTOGRAPHED in found:
            return INCOMPLETE, pathway.outcome_words(INCOMPLETE), None
        if verdict in found:
            worst = max((e for e in eyes if e.verdict == verdict), key=lambda e: -1 if e.grade is None else e.grade)
            recall = min((e.recall_months for e in eyes if e.recall_months), default=None)
            return verdict, worst.words, recall if verdict == RESCREEN else None
    return INCOMPLETE, pathway.outcome_words(INCOMPLETE), None           # no eye judged yet


def _eye_order(item: tuple[str, EyeVerdict]) -> int:
    return (*EYES, "unspecified").index(item[0])


def provisional(meta: dict[str, str]) -> bool:
    """Whether a session's results are provisional: it keeps no validation record for its model (a whole
    record, :func:`~drtrt.validation_record.validation_of`; any other text in its place is none)."""
    return validation_of(meta) is None


def visit_verdict(eyes: dict[str, EyeVerdict], screening: bool, pathway: Pathway = ICDR) -> tuple[str, str]:
    """A visit's (verdict, words) from its eyes so far: the patient's, except that while a photo is
    being screened (``screening``) nothing calmer than a referral is said yet — a referral already
    found stands, whatever the photo in flight brings."""
    verdict, words, _ = combine([e for e in eyes.values() if e.verdict != SCREENING], pathway)
    if screening and verdict not in (REFER, REFER_URGENT):
        return SCREENING, LABELS[SCREENING]
    return verdict, words
