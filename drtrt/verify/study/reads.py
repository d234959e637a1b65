"""The reference standard: people's reads of each study visit, and the one answer per patient they give.

The reads come from the station's reader page (:func:`station_reads`: ``drtrt validate run`` without
``--reads``), or as a CSV the reading programme exports, checked strictly (every fault is one line naming
the row and column)::

    patient_id,visit_date,reader,role,eye,grade
    P-001,2027-01-05,Dr A Smith,primary,right,R2M0
    P-001,2027-01-05,Dr A Smith,primary,left,R0M0

``role``: primary | secondary | arbitration. ``eye``: right | left. ``grade``: the NHS form ``R0M0``
… ``R3aM1`` (R0, R1, R2, R3, R3a, R3s; M0, M1), ``U`` (ungradable), or ICDR ``ICDR0`` … ``ICDR4``
with ``+DME`` when macular oedema is present. Referable: R2 or worse, or M1; ICDR 2 or worse, or
DME. The station's reader page keeps reads in the same grade strings (:mod:`drtrt.clinic.reads`);
:func:`station_reads` hands them to :func:`reference` as the same :class:`Read` objects.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from drtrt.clinic.pathways import stored_pathway
from drtrt.clinic.reads import reads_of, state_of
from drtrt.clinic.visits import visit_days
from drtrt.errors import ConfigError, DataError

COLUMNS = ("patient_id", "visit_date", "reader", "role", "eye", "grade")
ROLES = ("primary", "secondary", "arbitration")
_NHS = re.compile(r"^R(0|1|2|3|3a|3s)M([01])$")
_ICDR = re.compile(r"^ICDR([0-4])(\+DME)?$")


@dataclass(frozen=True)
class Read:
    """One person's grade of one eye of one visit. referable: None when the eye was ungradable (U)."""

    patient: str
    date: str
    reader: str
    role: str
    eye: str
    grade: str
    referable: bool | None


def referable_of(grade: str) -> bool | None:
    """Whether a grade is referable DR (None: ungradable); a grade in no known form is a ConfigError."""
    if grade == "U":
        return None
    if m := _NHS.match(grade):
        return m[1] != "0" and m[1] != "1" or m[2] == "1"
    if m := _ICDR.match(grade):
        return int(m[1]) >= 2 or bool(m[2])
    raise ConfigError(f"grade {grade!r} is none of R0M0…R3aM1 (R0, R1, R2, R3, R3a, R3s with M0 or M1), U, "
                      "ICDR0…ICDR4 (+DME)")


def read_reads(path: str | Path) -> list[Read]:
    """Every read in the CSV at ``path`` (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the reads {path}: {getattr(exc, 'strerror', None) or exc}") from None
    rows = csv.DictReader(text.splitlines())
    header = tuple(rows.fieldnames or ())
    if sorted(header) != sorted(COLUMNS):
        raise ConfigError(f"{path}: the columns must be {','.join(COLUMNS)}, found {','.join(header) or 'none'}")
    reads, seen = [], set()
    for line, row in enumerate(rows, start=2):
        where = f"{path.name} line {line}"
        if None in row or any(v is None for v in row.values()):
            raise ConfigError(f"{where}: {len(COLUMNS)} values expected")
        value = {k: v.strip() for k, v in row.items()}
        for name in ("patient_id", "reader"):
            if not value[name]:
                raise ConfigError(f"{where}: '{name}' is empty")
        try:
            ok = len(value["visit_date"]) == 10 and dt.date.fromisoformat(value["visit_date"])
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"{where}: 'visit_date' must be an ISO date (YYYY-MM-DD), found {value['visit_date']!r}")
        if value["role"] not in ROLES:
            raise ConfigError(f"{where}: 'role' must be one of {', '.join(ROLES)}, found {value['role']!r}")
        if value["eye"] not in ("right", "left"):
            raise ConfigError(f"{where}: 'eye' must be right or left, found {value['eye']!r}")
        try:
            referable = referable_of(value["grade"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        key = (value["patient_id"], value["visit_date"], value["reader"], value["role"], value["eye"])
        if key in seen:
            raise ConfigError(f"{where}: a second read of the same eye by the same reader in the same role")
        seen.add(key)
        reads.append(Read(value["patient_id"], value["visit_date"], value["reader"], value["role"], value["eye"],
                          value["grade"], referable))
    return reads


def station_reads(store, final_only: bool = False) -> list[Read]:
    """Every clinician's read kept in a session store (``store``: a :class:`~drtrt.clinic.store.SessionStore`),
    one :class:`Read` per eye: the visit's day as the cohort counts it (:func:`~drtrt.clinic.visits.visit_days`:
    a command's visit is dated by its photos' day, not the day it was opened) as its date, the read's stage as
    its role.
    ``final_only``: only the reads of visits whose reading is final under the session's pathway (a first read
    still waiting for its second, or two waiting for arbitration, is no reference standard yet)."""
    days = visit_days(store)
    kept = reads_of(store)
    if final_only:
        pathway = stored_pathway(store.meta())
        by_visit: dict[int, list] = {}
        for read in kept:
            by_visit.setdefault(read.visit, []).append(read)
        final = {v for v, found in by_visit.items() if state_of(found, pathway).final is not None}
        kept = [read for read in kept if read.visit in final]
    return [Read(read.patient, days[read.visit], read.reader, read.stage, eye, grade, referable_of(grade))
            for read in kept for eye, grade in sorted(read.grades.items())]


@dataclass(frozen=True)
class Reference:
    """The reference standard for one visit: referable DR (None: ungradable by the people who read it),
    and who decided it."""

    referable: bool | None
    readers: tuple[str, ...]


def _patient_answer(eyes: list[Read]) -> bool | None:
    """One reader's answer for the patient: referable if an eye is; not referable only if both eyes were
    read and gradable; otherwise ungradable."""
    if any(r.referable for r in eyes):
        return True
    return False if {r.eye for r in eyes} == {"right", "left"} and all(r.referable is False for r in eyes) else None


def reference(reads: Iterable[Read]) -> dict[tuple[str, str], Reference]:
    """(patient, visit date) → the reference standard. An arbitration read decides; without one, every
    reader must agree — a disagreement left unarbitrated is a DataError naming the visits (arbitrate
    them first: a study does not pick a reader)."""
    visits: dict[tuple[str, str], list[Read]] = {}
    for read in reads:
        visits.setdefault((read.patient, read.date), []).append(read)
    found, open_ = {}, []
    for key, items in sorted(visits.items()):
        deciding = [r for r in items if r.role == "arbitration"] or items
        by_reader: dict[tuple[str, str], list[Read]] = {}
        for r in deciding:
            by_reader.setdefault((r.reader, r.role), []).append(r)
        answers = {who: _patient_answer(eyes) for who, eyes in by_reader.items()}
        if len(set(answers.values())) > 1:
            open_.append(f"{key[0]} on {key[1]}")
            continue
        found[key] = Reference(next(iter(answers.values())), tuple(sorted({w[0] for w in answers})))
    if open_:
        raise DataError(f"the readers disagree with no arbitration read for {len(open_)} visit(s): "
                        f"{', '.join(open_[:5])}{' …' if len(open_) > 5 else ''}; arbitrate them first")
    return found
