"""``session.db``'s layout, owned here: every table, a version per part, the forward migrations, and
the meta keys a session keeps.

Four parts, each with its own version so one can change without touching the others:

- ``record``: ``meta`` (what the session keeps about itself, :data:`META_KEYS`), ``runs`` (each run
  of a command over the folder), ``images`` (one row per distinct image, keyed by SHA-256, holding
  the screening record) and ``files`` (one row per path seen, with its patient and eye);
- ``visits``: ``patients``, ``visits`` (a patient's screening: at the station, or grouped from a
  command's photos — by the camera's DICOM study, else per patient per day), ``captures`` (which photo
  fills which slot, why it was retaken, where it was moved from) and ``camera_files`` (what the station
  took from the camera folder);
- ``outbox``: ``exported`` (DICOM and FHIR objects built from the session) and ``outbox`` (what is
  to be sent where, and what a server confirmed);
- ``failsafe``: ``action_outcomes`` (what a named person recorded about a visit that still needed
  something — letter sent, appointment booked, attended, treated, did not attend and then what;
  :mod:`.failsafe`). Rows are only added, never changed.
- ``audit``: ``audit``, the hash-chained trail of who did what (:mod:`drtrt.clinic.audit`), append-only.
- ``reads``: ``reads``, each clinician's structured grade of a visit (:mod:`drtrt.clinic.reads`), append-only.

A part's version is the number of its migrations applied (:data:`PARTS`); versions live in
``meta`` as ``schema.<part>``, and SQLite's ``user_version`` says how versions are kept
(:data:`FORMAT`). A session written before this module (drtrt up to 35c20eb: ``user_version`` 1,
``visits`` and ``outbox`` tables made on first use by their modules, unversioned) is at version 1 of
every part it has. Opening a store brings every part to its latest version in one transaction, so a
power cut during an upgrade leaves the old layout whole. A database from a newer drtrt — a
format or a part version this one does not know — is refused with one line, before anything is
written. Migrations keep every row: a station upgraded in the field loses nothing it had.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drtrt import __version__
from drtrt.errors import ConfigError, DataError

FORMAT = 2          # user_version: 1 = one version for four tables (≤ 35c20eb); 2 = a version per part in meta
_LEGACY_FORMAT = 1

_RECORD_V1 = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, finished TEXT,
                                command TEXT NOT NULL, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images(sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, status TEXT NOT NULL,
                                  record TEXT NOT NULL, run_id INTEGER NOT NULL, screened_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, sha256 TEXT, size INTEGER, mtime_ns INTEGER,
                                 patient TEXT, eye TEXT, status TEXT NOT NULL, reason TEXT, duplicate_of TEXT,
                                 run_id INTEGER NOT NULL, seen_at TEXT NOT NULL, seq INTEGER NOT NULL);
"""
_VISITS_V1 = """
CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY, name TEXT, birth_date TEXT, registered TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS visits(id INTEGER PRIMARY KEY AUTOINCREMENT, patient TEXT NOT NULL, protocol TEXT NOT NULL,
                                  opened TEXT NOT NULL, closed TEXT, verdict TEXT, target TEXT);
CREATE TABLE IF NOT EXISTS captures(id INTEGER PRIMARY KEY AUTOINCREMENT, visit INTEGER NOT NULL, slot TEXT NOT NULL,
                                    path TEXT NOT NULL, sha256 TEXT NOT NULL, source TEXT NOT NULL,
                                    taken TEXT NOT NULL, replaced_by INTEGER);
CREATE TABLE IF NOT EXISTS camera_files(name TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                        sha256 TEXT NOT NULL, taken TEXT NOT NULL, PRIMARY KEY(name, size, mtime_ns));
"""
_OUTBOX_V1 = """
CREATE TABLE IF NOT EXISTS exported(uid TEXT PRIMARY KEY, kind TEXT NOT NULL, patient TEXT NOT NULL,
    content_key TEXT NOT NULL, predecessor TEXT, path TEXT NOT NULL, sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, destination TEXT NOT NULL,
    kind TEXT NOT NULL, uid TEXT NOT NULL, patient TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent')), attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, next_try_at REAL NOT NULL DEFAULT 0, queued_at TEXT NOT NULL, sent_at TEXT,
    UNIQUE(destination, uid));
CREATE INDEX IF NOT EXISTS outbox_status ON outbox(status, next_try_at);
"""

