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
# How urgent a verdict looks (the class reports and the station colour it with).
TONE = {REFER_URGENT: "refer", REFER: "refer", HUMAN_READ: "refer", RESCREEN: "ok", UNGRADABLE: "retake",
        NOT_PHOTOGRAPHED: "retake", INCOMPLETE: "retake", SCREENING: "busy"}
_OUTCOMES = (UNGRADABLE, HUMAN_READ, NOT_PHOTOGRAPHED, INCOMPLETE)     # worded by the pathway's outcomes


def tone(verdict: str | None) -> str:
    """refer | ok | retake | busy: how a verdict is shown (an unknown one as a retake: a person looks)."""
    return TONE.get(verdict or "", "retake")


@dataclass
class EyeVerdict:
    eye: str                                   # right | left | unspecified
    verdict: str                               # one of VERDICTS
    grade: int | None                          # worst grade among gradable images
    images: list[SessionRow] = field(default_factory=list)
    words: str = ""                            # the pathway's words for it (default: the verdict's label)
    recall_months: int | None = None           # rescreen: when

    def __post_init__(self) -> None:
        self.words = self.words or LABELS.get(self.verdict, self.verdict)

    @property
    def gradable(self) -> int:
        return sum(r.status == "graded" for r in self.images)

    @property
    def referable(self) -> bool | None:
        """Referable DR in this eye by the model's own flag (None: no gradable photo of it gave a grade)."""
        flags = [r.record["referable"] for r in self.images
                 if r.status == "graded" and r.record.get("referable") is not None]
        return any(flags) if flags else None


@dataclass
class PatientVerdict:
    patient: str
    verdict: str                               # one of VERDICTS
    eyes: dict[str, EyeVerdict]
    note: str = ""
    words: str = ""
    recall_months: int | None = None

    def __post_init__(self) -> None:
        self.words = self.words or LABELS.get(self.verdict, self.verdict)

    @property
    def referable(self) -> bool | None:
        """Referable DR: yes when an eye is referable; no when every eye has a grade and none is; else None
        (an eye ungradable or not photographed: "not referable" cannot be said)."""
        found = [eye.referable for eye in self.eyes.values()]
        return True if any(found) else None if not found or None in found else False


def eye_verdict(eye: str, rows: list[SessionRow], pathway: Pathway = ICDR) -> EyeVerdict:
    """The verdict of one eye from its rows (duplicates do not count: their original does)."""
    graded = [r for r in rows if r.status == "graded" and r.record.get("grade") is not None]   # lesion-only models
    grade = max((r.record["grade"] for r in graded), default=None)                           # give no grade
    rule = None
    if grade is not None:
        try:
            rule = pathway.rule(grade)
        except ConfigError:     # a model with more grades than the pathway: its own referable flag decides
            rule = None
    if not rows:
        verdict = NOT_PHOTOGRAPHED
    elif rule is not None and rule.action != RESCREEN:
        verdict = rule.action                  # refer | refer_urgent: the pathway's actions are verdict ids
    elif rule is None and any(r.record.get("referable") for r in graded):
        verdict = REFER
    elif any(heads_disagree(r.record) for r in rows if r.status == "graded"):
        verdict = HUMAN_READ
    elif graded:
        verdict = RESCREEN
    else:
        verdict = UNGRADABLE
    if verdict in _OUTCOMES:
        return EyeVerdict(eye, verdict, grade, rows, pathway.outcome_words(verdict))
    words = rule.words if rule is not None else LABELS[verdict]
    return EyeVerdict(eye, verdict, grade, rows, words, rule.recall_months if rule is not None else None)


def patient_verdicts(rows: Iterable[SessionRow], pathway: Pathway = ICDR) -> list[PatientVerdict]:
    """One verdict per patient (in order of first appearance); rows without a patient are skipped."""
    by_patient: dict[str, list[SessionRow]] = {}
    for row in rows:
        if row.patient:
            by_patient.setdefault(row.patient, []).append(row)
    verdicts = []
    for patient, items in by_patient.items():
        groups: dict[str, list[SessionRow]] = {}
        for row in items:
            groups.setdefault(row.eye or "unspecified", []).append(row)
        eyes = {eye: eye_verdict(eye, groups[eye], pathway) for eye in (*EYES, "unspecified") if eye in groups}
        note = ""
        if any(e in groups for e in EYES):
            for eye in EYES:
                if eye not in eyes:
                    eyes[eye] = eye_verdict(eye, [], pathway)
                    note = f"{eye} eye not photographed"
        verdict, words, recall = combine(list(eyes.values()), pathway)
        verdicts.append(PatientVerdict(patient, verdict, dict(sorted(eyes.items(), key=_eye_order)), note,
                                       words, recall))
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


def visit_verdict(eyes: dict[str, EyeVerdict], screening: bool, pathway: Pathway = ICDR) -> tuple[str, str]:
    """A visit's (verdict, words) from its eyes so far: the patient's, except that while a photo is
    being screened (``screening``) nothing calmer than a referral is said yet — a referral already
    found stands, whatever the photo in flight brings."""
    verdict, words, _ = combine([e for e in eyes.values() if e.verdict != SCREENING], pathway)
    if screening and verdict not in (REFER, REFER_URGENT):
        return SCREENING, LABELS[SCREENING]
    return verdict, words
