"""A DICOM receiver (storage SCP): the fundus camera pushes its photos, drtrt screens them.

``drtrt receive --ae-title DRTRT --port 11112 --out SESSION --model MODEL`` (pynetdicom). It accepts
the Ophthalmic Photography 8 Bit, VL Photographic and Secondary Capture storage SOP classes (and
Verification, the camera's "test connection") in implicit or explicit VR little endian or JPEG
baseline, and only associations addressed to its AE title.

Each instance is written as received to ``SESSION/incoming/<SOPInstanceUID>.dcm`` (the UID checked
to be digits and dots before it becomes a file name): a temp file, fsync, rename, fsync of the
folder, and only then is the C-STORE acknowledged (0x0000). A write that fails is answered 0xA700
(out of resources), so the camera keeps the photo and sends it again; an instance whose UID is
not a UID, 0xC000. An instance already received (same SOP Instance UID) is acknowledged and not
written again. pynetdicom calls the handler only once a whole instance has arrived, so a push
cut off halfway (cable, camera switched off) leaves nothing behind for its unfinished instance.

The association threads only write files; one worker, the calling thread, screens them into
the session (the same store, reports and duplicate checks as ``drtrt watch`` and the station),
patient and eye from each file's PatientID and ImageLaterality. A bad instance is kept and gets
its one-line reason in the session; receiving goes on. On start, the instances in ``incoming/``
that the session has not screened (a crash between the acknowledgement and the screening) are
screened first. Ctrl-C or SIGTERM stops receiving, finishes the image in hand and writes the
reports; what was received and not screened yet is screened at the next start.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.errors import ConfigError, DrtrtError
from drtrt.preprocess.dicom import SOP_CLASSES, TRANSFER_SYNTAXES
from drtrt.clinic.patients import Assignment
from drtrt.clinic.session import ScreeningSession, SessionConfig
from drtrt.clinic.watch import RunLog, install_stop_handlers   # the same Ctrl-C/SIGTERM and log as watch

VERIFICATION = "1.2.840.10008.1.1"
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")     # printable ASCII but backslash, at most 16 characters
_RENAMING = threading.Lock()


@dataclass(frozen=True)
class ReceiveConfig:
    """ae_title: the AE title cameras call (at most 16 characters). host: the address to listen on
    (127.0.0.1: this machine only; 0.0.0.0: every network). port: TCP port (0: any free one).
    poll_s: how long the worker waits for an instance before it checks for a stop."""

    ae_title: str = "DRTRT"
    host: str = "127.0.0.1"
    port: int = 11112
    poll_s: float = 0.2
    session: SessionConfig = field(default_factory=lambda: SessionConfig(batch_size=1))

    def __post_init__(self) -> None:
        if not _AE_TITLE.fullmatch(self.ae_title) or not self.ae_title.strip():
            raise ConfigError(f"--ae-title must be 1 to 16 printable ASCII characters without a backslash, "
                              f"found {self.ae_title!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 1 and 65535 (0: any free port), found {self.port}")


def instance_path(folder: Path, sop_instance_uid: str) -> Path | None:
    """``folder/<uid>.dcm`` for a well-formed UID (digits and dots, at most 64 characters), else None:
    a UID the sender made up never becomes a path (``../``, separators, device names)."""
    uid = (sop_instance_uid or "").strip()
    return folder / f"{uid}.dcm" if len(uid) <= 64 and _UID.fullmatch(uid) else None


def write_durably(path: Path, data: bytes) -> bool:
    """Write ``path`` (temp file beside it, fsync, rename, fsync of the folder) unless it exists.
    Returns False when it existed. Raises OSError (the temp file removed) when the write fails.

    Not :func:`drtrt.fileio.atomic_write`: that names its temp file by process, and several
    associations may write at once; and an acknowledgement promises the folder entry is on disk too.
    The check and the rename hold a lock, so two associations sending one instance keep one file.
    """
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with _RENAMING:
            if path.exists():
                tmp.unlink()
                return False
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


class _Scp:
    """The association side: writes each instance durably, then hands its path to the worker."""

    def __init__(self, incoming: Path, log: Callable[[str], None]) -> None:
        self.incoming = incoming
        self.log = log
        self.todo: queue.Queue[Path] = queue.Queue()

    def on_store(self, event) -> int:
        sender = f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
        uid = str(event.request.AffectedSOPInstanceUID or "")
        path = instance_path(self.incoming, uid)
        if path is None:
            self.log(f"{time.strftime('%H:%M:%S')}  refused an instance from {sender}: its SOP Instance UID "
                     f"{uid[:70]!r} is not a UID (0x{CANNOT_UNDERSTAND:04X})")
            return CANNOT_UNDERSTAND
        try:
            data = event.encoded_dataset(include_meta=True)   # the bytes as sent, under a Part 10 header
            written = write_durably(path, data)
        except (OSError, MemoryError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            self.log(f"{time.strftime('%H:%M:%S')}  could not keep {path.name} from {sender} ({reason}); "
                     f"answered out of resources (0x{OUT_OF_RESOURCES:04X}): free disk space, the camera sends "
                     "it again")
            return OUT_OF_RESOURCES
        if written:
            self.todo.put(path)
        else:
            self.log(f"{time.strftime('%H:%M:%S')}  {path.name} from {sender}: already received, not kept twice")
        return SUCCESS

    def on_rejected(self, event) -> None:
        """A camera refused for the AE title it called: name both, so the set-up mistake is seen at once
        (the camera only shows "association rejected"); other refusals (too many associations) likewise."""
        requestor, called = event.assoc.requestor, str(event.assoc.requestor.primitive.called_ae_title).strip()
        expected = event.assoc.acceptor.ae_title.strip()
        why = (f"it called AE title {called!r}, this receiver is {expected!r}: set the camera's called AE title to "
               f"{expected!r} or start drtrt receive with --ae-title {called!r}" if called != expected else
               "too many associations at once")
        self.log(f"{time.strftime('%H:%M:%S')}  refused a push from {requestor.ae_title}@{requestor.address}: {why}")

    def on_abort(self, event) -> None:
        requestor = event.assoc.requestor
        self.log(f"{time.strftime('%H:%M:%S')}  the push from {requestor.ae_title}@{requestor.address} was cut off; "
                 "an image still in transfer was not kept: the camera must send it again")


def _server(cfg: ReceiveConfig, scp: _Scp):
    """Start pynetdicom's threaded server (non-blocking); DrtrtError when the port cannot be bound."""
    from pynetdicom import AE, evt

    ae = AE(ae_title=cfg.ae_title)
    ae.require_called_aet = True
    for sop_class in SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(VERIFICATION)
    handlers = [(evt.EVT_C_STORE, scp.on_store), (evt.EVT_ABORTED, scp.on_abort), (evt.EVT_REJECTED, scp.on_rejected)]
    try:
        return ae.start_server((cfg.host, cfg.port), block=False, evt_handlers=handlers)
    except OSError as exc:
        raise DrtrtError(f"cannot listen on {cfg.host}:{cfg.port} ({exc.strerror or exc}); another receiver may use "
                         "the port: stop it or give --port") from None