Migration = Callable[[sqlite3.Connection], None]

# The verdict ids drtrt up to 35c20eb kept — English sentences — and the short ids that replaced them
# (drtrt.clinic.verdicts). Frozen here, not imported: a migration means what it meant when written.
_SENTENCE_IDS = {"refer urgently": "refer_urgent", "refer": "refer",
                 "no referable DR — rescreen in 12 months": "rescreen", "ungradable — retake or refer": "ungradable",
                 "needs a human read — the grade and the lesion map disagree": "human_read",
                 "not photographed — take it": "not_photographed",
                 "incomplete — photograph the missing eye": "incomplete",
                 "screening — the result follows in seconds": "screening"}


def _script(sql: str) -> Migration:
    """A migration that is plain SQL. Statements one by one: ``executescript`` would commit the
    transaction the migration runs in."""
    def run(db: sqlite3.Connection) -> None:
        for statement in filter(str.strip, sql.split(";")):
            db.execute(statement)

    return run


def _statements(statements: tuple[str, ...]) -> Migration:
    """A migration of SQL statements given one by one, for those :func:`_script` cannot split (a trigger's
    body holds a ';')."""
    def run(db: sqlite3.Connection) -> None:
        for statement in statements:
            db.execute(statement)

    return run


def _closed_verdicts_by_id(db: sqlite3.Connection) -> None:
    """visits 2: a closed visit keeps ``{"verdict": id, "words": …}``. Before, the verdict was a
    sentence, kept either as JSON with its words or (older) as the bare sentence; the words stay
    exactly what the visit closed with."""
    for visit_id, kept in db.execute("SELECT id, verdict FROM visits WHERE verdict IS NOT NULL").fetchall():
        closed = json.loads(kept) if kept.startswith("{") else {"verdict": kept, "words": kept}
        closed["verdict"] = _SENTENCE_IDS.get(closed["verdict"], closed["verdict"])
        db.execute("UPDATE visits SET verdict=? WHERE id=?", (json.dumps(closed), visit_id))


_RECORD_V2 = "ALTER TABLE files ADD COLUMN visit INTEGER"      # the visit a file's photo belongs to (record 2)
_VISITS_V3 = """
ALTER TABLE visits ADD COLUMN kind TEXT NOT NULL DEFAULT 'station';
ALTER TABLE visits ADD COLUMN study_uid TEXT;
ALTER TABLE visits ADD COLUMN day TEXT;
ALTER TABLE captures ADD COLUMN reason TEXT;
ALTER TABLE captures ADD COLUMN moved_from TEXT;
CREATE INDEX IF NOT EXISTS visits_patient ON visits(patient, kind, day)
"""


def _visits_for_every_photo(db: sqlite3.Connection) -> None:
    """visits 3: every photo with a patient belongs to a visit. A station capture's photo to its
    capture's visit; every other one (``screen``, ``watch``, ``receive`` before visits were kept for
    them) to a visit of kind ``session`` per patient and UTC day it was seen (``day``), opened at its
    first photo and left open. Before, a patient's results were judged over every photo ever kept."""
    _script(_VISITS_V3)(db)
    db.execute("UPDATE files SET visit = (SELECT c.visit FROM captures c WHERE c.path = files.path "
               "ORDER BY c.id DESC LIMIT 1) WHERE visit IS NULL")
    groups = db.execute("SELECT patient, substr(seen_at, 1, 10) AS day, MIN(seen_at) FROM files "
                        "WHERE visit IS NULL AND patient IS NOT NULL GROUP BY patient, day ORDER BY MIN(seq)").fetchall()
    for patient, day, opened in groups:
        cur = db.execute("INSERT INTO visits(patient, protocol, opened, kind, day) VALUES (?, ?, ?, 'session', ?)",
                         (patient, json.dumps({"fields": 1}), opened, day))
        db.execute("UPDATE files SET visit=? WHERE visit IS NULL AND patient=? AND substr(seen_at, 1, 10)=?",
                   (cur.lastrowid, patient, day))


