"""What a session says about each visit of each patient, gathered once for every output (DICOM SR and SC, FHIR).

The visit is the unit: a :class:`PatientResult` is one visit — its verdict over that visit's photos
only, its own study (UID and accession number). A returning patient's new visit is a new study;
last year's result is neither reused nor carried over.

A :class:`PatientResult` holds the visit's verdict and eyes (:func:`visit_verdicts`), each
image's outcome with the picture to send (the overlay PNG of a graded photo, the thumbnail of an
ungradable one), the study the outputs belong to, and the model's identity. Rows without a patient
and duplicates (their original counts) are left out: nothing can be filed without a patient.

The study: when the photos came in as DICOM, the screening record holds a ``dicom`` dict (the camera's
study, series and instance UIDs, patient ID and name, laterality …) and the outputs join the camera's
study (its StudyInstanceUID, patient ID and name); otherwise the study UID is derived from the
session, the patient and the visit (:mod:`.uids`), the same on every run, and the accession number
is the session's and the visit's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drtrt import __version__
from drtrt.fileio import sha256_file
from drtrt.clinic.pathways import stored_pathway
from drtrt.clinic.reads import after_read, reads_of, state_of, words_of
from drtrt.clinic.verdicts import PROVISIONAL, REFER, REFER_URGENT, RESCREEN, PatientVerdict
from drtrt.clinic.reports import model_banner, visit_verdicts
from drtrt.clinic.store import SessionRow, SessionStore
from drtrt.task import TaskSpec
from drtrt.validation_record import ValidationRecord, validation_of, validation_why
from drtrt.integration.uids import derive_uid, fhir_id, session_id

# Keys read from a record's ``dicom`` dict, each under the first of its spellings found: snake_case as
# drtrt's DICOM intake writes them (drtrt.preprocess.dicom.DicomInfo), or the DICOM keyword.
_DICOM_KEYS = {
    "study_uid": ("StudyInstanceUID", "study_instance_uid", "study_uid"),
    "series_uid": ("SeriesInstanceUID", "series_instance_uid", "series_uid"),
    "sop_uid": ("SOPInstanceUID", "sop_instance_uid", "sop_uid"),
    "sop_class_uid": ("SOPClassUID", "sop_class_uid"),
    "patient_id": ("PatientID", "patient_id"),
    "patient_name": ("PatientName", "patient_name"),
    "patient_birth_date": ("PatientBirthDate", "patient_birth_date", "birth_date"),
    "patient_sex": ("PatientSex", "patient_sex", "sex"),
    "accession_number": ("AccessionNumber", "accession_number"),
    "study_id": ("StudyID", "study_id"),
    "study_date": ("StudyDate", "study_date"),
    "study_time": ("StudyTime", "study_time"),
    "referring_physician_name": ("ReferringPhysicianName", "referring_physician_name"),
    "eye": ("eye",),                                      # right | left (drtrt's DICOM intake)
}


def dicom_source(record: dict) -> dict[str, str]:
    """The camera's DICOM attributes of a screened image (empty when it was not a DICOM file)."""
    raw = record.get("dicom") or {}
    if not isinstance(raw, dict):
        return {}
    found = {}
    for key, spellings in _DICOM_KEYS.items():
        value = next((raw[s] for s in spellings if raw.get(s) not in (None, "")), None)
        if value is not None:
            found[key] = str(value)
    return found


@dataclass(frozen=True)
class ModelIdentity:
    """The model that made the results. validation: the validation record the session keeps for it
    (:func:`~drtrt.validation_record.validation_of`; None: not validated, results are provisional).
    gate: the session's ``model_gate`` (JSON: the model's accuracy check; "" for a session from before it)."""

    name: str
    sha256: str
    software: str
    validation: ValidationRecord | None
    task: TaskSpec
    gate: str = ""
    why: str = ""                              # why no validation record counts ('' when one does)

    @property
    def validated(self) -> bool:
        return self.validation is not None

    @property
    def statement(self) -> str:
        """What a reader must know about the model: the report's banner (a failed or missing accuracy
        check, not for clinical use), and which study validated it (study, population, date, model sha256)."""
        record = self.validation
        banner = model_banner({"model_name": self.name, "model_sha256": self.sha256, "model_gate": self.gate,
                               "validation": record.to_json() if record is not None else "", "validation_why": self.why,
                               "validation_key":
                               record.signature.public_key if record is not None and record.signature else ""})
        if self.validation is None:
            return banner or ""
        return (f"{banner} · " if banner else "") + self.validation.statement


