"""What the day page shows, worked out from the worker as plain values for the templates: today's
visits and figures, the model and its validation, the free disk, the results still to send.

Kept apart from the handlers so that each figure is one small function a reader (or a test) can
check against the store without a request.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

from drtrt.errors import ConfigError
from drtrt.model_info import ModelInfo
from drtrt.validation_record import validation_status
from drtrt.clinic.failsafe import open_actions
from drtrt.clinic.verdicts import HUMAN_READ, REFER, REFER_URGENT, UNGRADABLE
from drtrt.station.forward import Forwarder
from drtrt.station.worker import StationWorker

LOW_DISK_BYTES = 2 * 2**30


def local_time(stamp: str | None) -> str:
    """UTC stamp → the station's local time, "YYYY-MM-DD HH:MM"."""
    if not stamp:
        return ""
    moment = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def day_summary(worker: StationWorker, now: dt.datetime | None = None) -> dict:
    """Today's visits (local date) and the day's figures, with the open actions of every day (the failsafe: a
    visit left open or a referral without an outcome does not leave the page at midnight)."""
    today = dt.date.today().isoformat()
    midnight = dt.datetime.combine(dt.date.today(), dt.time()).astimezone()      # local midnight, in UTC below
    since = midnight.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    visits = [v for v in worker.book.visits(since=since, limit=300) if local_time(v.opened)[:10] == today]
    statuses = [status for v in visits for s in v.slots   # every photo taken today, retaken ones too
                for status in ([s.row.status] if s.row is not None else []) + [r["status"] for r in s.replaced]]
    judged = [status for status in statuses if status in ("graded", "ungradable", "error")]
    refused = sum(status != "graded" for status in judged)
    closed = [v for v in visits if v.closed]
    actions = open_actions(worker.book, now)
    return {"visits": visits, "figures": {
        "visits": len(visits), "done": len(closed), "waiting": sum(v.waiting for v in visits),
        "referred": sum((v.closed_verdict or "") in (REFER_URGENT, REFER, HUMAN_READ) for v in closed),
        "ungradable_visits": sum((v.closed_verdict or "") == UNGRADABLE for v in closed),
        "ungradable_rate": (100.0 * refused / len(judged)) if judged else None, "photos": len(judged),
        "open_actions": len(actions), "overdue": sum(a.overdue for a in actions)}}


def model_state(worker: StationWorker, info: ModelInfo, parity: dict | None) -> dict:
    """The model the worker runs, how, and whether it was validated (the session's
    :class:`~drtrt.validation_record.ValidationRecord`, None: not validated, and ``why``): the operator must see it."""
    runner = worker.session.predictor.runner
    record, why = validation_status(worker.session.store.meta())
    return {"name": runner.name, "sha256": worker.session.model_sha256[:12], "precision": info.precision,
            "backend": getattr(runner, "backend", type(runner).__name__),
            "validated": record, "why": why, "parity": parity}


def forward_state(worker: StationWorker, forwarder: Forwarder | None) -> dict:
    """Results waiting to go to the hospital, and how the last try went."""
    try:
        from drtrt.integration.outbox import pending_count
    except ImportError:            # the integration extra is not installed: nothing can have been queued
        return {"destinations": [], "pending": 0, "last_pass": None, "problem": None}
    state = forwarder.state if forwarder is not None else None
    return {"destinations": state.destinations if state else [], "pending": pending_count(worker.store),
            "last_pass": None if not state or not state.last_pass
            else time.strftime("%H:%M", time.localtime(state.last_pass)),
            "problem": state.problem if state else None}


def read_parity(path: Path | None) -> dict | None:
    """The model's parity record (``drtrt parity --json`` output): passed, and when."""
    if path is None:
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the parity record {path}: {exc}") from None
    candidates = record.get("candidates") or []
    return {"passed": bool(record.get("passed")), "file": path.name,
            "date": dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d"),
            "models": [Path(str(c.get("model", "?"))).name for c in candidates]}


def disk_space(folder: Path) -> dict:
    """Free and total space where the photos go, flagged low before a full disk stops the day."""
    usage = shutil.disk_usage(folder)
    return {"free_gb": usage.free / 2**30, "total_gb": usage.total / 2**30, "low": usage.free < LOW_DISK_BYTES}


def reader_agreement(worker: StationWorker, weeks: int = 8, census: tuple[str, str] | None = None) -> dict:
    """The model's agreement with the clinicians' reads, the last ``weeks`` ISO weeks
    (:func:`drtrt.verify.study.agreement.weekly_agreement`; ``census``: a validation study's period, every visit of
    which is read); ``missing``: the library it needs, when absent."""
    try:
        from drtrt.verify.study.agreement import weekly_agreement
        found = weekly_agreement(worker.store, census)[-weeks:]
    except ImportError:
        return {"weeks": [], "missing": "scikit-learn"}
    return {"weeks": found, "missing": None}
