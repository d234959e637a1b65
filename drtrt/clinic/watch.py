"""Watch mode: screen images as the fundus camera writes them into a folder.

Which files are finished is :mod:`drtrt.clinic.camera_folder`'s to say: by file-system events where
watchdog and inotify are there (a file is read when the camera closes or renames it), else by polling
(a file is taken once its size and modification time have not changed for ``settle_s`` seconds); in
both, a file is read only when whole (the same size before and after the read, its format's end
present), so a half-written JPEG is never read. Hidden files, editor/browser temp files and non-image
suffixes are ignored, except that a file without a suffix, or with a numeric one (cameras name DICOM
files ``IM0001`` or by their UID), is taken when it is DICOM. Everything goes through the crash-safe
session store, so a restart (or a power cut) picks up exactly where it stopped. Ctrl-C or SIGTERM
finishes the image in hand, writes the reports and exits cleanly.
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
from drtrt.clinic.camera_folder import WATCH_MODES, CameraFolder, is_candidate, maybe_dicom  # noqa: F401 - re-exported
from drtrt.clinic.patients import Assignment, read_patient_list
from drtrt.clinic.session import ScreeningSession, SessionConfig
from drtrt.clinic.store import SessionRow


@dataclass(frozen=True)
class WatchConfig:
    """poll_s: seconds between folder scans (polling) or looks at files waiting (events). settle_s: seconds a
    file no event announced must stay unchanged before it is read. watch: auto, events or poll
    (:mod:`~drtrt.clinic.camera_folder`). patients: CSV (file, patient, eye) re-read whenever it changes. default: the
    Assignment of files the list does not name. session: how images are screened."""

    poll_s: float = 0.5
    settle_s: float = 1.0
    patients: Path | None = None
    default: Assignment = Assignment()
    session: SessionConfig = field(default_factory=lambda: SessionConfig(batch_size=1))
    watch: str = "auto"

    def __post_init__(self) -> None:
        if self.watch not in WATCH_MODES:
            raise ConfigError(f"--watch must be one of {', '.join(WATCH_MODES)}, found {self.watch!r}")
        if not self.poll_s > 0 or not self.settle_s >= 0:
            raise ConfigError(f"--poll must be above 0 and --settle at least 0 seconds, found {self.poll_s:g} and "
                              f"{self.settle_s:g}")


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
    wake = threading.Event()
    camera = CameraFolder(folder, cfg.settle_s, cfg.watch, log=log, wake=wake.set, on_incomplete=lambda path, why: log(
        f"{path.name}: not read: {why}; waiting for the camera to finish writing it (copy it again if it has stopped)"))
    list_state: tuple[int, int] | None = None
    assignments: dict[Path, Assignment] = {}
    session = ScreeningSession(model, out, cfg.session, command=f"watch {folder}", on_row=run_log)
    run_log.run_id = session.run_id
    try:
        with session, camera:
            log(f"watching {folder} → {out} (Ctrl-C to stop)")
            if cfg.patients is not None and not cfg.patients.is_file():
                log(f"patient list {cfg.patients} does not exist yet: images get "
                    f"{cfg.default.patient or 'no patient ID'} until it appears")

            while not stop.is_set():
                if cfg.patients is not None and _stat(cfg.patients) not in (list_state, None):
                    assignments, list_state = read_patient_list(cfg.patients), _stat(cfg.patients)
                    camera.forget()            # re-offer known files: their patient/eye may have changed
                wake.clear()
                ready = camera.ready(time.monotonic())
                for path in ready:
                    if stop.is_set():
                        break
                    session.submit(path, assignments.get(path.resolve(), cfg.default))
                    session.flush()
                if ready:
                    session.write_reports(session.touched_visits)
                    session.touched_visits.clear()
                wake.wait(cfg.poll_s)
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
