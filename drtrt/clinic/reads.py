"""Clinicians' reads: a reader's structured grade of a visit, which becomes the visit's final result.

A read grades each eye in the pathway's form (:attr:`~drtrt.clinic.pathways.Pathway.read_form`):
``nhs`` — R0, R1, R2, R3a, R3s (R3 where a pathway does not split it) with M0 or M1, or U
(ungradable); ``icdr`` — ICDR 0–4 with or without DME, or U. Each eye is kept as the validation
study's grade string (``R2M0``, ``R3aM1``, ``ICDR2+DME``, ``U``: :mod:`drtrt.verify.study.reads`), so a
study can take the station's reads as its reference standard.

What a grade asks for (:func:`eye_verdict_of`): U → ungradable; R3/R3a, or ICDR 3–4 → the pathway's
urgent action; R2, R3s, ICDR 2 → refer; M1 or DME → the pathway's maculopathy action; otherwise
rescreen. The visit's read verdict is the most urgent of its eyes. A read that comes to another
verdict than the model's (refer ↔ rescreen, either way, or ungradable) **overrules** it and needs a
reason; a read that agrees needs none. An eye nobody photographed can only be graded U: a read never
answers a missing photo.

Who reads, as the pathway's ``reads.second_read`` says: ``never`` — one read is final;
``always`` — a second reader, another person, reads every visit; ``disagreement`` (default) — a
second reader when the first overrules the model. Two reads that disagree are **arbitrated** by a
third person, whose read is final. Until then (:class:`ReadState` ``pending``) the visit shows the
most urgent of the model's verdict and the reads so far: a waiting read never calms a visit.

A read covers exactly the photos it was given. At the station a visit is read only once it is finished at the
camera; a command's visit (``screen``, ``watch``, ``receive``) never finishes, so a photo that comes for it after a
read opens the patient's next visit instead (:meth:`~drtrt.clinic.visits.VisitBook.visit_for`, audited
``after_read``; :func:`after_read` names the read visit), which is read in its own right, whatever the model says
of it (:mod:`.read_queue`). Chosen over reopening the read visit: a VERIFIED result already sent is never made
unfinal again, and every read, SR and audit entry keeps naming exactly the photos it covered; the read visit's
result — a referral too — is changed only by a named clinician's read.

Rows are only added (``reads``, :mod:`.schema`), each with its audit entry (``read``, or ``override``
when it overrules) in the same transaction. The model's result is never changed: it is kept beside
the read for provenance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from drtrt.clinic import audit
from drtrt.clinic.accounts import Actor, may
from drtrt.clinic.pathways import Pathway, stored_pathway
from drtrt.clinic.patients import EYES
from drtrt.clinic.store import SessionStore, now
from drtrt.clinic.verdicts import LABELS, NOT_PHOTOGRAPHED, REFER, REFER_URGENT, RESCREEN, UNGRADABLE, VERDICTS
from drtrt.errors import ConfigError
from drtrt.messages import message

STAGES = ("primary", "secondary", "arbitration")
R_GRADES = ("R0", "R1", "R2", "R3", "R3a", "R3s")
M_GRADES = ("M0", "M1")
ICDR_GRADES = ("0", "1", "2", "3", "4")
OVERRULABLE = (REFER_URGENT, REFER, RESCREEN, UNGRADABLE)   # model verdicts a read may agree with or overrule
MAX_REASON = 200


@dataclass(frozen=True)
class StoredRead:
    """One clinician's read of one visit, as kept."""

    id: int
    visit: int
    patient: str
    stage: str                                 # primary | secondary | arbitration
    reader: str                                # the account's name
    role: str                                  # the account's role (reader | lead | shared | local)
    grades: dict[str, str]                     # eye → the study's grade string (R2M0, ICDR2+DME, U)
    verdict: str                               # what the grades ask for (one of VERDICTS)
    model_verdict: str | None                  # the model's verdict when it was read
    overrules: bool
    reason: str | None
    recorded: str


@dataclass(frozen=True)
class ReadState:
    """Where a visit's reading stands: ``next_stage`` None when nothing more is to be read."""

    reads: tuple[StoredRead, ...]
    final: StoredRead | None                   # the read that decides (None: unread or pending)
    next_stage: str | None                     # primary | secondary | arbitration | None

    @property
    def pending(self) -> bool:
        return bool(self.reads) and self.final is None

    def shown_verdict(self, model: str) -> str:
        """The visit's verdict: the final read's; while pending the most urgent of the model's and the reads'."""
        if self.final is not None:
            return self.final.verdict
        found = [model, *(r.verdict for r in self.reads)]
        return min(found, key=lambda v: VERDICTS.index(v) if v in VERDICTS else -1)


