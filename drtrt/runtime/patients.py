"""Patients and eyes: who each image belongs to, and the verdicts screeners report.

Per eye, from its images, under a referral pathway (:mod:`drtrt.runtime.pathways`; ICDR by
default): **refer urgently** / **refer** when the worst gradable grade's action says so (ICDR:
grade 3–4 / grade 2); otherwise **needs a human read** when a gradable image's grade and lesion map
contradict each other (:func:`heads_disagree`); otherwise **rescreen** (ICDR: "no referable DR —
rescreen in 12 months") when at least one image was gradable; otherwise **ungradable — retake or
refer**; an eye with no photo at all is **not photographed — take it** (never "ungradable":
nothing was judged). Per patient, the first that applies: refer urgently, refer, a human read,
ungradable, **incomplete** when an eye is still to be photographed (when eyes are recorded),
rescreen. This mirrors how deployed DR screeners (for example IDx-DR's "more than mild DR /
negative / insufficient quality") report one outcome per visit.

``verdict`` is the outcome (one of :data:`VERDICTS`, stable whatever the pathway: code compares
it); ``words`` is what the pathway calls it for this eye or patient (reports show those).
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.errors import ConfigError, DataError
from drtrt.runtime.consistency import heads_disagree
from drtrt.runtime.pathways import ICDR, Pathway
from drtrt.runtime.store import SessionRow

REFER_URGENT = "refer urgently"
REFER = "refer"
RESCREEN = "no referable DR — rescreen in 12 months"
UNGRADABLE = "ungradable — retake or refer"
HUMAN_READ = "needs a human read — the grade and the lesion map disagree"
NOT_PHOTOGRAPHED = "not photographed — take it"
INCOMPLETE = "incomplete — photograph the missing eye"
VERDICTS = (REFER_URGENT, REFER, HUMAN_READ, UNGRADABLE, INCOMPLETE, RESCREEN)   # a patient's, most urgent first
_ACTION_VERDICT = {"refer_urgent": REFER_URGENT, "refer": REFER, "rescreen": RESCREEN}
_OUTCOME_KEY = {UNGRADABLE: "ungradable", HUMAN_READ: "human_read", NOT_PHOTOGRAPHED: "not_photographed",
                INCOMPLETE: "incomplete"}
EYES = ("right", "left")                       # right first: clinical convention (OD, then OS)
_EYE_ALIASES = {"left": "left", "l": "left", "os": "left", "right": "right", "r": "right", "od": "right"}
MAX_PATIENT_ID = 64



@dataclass(frozen=True)
class Assignment:
    """The patient and eye an image belongs to (None: not given)."""

    patient: str | None = None
    eye: str | None = None


def normalise_eye(value: str | None) -> str | None:
    """left / right from left|right|L|R|OS|OD (any case); empty → None; anything else is an error."""
    if value is None or not value.strip():
        return None
    eye = _EYE_ALIASES.get(value.strip().lower())
    if eye is None:
        raise ConfigError(f"eye must be left or right (or L/R, OS/OD), found {value!r}")
    return eye


def validate_patient_id(value: str | None) -> str | None:
    """A patient ID as typed (trimmed, NFC); control characters or more than 64 characters are errors."""
    if value is None or not value.strip():
        return None
    pid = unicodedata.normalize("NFC", value.strip())
    if len(pid) > MAX_PATIENT_ID or any(unicodedata.category(c).startswith("C") for c in pid):
        raise ConfigError(f"patient ID {value!r} is not usable: at most {MAX_PATIENT_ID} printable characters")
    return pid


def safe_patient_id(pid: str) -> str:
    """A file-name-safe form of a patient ID: letters, digits, '.', '_', '-' only, never '..' or a
    leading dot. IDs that had to change get a short hash of the original, so two IDs never
    collide on one file name (``../etc`` → ``etc-<hash>``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", pid)
    safe = re.sub(r"\.{2,}", ".", safe).strip("._-")[:48] or "patient"
    if safe != pid:
        safe += "-" + hashlib.sha256(pid.encode()).hexdigest()[:8]
    return safe


def read_patient_list(path: str | Path) -> dict[Path, Assignment]:
    """CSV with a header row and columns ``file``, ``patient``, ``eye`` (eye may be empty).

    Files are relative to the list's folder unless absolute. Returns resolved path →
    Assignment. Raises DataError naming the line for a bad row.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read patient list {path}: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = {c.strip().lower() for c in reader.fieldnames or []}
    if not {"file", "patient"} <= columns:
        raise DataError(f"patient list {path} needs a header with columns file, patient[, eye]; "
                        f"found {', '.join(reader.fieldnames or []) or 'no header'}")
    out: dict[Path, Assignment] = {}
    for line, raw in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        if not row.get("file"):
            continue
        try:
            assignment = Assignment(validate_patient_id(row.get("patient")), normalise_eye(row.get("eye")))
        except ConfigError as exc:
            raise DataError(f"patient list {path} line {line}: {exc}") from None
        file = Path(row["file"])
        out[(file if file.is_absolute() else path.parent / file).resolve()] = assignment
    if not out:
        raise DataError(f"patient list {path} names no files")
    return out


@dataclass
class EyeVerdict:
    eye: str                                   # right | left | unspecified
    verdict: str                               # one of VERDICTS
    grade: int | None                          # worst grade among gradable images
    images: list[SessionRow] = field(default_factory=list)
    words: str = ""                            # the pathway's words for it (default: the verdict)
    recall_months: int | None = None           # rescreen: when

    def __post_init__(self) -> None:
        self.words = self.words or self.verdict

    @property
    def gradable(self) -> int:
        return sum(r.status == "graded" for r in self.images)


@dataclass
class PatientVerdict:
    patient: str
    verdict: str                               # one of VERDICTS
    eyes: dict[str, EyeVerdict]
    note: str = ""
    words: str = ""
    recall_months: int | None = None

    def __post_init__(self) -> None:
        self.words = self.words or self.verdict


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
    elif rule is not None and rule.action != "rescreen":
        verdict = _ACTION_VERDICT[rule.action]
    elif rule is None and any(r.record.get("referable") for r in graded):
        verdict = REFER
    elif any(heads_disagree(r.record) for r in rows if r.status == "graded"):
        verdict = HUMAN_READ
    elif graded:
        verdict = RESCREEN
    else:
        verdict = UNGRADABLE
    if verdict in _OUTCOME_KEY:
        return EyeVerdict(eye, verdict, grade, rows, pathway.outcome_words(_OUTCOME_KEY[verdict]))
    words = rule.words if rule is not None else verdict
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
            return INCOMPLETE, pathway.outcome_words("incomplete"), None
        if verdict in found:
            worst = max((e for e in eyes if e.verdict == verdict), key=lambda e: -1 if e.grade is None else e.grade)
            recall = min((e.recall_months for e in eyes if e.recall_months), default=None)
            return verdict, worst.words, recall if verdict == RESCREEN else None
    return INCOMPLETE, pathway.outcome_words("incomplete"), None         # no eye judged yet


def _eye_order(item: tuple[str, EyeVerdict]) -> int:
    return (*EYES, "unspecified").index(item[0])
