"""The crash-safe session store: one SQLite file per session folder (its tables: :mod:`.schema`).

Two tables carry the results: ``images`` (one row per distinct image, keyed by the SHA-256 of
the file's bytes, holding the screening record as JSON) and ``files`` (one row per path seen,
pointing at its image, with the patient and eye it belongs to, or why it was not screened).
An image row and its file row are written in one transaction, so after a power cut an image
is either fully recorded or not at all, and the next run redoes only what is missing.

Durability: WAL journal with ``synchronous=FULL`` (each commit is on disk before the call
returns). A session folder is used by one process at a time (an advisory lock, released by
the kernel even when the process is killed); inside it, one store may be shared by threads (the
station's screening worker and its web requests): every call holds the store's lock.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drtrt.clinic import schema
from drtrt.errors import ConfigError, DataError
from drtrt.messages import from_record
from drtrt.preprocess.disc import eye_mismatch
from drtrt.runtime.consistency import heads_disagree
from drtrt.task import TaskSpec

def now() -> str:
    """UTC time stamp, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class FileEntry:
    """A path as seen by a run. status: screened | duplicate | unreadable."""

    path: str
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    patient: str | None
    eye: str | None
    status: str
    reason: str | None = None
    duplicate_of: str | None = None
    visit: int | None = None                   # the visit it belongs to (schema: visits)


@dataclass
class SessionRow:
    """One file of the session with its result: status graded | ungradable | error | duplicate."""

    path: str
    sha256: str | None
    patient: str | None
    eye: str | None
    status: str
    reason: str | None
    record: dict = field(default_factory=dict)
    duplicate_of: str | None = None
    run_id: int = 0
    seen_at: str = ""
    visit: int | None = None                   # the visit the photo belongs to (None: no patient)
    replaced: bool = False                     # retaken at the station: a later photo fills its slot

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def warnings(self) -> list[str]:
        """What the health worker must check although the photo was screened: the record's own
        warnings, an eye recorded (now) as the other one than the optic disc shows, and a grade the
        lesion map contradicts."""
        mismatch = eye_mismatch(self.eye, (self.record.get("disc") or {}).get("eye"))
        disagreement = heads_disagree(self.record) if self.status == "graded" else None
        return [*from_record(self.record), *(w for w in (mismatch, disagreement) if w)]

    def to_dict(self) -> dict:
        """The screening record plus where the file belongs (a duplicate has no record of its own)."""
        base = dict(self.record)
        base.update({"image": self.path, "status": self.status, "reason": self.reason,
                     "error": self.reason if self.status == "error" else None, "sha256": self.sha256,
                     "patient": self.patient, "eye": self.eye, "duplicate_of": self.duplicate_of,
                     "warnings": self.warnings})

        for key in ("grade", "grade_name", "referable", "probabilities"):
            base.setdefault(key, None)
        base.setdefault("lesions", {})
        return base