@dataclass(frozen=True)
class ClinicianRead:
    """The clinician's read that is a visit's final result (:mod:`drtrt.clinic.reads`): the SR is VERIFIED
    by them, the FHIR report ``final`` with them as performer, or ``amended`` when the read changed the
    model's verdict."""

    reader: str
    role: str
    stage: str
    verdict: str                               # the read's verdict id
    words: str                                 # in the pathway's words
    grades: tuple[tuple[str, str], ...]        # (eye, grade string)
    recorded: str                              # UTC stamp
    model_verdict: str | None
    organisation: str                          # the verifying organisation (session meta ``organisation``)

    @property
    def changed(self) -> bool:
        """The read's verdict differs from the model's: a corrected result."""
        return self.verdict != self.model_verdict


NO_ORGANISATION = "organisation not configured"


def final_reads(store: SessionStore) -> dict[int, ClinicianRead]:
    """visit → its final clinician's read, for every visit whose reading is complete."""
    meta = store.meta()
    pathway = stored_pathway(meta)
    by_visit: dict[int, list] = {}
    for read in reads_of(store):
        by_visit.setdefault(read.visit, []).append(read)
    found = {}
    for visit, kept in by_visit.items():
        final = state_of(kept, pathway).final
        if final is not None:
            found[visit] = ClinicianRead(final.reader, final.role, final.stage, final.verdict,
                                         words_of(final.verdict, pathway), tuple(sorted(final.grades.items())),
                                         final.recorded, kept[0].model_verdict,
                                         meta.get("organisation") or NO_ORGANISATION)
    return found


@dataclass
class ImageResult:
    row: SessionRow
    eye: str                                   # right | left | unspecified
    picture: Path | None                       # overlay PNG (graded) or thumbnail JPEG (ungradable), if on disk
    picture_sha256: str | None
    source: dict[str, str]                     # the camera's DICOM attributes (dicom_source)
    when: str                                  # when it was screened (ISO 8601 UTC; unreadable: last seen)

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def record(self) -> dict:
        return self.row.record

    @property
    def is_overlay(self) -> bool:
        return self.picture is not None and self.picture.suffix.lower() == ".png"


@dataclass
class Study:
    """The study every output of one patient joins, and the patient's attributes as DICOM writes them."""

    uid: str
    patient_id: str
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_date: str = ""                       # YYYYMMDD
    study_time: str = ""                       # HHMMSS
    referring_physician_name: str = ""
    from_camera: bool = False


@dataclass
class PatientResult:
    patient: str
    verdict: PatientVerdict
    images: list[ImageResult]
    study: Study
    model: ModelIdentity
    session: str                               # the session ID (uids.session_id)
    first_seen: str                            # when the patient's first and last photo were screened
    last_seen: str
    eyes: dict[str, list[ImageResult]] = field(default_factory=dict)
    read: ClinicianRead | None = None          # the clinician's final read (None: the model's result only)

    @property
    def visit(self) -> int | None:
        return self.verdict.visit

    @property
    def key(self) -> tuple:
        """What names this result in derived UIDs: the patient, and the visit (rows kept before visits: the
        patient alone, as then)."""
        return (self.patient,) if self.visit is None else (self.patient, "visit", self.visit)

    def eye_referable(self, eye: str) -> bool | None:
        """Referable DR in this eye (None: no gradable photo of it gave a grade), as its verdict says."""
        verdict = self.verdict.eyes.get(eye)
        return None if verdict is None else verdict.referable

    @property
    def referable(self) -> bool | None:
        """Referable DR for the patient: as the clinician's final read says, else as the verdict says
        (:attr:`PatientVerdict.referable`)."""
        if self.read is not None:
            return True if self.read.verdict in (REFER, REFER_URGENT) else False if self.read.verdict == RESCREEN \
                else None
        return self.verdict.referable


def model_identity(store: SessionStore) -> ModelIdentity:
    meta = store.meta()
    return ModelIdentity(meta.get("model_name", "?"), meta.get("model_sha256", ""), __version__,
                         validation_of(meta), store.task(), meta.get("model_gate", ""), validation_why(meta) or "")


