"""Build a session's outputs as files: per visit, DICOM SC and SR under ``dicom/`` and a FHIR Bundle under ``fhir/``.

``SESSION/dicom/<patient>/sc-<SOP Instance UID>.dcm`` and ``sr-<UID>.dcm`` (DICOM Part 10 files; each
visit its own study), ``SESSION/fhir/patient-<patient>-visit-<N>.json`` (the visit's transaction
Bundle; ``<patient>`` is the file-name-safe patient ID of the reports). A visit's SR replaces only
an earlier SR of the same visit (a correction), never another visit's. Files are written by temp-file-and-rename, and only when new or changed;
an object already built is not built again (its UID says what it is). Every object is recorded in the
store's ``exported`` table (:mod:`.outbox`), which is what ``drtrt sync`` queues.

An Encapsulated PDF of the patient report is not made: the report is HTML, and turning it into a
faithful PDF needs a browser engine, which the device does not have.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.fileio import atomic_write, sha256_file
from drtrt.integration import codes as C
from drtrt.integration.outbox import Exported, exported, latest_exported, record_exported
from drtrt.integration.results import PatientResult, patient_results
from drtrt.clinic.patients import safe_patient_id
from drtrt.clinic.referrals import referral_of
from drtrt.clinic.store import SessionStore


@dataclass
class ExportResult:
    objects: list[Exported] = field(default_factory=list)    # every current object, per patient: SC, SR, FHIR
    written: list[str] = field(default_factory=list)          # files written by this call (relative paths)
    patients: int = 0


def _existing(folder: Path, row: dict | None) -> Exported | None:
    """The recorded object, if its file is still there unchanged."""
    if row is None:
        return None
    path = folder / row["path"]
    if not path.is_file() or sha256_file(path) != row["sha256"]:
        return None
    return Exported(row["uid"], row["kind"], row["patient"], row["path"], row["sha256"], row["visit"])


def _write(folder: Path, rel: str, data: bytes, result: ExportResult) -> str:
    sha = hashlib.sha256(data).hexdigest()
    path = folder / rel
    if not path.is_file() or sha256_file(path) != sha:
        atomic_write(path, data)
        result.written.append(rel)
    return sha


def _previous(path: Path) -> dict | None:
    """The visit's Bundle as last written (None: none, or unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def export_session(store: SessionStore, folder: str | Path, patient_system: str = C.DEFAULT_PATIENT_SYSTEM,
                   patients: set[str] | None = None) -> ExportResult:
    """Build (or find already built) every patient's objects; ``patients``: only these."""
    folder = Path(folder)
    result = ExportResult()
    for p in patient_results(store, folder):
        if patients is not None and p.patient not in patients:
            continue
        result.patients += 1
        result.objects += _export_patient(store, folder, p, patient_system, result)
    return result


def _export_patient(store: SessionStore, folder: Path, p: PatientResult, patient_system: str,
                    result: ExportResult) -> list[Exported]:
    from drtrt.integration.dicom_out import build_picture, build_report, pictured, read_dataset, report_key, sc_uid
    from drtrt.integration.fhir import bundle_bytes, patient_bundle

    base = f"dicom/{safe_patient_id(p.patient)}"
    objects = []
    for image, number in pictured(p):
        uid = sc_uid(p, image)
        found = _existing(folder, exported(store, uid))
        if found is None:
            obj = build_picture(p, image, number)
            rel = f"{base}/sc-{uid}.dcm"
            found = Exported(uid, "sc", p.patient, rel, _write(folder, rel, obj.to_bytes(), result), p.visit)
            record_exported(store, found, obj.content_key)
        objects.append(found)

    key = report_key(p)
    latest = latest_exported(store, "sr", p.patient, p.visit)
    current = _existing(folder, latest) if latest is not None and latest["content_key"] == key else None
    if current is None:
        if latest is not None and latest["content_key"] == key:      # its file went missing: build it again
            before = exported(store, latest["predecessor"]) if latest["predecessor"] else None
        else:
            before = latest
        previous = read_dataset(folder / before["path"]) if before and (folder / before["path"]).is_file() else None
        sr = build_report(p, previous)
        rel = f"{base}/sr-{sr.uid}.dcm"
        current = Exported(sr.uid, "sr", p.patient, rel, _write(folder, rel, sr.to_bytes(), result), p.visit)
        record_exported(store, current, key, previous.SOPInstanceUID if previous is not None else None)
    objects.append(current)

    visit = "" if p.visit is None else f"-visit-{p.visit}"
    rel = f"fhir/patient-{safe_patient_id(p.patient)}{visit}.json"
    bundle = patient_bundle(p, current.uid, patient_system, referral_of(store, p.verdict), _previous(folder / rel))
    fhir = Exported(bundle["id"], "fhir", p.patient, rel, _write(folder, rel, bundle_bytes(bundle), result), p.visit)
    record_exported(store, fhir, fhir.sha256)
    objects.append(fhir)
    return objects
