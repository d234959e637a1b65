"""``drtrt receive``: dcmtk's ``storescu`` plays the camera against the real receiver process.

Pushed photos land in the session with the patient and eye of their files; a duplicate is kept
and screened once; a bad instance is acknowledged, kept and refused with its reason while the
receiver goes on; a push killed halfway leaves every acknowledged instance whole and nothing
partial; a write the disk refuses is answered "out of resources"; a restart screens what was
received before the crash; SIGTERM stops cleanly.
"""

from __future__ import annotations

import io
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from processes import track

pytest.importorskip("pynetdicom", reason="the receiver needs the integration extra")

from dicom_files import bad_variants, encode, op_image, sc_image, vl_image, write  # noqa: E402
from drtrt.errors import ConfigError  # noqa: E402
from drtrt.integration.receive import ReceiveConfig, instance_path  # noqa: E402
from drtrt.preprocess import decode_image  # noqa: E402
from drtrt.clinic.store import SessionStore  # noqa: E402
from pydicom import dcmread  # noqa: E402


def _dcmtk_storescu() -> str | None:
    """dcmtk's storescu: pynetdicom installs an app of the same name into the virtualenv's bin/, first on PATH."""
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        candidate = shutil.which("storescu", path=folder)
        if candidate:
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30)
            if "dcmtk" in (version.stdout + version.stderr).lower():
                return candidate
    return None


STORESCU = _dcmtk_storescu()
needs_storescu = pytest.mark.skipif(STORESCU is None, reason="dcmtk's storescu is not installed: apt-get install dcmtk")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """``drtrt receive`` in its own process; its log lines collected as they come."""

    def __init__(self, model: Path, out: Path, file_size_limit: int | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.out = out
        limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))) \
            if file_size_limit else None
        self.proc = subprocess.Popen([sys.executable, "-m", "drtrt.cli", "receive", "--out", str(out), "--model",
                                      str(model), "--port", str(self.port), "--ae-title", "DRTRT"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "COLUMNS": "300"}, preexec_fn=limit)
        track(self.proc)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda line: line.startswith("receiving as DRTRT"))

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))

    def wait_for(self, predicate, count: int = 1, timeout: float = 60) -> list[str]:
        """Until ``count`` log lines (from the start) satisfy ``predicate``; returns them."""
        deadline = time.monotonic() + timeout
        while len(found := [line for line in self.lines if predicate(line)]) < count:
            try:
                self.lines.append(self._new.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"receiver log after {timeout} s:\n" + "\n".join(self.lines)) from None
        return found

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.wait_for(lambda line: line.startswith("stopped;"))
        return code

    def rows(self) -> dict[str, object]:
        with SessionStore(self.out / "session.db") as store:
            return {Path(r.path).name: r for r in store.rows()}


