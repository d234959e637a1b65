"""Watch mode: screen images as the fundus camera writes them into a folder.

Polls the folder (no inotify dependency, works on any file system, including network and
USB mounts). A file is taken once its size and modification time have not changed for
``settle_s`` seconds, so a half-written JPEG is never read; hidden files, editor/browser temp
files and non-image suffixes are ignored, except that a file without a suffix, or with a
numeric one (cameras name DICOM files ``IM0001`` or by their UID), is taken when it is DICOM.
Everything goes through the crash-safe session store, so a restart (or a power cut) picks up
exactly where it stopped. Ctrl-C or SIGTERM finishes the image in hand, writes the reports and
exits cleanly.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.errors import ConfigError, DataError
from drtrt.preprocess.dicom import is_dicom
from drtrt.clinic.patients import Assignment, read_patient_list
from drtrt.runtime.photos import IMAGE_SUFFIXES
from drtrt.clinic.session import ScreeningSession, SessionConfig
from drtrt.clinic.store import SessionRow

TEMP_SUFFIXES = {".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".filepart", ".swp", ".lock"}


@dataclass(frozen=True)
class WatchConfig:
    """poll_s: seconds between folder scans. settle_s: seconds a file must stay unchanged before
    it is read. patients: CSV (file, patient, eye) re-read whenever it changes. default: the
    Assignment of files the list does not name. session: how images are screened."""

    poll_s: float = 0.5
    settle_s: float = 1.0
    patients: Path | None = None
    default: Assignment = Assignment()
    session: SessionConfig = field(default_factory=lambda: SessionConfig(batch_size=1))

    def __post_init__(self) -> None:
        if not self.poll_s > 0 or not self.settle_s >= 0:
            raise ConfigError(f"--poll must be above 0 and --settle at least 0 seconds, found {self.poll_s:g} and "
                              f"{self.settle_s:g}")


def is_candidate(path: Path) -> bool:
    """An image the camera has finished naming: not hidden, not a temp/partial file, image suffix."""
    name = path.name
    if name.startswith((".", "~", "#")) or name.endswith("~"):
        return False
    suffixes = {s.lower() for s in path.suffixes}
    return not (suffixes & TEMP_SUFFIXES) and path.suffix.lower() in IMAGE_SUFFIXES


def maybe_dicom(path: Path) -> bool:
    """A name a camera gives DICOM files without ``.dcm`` (``IM0001``, ``1.2.840.….7``): taken only if
    its content is DICOM, once it has settled."""
    name, suffix = path.name, path.suffix
    if name.startswith((".", "~", "#")) or name.endswith("~") or {s.lower() for s in path.suffixes} & TEMP_SUFFIXES:
        return False
    return suffix == "" or suffix[1:].isdigit()


class SettleTracker:
    """Remembers each candidate's (size, mtime) and since when it has been unchanged."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._seen: dict[Path, tuple[tuple[int, int], float]] = {}
        self.done: dict[Path, tuple[int, int]] = {}

    def ready(self, folder: Path, clock: float) -> list[Path]:
        """Files that have settled and were not handed out in their current state, oldest first."""
        found = []
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return []
        for entry in entries:
            path = Path(entry.path)
            if not (is_candidate(path) or maybe_dicom(path)):
                continue
            try:
                st = entry.stat()
            except OSError:        # vanished between listing and stat
                continue
            if not entry.is_file():
                continue
            state = (st.st_size, st.st_mtime_ns)
            if self.done.get(path) == state:
                continue
            previous = self._seen.get(path)
            if previous is None or previous[0] != state:
                self._seen[path] = (state, clock)
            elif clock - previous[1] >= self.settle_s:
                if not is_candidate(path) and not is_dicom(path):
                    self.done[path] = state                 # no suffix and not DICOM: not an image
                    self._seen.pop(path, None)
                    continue
                found.append((st.st_mtime_ns, path.name, path, state))
        for _, _, path, state in sorted(found):
            self.done[path] = state
            self._seen.pop(path, None)
        return [path for _, _, path, _ in sorted(found)]


