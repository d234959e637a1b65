"""The validation study's page at the station (``/study``, the programme lead's): the registered protocol, and
how far THIS station's session has come towards the power calculation's minimums.

A station started with ``drtrt station --study PROTOCOL`` follows that study; the protocol must be registered
(``drtrt validate register``) and its registration must verify for the file's exact bytes, else the station
refuses to start, in one line (:func:`load_study`) — a mistyped path or a protocol edited after registration
is caught at the desk, not found on a page weeks later.

Progress is counted as ``drtrt validate run`` will count it: the study's patients are
:func:`~drtrt.verify.study.cohort.cohort_of` the station's own session (each patient's first visit of
the period), the reference standard is :func:`~drtrt.verify.study.reads.reference` over the station's final reads
(:func:`~drtrt.verify.study.reads.station_reads`, ``final_only``: the visit's reading is final under the
pathway), and a patient counts as read once the readers' answer is decided.

**No peeking.** The page never computes sensitivity, specificity, PPV or NPV: the endpoints were fixed before
the first patient, and a figure watched while the study runs invites stopping early or moving the goal. The
figures come once, from ``drtrt validate run`` after the period, on the programme lead's machine — where the
private key is kept; it never sits on a station.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from drtrt.errors import DataError, DrtrtError
from drtrt.station.dashboard import model_state
from drtrt.station.state import now_of

WAITING_SHOWN = 50                             # the waiting visits listed on the page (all are counted)


@dataclass(frozen=True)
class StudySetup:
    """The study a station follows: its protocol (path, parsed, sha256), the registration, the plan."""

    path: Path
    protocol: object                           # drtrt.verify.study.protocol.Protocol
    sha256: str
    registration: dict
    plan: object                               # drtrt.verify.study.protocol.Plan

    def phase(self, today: dt.date) -> str:
        """before | running | ended: ``today`` (UTC) against the protocol's period, both days in it."""
        day = today.isoformat()
        return "before" if day < self.protocol.start else "ended" if day > self.protocol.end else "running"


def load_study(path: str | Path) -> StudySetup:
    """The registered study at ``path``; a protocol that cannot be read, is not registered, or changed since its
    registration is one :class:`~drtrt.errors.DrtrtError` line (the station does not start)."""
    from drtrt.verify.study.protocol import load_protocol, plan
    from drtrt.verify.study.run import read_registration

    path = Path(path).absolute()
    protocol, sha = load_protocol(path)
    registration = read_registration(path, sha)
    return StudySetup(path, protocol, sha, registration, plan(protocol))


@dataclass
class Progress:
    """phase: before | running | ended (by today's UTC date against the protocol's period). screened: study
    patients; read: of them with a decided reference; referable: of those, referable by the reference;
    waiting: (patient, visit id) of the study visits without one; problem: why nothing could be counted."""

    phase: str
    screened: int = 0
    read: int = 0
    referable: int = 0
    waiting: list[tuple[str, int | None]] = field(default_factory=list)
    problem: str | None = None

    def ready(self, setup: StudySetup) -> bool:
        """The period ended, every study visit is read, and the minimums are met: time for ``drtrt validate run``."""
        return (self.phase == "ended" and self.problem is None and not self.waiting
                and self.screened >= setup.plan.min_patients and self.referable >= setup.plan.min_referable)


def progress(setup: StudySetup, folder: Path, store, today: dt.date) -> Progress:
    """How far the session in ``folder`` (its open ``store``) has come: see the module docstring."""
    from drtrt.verify.study.cohort import cohort_of
    from drtrt.verify.study.reads import reference, station_reads

    found = Progress(setup.phase(today))
    try:
        cohort = cohort_of([(folder, store)], setup.protocol.start, setup.protocol.end)
    except DrtrtError as exc:
        found.problem = str(exc)
        return found
    by_key: dict[tuple[str, str], list] = {}
    for read in station_reads(store, final_only=True):
        by_key.setdefault((read.patient, read.date), []).append(read)
    for patient, result in cohort.results.items():
        key = (patient, result.date)
        try:
            decided = reference(by_key.get(key, [])).get(key)
        except DataError:                       # the readers disagree with no arbitration: not decided yet
            decided = None
        found.screened += 1
        if decided is None:
            found.waiting.append((patient, result.visit))
        else:
            found.read += 1
            found.referable += decided.referable is True
    return found


def run_command(setup: StudySetup, folder: Path, model: Path) -> str:
    """The exact ``drtrt validate run`` for this station's study (its paths), to run where the private key is."""
    parts = ["drtrt", "validate", "run", str(setup.path), "--sessions", str(Path(folder).absolute()),
             "--out", "study", "--key", "PRIVATE"]
    if Path(model).suffix == ".onnx":
        parts += ["--model", str(Path(model).absolute())]
    return " ".join(shlex.quote(p) if p != "PRIVATE" else p for p in parts)


def key_mismatch(setup: StudySetup, meta: dict) -> str | None:
    """Why a record from this study would not count at this station, by its keys: the station trusts no
    programme key ("none"), or another key than the registration's ("other"); None: the same key."""
    trusted = meta.get("validation_key") or ""
    return "none" if not trusted else None if trusted == setup.registration["signature"]["public_key"] else "other"


async def study_page(request: Request) -> Response:
    """The study this station follows (``--study``), its progress against the minimums, and the model's
    validation as the dashboard shows it; without ``--study``, how to start one."""
    from drtrt.station.handlers import Page

    page = Page(request)
    station = page.station
    setup: StudySetup | None = station.cfg.study
    state = model_state(station.worker, station.info, station.parity)
    if setup is None:
        return page.render("study.html", setup=None, model_state=state)
    today = now_of(request).astimezone(dt.timezone.utc).date()
    folder = station.cfg.data_dir
    found = await run_in_threadpool(progress, setup, folder, station.worker.store, today)
    return page.render("study.html", setup=setup, p=setup.protocol, plan=setup.plan, progress=found,
                       ready=found.ready(setup), waiting=found.waiting[:WAITING_SHOWN], model_state=state,
                       command=run_command(setup, folder, station.worker.cfg.model),
                       onnx=Path(station.worker.cfg.model).suffix == ".onnx",
                       keys=key_mismatch(setup, station.worker.store.meta()))
