"""Visits: a patient at the camera, the photos the protocol asks for, and the visit's verdict.

Kept in the session store beside the screening results (one store for ``drtrt screen``,
``drtrt watch`` and the station), in the tables :mod:`.schema` declares: ``patients`` (ID, optional name and date of
birth), ``visits`` (patient, protocol, opened/closed, the verdict it closed with, the slot the
next photo fills) and ``captures`` (which photo fills which slot; a retake points the old capture
at the new one, so nothing is replaced silently). Each change is one durable transaction.

A protocol is the fields per eye: one (any field) or two (disc- and macula-centred, as EyeArt
requires). A slot is ``eye/field``. A slot's state: ``missing`` (not photographed — take it),
``screening`` (photo in, result not yet), ``graded``, ``retake`` (refused: ungradable or
unreadable — take it again); warnings (the other eye, the other field, heads disagreeing) ride
along. The visit's verdict is :func:`drtrt.clinic.verdicts.visit_verdict` over its eyes, each eye judged
on the photos that currently fill its slots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from drtrt.clinic.pathways import stored_pathway
from drtrt.clinic.patients import EYES, MAX_PATIENT_ID, Patient, validate_birth_date, validate_name, validate_patient_id
from drtrt.clinic.store import SessionRow, SessionStore, now
from drtrt.clinic.verdicts import LABELS, NOT_PHOTOGRAPHED, SCREENING, EyeVerdict, eye_verdict, visit_verdict
from drtrt.errors import ConfigError
from drtrt.messages import message

FIELDS = {1: ("any",), 2: ("disc", "macula")}


@dataclass(frozen=True)
class Protocol:
    """The photos a visit needs: ``fields`` per eye (1: any field; 2: disc- and macula-centred)."""

    fields: int = 1

    def __post_init__(self) -> None:
        if self.fields not in FIELDS:
            raise ConfigError(f"a protocol takes 1 or 2 fields per eye, found {self.fields}")

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(f"{eye}/{name}" for eye in EYES for name in FIELDS[self.fields])

    def to_json(self) -> str:
        return json.dumps({"fields": self.fields})

    @classmethod
    def from_json(cls, text: str) -> Protocol:
        return cls(int(json.loads(text)["fields"]))


@dataclass
class Slot:
    """One photo the protocol asks for, and the capture filling it (None: not photographed)."""

    name: str                                  # right/disc, left/any, …
    state: str                                 # missing | screening | graded | retake
    row: SessionRow | None = None
    sha256: str | None = None                  # the photo filling the slot (also while it is screened)
    capture_id: int | None = None
    taken: str | None = None
    replaced: list[dict] = field(default_factory=list)   # earlier captures of this slot, newest first
    warnings: list[str] = field(default_factory=list)

    @property
    def eye(self) -> str:
        return self.name.split("/")[0]

    @property
    def field_name(self) -> str:
        return self.name.split("/")[1]


@dataclass
class Visit:
    id: int
    patient: Patient
    protocol: Protocol
    opened: str
    closed: str | None
    slots: list[Slot]
    eyes: dict[str, EyeVerdict]
    verdict: str                               # the patient's verdict from the photos so far (verdicts.VERDICTS)
    closed_verdict: str | None                 # what it closed with
    target: str | None                         # the slot the next photo fills (None: all filled)
    words: str = ""                            # the verdict in the pathway's words
    closed_words: str | None = None

    @property
    def complete(self) -> bool:
        """Every slot has a screened photo that is graded, or refused after the operator saw it."""
        return all(slot.state in ("graded", "retake") for slot in self.slots)

    @property
    def waiting(self) -> bool:
        return self.closed is None and any(slot.state in ("missing", "screening", "retake") for slot in self.slots)


class VisitBook:
    """The visits kept in ``store`` (a :class:`SessionStore`, shared with the screening session)."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    # -- patients and visits --------------------------------------------------------------------
    def register(self, patient_id: str, name: str | None = None, birth_date: str | None = None) -> Patient:
        """Add a patient, or update the name/date of birth of one already registered (when given)."""
        try:
            pid = validate_patient_id(patient_id)
        except ConfigError:
            raise ConfigError(f"a patient ID has at most {MAX_PATIENT_ID} printable characters") from None
        if pid is None:
            raise ConfigError("a patient ID is needed")
        name, birth_date = validate_name(name), validate_birth_date(birth_date)
        with self.store.transaction():
            self.store.execute("INSERT INTO patients VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                               "name=COALESCE(excluded.name, name), "
                               "birth_date=COALESCE(excluded.birth_date, birth_date)",
                               (pid, name, birth_date, now()))
        return self.patient(pid)

    def patient(self, patient_id: str) -> Patient | None:
        rows = self.store.execute("SELECT * FROM patients WHERE id=?", (patient_id,))
        return Patient(rows[0]["id"], rows[0]["name"], rows[0]["birth_date"], rows[0]["registered"]) if rows else None

    def find_patients(self, text: str, limit: int = 20) -> list[Patient]:
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.store.execute("SELECT * FROM patients WHERE id LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\' "
                                  "ORDER BY registered DESC LIMIT ?", (like, like, limit))
        return [Patient(r["id"], r["name"], r["birth_date"], r["registered"]) for r in rows]

    def open_visit(self, patient_id: str, protocol: Protocol) -> int:
        """A new visit for a registered patient, or the patient's visit still open (one at a time)."""
        if self.patient(patient_id) is None:
            raise ConfigError(f"patient {patient_id!r} is not registered")
        with self.store.transaction():
            open_ = self.store.execute("SELECT id FROM visits WHERE patient=? AND closed IS NULL", (patient_id,))
            if open_:
                return int(open_[0]["id"])
            self.store.execute("INSERT INTO visits(patient, protocol, opened) VALUES (?, ?, ?)",
                               (patient_id, protocol.to_json(), now()))
            return int(self.store.execute("SELECT last_insert_rowid() AS id")[0]["id"])

    def close_visit(self, visit_id: int) -> Visit:
        visit = self.visit(visit_id)
        if visit.closed is None:
            with self.store.transaction():
                self.store.execute("UPDATE visits SET closed=?, verdict=? WHERE id=?",
                                   (now(), json.dumps({"verdict": visit.verdict, "words": visit.words}), visit_id))
        return self.visit(visit_id)

    def set_target(self, visit_id: int, slot: str | None) -> None:
        """The slot the next photo fills (None: the first that needs one)."""
        visit = self.visit(visit_id)
        if slot is not None and slot not in visit.protocol.slots:
            raise ConfigError(f"no slot {slot!r} in this visit")
        if visit.closed is not None:
            raise ConfigError("this visit is closed")
        with self.store.transaction():
            self.store.execute("UPDATE visits SET target=? WHERE id=?", (slot, visit_id))

    # -- photos ---------------------------------------------------------------------------------
    def add_capture(self, visit_id: int, path: str, sha256: str, source: str, slot: str | None = None) -> str:
        """Put a photo into ``slot`` (default: the visit's target); a photo already filling the slot is
        marked replaced by this one. Returns the slot. The target moves to the next slot needing a photo."""
        visit = self.visit(visit_id)
        if visit.closed is not None:
            raise ConfigError("this visit is closed: open a new visit for more photos")
        slot = slot or visit.target
        if slot is None:
            raise ConfigError("every photo of this visit is taken: choose the photo to retake first")
        if slot not in visit.protocol.slots:
            raise ConfigError(f"no slot {slot!r} in this visit")
        if any(s.row is not None and s.row.sha256 == sha256 for s in visit.slots):
            raise ConfigError("this photo is already in the visit")
        elsewhere = self.store.execute("SELECT v.patient FROM captures c JOIN visits v ON v.id = c.visit "
                                       "WHERE c.sha256=? AND c.visit<>?", (sha256, visit_id))
        if elsewhere:
            raise ConfigError("this photo was already taken in another visit — check the patient")
        with self.store.transaction():
            self.store.execute("INSERT INTO captures(visit, slot, path, sha256, source, taken) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               (visit_id, slot, path, sha256, source, now()))
            new = int(self.store.execute("SELECT last_insert_rowid() AS id")[0]["id"])
            self.store.execute("UPDATE captures SET replaced_by=? "
                               "WHERE visit=? AND slot=? AND id<>? AND replaced_by IS NULL",
                               (new, visit_id, slot, new))
            self.store.execute("UPDATE visits SET target=NULL WHERE id=?", (visit_id,))
        return slot

    def unscreened(self) -> list[tuple[str, str, str]]:
        """(path, patient, eye) of current captures the store holds no result for (a restart's to-do)."""
        rows = self.store.execute("SELECT c.path, v.patient, c.slot FROM captures c JOIN visits v ON v.id = c.visit "
                                  "LEFT JOIN files f ON f.path = c.path WHERE c.replaced_by IS NULL AND f.path IS NULL")
        return [(r["path"], r["patient"], r["slot"].split("/")[0]) for r in rows]

    def camera_file_taken(self, name: str, size: int, mtime_ns: int) -> bool:
        return bool(self.store.execute("SELECT 1 FROM camera_files WHERE name=? AND size=? AND mtime_ns=?",
                                       (name, size, mtime_ns)))

    def mark_camera_file(self, name: str, size: int, mtime_ns: int, sha256: str) -> None:
        with self.store.transaction():
            self.store.execute("INSERT OR IGNORE INTO camera_files VALUES (?, ?, ?, ?, ?)",
                               (name, size, mtime_ns, sha256, now()))

    # -- reading --------------------------------------------------------------------------------
    def visit(self, visit_id: int) -> Visit:
        rows = self.store.execute("SELECT * FROM visits WHERE id=?", (int(visit_id),))
        if not rows:
            raise ConfigError(f"no visit {visit_id}")
        v = rows[0]
        protocol = Protocol.from_json(v["protocol"])
        captures = self.store.execute("SELECT * FROM captures WHERE visit=? ORDER BY id DESC", (v["id"],))
        results = {r.path: r for r in self.store.rows([c["path"] for c in captures])}
        slots = [self._slot(name, [c for c in captures if c["slot"] == name], results) for name in protocol.slots]
        pathway = stored_pathway(self.store.meta())
        eyes = {}
        for eye in EYES:
            current = [s.row for s in slots if s.eye == eye and s.row is not None]
            filled = [s for s in slots if s.eye == eye and s.state != "missing"]
            eyes[eye] = eye_verdict(eye, current, pathway) if current else (
                EyeVerdict(eye, SCREENING, None, []) if filled else eye_verdict(eye, [], pathway))
        verdict, words = visit_verdict(eyes, any(s.state == "screening" for s in slots), pathway)
        target = v["target"] or next((s.name for s in slots if s.state in ("missing", "retake")), None)
        closed = json.loads(v["verdict"]) if v["verdict"] else {"verdict": None, "words": None}
        return Visit(v["id"], self.patient(v["patient"]), protocol, v["opened"], v["closed"], slots, eyes, verdict,
                     closed["verdict"], None if v["closed"] else target, words, closed["words"])

    @staticmethod
    def _slot(name: str, captures: list, results: dict[str, SessionRow]) -> Slot:
        current = [c for c in captures if c["replaced_by"] is None]
        replaced = [{"taken": c["taken"], "sha256": c["sha256"],
                     "status": getattr(results.get(c["path"]), "status", None)}
                    for c in captures if c["replaced_by"] is not None]
        if not current:
            return Slot(name, "missing", replaced=replaced, warnings=[LABELS[NOT_PHOTOGRAPHED]])
        capture = current[0]
        row = results.get(capture["path"])
        state = "screening" if row is None else "graded" if row.status == "graded" else \
            "retake" if row.status in ("ungradable", "error") else "screening"
        warnings = list(row.warnings) if row is not None else []
        field_name = name.split("/")[1]
        centred = ((row.record.get("disc") or {}).get("centred") if row is not None else None)
        if field_name in ("disc", "macula") and state == "graded" and centred in ("disc", "macula") \
                and centred != field_name:
            warnings.append(message("this photo looks %(centred)s-centred, the slot asks for a %(field)s-centred "
                                    "photo — check the fixation and retake if needed", centred=centred, field=field_name))
        return Slot(name, state, row, capture["sha256"], capture["id"], capture["taken"], replaced, warnings)

    def visits(self, since: str | None = None, limit: int = 200) -> list[Visit]:
        """Visits opened at or after ``since`` (a UTC stamp as :func:`now` writes; None: all), newest first."""
        rows = self.store.execute("SELECT id FROM visits WHERE opened >= ? ORDER BY id DESC LIMIT ?",
                                  (since or "", limit))
        return [self.visit(r["id"]) for r in rows]
