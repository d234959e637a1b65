"""The audit trail: who did what, kept in the session store so it cannot be edited quietly.

Each entry is ``{seq, time, person, role, action, visit, patient, image, details, prev_hash, hash}``;
``hash`` is the SHA-256 of the entry's other fields as canonical JSON (sorted keys, no spaces), and
``prev_hash`` is the hash of the entry before it (64 zeros for the first), so editing, removing or
reordering an entry breaks the chain from there on. The head (last seq and hash) is kept in the
session's meta too, so removing the newest entries is found as well (a person who can rewrite the
whole file can rewrite the whole chain: keep a copy of the head printed by ``drtrt audit verify``
elsewhere to prove even that).

:func:`append` joins the caller's transaction (``with store.transaction():``), so an action that
writes the store and its entry commit together: after a power cut both are there or neither. The
table is append-only: nothing in drtrt updates or deletes it, and SQLite triggers refuse both.

:func:`read_trail` and :func:`verify` read a ``session.db`` read-only, without the session's lock, so a
running station's trail can be checked.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from drtrt.clinic.accounts import Actor
from drtrt.clinic.store import SessionStore, now
from drtrt.errors import DataError

GENESIS = "0" * 64
ACTIONS = ("register", "open_visit", "to_camera", "capture", "retake_chosen", "move", "close", "finish_anyway",
           "discard", "print", "send", "login", "login_refused", "logout", "read", "override", "outcome",
           "after_read")
"""What an entry may record. ``read`` and ``override`` are for the clinician's reads (issue 24 item 3); ``outcome``
is what became of a visit's open action (:func:`drtrt.clinic.failsafe.record_outcome`); ``after_read``: a
command's photo came for a visit a clinician had read and opened the patient's next visit instead
(:meth:`drtrt.clinic.visits.VisitBook.visit_for`)."""

_OF_VISIT = "(visit=? OR json_extract(details, '$.from_visit')=?)"   # a photo moved away shows in both visits
_FIELDS = ("seq", "time", "person", "role", "action", "visit", "patient", "image", "details", "prev_hash")


@dataclass(frozen=True)
class Entry:
    seq: int
    time: str
    person: str
    role: str
    action: str
    visit: int | None
    patient: str | None
    image: str | None
    details: dict = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""

    def digest(self) -> str:
        """The SHA-256 of every field but ``hash``, as canonical JSON."""
        body = {name: getattr(self, name) for name in _FIELDS}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict:
        return asdict(self)


def append(store: SessionStore, actor: Actor, action: str, *, visit: int | None = None, patient: str | None = None,
           image: str | None = None, details: dict | None = None) -> Entry:
    """Add one entry, chained to the last; inside the caller's transaction when there is one."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    with store.transaction():
        last = store.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        seq, prev = (int(last[0]["seq"]) + 1, last[0]["hash"]) if last else (1, GENESIS)
        entry = Entry(seq, now(), actor.name, actor.role, action, None if visit is None else int(visit), patient,
                      image, dict(details or {}), prev)
        entry = Entry(**{**asdict(entry), "hash": entry.digest()})
        store.execute("INSERT INTO audit(seq, time, person, role, action, visit, patient, image, details, prev_hash, "
                      "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (entry.seq, entry.time, entry.person, entry.role, entry.action, entry.visit, entry.patient,
                       entry.image, json.dumps(entry.details, sort_keys=True), entry.prev_hash, entry.hash))
        store.set_meta("audit_head", {"seq": entry.seq, "hash": entry.hash})
    return entry


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(int(row["seq"]), row["time"], row["person"], row["role"], row["action"], row["visit"], row["patient"],
                 row["image"], json.loads(row["details"] or "{}"), row["prev_hash"], row["hash"])


def entries(store: SessionStore, visit: int | None = None) -> list[Entry]:
    """The trail (or one visit's entries) in order, as stored."""
    if visit is None:
        return [_entry(r) for r in store.execute("SELECT * FROM audit ORDER BY seq")]
    return [_entry(r) for r in store.execute(f"SELECT * FROM audit WHERE {_OF_VISIT} ORDER BY seq", (int(visit),) * 2)]


