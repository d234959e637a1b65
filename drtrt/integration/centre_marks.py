"""A pulled visit's ``visit.json`` changed by more than one process (issue 24): ``centre pull`` rewrites its summary
while ``centre serve``'s link (or ``centre push``) adds a "pushed" / "fhir_pushed" mark. Each read-modify-write of
the file is done holding an exclusive advisory lock (``fcntl.flock`` on ``visit.lock`` beside it), so a pull that
read the summary before a push marked it cannot write the older marks back over the push's: a mark the PACS
confirmed is never dropped (a dropped mark would send the same read again).

The lock is per visit and held only for the read and the atomic write (no network call inside it). ``flock`` locks
belong to the open file, so two threads of one process exclude each other too. Without ``fcntl`` (not POSIX) there
is no lock: one process per centre session is then up to the user, as for the session store.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from drtrt.fileio import keep_json

MARKS = ("pushed", "fhir_pushed")
"""What a push adds to ``visit.json``: the SR UIDs the PACS (the FHIR server) confirmed."""


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the visit's lock (waits for another process or thread holding it)."""
    try:
        import fcntl
    except ImportError:                                      # not POSIX: no advisory locks
        yield
        return
    fd = os.open(folder / "visit.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                                         # closing the file releases its lock


def read_visit_json(folder: Path) -> dict:
    """``visit.json`` ({} when there is none or it cannot be read)."""
    try:
        return json.loads((folder / "visit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_visit_json(folder: Path, visit: dict) -> None:
    """Write ``visit.json`` (atomically; unchanged bytes are not written again). Call it holding :func:`locked`."""
    keep_json(folder / "visit.json", visit)


def mark(folder: Path, key: str, uid: str) -> dict:
    """Add ``uid`` to the visit's ``key`` mark (:data:`MARKS`), read and written under the lock; the visit as kept."""
    if key not in MARKS:
        raise ValueError(f"not a mark: {key}")
    with locked(folder):
        visit = read_visit_json(folder)
        if uid not in visit.setdefault(key, []):
            visit[key].append(uid)
            write_visit_json(folder, visit)
        return visit


def summarised(folder: Path, summary: dict) -> None:
    """Keep a pull's new ``summary`` of the visit with the marks ``visit.json`` holds now (under the lock)."""
    with locked(folder):
        old = read_visit_json(folder)
        summary = {**summary, **{key: old.get(key, []) for key in MARKS}}
        if summary != old:
            write_visit_json(folder, summary)