def _locked(method: Callable) -> Callable:
    """Run ``method`` holding the store's lock (one SQLite connection, several threads)."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return locked


class SessionStore:
    """SQLite store at ``path`` (None: in memory, for screening without a session folder)."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock_fd: int | None = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataError(f"cannot use {self.path.parent} as a session folder ({exc.strerror or exc}); "
                                "give --out a new or existing folder") from None
            self._lock()
        self.db = sqlite3.connect(":memory:" if self.path is None else str(self.path), isolation_level=None,
                                  timeout=30, check_same_thread=False)   # shared under self.lock
        self.lock = threading.RLock()

        self.db.row_factory = sqlite3.Row
        where = str(self.path or "the in-memory store")
        try:
            if self.path is not None:
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.migrated_from = schema.migrate(self.db, where)   # part → its version before this open
        except BaseException as exc:
            self.close()
            if isinstance(exc, sqlite3.DatabaseError):           # not SQLite at all: a copied-over or broken file
                raise DataError(f"{where} is not a session store drtrt can read ({exc}): it is damaged or not "
                                "drtrt's; move it aside, or use another session folder") from None
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:   # not POSIX: no advisory locks; one process per session is then up to the user
            return
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"session {self.path.parent} is in use by another drtrt process; wait for it "
                              "to finish or use another --out folder") from None
        self._lock_fd = fd

    @_locked
    def close(self) -> None:
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- session metadata -------------------------------------------------------------------
    @_locked
    def bind_model(self, sha256: str, name: str, task: TaskSpec) -> None:
        """Tie the session to one model: results made by another model must not mix into it.

        The model's task vocabulary is kept with it, so reports name grades and lesions as the
        model does."""
        bound = self.get_meta("model_sha256")
        if bound is None:
            with self._transaction():
                for key, value in (("model_sha256", sha256), ("model_name", name), ("created", now()),
                                   ("task", task.to_dict())):
                    self.set_meta(key, value)
        elif bound != sha256:
            old = self.get_meta("model_name") or "?"
            raise ConfigError(f"session {self.path.parent if self.path else ''} was screened with model {old} "
                              f"(sha256 {bound[:12]}), not {name} (sha256 {sha256[:12]}); use a new --out folder "
                              "or the session's model")

    @_locked
    def meta(self) -> dict[str, str]:
        """Every meta value as stored (text), the schema's own versions left out."""
        return {r["key"]: r["value"] for r in self.db.execute("SELECT key, value FROM meta")
                if r["key"] in schema.META_KEYS}

    @_locked
    def get_meta(self, name: str) -> Any:
        """The value of the declared meta key ``name`` (:data:`schema.META_KEYS`), decoded; None when unset."""
        key = schema.meta_key(name)
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (name,)).fetchone()
        return None if row is None else key.decode(row[0])

    @_locked
    def set_meta(self, name: str, value: Any) -> None:
        """Keep ``value`` under the declared meta key ``name`` (None: remove it), durably."""
        key = schema.meta_key(name)
        with self._transaction():
            if value is None:
                self.db.execute("DELETE FROM meta WHERE key=?", (name,))
            else:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, key.encode(value)))

    def task(self) -> TaskSpec:
        """The vocabulary of the session's model (the default one for sessions from before it was kept)."""
        stored = self.get_meta("task")
        return TaskSpec.from_dict(stored) if stored else TaskSpec()

    @_locked
    def begin_run(self, command: str) -> int:
        with self._transaction():
            cur = self.db.execute("INSERT INTO runs(started, command, pid) VALUES (?, ?, ?)",
                                  (now(), command, os.getpid()))
        return int(cur.lastrowid)

    @_locked
    def finish_run(self, run_id: int) -> None:
        with self._transaction():
            self.db.execute("UPDATE runs SET finished=? WHERE id=?", (now(), run_id))

    # -- reads ------------------------------------------------------------------------------
    @_locked
    def file(self, path: str) -> FileEntry | None:
        row = self.db.execute("SELECT * FROM files WHERE path=?", (path,)).fetchone()
        return None if row is None else FileEntry(row["path"], row["sha256"], row["size"], row["mtime_ns"],
                                                  row["patient"], row["eye"], row["status"], row["reason"],
                                                  row["duplicate_of"], row["visit"])

    @_locked
    def image_path(self, sha256: str) -> str | None:
        """The path that first produced this image, if it has been screened."""
        row = self.db.execute("SELECT path FROM images WHERE sha256=?", (sha256,)).fetchone()
        return None if row is None else row[0]

    @_locked
    def rows(self, paths: list[str] | None = None) -> list[SessionRow]:
        """Every file of the session in the order first seen (or the given paths, in that order)."""
        # replaced: the photo filled a slot of its visit and a retake fills it now (no capture of it is current)
        query = ("SELECT f.*, i.status AS image_status, i.record, "
                 "EXISTS(SELECT 1 FROM captures c WHERE c.path = f.path AND c.visit = f.visit) AND NOT EXISTS("
                 "SELECT 1 FROM captures c WHERE c.path = f.path AND c.visit = f.visit AND c.replaced_by IS NULL) "
                 "AS replaced FROM files f LEFT JOIN images i ON i.sha256 = f.sha256")
        if paths is None:
            return [self._row(r) for r in self.db.execute(query + " ORDER BY f.seq")]
        found = (self.db.execute(query + " WHERE f.path = ?", (p,)).fetchone() for p in paths)
        return [self._row(r) for r in found if r is not None]

    @staticmethod
    def _row(r: sqlite3.Row) -> SessionRow:
        record = json.loads(r["record"]) if r["record"] and r["status"] == "screened" else {}   # not a duplicate's
        status = r["image_status"] if r["status"] == "screened" and r["image_status"] else r["status"]
        status = "error" if status == "unreadable" else status
        reason = record.get("reason") if r["status"] == "screened" else r["reason"]
        return SessionRow(r["path"], r["sha256"], r["patient"], r["eye"], status, reason, record,
                          r["duplicate_of"], r["run_id"], r["seen_at"], r["visit"], bool(r["replaced"]))

    @_locked
    def count(self, table: str) -> int:
        if table not in ("images", "files", "runs"):
            raise ValueError(f"unknown table {table!r}")
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    @_locked
    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: "ok" for an intact database."""
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- writes -----------------------------------------------------------------------------
    @_locked
    def record_image(self, sha256: str, record: dict, entry: FileEntry, run_id: int) -> None:
        """The image's result and its file row, in one durable transaction."""
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?)",
                            (sha256, entry.path, record["status"], json.dumps(record), run_id, now()))
            self._upsert_file(entry, run_id)

    @_locked
    def record_file(self, entry: FileEntry, run_id: int) -> None:
        """A file row alone: a duplicate, an unreadable file, or new patient/eye/stat details."""
        with self._transaction():
            self._upsert_file(entry, run_id)

    def _upsert_file(self, e: FileEntry, run_id: int) -> None:
        seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM files").fetchone()[0]
        self.db.execute(
            "INSERT INTO files(path, sha256, size, mtime_ns, patient, eye, status, reason, duplicate_of, run_id, "
            "seen_at, seq, visit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
            "sha256=excluded.sha256, size=excluded.size, mtime_ns=excluded.mtime_ns, patient=excluded.patient, "
            "eye=excluded.eye, status=excluded.status, reason=excluded.reason, duplicate_of=excluded.duplicate_of, "
            "run_id=excluded.run_id, seen_at=excluded.seen_at, visit=excluded.visit",
            (e.path, e.sha256, e.size, e.mtime_ns, e.patient, e.eye, e.status, e.reason, e.duplicate_of,
             run_id, now(), seq, e.visit))

    def _transaction(self) -> "_Transaction":
        return _Transaction(self.db, self.lock)

    def transaction(self) -> "_Transaction":
        """``with store.transaction():`` — statements through :meth:`execute` commit together, durably."""
        return self._transaction()

    @_locked
    def execute(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """One statement on the store's tables (:mod:`.schema` declares them; visits and the outbox use this)."""
        return self.db.execute(sql, params).fetchall()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error): the write lock is taken up front; the store's
    thread lock is held throughout. Nested in another (a typed meta write inside a larger change),
    it joins the outer transaction, which commits or rolls back the whole."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self.db, self.lock = db, lock
        self.outer = True

    def __enter__(self) -> None:
        self.lock.acquire()
        self.outer = not self.db.in_transaction
        if not self.outer:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if self.outer:
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()
