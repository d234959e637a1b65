"""The outbox: what a session has to send, where, and whether the server has confirmed it, in the session store.

Two tables in the session's ``session.db`` (declared in :mod:`drtrt.clinic.schema`, beside ``images`` and ``files``):

``exported``: one row per object built from the session (a DICOM SC or SR instance, a visit's FHIR
Bundle): its UID (SOP Instance UID, or the Bundle id), kind, patient and visit, the digest of what it
says, its file under the session folder and the file's SHA-256.

``outbox``: one row per object and destination: status ``pending`` until the server confirmed it,
then ``sent`` (with ``sent_at``); ``attempts``, ``last_error`` and ``next_try_at`` (Unix time) record
the failures and when the next try is due (exponential backoff). ``UNIQUE(destination, uid)``: an
object is queued once per destination; queueing it again changes nothing unless its content changed
(a FHIR Bundle is updated in place, under the same ids: it goes back to pending).

Nothing is sent twice: an object is marked sent only after the server confirmed it, and UIDs are
derived from the content (:mod:`.uids`). If drtrt dies after the server stored an object and before
the mark was written, the next sync sends it again under the same SOP Instance UID (a PACS keeps one
instance per UID; Orthanc by default ignores the copy) or PUTs the same FHIR resources (same ids):
harmless.

This module needs nothing beyond the standard library: the station counts pending items with
:func:`pending_count` without the ``integration`` extra.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from drtrt.clinic import audit
from drtrt.clinic.accounts import Actor
from drtrt.clinic.store import SessionStore, now

AUTOMATIC = Actor("drtrt (sending on its own: no visit finished by a person)", "system")

DICOM_KINDS = ("sc", "sr")                  # immutable instances: one UID, one content


@dataclass(frozen=True)
class Exported:
    """An object built from the session: ``path`` relative to the session folder."""

    uid: str
    kind: str                               # sc | sr | fhir
    patient: str
    path: str
    sha256: str
    visit: int | None = None                # the visit it reports (None: built before visits were kept)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    destination: str
    kind: str
    uid: str
    patient: str
    path: str
    sha256: str
    status: str
    attempts: int
    last_error: str | None
    next_try_at: float
    sent_at: str | None


def pending_count(store: SessionStore, destination: str | None = None) -> int:
    """Objects queued and not yet confirmed by their server (at ``destination`` only, when given)."""
    sql, params = "SELECT COUNT(*) FROM outbox WHERE status='pending'", ()
    if destination is not None:
        sql, params = sql + " AND destination=?", (destination,)
    return int(store.execute(sql, params)[0][0])


def enqueue(store: SessionStore, objects: list[Exported], destinations: list[str]) -> int:
    """Queue every object for every destination; returns how many rows became pending (new or changed).

    Queueing what is already queued with the same content changes nothing (running sync twice queues
    nothing new). A FHIR Bundle whose content changed goes back to pending; a DICOM instance never
    changes under its UID, so a sent one stays sent."""
    queued = 0
    with store.transaction():
        for dest in destinations:
            for obj in objects:
                found = store.execute("SELECT status, sha256 FROM outbox WHERE destination=? AND uid=?",
                                      (dest, obj.uid))
                if not found:
                    store.execute("INSERT INTO outbox(destination, kind, uid, patient, path, sha256, status, "
                                  "queued_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                                  (dest, obj.kind, obj.uid, obj.patient, obj.path, obj.sha256, now()))
                    queued += 1
                elif found[0]["sha256"] != obj.sha256:
                    if obj.kind in DICOM_KINDS and found[0]["status"] == "sent":
                        continue
                    store.execute("UPDATE outbox SET path=?, sha256=?, status='pending', attempts=0, last_error=NULL, "
                                  "next_try_at=0, sent_at=NULL, queued_at=? WHERE destination=? AND uid=?",
                                  (obj.path, obj.sha256, now(), dest, obj.uid))
                    queued += found[0]["status"] == "sent"
    return queued


def items(store: SessionStore, status: str | None = None, due_by: float | None = None,
          destination: str | None = None) -> list[OutboxItem]:
    """Outbox rows in queue order: all, or of one status, due by a time (Unix), for one destination."""
    sql, params = "SELECT * FROM outbox WHERE 1=1", []
    if status is not None:
        sql += " AND status=?"
        params.append(status)
    if due_by is not None:
        sql += " AND next_try_at<=?"
        params.append(due_by)
    if destination is not None:
        sql += " AND destination=?"
        params.append(destination)
    rows = store.execute(sql + " ORDER BY id", tuple(params))
    return [OutboxItem(r["id"], r["destination"], r["kind"], r["uid"], r["patient"], r["path"], r["sha256"],
                       r["status"], r["attempts"], r["last_error"], r["next_try_at"], r["sent_at"]) for r in rows]


def mark_sent(store: SessionStore, item: OutboxItem) -> None:
    """The server confirmed the object: durable before the next one is sent, with its audit entry (``send``)
    in the same transaction. Sending is automatic: the entry names the person who finished the visit the
    object reports (the send is on their behalf), else :data:`AUTOMATIC`."""
    with store.transaction():
        store.execute("UPDATE outbox SET status='sent', attempts=attempts+1, last_error=NULL, sent_at=? "
                      "WHERE id=? AND sha256=?", (now(), item.id, item.sha256))
        visit = (exported(store, item.uid) or {}).get("visit")
        person = audit.last_person(store, visit, ("close", "finish_anyway")) if visit is not None else None
        audit.append(store, person or AUTOMATIC, "send", visit=visit, patient=item.patient,
                     details={"destination": item.destination, "kind": item.kind, "uid": item.uid, "automatic": True})


def mark_failed(store: SessionStore, item: OutboxItem, error: str, retry_base: float, retry_max: float,
                clock: float | None = None) -> float:
    """One more failed attempt: the next try is due ``retry_base * 2**(attempts-1)`` seconds later (at most
    ``retry_max``). Returns when (Unix time)."""
    attempts = item.attempts + 1
    due = (time.time() if clock is None else clock) + min(retry_max, retry_base * 2 ** (attempts - 1))
    with store.transaction():
        store.execute("UPDATE outbox SET attempts=?, last_error=?, next_try_at=? WHERE id=? AND status='pending'",
                      (attempts, error[:2000], due, item.id))
    return due


def defer(store: SessionStore, destination: str, until: float) -> None:
    """A server that cannot be reached: none of its pending items is due before ``until`` (the tried item's
    backoff), so a pass does not knock on a closed door once per item."""
    with store.transaction():
        store.execute("UPDATE outbox SET next_try_at=MAX(next_try_at, ?) WHERE destination=? AND status='pending'",
                      (until, destination))


def next_due(store: SessionStore, destinations: list[str] | None = None) -> float | None:
    """When the earliest pending item (for these destinations) is due (Unix time); None: nothing pending."""
    sql, params = "SELECT MIN(next_try_at) FROM outbox WHERE status='pending'", ()
    if destinations is not None:
        sql += f" AND destination IN ({', '.join('?' * len(destinations))})"
        params = tuple(destinations)
    row = store.execute(sql, params)
    return None if row[0][0] is None else float(row[0][0])


# -- the exported objects -----------------------------------------------------------------------
def exported(store: SessionStore, uid: str) -> dict | None:
    rows = store.execute("SELECT * FROM exported WHERE uid=?", (uid,))
    return dict(rows[0]) if rows else None


def latest_exported(store: SessionStore, kind: str, patient: str, visit: int | None = None) -> dict | None:
    """The newest object of a kind for a patient's visit (the visit's current SR, the one a new SR of the
    same visit replaces: another visit's SR is never its predecessor)."""
    rows = store.execute("SELECT * FROM exported WHERE kind=? AND patient=? AND visit IS ? ORDER BY rowid DESC LIMIT 1",
                         (kind, patient, visit))
    return dict(rows[0]) if rows else None


def record_exported(store: SessionStore, obj: Exported, content_key: str, predecessor: str | None = None) -> None:
    with store.transaction():
        store.execute("INSERT INTO exported(uid, kind, patient, content_key, predecessor, path, sha256, created_at, "
                      "updated_at, visit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(uid) DO UPDATE SET "
                      "content_key=excluded.content_key, path=excluded.path, sha256=excluded.sha256, "
                      "updated_at=excluded.updated_at",
                      (obj.uid, obj.kind, obj.patient, content_key, predecessor, obj.path, obj.sha256, now(), now(),
                       obj.visit))