_OUTBOX_V2 = "ALTER TABLE exported ADD COLUMN visit INTEGER"  # the visit an object reports (outbox 2)
_FAILSAFE_V1 = """
CREATE TABLE IF NOT EXISTS action_outcomes(id INTEGER PRIMARY KEY AUTOINCREMENT, visit INTEGER NOT NULL,
    need TEXT NOT NULL, outcome TEXT NOT NULL, then_what TEXT, reason TEXT, person TEXT NOT NULL,
    recorded TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS action_outcomes_visit ON action_outcomes(visit)
"""

# audit 1: the hash-chained trail (drtrt.clinic.audit); append-only, the triggers refuse any change
_AUDIT_V1 = (
    "CREATE TABLE IF NOT EXISTS audit(seq INTEGER PRIMARY KEY, time TEXT NOT NULL, person TEXT NOT NULL, "
    "role TEXT NOT NULL, action TEXT NOT NULL, visit INTEGER, patient TEXT, image TEXT, details TEXT NOT NULL, "
    "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_visit ON audit(visit, seq)",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
)


# reads 1: clinicians' reads (drtrt.clinic.reads); append-only like the audit, the triggers refuse any change
_READS_V1 = (
    "CREATE TABLE IF NOT EXISTS reads(id INTEGER PRIMARY KEY AUTOINCREMENT, visit INTEGER NOT NULL, "
    "patient TEXT NOT NULL, stage TEXT NOT NULL, reader TEXT NOT NULL, role TEXT NOT NULL, grades TEXT NOT NULL, "
    "verdict TEXT NOT NULL, model_verdict TEXT, overrules INTEGER NOT NULL, reason TEXT, recorded TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS reads_visit ON reads(visit, id)",
    "CREATE TRIGGER IF NOT EXISTS reads_no_update BEFORE UPDATE ON reads "
    "BEGIN SELECT RAISE(ABORT, 'reads are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reads_no_delete BEFORE DELETE ON reads "
    "BEGIN SELECT RAISE(ABORT, 'reads are append-only'); END",
)


# part → its migrations, oldest first; a part's version is how many have run. Add, never edit.
# A migration may fill a column of another part's table from its own (visits 3 fills files.visit): parts
# run in this order, so the record part's columns exist by then.
PARTS: dict[str, tuple[Migration, ...]] = {
    "record": (_script(_RECORD_V1), _script(_RECORD_V2)),
    "visits": (_script(_VISITS_V1), _closed_verdicts_by_id, _visits_for_every_photo),
    "outbox": (_script(_OUTBOX_V1), _script(_OUTBOX_V2)),
    "failsafe": (_script(_FAILSAFE_V1),),
    "audit": (_statements(_AUDIT_V1),),
    "reads": (_statements(_READS_V1),),
}
TABLES = {"record": ("meta", "runs", "images", "files"), "visits": ("patients", "visits", "captures", "camera_files"),
          "outbox": ("exported", "outbox"), "failsafe": ("action_outcomes",), "audit": ("audit",),
          "reads": ("reads",)}


@dataclass(frozen=True)
class MetaKey:
    """A key of the ``meta`` table: what it holds, and how its value is stored (text or JSON)."""

    name: str
    meaning: str
    json: bool = False

    def encode(self, value: Any) -> str:
        return json.dumps(value) if self.json else str(value)

    def decode(self, text: str) -> Any:
        return json.loads(text) if self.json else text