def receive(model: str | os.PathLike, out: str | os.PathLike, cfg: ReceiveConfig = ReceiveConfig(),
            log: Callable[[str], None] = print, stop: threading.Event | None = None) -> int:
    """Receive and screen instances into session ``out`` until ``stop`` is set (or SIGINT/SIGTERM
    arrives, when called from the main thread). Returns the number of images settled by this run;
    KeyboardInterrupt after a clean stop on SIGINT, as :func:`drtrt.clinic.watch.watch_folder`."""
    out = Path(out)
    stop = stop or threading.Event()
    run_log = RunLog(log)
    session = ScreeningSession(model, out, cfg.session, command=f"receive {cfg.ae_title}@{cfg.host}:{cfg.port}",
                               on_row=run_log)                    # locks out/: one receiver per session
    run_log.run_id = session.run_id
    restore = install_stop_handlers(stop)
    try:
        with session:
            incoming = out / "incoming"
            incoming.mkdir(exist_ok=True)
            for tmp in incoming.glob(".*.tmp-*"):                 # a write cut short by a crash: never acknowledged
                tmp.unlink(missing_ok=True)
            scp = _Scp(incoming, log)
            earlier = sorted((p for p in incoming.glob("*.dcm") if not p.name.startswith(".")),
                             key=lambda p: (p.stat().st_mtime_ns, p.name))
            for path in earlier:
                scp.todo.put(path)
            server = _server(cfg, scp)
            try:
                host, port = server.server_address[:2]
                log(f"receiving as {cfg.ae_title} on {host}:{port} → {out} (Ctrl-C to stop)"
                    + (f"; {len(earlier)} earlier image(s) in incoming/ checked first" if earlier else ""))
                if host not in ("127.0.0.1", "::1", "localhost"):
                    log(f"warning: listening on {host}: any device on that network can send images (DICOM has no "
                        "password); keep the camera and this machine on their own network")
                _work(session, scp, stop, cfg.poll_s)
            finally:
                server.shutdown()
            left = scp.todo.qsize()
            if left:
                log(f"{left} received image(s) not screened yet: they are screened when the receiver starts again")
            session.flush()
            session.write_reports()
    finally:
        stopped_by = restore()
    return run_log.stopped(out, stopped_by)


def _work(session: ScreeningSession, scp: _Scp, stop: threading.Event, poll_s: float) -> None:
    """The worker: screen what the associations wrote, a burst at a time, until ``stop``."""
    while not stop.is_set():
        try:
            paths = [scp.todo.get(timeout=poll_s)]
        except queue.Empty:
            continue
        while True:
            try:
                paths.append(scp.todo.get_nowait())
            except queue.Empty:
                break
        for i, path in enumerate(paths):
            if stop.is_set():                                       # the rest waits for the next start
                for rest in paths[i:]:
                    scp.todo.put(rest)
                break
            session.submit(path, Assignment())                      # patient and eye from the file
            session.flush()
        session.write_reports(session.touched_visits)
        session.touched_visits.clear()