def push(port: int, *files: Path, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """storescu as the camera: calling AE CAMERA, called AE DRTRT, JPEG baseline and uncompressed proposed."""
    return subprocess.run([STORESCU, *options, "-xy", "-aet", "CAMERA", "-aec", "DRTRT",
                           "127.0.0.1", str(port), *map(str, files)], capture_output=True, text=True, timeout=120)


def screened(line: str) -> bool:
    return any(f"  {status}  " in line for status in ("graded", "ungradable", "error", "duplicate"))


@pytest.fixture(scope="module")
def photos(photo_root) -> list[np.ndarray]:
    return [decode_image(p, None)[0] for p in
            sorted((photo_root / "A. Segmentation" / "1. Original Images").glob("*/*.jpg"))[:3]]


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_instance_uids_become_file_names_only_when_they_are_uids(tmp_path):
    assert instance_path(tmp_path, "1.2.840.113619.2.55.3") == tmp_path / "1.2.840.113619.2.55.3.dcm"
    for bad in ("../../etc/passwd", "1.2/3", "1..2", ".1.2", "1.2.", "", "1.2\x00", "1" * 65, "C:1.2", "1.2 3"):
        assert instance_path(tmp_path, bad) is None, bad


@needs_storescu
def test_push_duplicate_bad_then_good(tiny_onnx, photos, tmp_path):
    camera = tmp_path / "camera"
    files = [write(camera / "1.dcm", op_image(photos[0], patient="R-1", laterality="R")),
             write(camera / "2.dcm", op_image(photos[1], patient="R-2", laterality="L"), "jpeg"),
             write(camera / "3.dcm", vl_image(photos[2], patient="R-3", laterality="R"), "implicit"),
             write(camera / "4.dcm", sc_image(photos[0][:, ::-1], patient="R-4", laterality="L"))]
    bad = camera / "bad.dcm"
    bad.write_bytes(bad_variants(photos[0])["16-bit"][0])
    late = write(camera / "5.dcm", op_image(photos[1], patient="R-5", laterality="R"))
    receiver = Receiver(tiny_onnx, tmp_path / "session")

    proc = push(receiver.port, *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    receiver.wait_for(screened, count=4)
    proc = push(receiver.port, files[0])                                 # the camera sends one again
    assert proc.returncode == 0, proc.stdout + proc.stderr
    receiver.wait_for(lambda line: "already received, not kept twice" in line)
    proc = push(receiver.port, bad, late)                                # a bad one, then a good one
    assert proc.returncode == 0, proc.stdout + proc.stderr             # kept and acknowledged: refused in the session
    receiver.wait_for(screened, count=6)
    twice = write(camera / "6.dcm", op_image(photos[2], patient="R-6", laterality="R"))
    cameras = [subprocess.Popen([STORESCU, "-xy", "-aet", f"CAMERA{i}", "-aec", "DRTRT", "127.0.0.1",
                                 str(receiver.port), str(twice)]) for i in range(3)]   # one instance, three at once
    track(*cameras)
    assert [c.wait(timeout=60) for c in cameras] == [0, 0, 0]
    receiver.wait_for(screened, count=7)
    receiver.wait_for(lambda line: "already received" in line, count=3)
    assert receiver.stop() == 0

    incoming = receiver.out / "incoming"
    uids = {uid_of(f): f for f in (*files, bad, late, twice)}
    assert sorted(p.name for p in incoming.iterdir()) == sorted(f"{uid}.dcm" for uid in uids)   # no second copy
    for uid, source in uids.items():                                    # kept as sent
        assert _pixels(incoming / f"{uid}.dcm") == _pixels(source)
    rows = receiver.rows()
    assert len(rows) == 7
    by_source = {source.name: rows[f"{uid}.dcm"] for uid, source in uids.items()}
    for name, patient, eye in (("1.dcm", "R-1", "right"), ("2.dcm", "R-2", "left"), ("3.dcm", "R-3", "right"),
                               ("4.dcm", "R-4", "left"), ("5.dcm", "R-5", "right"), ("6.dcm", "R-6", "right")):
        row = by_source[name]
        assert (row.status, row.patient, row.eye) == ("graded", patient, eye), (name, row.status, row.reason)
        assert row.record["dicom"]["patient_id"] == patient
    assert by_source["bad.dcm"].status == "error" and by_source["bad.dcm"].record["code"] == "dicom_bit_depth"
    with SessionStore(receiver.out / "session.db") as store:
        assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 7   # each screened once
    assert next((receiver.out / "reports").glob("patient-R-4-visit-*.html")).is_file()


def _pixels(path: Path) -> bytes:
    return bytes(dcmread(path).PixelData)


@needs_storescu
def test_a_push_killed_halfway_leaves_whole_instances_only(tiny_onnx, photos, tmp_path):
    """storescu is killed (-9) right after the first instance is acknowledged, in the middle of a
    60 MB one: what was acknowledged is there and whole, nothing partial is kept or screened,
    and the receiver takes the next push."""
    import cv2

    camera = tmp_path / "camera"
    first = write(camera / "1.dcm", op_image(photos[0], patient="K-1", laterality="R"))
    big = write(camera / "2.dcm", op_image(cv2.resize(photos[1], (4500, 4500)), patient="K-2"))
    third = write(camera / "3.dcm", op_image(photos[2], patient="K-3"))
    receiver = Receiver(tiny_onnx, tmp_path / "session")
    scu = subprocess.Popen([STORESCU, "-v", "-xy", "-aet", "CAMERA", "-aec", "DRTRT", "127.0.0.1", str(receiver.port),
                            str(first), str(big), str(third)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    track(scu)
    acknowledged = 0
    for line in scu.stdout:
        if "Received Store Response (Success)" in line:
            acknowledged += 1
            time.sleep(0.05)                                             # the big one is on its way
            scu.kill()
            break
    assert scu.wait(timeout=30) == -signal.SIGKILL and acknowledged == 1
    receiver.wait_for(lambda line: "was cut off" in line)
    receiver.wait_for(screened)

    later = write(camera / "4.dcm", op_image(photos[2], patient="K-4", laterality="R"))
    assert push(receiver.port, later).returncode == 0                   # still receiving
    receiver.wait_for(screened, count=2)
    assert receiver.stop() == 0

    incoming = receiver.out / "incoming"
    kept = sorted(p.name for p in incoming.iterdir())
    assert kept == sorted([f"{uid_of(first)}.dcm", f"{uid_of(later)}.dcm"]), kept   # no temp file, no half
    for source in (first, later):
        assert _pixels(incoming / f"{uid_of(source)}.dcm") == _pixels(source)
    rows = receiver.rows()
    assert sorted(rows) == kept and all(r.status == "graded" for r in rows.values())


@needs_storescu
def test_a_write_the_disk_refuses_is_answered_out_of_resources(tiny_onnx, photos, tmp_path):
    """Files above 3 MB cannot be written (RLIMIT_FSIZE, as a full disk): 0xA700, nothing kept, and
    the receiver goes on with the next instance."""
    import cv2

    camera = tmp_path / "camera"
    large = write(camera / "large.dcm", op_image(cv2.resize(photos[0], (1400, 1400)), patient="F-1"))   # 5.9 MB
    small = write(camera / "small.dcm", op_image(photos[1], patient="F-2", laterality="R"))
    receiver = Receiver(tiny_onnx, tmp_path / "session", file_size_limit=3 * 2**20)
    proc = push(receiver.port, large, small, options=("-v", "--no-halt"))   # the camera goes on with the next
    log = proc.stdout + proc.stderr
    assert "Received Store Response (Refused: OutOfResources)" in log, log
    assert "Received Store Response (Success)" in log
    receiver.wait_for(lambda line: "answered out of resources (0xA700)" in line)
    receiver.wait_for(screened)
    assert receiver.stop() == 0
    assert sorted(p.name for p in (receiver.out / "incoming").iterdir()) == [f"{uid_of(small)}.dcm"]
    assert [r.patient for r in receiver.rows().values()] == ["F-2"]


def test_a_restart_screens_what_was_received_before(tiny_onnx, photos, tmp_path):
    """Acknowledged but not screened when the receiver died: screened at the next start; a temp file
    of a write cut short is removed."""
    session = tmp_path / "session"
    data = encode(op_image(photos[0], patient="C-1", laterality="R"))
    (session / "incoming").mkdir(parents=True)
    uid = str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    (session / "incoming" / f"{uid}.dcm").write_bytes(data)
    (session / "incoming" / f".{uid}9.dcm.tmp-1-2").write_bytes(data[:1000])
    receiver = Receiver(tiny_onnx, session)
    assert "1 earlier image(s) in incoming/" in receiver.lines[-1]
    line = receiver.wait_for(screened)[0]
    assert "[C-1 right]  graded" in line, line
    assert receiver.stop() == 0
    assert sorted(p.name for p in (session / "incoming").iterdir()) == [f"{uid}.dcm"]
    second = Receiver(tiny_onnx, session)                               # screened once, not again
    time.sleep(1)
    assert second.stop() == 0
    assert not [line for line in second.lines if screened(line)]
    assert "0 image(s) this run" in second.lines[-1]


def test_errors_are_one_line(tiny_onnx, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "drtrt.cli", "receive", "--out", str(tmp_path / "s"), "--model",
                               str(tiny_onnx), "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "drtrt.cli", "receive", "--out", str(tmp_path / "s"), "--model",
                           str(tiny_onnx), "--ae-title", "A\\B"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--ae-title must be" in proc.stderr
    with pytest.raises(ConfigError, match="--port must be"):
        ReceiveConfig(port=70000)
