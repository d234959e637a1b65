"""Patients and eyes: who each image belongs to — patient IDs, names and dates of birth as typed,
the eye (left/right from any of L/R/OS/OD), and the patient lists (CSV) that assign files to them.

What a result means for the patient is :mod:`drtrt.clinic.verdicts`; the visits they come to,
:mod:`drtrt.clinic.visits`.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drtrt.errors import ConfigError, DataError
from drtrt.runtime.photos import collect_images

EYES = ("right", "left")                       # right first: clinical convention (OD, then OS)
_EYE_ALIASES = {"left": "left", "l": "left", "os": "left", "right": "right", "r": "right", "od": "right"}
MAX_PATIENT_ID = 64
MAX_NAME = 80


@dataclass(frozen=True)
class Patient:
    """A registered patient: the ID the programme knows them by, and what the operator typed."""

    id: str
    name: str | None
    birth_date: str | None
    registered: str


@dataclass(frozen=True)
class Assignment:
    """The patient and eye an image belongs to (None: not given), and the visit (the station's; None:
    the session groups the photo into one — by its DICOM study, else per patient per day)."""

    patient: str | None = None
    eye: str | None = None
    visit: int | None = None


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


def list_mismatches(paths: Sequence[Path], assignments: dict[Path, Assignment], default: Assignment,
                    patient_list: str | os.PathLike) -> tuple[list[str], list[Path]]:
    """What a patient list and the photos screened disagree on: (notes to say, photos left without a
    patient). A row naming no photo screened is said (its path is relative to the list's folder, a
    frequent slip), and so is a photo no row names — screened without a patient unless a default
    patient covers it: nothing is quietly left unassigned."""
    wanted = {Path(p).resolve() for p in paths}
    notes = []
    unmatched = [f for f in assignments if f not in wanted]
    if unmatched:
        shown = ", ".join(f"{f.name} ({assignments[f].patient})" for f in unmatched[:5])
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        notes.append(f"{len(unmatched)} row(s) of {patient_list} match no photo screened: {shown}{more} — a row's "
                     f"file is relative to the list's folder ({Path(patient_list).resolve().parent})")
    orphans = [Path(p) for p in paths if Path(p).resolve() not in assignments and not default.patient]
    if orphans:
        shown = ", ".join(p.name for p in orphans[:5]) + (f" and {len(orphans) - 5} more" if len(orphans) > 5 else "")
        notes.append(f"{len(orphans)} photo(s) no row of {patient_list} names: {shown} — screened without a patient, "
                     "so no visit or report holds them; add them to the list and screen again")
    return notes, orphans


def validate_birth_date(value: str | None) -> str | None:
    """YYYY-MM-DD, not in the future; empty → None."""
    if value is None or not value.strip():
        return None
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError("the date of birth must be a date (YYYY-MM-DD)") from None
    if day > dt.date.today() or day.year < 1900:
        raise ConfigError("the date of birth is not possible")
    return day.isoformat()


def validate_name(value: str | None) -> str | None:
    """A name as typed (spaces collapsed, NFC); control characters or more than 80 characters are errors."""
    if value is None or not value.strip():
        return None
    name = unicodedata.normalize("NFC", " ".join(value.split()))
    if len(name) > MAX_NAME or any(unicodedata.category(c).startswith("C") for c in name):
        raise ConfigError(f"a name has at most {MAX_NAME} printable characters")
    return name


def resolve_inputs(images: Sequence[str | os.PathLike], patient_list: str | os.PathLike | None = None,
                   patient: str | None = None, eye: str | None = None,
                   recursive: bool = False) -> tuple[list[Path], dict[Path, Assignment], Assignment]:
    """CLI inputs → (paths, resolved path → Assignment from the patient list, default Assignment).

    Without ``images`` the patient list's files are screened. ``patient``/``eye`` apply to every
    file the list does not name.
    """
    default = Assignment(validate_patient_id(patient), normalise_eye(eye))
    assignments = read_patient_list(patient_list) if patient_list else {}
    paths = collect_images(images, recursive) if images else list(assignments)
    if not paths:
        raise DataError("nothing to screen: give image files or folders, or --patients CSV")
    return paths, assignments, default
