"""The camera folder: which of its files the camera has finished, told by file-system events or found by polling.

``events`` (``auto`` picks it where it works): watchdog's inotify observer says when a writer closes a
file it wrote (IN_CLOSE_WRITE) or renames one into the folder (IN_MOVED_TO); the file is looked at
then, not after a quiet time. A file written to again after its close waits for its next close. A
file no event announced — there when the watch started, or found by the rescan every ``rescan_s``
(events lost when the kernel's queue overflowed) — is taken as in polling.

``poll`` (the fallback: watchdog not installed, not Linux, inotify's limits reached, or a network or
FUSE file system, where a writer on another machine sends no events): the folder is scanned at every
call; a file is taken once its size and modification time have not changed for ``settle_s``.

In both, a file is handed out only when its bytes are whole: its size and modification time are the
same before and after it is read, and it has its format's end (:func:`~drtrt.preprocess.complete.missing_end`:
a JPEG's EOI, a PNG's IEND, ...). One without waits for its next change; a person is told once it
has waited ``report_s`` (``on_incomplete``). Never read half-way, never graded half.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drtrt.errors import ConfigError
from drtrt.preprocess.complete import missing_end
from drtrt.preprocess.dicom import is_dicom
from drtrt.runtime.photos import IMAGE_SUFFIXES

TEMP_SUFFIXES = {".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".filepart", ".swp", ".lock"}
WATCH_MODES = ("auto", "events", "poll")
# where a writer on another machine changes files without inotify events here
REMOTE_FILE_SYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "davfs", "virtiofs",
                       "lustre", "gpfs", "beegfs", "ncpfs", "coda"}
_log = logging.getLogger("drtrt.camera")


def is_candidate(path: Path) -> bool:
    """An image the camera has finished naming: not hidden, not a temp/partial file, image suffix."""
    name = path.name
    if name.startswith((".", "~", "#")) or name.endswith("~"):
        return False
    suffixes = {s.lower() for s in path.suffixes}
    return not (suffixes & TEMP_SUFFIXES) and path.suffix.lower() in IMAGE_SUFFIXES


def maybe_dicom(path: Path) -> bool:
    """A name a camera gives DICOM files without ``.dcm`` (``IM0001``, ``1.2.840.….7``): taken only if
    its content is DICOM, once it is whole."""
    name, suffix = path.name, path.suffix
    if name.startswith((".", "~", "#")) or name.endswith("~") or {s.lower() for s in path.suffixes} & TEMP_SUFFIXES:
        return False
    return suffix == "" or suffix[1:].isdigit()


def file_system(folder: Path) -> str:
    """The type of the file system ``folder`` is on (``ext4``, ``nfs4``, ``fuse.sshfs``), "" when unknown."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    target, best = str(folder.resolve()), ("", "")
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, parts[2])
    return best[1]


@dataclass
class _Pending:
    how: str                       # closed | writing | quiet | incomplete
    since: float                   # when it was last seen to change
    stamp: tuple[int, int] | None = None
    why: str = ""                  # what an incomplete file lacks
    reported: bool = False