def grade_string(form: str, eye_form: dict[str, str]) -> str:
    """One eye's grade from the form's fields (``u`` ticked → U; nhs: ``r``, ``m``; icdr: ``icdr``, ``dme``)."""
    if eye_form.get("u"):
        return "U"
    if form == "nhs":
        r, m = eye_form.get("r", ""), eye_form.get("m", "")
        if r not in R_GRADES or m not in M_GRADES:
            raise ConfigError(message("grade each eye: R0, R1, R2, R3a or R3s with M0 or M1, or U (ungradable)"))
        return f"{r}{m}"
    grade = eye_form.get("icdr", "")
    if grade not in ICDR_GRADES:
        raise ConfigError(message("grade each eye: ICDR 0 to 4, with or without DME, or U (ungradable)"))
    return f"ICDR{grade}{'+DME' if eye_form.get('dme') else ''}"


def eye_verdict_of(grade: str, pathway: Pathway) -> str:
    """What one eye's grade asks for under ``pathway`` (module docstring)."""
    if grade == "U":
        return UNGRADABLE
    if grade.startswith("ICDR"):
        level, macular = int(grade[4]), grade.endswith("+DME")
        try:
            action = pathway.rule(level).action
        except ConfigError:
            action = REFER_URGENT if level >= 3 else REFER if level == 2 else RESCREEN
    else:
        r, macular = grade[:-2], grade.endswith("M1")
        action = {"R3": REFER_URGENT, "R3a": REFER_URGENT, "R2": REFER, "R3s": REFER}.get(r, RESCREEN)
    found = [action, pathway.m1_action] if macular else [action]
    return min(found, key=VERDICTS.index)


def read_verdict(grades: dict[str, str], pathway: Pathway) -> str:
    """The visit's verdict from its eyes' grades: the most urgent."""
    return min((eye_verdict_of(g, pathway) for g in grades.values()), key=VERDICTS.index)


def words_of(verdict: str, pathway: Pathway) -> str:
    """The pathway's words for a read's verdict."""
    if verdict in (REFER_URGENT, REFER, RESCREEN):
        rule = next((r for r in pathway.grades if r.action == verdict), None)
        return rule.words if rule is not None else LABELS[verdict]
    return pathway.outcome_words(verdict) if verdict == UNGRADABLE else LABELS.get(verdict, verdict)


def _row(r) -> StoredRead:
    return StoredRead(r["id"], r["visit"], r["patient"], r["stage"], r["reader"], r["role"], json.loads(r["grades"]),
                      r["verdict"], r["model_verdict"], bool(r["overrules"]), r["reason"], r["recorded"])


def reads_of(store: SessionStore, visit: int | None = None) -> list[StoredRead]:
    """Every read (of one visit), oldest first."""
    where, params = ("WHERE visit=?", (int(visit),)) if visit is not None else ("", ())
    return [_row(r) for r in store.execute(f"SELECT * FROM reads {where} ORDER BY id", params)]


def state_of(reads: list[StoredRead], pathway: Pathway) -> ReadState:
    """Where a visit's reads stand under the pathway's ``second_read`` (module docstring)."""
    by = {r.stage: r for r in reads}
    if "arbitration" in by:
        return ReadState(tuple(reads), by["arbitration"], None)
    first, second = by.get("primary"), by.get("secondary")
    if first is None:
        return ReadState(tuple(reads), None, "primary")
    if second is not None:
        agreed = second.verdict == first.verdict
        return ReadState(tuple(reads), second if agreed else None, None if agreed else "arbitration")
    wanted = pathway.second_read == "always" or (pathway.second_read == "disagreement" and first.overrules)
    return ReadState(tuple(reads), None if wanted else first, "secondary" if wanted else None)


