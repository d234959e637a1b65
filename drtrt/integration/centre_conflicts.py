"""A pulled study with more than one current drtrt report (issue 24): two final documents for one visit — the
station's clinician VERIFIED it while a centre sent its VERIFIED read naming the same predecessor, or two centres
read it. drtrt cannot tell which one answers for the visit: a person decides, at the PACS.

``centre pull`` (:func:`drtrt.integration.centre.pull`) then leaves the visit as it was (a new study is not
imported; a kept one keeps its ``visit.json``), keeps ``conflict.json`` in the visit's folder (the study, the
patient, and each current report: its SOP Instance UID, UNVERIFIED or VERIFIED, by whom, its verdict and read, and
whether it is referable) and goes on with the other studies. While the file is there the visit is not in the
queue, cannot be read and is never pushed; the queue page lists it, a conflict where a report is referable first.
A pull that finds one current report again (the PACS resolved it: one report deleted there, or a report naming
both as predecessors) removes the file and imports the visit.
"""

from __future__ import annotations

import json
from pathlib import Path

from drtrt.fileio import keep_json

FILE = "conflict.json"


def conflict_of(folder: Path) -> dict | None:
    """The visit's conflict (``conflict.json``), None when it has none. A file that cannot be read is a conflict
    too (never a visit pushed because its conflict file was damaged)."""
    path = folder / FILE
    if not path.exists():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"study": folder.name, "reports": [], "referable": True, "damaged": True}
    return found if isinstance(found, dict) else {"study": folder.name, "reports": [], "referable": True}


def keep_conflict(folder: Path, conflict: dict | None) -> None:
    """Keep ``conflict`` as the visit's (None: the visit has none: the file is removed)."""
    path = folder / FILE
    if conflict is None:
        path.unlink(missing_ok=True)
        return
    keep_json(path, conflict)


def conflicts(session: Path) -> list[dict]:
    """Every kept visit in conflict: one where a current report is referable first, then by date and study."""
    found = [c for c in (conflict_of(f) for f in sorted((session / "visits").glob("*"))) if c is not None]
    return sorted(found, key=lambda c: (not c.get("referable", True), c.get("date", ""), c.get("study", "")))
