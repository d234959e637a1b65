"""The station's screening worker: photos in (camera folder, browser uploads), results out, off the
request path.

One thread owns the :class:`ScreeningSession` (the model and the queue); web requests only read
the shared store and hand photos over. Every photo is first copied into the station folder under
its content hash (``photos/<sha256>.<ext>``): the camera may reuse its file names, and the app
never serves or opens a path that came from outside. The capture (which slot the photo fills) is
committed before the photo is screened, so a power cut between the two leaves a capture without a
result, which the next start screens (:meth:`VisitBook.unscreened`).

A camera photo is taken into a visit by itself only when it arrives while that visit is at the
camera. Every other one waits, asked about — files already in the camera folder when the station
starts (nobody knows whose they are), photos taken while no visit is at the camera (a late retake of
the patient who just left): a person attaches each to a visit's slot, or discards it (it stays on
disk, recorded as dealt with, never taken). Nothing waiting is attached without a person choosing.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drtrt.errors import ConfigError, DataError
from drtrt.fileio import atomic_write
from drtrt.messages import message
from drtrt.clinic import audit
from drtrt.clinic.accounts import Actor
from drtrt.clinic.patients import Assignment
from drtrt.clinic.session import MAX_FILE_BYTES, ScreeningSession, SessionConfig
from drtrt.clinic.store import SessionRow
from drtrt.clinic.visits import Protocol, VisitBook
from drtrt.clinic.camera_folder import WATCH_MODES, CameraFolder, is_candidate, maybe_dicom
from drtrt.station.security import image_kind

_log = logging.getLogger("drtrt.station")
UNKNOWN = Actor("unknown (nobody put the visit at the camera)", "unknown")
_WAKE = ("", Assignment())              # queued to wake the loop: not a photo


@dataclass(frozen=True)
class WaitingPhoto:
    """A camera file waiting for a person to say whose it is; ``id`` is its content's SHA-256 (pages
    name it by that only, never by a path)."""

    id: str
    path: Path
    size: int
    mtime_ns: int
    before: bool                       # already in the camera folder when the station started
    since: float                       # when it was found (time.time())

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class WorkerConfig:
    model: Path
    data_dir: Path
    camera_dir: Path | None
    protocol: Protocol = Protocol()
    poll_s: float = 0.5
    settle_s: float = 1.0
    session: SessionConfig = SessionConfig(batch_size=1)
    watch: str = "auto"                 # how the camera folder is watched: auto, events, poll (camera_folder)
    incomplete_report_s: float = 10.0   # a camera file incomplete this long gets a notice (it still waits)
    organisation: str | None = None     # who verifies clinicians' reads (kept as the session's ``organisation``)

    def __post_init__(self) -> None:
        if self.watch not in WATCH_MODES:
            raise ConfigError(f"--watch must be one of {', '.join(WATCH_MODES)}, found {self.watch!r}")


class StationWorker:
    """Screens what the camera writes and what the operator uploads into the open visit."""

    def __init__(self, cfg: WorkerConfig, log: Callable[[str], None] = _log.info) -> None:
        self.cfg, self.log = cfg, log
        if cfg.camera_dir is not None and not cfg.camera_dir.is_dir():
            raise DataError(f"no such camera folder: {cfg.camera_dir}")
        self.session = ScreeningSession(cfg.model, cfg.data_dir, cfg.session, command="station",
                                        on_row=self._on_row)
        self.store = self.session.store
        self.book = VisitBook(self.store)
        if cfg.organisation:
            self.store.set_meta("organisation", " ".join(cfg.organisation.split())[:64])
        self.photos = cfg.data_dir / "photos"
        self._todo: queue.Queue[tuple[str, Assignment]] = queue.Queue()
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._epoch, self._count = secrets.token_hex(4), 0
        self.notices: deque[tuple[float, str, str, int | None]] = deque(maxlen=20)   # (time, file, message, visit)
        self._waiting: dict[str, WaitingPhoto] = {}     # camera files asked about, by content hash
        self._before: set[tuple[str, int, int]] = set()  # (name, size, mtime_ns) in the folder at start
        self._waiting_lock = threading.Lock()
        self.failed: str | None = None
        self.camera: CameraFolder | None = None
        self._woken = threading.Event()                 # a wake-up is in the queue (at most one)
        self._thread = threading.Thread(target=self._run, name="drtrt-station-worker", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self.cfg.camera_dir is not None:
            self.camera = CameraFolder(self.cfg.camera_dir, self.cfg.settle_s, self.cfg.watch, log=self.log,
                                       wake=self._wake, on_incomplete=self._incomplete,
                                       report_s=self.cfg.incomplete_report_s)
            self.camera.start()
        self._before = self._camera_snapshot()
        for path, patient, eye, visit in self.book.unscreened():     # a power cut between capture and result
            self._todo.put((path, Assignment(patient, eye, visit)))
        self._thread.start()

    def stop(self) -> None:
        """Finish the photo in hand, then close the session (a second call does nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        if self.camera is not None:
            self.camera.close()
        self.session.close()

    @property
    def version(self) -> str:
        """Changes whenever what a screen shows may have changed (pages poll it)."""
        return f"{self._epoch}-{self._count}"

    def changed(self) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def wait_change(self, since: str, timeout: float) -> str:
        with self._changed:
            self._changed.wait_for(lambda: self.version != since, timeout=timeout)
            return self.version

    @property
    def pending(self) -> int:
        return max(0, self._todo.qsize() - self._woken.is_set())

    def _wake(self) -> None:
        """Wake the loop now (a camera file was closed or renamed in): one wake-up queued at most."""
        if not self._woken.is_set():
            self._woken.set()
            self._todo.put(_WAKE)

    # -- the visit at the camera ------------------------------------------------------------------
    def active_visit(self) -> int | None:
        kept = self.store.get_meta("station_active_visit")
        if kept is None:
            return None
        visit_id = int(kept)
        open_ = self.store.execute("SELECT 1 FROM visits WHERE id=? AND closed IS NULL", (visit_id,))
        return visit_id if open_ else None

    def set_active(self, visit_id: int | None, by: Actor | None = None) -> None:
        """Put ``visit_id`` at the camera (None: no visit); by a person: audited (``to_camera``), and the
        camera's photos that then arrive name them."""
        with self.store.transaction():
            self.store.set_meta("station_active_visit", visit_id)
            if by is not None and visit_id is not None:
                audit.append(self.store, by, "to_camera", visit=visit_id)
        self.changed()

    def at_camera(self, visit_id: int) -> Actor:
        """Who put ``visit_id`` at the camera (the person a camera photo taken into it is audited under)."""
        found = audit.last_person(self.store, visit_id, ("open_visit", "to_camera", "retake_chosen", "capture"))
        return found or UNKNOWN

    # -- photos in --------------------------------------------------------------------------------
    def take(self, data: bytes, visit_id: int, source: str, slot: str | None = None, by: Actor | None = None) -> str:
        """Keep ``data`` as a photo of visit ``visit_id`` (into ``slot`` or the visit's next one) and
        queue it for screening. Returns the slot. Raises ConfigError for what the operator must fix."""
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError("the file is too large for a fundus photo")
        kind = image_kind(data) or "bin"      # not an image: kept and screened, so the refusal says why
        sha = hashlib.sha256(data).hexdigest()
        path = self.photos / f"{sha}.{kind}"
        if not path.exists():
            atomic_write(path, data)
        visit = self.book.visit(visit_id)
        slot = self.book.add_capture(visit_id, str(path.resolve()), sha, source, slot, by=by)
        self._todo.put((str(path.resolve()), Assignment(visit.patient.id, slot.split("/")[0], visit_id)))
        self.changed()
        return slot

    def _camera_snapshot(self) -> set[tuple[str, int, int]]:
        """(name, size, mtime_ns) of the camera folder's files not yet dealt with: they were there before."""
        folder, found = self.cfg.camera_dir, set()
        if folder is None:
            return found
        for path in folder.iterdir():
            try:
                stat = path.stat()
            except OSError:
                continue
            if path.is_file() and (is_candidate(path) or maybe_dicom(path)) \
                    and not self.book.camera_file_taken(path.name, stat.st_size, stat.st_mtime_ns):
                found.add((path.name, stat.st_size, stat.st_mtime_ns))
        return found

    def _scan_camera(self) -> None:
        """Take the camera's finished files into the visit at the camera; the others wait, asked about."""
        if self.camera is None:
            return
        for path in self.camera.ready(time.monotonic()):
            try:
                stat = path.stat()
                if self.book.camera_file_taken(path.name, stat.st_size, stat.st_mtime_ns):
                    continue
                data = path.read_bytes()
                if self.camera.done.get(path) != (stat.st_size, stat.st_mtime_ns) or len(data) != stat.st_size:
                    continue                     # changed since it was found whole: offered again once it is
            except OSError as exc:
                self._notice(path.name, message("cannot read the camera's file (%(why)s)", why=exc.strerror or str(exc)))
                continue
            sha = hashlib.sha256(data).hexdigest()
            before = (path.name, stat.st_size, stat.st_mtime_ns) in self._before
            visit_id = None if before else self.active_visit()
            if visit_id is None:
                with self._waiting_lock:
                    self._waiting.setdefault(sha, WaitingPhoto(sha, path, stat.st_size, stat.st_mtime_ns, before,
                                                               time.time()))
                self.changed()
                continue
            try:
                slot = self.take(data, visit_id, source=f"camera:{path.name}", by=self.at_camera(visit_id))
                self._notice(path.name, message("→ %(slot)s", slot=slot))
            except ConfigError as exc:           # shown on the visit's page too: the operator must act
                self._notice(path.name, str(exc), visit_id)
            self.book.mark_camera_file(path.name, stat.st_size, stat.st_mtime_ns, sha)

    # -- photos waiting for a person --------------------------------------------------------------
    @property
    def waiting(self) -> list[WaitingPhoto]:
        """The camera files waiting for a person to say whose they are, oldest first."""
        with self._waiting_lock:
            return sorted(self._waiting.values(), key=lambda w: (w.since, w.name))

    def waiting_photo(self, photo_id: str) -> WaitingPhoto:
        with self._waiting_lock:
            found = self._waiting.get(photo_id)
        if found is None:
            raise ConfigError("this camera photo is no longer waiting")
        return found

    def _settle_waiting(self, photo_id: str) -> tuple[WaitingPhoto, bytes]:
        """Take ``photo_id`` off the waiting list: the camera's file as it was found (else it is asked
        about again, as the new file it is)."""
        photo = self.waiting_photo(photo_id)
        with self._waiting_lock:
            self._waiting.pop(photo_id, None)
        try:
            data = photo.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the camera's file ({exc.strerror or exc})") from None
        if hashlib.sha256(data).hexdigest() != photo.id:
            raise ConfigError("the camera's file has changed: it is asked about again")
        return photo, data

    def attach_waiting(self, photo_id: str, visit_id: int, slot: str, by: Actor | None = None) -> str:
        """A person says whose the waiting photo is: it goes into ``slot`` of visit ``visit_id``."""
        photo = self.waiting_photo(photo_id)
        if slot not in self.book.visit(visit_id).protocol.slots:
            raise ConfigError(f"no slot {slot!r} in this visit")
        photo, data = self._settle_waiting(photo_id)
        try:
            slot = self.take(data, visit_id, source=f"camera:{photo.name}", slot=slot, by=by)
        except ConfigError:
            with self._waiting_lock:               # still waiting: the person decides again
                self._waiting[photo.id] = photo
            raise
        self.book.mark_camera_file(photo.name, photo.size, photo.mtime_ns, photo.id)
        return slot

    def discard_waiting(self, photo_id: str, by: Actor | None = None) -> None:
        """A person says the waiting photo is nobody's here: kept on disk, never taken, not asked again."""
        photo, _ = self._settle_waiting(photo_id)
        with self.store.transaction():
            self.book.mark_camera_file(photo.name, photo.size, photo.mtime_ns, photo.id)
            if by is not None:
                audit.append(self.store, by, "discard", image=photo.id, details={"file": photo.name})
        self.changed()

    def _notice(self, name: str, message: str, visit_id: int | None = None) -> None:
        """``message``: the English text, a :class:`~drtrt.messages.Message` where built with values (pages
        translate it); ``name``: the camera's file name."""
        self.notices.appendleft((time.time(), name, message, visit_id))
        self.changed()

    def visit_notices(self, visit_id: int, within_s: float = 600.0) -> list[tuple[str, str]]:
        """(file, message) of what went wrong with this visit's photos lately, newest first."""
        now = time.time()
        return [(name, message) for stamp, name, message, visit in self.notices
                if visit == visit_id and now - stamp < within_s]

    # -- the loop ---------------------------------------------------------------------------------
    def _incomplete(self, path: Path, why: str) -> None:
        self._notice(path.name, message("not read: %(why)s; waiting for the camera to finish writing it (copy it "
                                        "again if the camera has stopped)", why=why), self.active_visit())

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._scan_camera()
                try:
                    item = self._todo.get(timeout=self.cfg.poll_s)
                except queue.Empty:
                    continue
                if item is _WAKE:
                    self._woken.clear()
                    continue
                path, assignment = item
                self.session.submit(Path(path), assignment)
                self.session.flush()
                self.changed()
        except Exception as exc:  # noqa: BLE001 - the page must say the worker stopped, not hang silently
            _log.exception("station worker stopped")
            self.failed = f"{type(exc).__name__}: {exc}"
            self.changed()

    def _on_row(self, row: SessionRow) -> None:
        self.changed()