def record_read(book, visit_id: int, grades: dict[str, str], actor: Actor, reason: str | None = None,
                pathway: Pathway | None = None) -> StoredRead:
    """Keep ``actor``'s read of visit ``visit_id`` (``book``: a :class:`~drtrt.clinic.visits.VisitBook`):
    ``grades`` eye → grade string (:func:`grade_string`), one for each eye. The stage is the one the visit
    waits for; a reason is needed when the read overrules the model. Audited as ``read`` or ``override``."""
    if not may(actor.role, "read"):
        raise ConfigError(message("only a reader or the programme lead may read a visit"))
    if sorted(grades) != sorted(EYES):
        raise ConfigError(message("grade both eyes (U for an eye that cannot be graded)"))
    visit = book.visit(visit_id)
    if book.store.execute("SELECT 1 FROM visits WHERE id=? AND closed IS NULL AND kind='station'", (int(visit_id),)):
        # the next photo may change its result, and a read already given would hide what that photo shows
        raise ConfigError(message("this visit is still open at the camera: finish it, then read it"))
    pathway = pathway or stored_pathway(book.store.meta())
    for grade in grades.values():
        if grade != "U" and not (grade.startswith("ICDR") if pathway.read_form == "icdr" else grade.startswith("R")):
            raise ConfigError(message("grade %(grade)s is not in this pathway's form (%(form)s)", grade=grade,
                                      form=pathway.read_form))
    if book.store.execute("SELECT 1 FROM files WHERE visit=? AND (eye IS NULL OR eye NOT IN ('right', 'left')) "
                          "AND status <> 'duplicate' LIMIT 1", (int(visit_id),)):
        # a command's photo with no eye is not on the read page, but its visit's report would carry it
        raise ConfigError(message("a photo of this visit has no eye: say which eye it is (drtrt screen --eye), "
                                  "then read it"))
    unseen = [eye for eye, judged in visit.eyes.items() if judged.verdict == NOT_PHOTOGRAPHED and grades.get(eye) != "U"]
    if unseen:          # a grade for an eye nobody photographed would answer the visit's "incomplete"
        raise ConfigError(message("the %(eye)s eye was not photographed: grade it U", eye=unseen[0]))
    model = visit.model_verdict
    if model not in VERDICTS:
        raise ConfigError(message("this visit is still being screened: read it when its results are in"))
    verdict = read_verdict(grades, pathway)
    overrules = model in OVERRULABLE and verdict != model
    reason = " ".join((reason or "").split()) or None
    if overrules and (reason is None or len(reason) > MAX_REASON or not reason.isprintable()):
        raise ConfigError(message("this read overrules the model (%(model)s → %(verdict)s): give the reason (at "
                                  "most %(most)d characters)", model=model, verdict=verdict, most=MAX_REASON))
    with book.store.transaction():
        earlier = reads_of(book.store, visit_id)
        stage = state_of(earlier, pathway).next_stage
        if stage is None:
            raise ConfigError(message("this visit's reading is complete: its result is final"))
        if any(r.reader == actor.name for r in earlier):
            raise ConfigError(message("the %(stage)s read must be by another person than the earlier read(s); a "
                                      "one-person clinic sets the pathway's reads second_read: never", stage=stage))
        book.store.execute("INSERT INTO reads(visit, patient, stage, reader, role, grades, verdict, model_verdict, "
                           "overrules, reason, recorded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (int(visit_id), visit.patient.id, stage, actor.name, actor.role,
                            json.dumps(dict(sorted(grades.items()))), verdict, model, int(overrules), reason, now()))
        audit.append(book.store, actor, "override" if overrules else "read", visit=visit_id, patient=visit.patient.id,
                     details={"stage": stage, "grades": dict(sorted(grades.items())), "verdict": verdict,
                              "model_verdict": model, "reason": reason})
    return reads_of(book.store, visit_id)[-1]


def after_read(store: SessionStore, visit_id: int) -> int | None:
    """The read visit whose later photo opened command's visit ``visit_id`` (the same patient's visit of the same
    camera study, or of the same day without one, read before it), or None."""
    rows = store.execute("SELECT o.id FROM visits v JOIN visits o ON o.patient = v.patient AND o.kind = 'session' "
                         "AND o.id < v.id AND (o.study_uid = v.study_uid OR (o.study_uid IS NULL AND v.study_uid IS "
                         "NULL AND o.day = v.day)) WHERE v.id = ? AND v.kind = 'session' AND EXISTS (SELECT 1 FROM "
                         "reads r WHERE r.visit = o.id) ORDER BY o.id DESC LIMIT 1", (int(visit_id),))
    return int(rows[0]["id"]) if rows else None