def _dicom_date(stamp: str) -> tuple[str, str]:
    """2026-11-25T23:07:41Z → ("20261125", "230741")."""
    return stamp[:10].replace("-", ""), stamp[11:19].replace(":", "")


def patient_results(store: SessionStore, folder: Path) -> list[PatientResult]:
    """Every visit of every patient of the session (in order of first appearance) with what the outputs need."""
    session = session_id(store)
    model = model_identity(store)
    rows = store.rows()
    # when each image was screened: unlike a file's seen_at, it does not move when a later run sees the file again
    screened_at = {r[0]: r[1] for r in store.execute("SELECT sha256, screened_at FROM images")}
    results, reads = [], final_reads(store)
    for verdict in visit_verdicts(rows, store.meta()):   # in the session's pathway's words
        images = []
        for eye, eye_verdict in verdict.eyes.items():
            for row in eye_verdict.images:
                if row.status == "duplicate":
                    continue
                rel = row.record.get("overlay") or row.record.get("thumbnail")
                picture = folder / rel if rel and (folder / rel).is_file() else None
                images.append(ImageResult(row, eye, picture, sha256_file(picture) if picture else None,
                                          dicom_source(row.record), screened_at.get(row.sha256) or row.seen_at))
        if not images:
            continue
        images.sort(key=lambda i: (i.when, i.row.path))
        seen = sorted(i.when for i in images)
        own = verdict.visit is not None and after_read(store, verdict.visit) is not None
        study = _study(session, verdict.patient, verdict.visit, images, seen[0], own)
        results.append(PatientResult(verdict.patient, verdict, images, study, model, session, seen[0], seen[-1],
                                     {e: [i for i in images if i.eye == e] for e in verdict.eyes},
                                     reads.get(verdict.visit) if verdict.visit is not None else None))
    return results


def _study(session: str, patient: str, visit: int | None, images: list[ImageResult], first_seen: str,
           own: bool = False) -> Study:
    """The camera's study when a photo came as DICOM (the first one that names a study, and names this
    patient or none: a photo the operator gave to another patient than its header says does not take
    its study along), else a study derived from the session, the patient and the visit, with an accession
    number of the session and the visit. In the camera's study, what the camera did not say stays empty
    rather than contradict it. ``own``: the visit a photo opened after the camera study's visit was read
    (:func:`~drtrt.clinic.reads.after_read`) takes a derived study: one study holds one visit's reports."""
    camera = None if own else next((i.source for i in images if i.source.get("study_uid")
                                    and i.source.get("patient_id", patient) == patient), None)
    if camera is None:
        date, time = _dicom_date(first_seen)
        if visit is None:                      # kept before visits: the patient's one study, as then
            return Study(derive_uid(session, "study", patient), patient,
                         study_id=f"DR{fhir_id(session, 'study', patient)[:8]}", study_date=date, study_time=time)
        return Study(derive_uid(session, "study", patient, "visit", visit), patient,
                     accession_number=accession_number(session, visit),
                     study_id=f"DR{fhir_id(session, 'study', patient, 'visit', visit)[:8]}", study_date=date,
                     study_time=time)
    return Study(camera["study_uid"], patient, camera.get("patient_name", ""),
                 camera.get("patient_birth_date", ""), camera.get("patient_sex", ""),
                 camera.get("accession_number", ""), camera.get("study_id", ""),
                 camera.get("study_date", ""), camera.get("study_time", ""),
                 camera.get("referring_physician_name", ""), from_camera=True)


def accession_number(session: str, visit: int) -> str:
    """The visit's accession number (a DICOM SH: at most 16 characters): ``DR`` + 6 hex digits of the
    session + the visit number, so two stations' visits never share one."""
    return f"DR{session.replace('-', '')[:6].upper()}{visit:06d}"[:16]


def verdict_text(p: PatientResult) -> str:
    """The visit's verdict as the SR and the FHIR report state it: its words, the note, and — while the
    model has no validation record — that it is provisional, next to it. A clinician's final read is the
    result: its words, who read it, and what the model said."""
    if p.read is not None:
        model = p.verdict.words + (f" ({PROVISIONAL})" if p.verdict.provisional else "")
        return f"{p.read.words} — read by {p.read.reader}; the model said: {model}"
    text = p.verdict.words + (f" — {p.verdict.note}" if p.verdict.note else "")
    return f"{text} ({PROVISIONAL})" if p.verdict.provisional else text