def log_line(row: SessionRow) -> str:
    """One line per image for the watch log."""
    who = " ".join(x for x in (row.patient, row.eye) if x)
    d = row.to_dict()
    if row.status == "graded":
        detail = ("lesions only" if d["grade"] is None else f"grade {d['grade']} {d['grade_name']}"
                  + (" — REFER" if d["referable"] else ""))
        ms = d.get("timings_ms", {}).get("total")
        detail += f" ({ms / 1000:.1f} s)" if ms else ""
    else:
        detail = row.reason or ""
    detail += "".join(f"  ⚠ {w}" for w in row.warnings)
    return f"{time.strftime('%H:%M:%S')}  {row.name}  {f'[{who}]  ' if who else ''}{row.status}  {detail}"


class RunLog:
    """``on_row`` of a long-running session (watch, receive): one :func:`log_line` per image this run
    settled (``run_id``, set once the session exists), counted in :attr:`settled`."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.run_id: int | None = None
        self.settled = 0

    def __call__(self, row: SessionRow) -> None:
        if row.run_id == self.run_id:
            self.settled += 1
            self.log(log_line(row))

    def stopped(self, out: os.PathLike, signum: int | None = None) -> int:
        """Say how many images this run settled, and return that number; KeyboardInterrupt instead when
        ``signum``, the signal that stopped the run, is SIGINT (Ctrl-C)."""
        self.log(f"stopped; {self.settled} image(s) this run; results in {out}")
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        return self.settled


def watch_folder(folder: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike,
                 cfg: WatchConfig = WatchConfig(), log: Callable[[str], None] = print,
                 stop: threading.Event | None = None) -> int:
    """Screen new images in ``folder`` into session ``out`` until ``stop`` is set (or SIGINT/SIGTERM
    arrives, when called from the main thread). Returns the number of images settled by this run;
    after a clean stop on SIGINT (Ctrl-C) raises KeyboardInterrupt, so the CLI exits 130 as every
    command does when interrupted (SIGTERM, a service manager's stop, returns normally)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"no such folder to watch: {folder}")
    stop = stop or threading.Event()
    restore = install_stop_handlers(stop)
    run_log = RunLog(log)
    tracker = SettleTracker(cfg.settle_s)
    list_state: tuple[int, int] | None = None
    assignments: dict[Path, Assignment] = {}
    session = ScreeningSession(model, out, cfg.session, command=f"watch {folder}", on_row=run_log)
    run_log.run_id = session.run_id
    try:
        with session:
            log(f"watching {folder} → {out} (Ctrl-C to stop)")
            if cfg.patients is not None and not cfg.patients.is_file():
                log(f"patient list {cfg.patients} does not exist yet: images get "
                    f"{cfg.default.patient or 'no patient ID'} until it appears")

            while not stop.is_set():
                if cfg.patients is not None and _stat(cfg.patients) not in (list_state, None):
                    assignments, list_state = read_patient_list(cfg.patients), _stat(cfg.patients)
                    tracker.done.clear()       # re-offer known files: their patient/eye may have changed
                ready = tracker.ready(folder, time.monotonic())
                for path in ready:
                    if stop.is_set():
                        break
                    session.submit(path, assignments.get(path.resolve(), cfg.default))
                    session.flush()
                if ready:
                    session.write_reports(session.touched_visits)
                    session.touched_visits.clear()
                stop.wait(cfg.poll_s)
            session.flush()
            session.write_reports()
    finally:
        stopped_by = restore()
    return run_log.stopped(out, stopped_by)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def install_stop_handlers(stop: threading.Event) -> Callable[[], int | None]:
    """First SIGINT/SIGTERM: finish the image in hand and stop. A second SIGINT interrupts at once.
    The returned ``restore()`` puts the previous handlers back and returns the signal that stopped
    the run (None when none did)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    received: list[int] = []

    def handler(signum, frame) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> int | None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        return received[0] if received else None

    return restore