def last_person(store: SessionStore, visit: int, actions: tuple[str, ...]) -> Actor | None:
    """Who last did one of ``actions`` for ``visit`` (e.g. who put it at the camera), if anyone."""
    marks = ",".join("?" * len(actions))
    rows = store.execute(f"SELECT person, role FROM audit WHERE visit=? AND action IN ({marks}) ORDER BY seq DESC "
                         "LIMIT 1", (int(visit), *actions))
    return Actor(rows[0]["person"], rows[0]["role"]) if rows else None


@dataclass(frozen=True)
class ChainCheck:
    """What :func:`check_chain` found: ``ok``, the number of entries, the head, and the first break."""

    count: int
    head: str
    bad_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.ok:
            return f"{self.count} entries, chain intact (head {self.head[:16]})"
        return f"entry {self.bad_seq}: {self.problem}"


def check_chain(trail: list[Entry], head: dict | None = None) -> ChainCheck:
    """Walk ``trail`` (ordered by seq as stored); the first entry that was edited, removed or moved
    breaks it. ``head``: the head kept in meta, to find entries removed from the end."""
    by_hash = {e.hash: e.seq for e in trail}
    prev, expected = GENESIS, 1
    for entry in trail:
        if entry.seq != expected:                      # a gap, even where the next entry was re-linked over it
            return ChainCheck(len(trail), prev, expected,
                              f"entry {expected} was removed (the trail goes from {expected - 1} to {entry.seq})")
        if entry.digest() != entry.hash:
            return ChainCheck(len(trail), prev, entry.seq, "edited: its contents no longer match its hash")
        if entry.prev_hash != prev:
            moved = by_hash.get(entry.prev_hash)
            problem = (f"reordered: it follows entry {moved}, not entry {expected - 1}" if moved is not None
                       else f"does not follow entry {expected - 1}: an entry before it was removed or replaced")
            return ChainCheck(len(trail), prev, entry.seq, problem)
        prev, expected = entry.hash, expected + 1
    if head and int(head.get("seq", 0)) > len(trail):
        return ChainCheck(len(trail), prev, len(trail) + 1,
                          f"removed: the trail ends at entry {len(trail)}, its head says {head['seq']}")
    if head and head.get("seq") == len(trail) and head.get("hash") != prev:
        return ChainCheck(len(trail), prev, len(trail), "the last entry is not the one the head names")
    return ChainCheck(len(trail), prev)


def read_trail(session_db: Path, visit: int | None = None) -> tuple[list[Entry], dict | None]:
    """The trail of the session store file ``session_db`` (read-only, no lock) and its kept head."""
    if not session_db.is_file():
        raise DataError(f"{session_db.parent} is not a session folder (no session.db)")
    try:
        db = sqlite3.connect(f"{session_db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DataError(f"cannot read {session_db} ({exc})") from None
    db.row_factory = sqlite3.Row
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "audit" not in tables:
            return [], None
        where, params = (f"WHERE {_OF_VISIT} ", (int(visit),) * 2) if visit is not None else ("", ())
        trail = [_entry(r) for r in db.execute(f"SELECT * FROM audit {where}ORDER BY seq", params)]
        kept = db.execute("SELECT value FROM meta WHERE key='audit_head'").fetchone()
        return trail, json.loads(kept[0]) if kept else None
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{session_db} is not a session store drtrt can read ({exc})") from None
    finally:
        db.close()


def verify(session_db: Path) -> ChainCheck:
    """The chain of the session store file ``session_db``, checked read-only."""
    trail, head = read_trail(session_db)
    return check_chain(trail, head)


def verify_store(store: SessionStore) -> ChainCheck:
    """The chain of an open store (the station's audit page)."""
    return check_chain(entries(store), store.get_meta("audit_head"))