class CameraFolder:
    """Files of one folder handed out once whole (:meth:`ready`), in ``mode`` ``events``, ``poll`` or
    ``auto``. ``wake`` is called from the watch's thread when an event may have made a file ready;
    ``log`` gets one line saying how the folder is watched; ``on_incomplete(path, why)`` once per
    file state that has stayed incomplete ``report_s`` seconds."""

    def __init__(self, folder: Path, settle_s: float, mode: str = "auto", *, log: Callable[[str], None] = _log.info,
                 wake: Callable[[], None] = lambda: None,
                 on_incomplete: Callable[[Path, str], None] = lambda path, why: None,
                 rescan_s: float = 5.0, report_s: float = 10.0) -> None:
        if mode not in WATCH_MODES:
            raise ConfigError(f"--watch must be one of {', '.join(WATCH_MODES)}, found {mode!r}")
        self.folder, self.settle_s, self.requested = Path(folder), settle_s, mode
        self.log, self.wake, self.on_incomplete = log, wake, on_incomplete
        self.rescan_s, self.report_s = rescan_s, report_s
        self.mode = "poll"
        self.done: dict[Path, tuple[int, int]] = {}      # handed out, in this state
        self._pending: dict[Path, _Pending] = {}
        self._events: dict[Path, str] = {}               # from the observer's thread, under _lock
        self._lock = threading.Lock()
        self._observer = None
        self._next_scan = float("-inf")

    # -- how the folder is watched ----------------------------------------------------------------
    def start(self) -> str:
        """Start watching; returns the mode in use ("events" or "poll") and logs it, with why for polling."""
        why = self._start_events() if self.requested != "poll" else "as asked (--watch poll)"
        self.mode = "events" if why is None else "poll"
        how = ("file-system events (a file is read when the camera closes or renames it)" if why is None
               else f"polling (a file is read once unchanged for {self.settle_s:g} s): {why}")
        self.log(f"camera folder {self.folder}: {how}")
        return self.mode

    def _start_events(self) -> str | None:
        """None when the events flow; else why not (``events`` asked and impossible is an error)."""
        fs = file_system(self.folder)
        if self.requested == "auto" and (fs in REMOTE_FILE_SYSTEMS or fs.startswith("fuse")):
            return f"{fs} is a network or FUSE file system (writers elsewhere send no events)"
        try:
            from watchdog.observers.inotify import InotifyObserver
        except ImportError as exc:
            why = ("watchdog is not installed (pip install 'drtrt[station]')" if "watchdog" in str(exc)
                   else "no inotify on this system")
            return self._refuse(why)
        observer = InotifyObserver(generate_full_events=True)
        try:
            observer.schedule(_Handler(self), str(self.folder), recursive=False)
            observer.start()
        except OSError as exc:                   # the inotify instance or watch limit (fs.inotify.max_user_*)
            return self._refuse(f"inotify refused ({exc.strerror or exc}; raise fs.inotify.max_user_watches "
                                "or max_user_instances)")
        self._observer = observer
        return None

    def _refuse(self, why: str) -> str:
        if self.requested == "events":
            raise ConfigError(f"--watch events: {why}; use --watch poll")
        return why

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    def __enter__(self) -> CameraFolder:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def event(self, path: Path, how: str) -> None:
        """What the observer saw happen to ``path`` (closed, writing, gone, lost); called from its thread."""
        with self._lock:
            self._events[path] = how
        if how in ("closed", "lost"):
            self.wake()

    # -- which files are whole --------------------------------------------------------------------
    def forget(self) -> None:
        """Offer again the files already handed out (their patient may have changed)."""
        self.done.clear()
        self._next_scan = float("-inf")

    def ready(self, clock: float) -> list[Path]:
        """The files that are whole and were not handed out in their current state, oldest first."""
        self._take_events(clock)
        if self.mode == "poll" or clock >= self._next_scan:
            self._scan(clock)
        found = []
        for path, pending in list(self._pending.items()):
            stamp = _stamp(path)
            if stamp is None or self.done.get(path) == stamp:
                self._pending.pop(path)
            elif self._whole(path, pending, stamp, clock):
                found.append((stamp[1], path.name, path, stamp))
        for _, _, path, stamp in sorted(found):
            self.done[path] = stamp
            self._pending.pop(path, None)
        return [path for _, _, path, _ in sorted(found)]

    def _take_events(self, clock: float) -> None:
        with self._lock:
            events, self._events = self._events, {}
        for path, how in events.items():
            if how == "lost":                    # a close may be among the lost: what was being written waits
                self._next_scan = float("-inf")  # the quiet time instead
                for pending in self._pending.values():
                    if pending.how == "writing":
                        pending.how, pending.since, pending.stamp = "quiet", clock, None
            elif how == "gone":
                self._pending.pop(path, None)
            elif path.parent == self.folder and (is_candidate(path) or maybe_dicom(path)):
                self._pending[path] = _Pending(how, clock)

    def _scan(self, clock: float) -> None:
        """Files no event announced: they wait for the quiet time."""
        self._next_scan = clock + self.rescan_s
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        for entry in entries:
            path = Path(entry.path)
            if path in self._pending or not (is_candidate(path) or maybe_dicom(path)):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:                      # vanished between listing and stat
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            if self.done.get(path) != stamp:
                self._pending[path] = _Pending("quiet", clock, stamp)

    def _whole(self, path: Path, pending: _Pending, stamp: tuple[int, int], clock: float) -> bool:
        if pending.how == "writing":             # an event said it is being written: wait for its close
            return False
        if pending.how in ("quiet", "incomplete") and pending.stamp != stamp:
            pending.how, pending.since, pending.stamp, pending.reported = "quiet", clock, stamp, False
            return False
        if pending.how == "quiet" and (clock <= pending.since or clock - pending.since < self.settle_s):
            return False                         # seen unchanged twice, settle_s apart at least
        if pending.how == "incomplete":
            if not pending.reported and clock - pending.since >= self.report_s:
                pending.reported = True
                self.on_incomplete(path, pending.why)
            return False
        try:
            data = path.read_bytes()
        except OSError:
            return False
        if _stamp(path) != stamp or len(data) != stamp[0]:      # changed while read: wait for it to settle
            pending.how, pending.since, pending.stamp = "quiet", clock, _stamp(path)
            return False
        if not is_candidate(path) and not is_dicom(data):
            self.done[path] = stamp                             # no suffix and not DICOM: not an image
            return False
        why = missing_end(data)
        if why is not None:
            pending.how, pending.since, pending.stamp, pending.why = "incomplete", clock, stamp, why
            return False
        return True


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if os.path.isfile(path) else None


class _Handler:
    """watchdog's event handler, told to :meth:`CameraFolder.event` (only ``dispatch`` is called)."""

    def __init__(self, folder: CameraFolder) -> None:
        self.folder = folder

    def dispatch(self, event) -> None:
        kind = event.event_type
        if kind == "events_lost":
            self.folder.event(self.folder.folder, "lost")
        if event.is_directory:
            return
        src = Path(os.fsdecode(event.src_path)) if event.src_path else None
        if kind == "moved":
            if src is not None:
                self.folder.event(src, "gone")
            if event.dest_path:
                self.folder.event(Path(os.fsdecode(event.dest_path)), "closed")
        elif kind == "closed":
            self.folder.event(src, "closed")
        elif kind in ("created", "modified"):
            self.folder.event(src, "writing")
        elif kind == "deleted":
            self.folder.event(src, "gone")