META_KEYS = {key.name: key for key in (
    MetaKey("model_sha256", "the model the session is bound to (results of another model never mix in)"),
    MetaKey("model_name", "that model's file name, for reports"),
    MetaKey("created", "when the session was bound to its model (UTC)"),
    MetaKey("task", "the model's task vocabulary: grade and lesion names", json=True),
    MetaKey("validation", "the model's validation record as JSON (drtrt-validation/2, kept only when it names the "
                          "model's sha256 and its signature verifies against the configured key; read with "
                          "drtrt.validation_record.validation_of); '' when it has none, and what older sessions "
                          "kept (free text, an unsigned drtrt-validation/1 record) counts as none: results are "
                          "provisional"),
    MetaKey("validation_why", "why the session has no validation record (one line the banner shows); '' when it has"),
    MetaKey("validation_key", "the programme's public key the session was configured with (base64 of the 32 raw "
                              "Ed25519 bytes); '' for none"),
    MetaKey("validated_sha256", "the sha256 a validation record must name for this model (an engine: the ONNX it "
                                "was built from); what a validation study reads back"),
    MetaKey("model_gate", "the model's accuracy check against its reference: status (passed | failed | unchecked "
                          "| never_checked), reason, allowed (screened with --allow-unchecked-model)", json=True),
    MetaKey("pathway", "the referral pathway the session words its verdicts in", json=True),
    MetaKey("session_id", "the session's random ID, the root of every UID it makes"),
    MetaKey("station_active_visit", "the visit at the station's camera"),
    MetaKey("station_retake_reasons", "per open visit, the slot chosen for a retake and why (for its next photo)",
            json=True),
    MetaKey("organisation", "the screening programme or clinic that verifies clinicians' reads (the SR's verifying "
                            "organisation, the FHIR report's performer); set by drtrt station --organisation"),
    MetaKey("audit_head", "the audit trail's last entry: seq and hash (drtrt.clinic.audit), so removing the newest "
                          "entries is found too", json=True),
)}
_VERSION_PREFIX = "schema."


def meta_key(name: str) -> MetaKey:
    """The declared key ``name``; a key nobody declared is a bug, not data."""
    try:
        return META_KEYS[name]
    except KeyError:
        raise ConfigError(f"no meta key {name!r} in the session schema ({', '.join(META_KEYS)})") from None


def migrate(db: sqlite3.Connection, where: str) -> dict[str, int]:
    """Bring every part of the open database ``db`` to its latest version (see the module docstring);
    ``where`` names the database in messages. Returns part → the version it was at before."""
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.execute("BEGIN IMMEDIATE")
    try:
        before = _versions(db, found, where)
        for part, migrations in PARTS.items():
            for migration in migrations[before[part]:]:
                migration(db)
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_VERSION_PREFIX + part, str(len(migrations))))
        db.execute(f"PRAGMA user_version={FORMAT}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return before


def _versions(db: sqlite3.Connection, found: int, where: str) -> dict[str, int]:
    """Each part's version as the database has it; refuses a database from a newer drtrt."""
    if found > FORMAT:
        raise DataError(_newer(where, f"session format {found}, this drtrt reads up to {FORMAT}"))
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if found <= _LEGACY_FORMAT:      # ≤ 35c20eb: a part is at version 1 when its tables are there
        return {part: int(TABLES[part][0] in tables) for part in PARTS}
    kept = _kept_versions(db)
    versions = {part: kept.get(part, 0) for part in PARTS}
    newer = [f"{part} {v} > {len(PARTS[part])}" for part, v in versions.items() if v > len(PARTS[part])]
    unknown = sorted(part for part in kept if part not in PARTS)
    if newer or unknown:
        raise DataError(_newer(where, "; ".join(newer + [f"a part {u!r} it does not know" for u in unknown])))
    return versions


def _newer(where: str, what: str) -> str:
    return (f"{where} was written by a newer drtrt ({what}); this is drtrt {__version__}: upgrade drtrt to "
            "open it, or use another --out folder")


def versions(db: sqlite3.Connection) -> dict[str, int]:
    """Each part's version as kept in ``meta`` (after :func:`migrate`)."""
    kept = _kept_versions(db)
    return {part: kept.get(part, 0) for part in PARTS}


def _kept_versions(db: sqlite3.Connection) -> dict[str, int]:
    """part → version, for every ``schema.<part>`` row in ``meta`` (parts this drtrt does not know too)."""
    rows = db.execute(f"SELECT key, value FROM meta WHERE key LIKE '{_VERSION_PREFIX}%'").fetchall()
    return {key[len(_VERSION_PREFIX):]: int(value) for key, value in rows}
