"""Watch mode: files are taken once complete, temp files ignored, Ctrl-C stops cleanly, restarts resume."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from processes import track

from drtrt.clinic.store import SessionStore
from drtrt.clinic.watch import is_candidate


def images(photo_root: Path) -> list[Path]:
    return sorted((photo_root / "A. Segmentation" / "1. Original Images").glob("*/*.jpg"))


@pytest.mark.parametrize("name, ok", [("IDRiD_01.jpg", True), ("a b ü.JPEG", True), ("x.png", True),
                                      (".hidden.jpg", False), ("~lock.jpg", False), ("x.jpg.part", False),
                                      ("x.tmp.jpg", False), ("x.jpg.crdownload", False), ("notes.txt", False),
                                      ("x.jpg~", False)])
def test_candidates(name, ok):
    assert is_candidate(Path(name)) is ok


class Watcher:
    """`drtrt watch` in a subprocess, its stdout lines in a queue."""

    def __init__(self, folder: Path, model: Path, out: Path, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "drtrt.cli", "watch", str(folder), "--model", str(model),
                                      "--out", str(out), "--poll", "0.1", "--settle", "1.0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        track(self.proc)

        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, fragment: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if fragment in line:
                return line
        raise AssertionError(f"no line with {fragment!r}; stderr: {self.proc.stderr.read() if self.proc.poll() is not None else ''}")

    def stop(self) -> tuple[int, list[str]]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        time.sleep(0.1)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return code, rest


@pytest.mark.slow
def test_watch_picks_up_camera_files_and_resumes_after_restart(tiny_onnx, photo_root, tmp_path):
    camera, out = tmp_path / "camera", tmp_path / "session"
    camera.mkdir()
    sources = images(photo_root)
    watcher = Watcher(camera, tiny_onnx, out, "--patient", "W-7", "--eye", "right")
    watcher.expect("watching")
    (camera / ".IDRiD_tmp.jpg").write_bytes(sources[0].read_bytes())    # hidden: ignored
    (camera / "next.jpg.part").write_bytes(sources[0].read_bytes())      # partial download: ignored
    (camera / "notes.txt").write_text("not an image")
    data = sources[1].read_bytes()
    with (camera / "slow write.jpg").open("wb") as fh:                   # a camera writing in bursts
        for i in range(3):
            fh.write(data[i * len(data) // 3:(i + 1) * len(data) // 3])
            fh.flush()
            time.sleep(0.6)                                              # pauses shorter than --settle
    shutil.copy(sources[2], camera / "quick.jpg")
    first = watcher.expect("slow write.jpg")
    assert "graded" in first and "[W-7 right]" in first                 # never read half-written
    watcher.expect("quick.jpg")
    code, rest = watcher.stop()
    assert code == 130 and any("stopped; 2 image(s)" in line for line in rest), rest   # Ctrl-C: a clean stop, exit 130

    shutil.copy(sources[3], camera / "after restart.jpg")
    watcher = Watcher(camera, tiny_onnx, out, "--patient", "W-7", "--eye", "right")
    watcher.expect("after restart.jpg")
    code, rest = watcher.stop()
    assert code == 130 and any("stopped; 1 image(s)" in line for line in rest), rest   # old files not redone
    with SessionStore(out / "session.db") as store:
        rows = store.rows()
        assert sorted(r.name for r in rows) == ["after restart.jpg", "quick.jpg", "slow write.jpg"]
        assert {r.status for r in rows} == {"graded"} and store.integrity_check() == "ok"
    assert next((out / "reports").glob("patient-W-7-visit-*.html")).is_file() and (out / "summary.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["events", "poll"])
def test_watch_never_reads_a_photo_half_way(tiny_onnx, photo_root, tmp_path, mode):
    """Writers that stop mid-file for longer than --settle (open, or closed and re-opened later), and one that
    writes a temp name and renames it: each photo is read once, whole, and graded."""
    pytest.importorskip("watchdog", reason="watchdog (the station extra) is not installed")
    camera, out = tmp_path / "camera", tmp_path / "session"
    camera.mkdir()
    sources = images(photo_root)
    watcher = Watcher(camera, tiny_onnx, out, "--watch", mode)
    assert ("file-system events" if mode == "events" else "polling") in watcher.expect(f"camera folder {camera}")
    watcher.expect("watching")
    data = sources[0].read_bytes()
    with (camera / "paused.jpg").open("wb") as fh:                      # open throughout, a pause > --settle
        fh.write(data[:len(data) // 2])
        fh.flush()
        time.sleep(1.5)
        fh.write(data[len(data) // 2:])
    data = sources[1].read_bytes()
    (camera / "closed half.jpg").write_bytes(data[:len(data) // 2])     # closed after half, appended later
    time.sleep(1.5)
    with (camera / "closed half.jpg").open("ab") as fh:
        fh.write(data[len(data) // 2:])
    (camera / ".renamed.jpg.part").write_bytes(sources[2].read_bytes())
    os.replace(camera / ".renamed.jpg.part", camera / "renamed.jpg")
    for name in ("paused.jpg", "closed half.jpg", "renamed.jpg"):
        assert "graded" in watcher.expect(name)
    code, rest = watcher.stop()
    assert code == 130 and any("stopped; 3 image(s)" in line for line in rest), rest
    with SessionStore(out / "session.db") as store:
        rows = store.rows()
    assert sorted(r.name for r in rows) == ["closed half.jpg", "paused.jpg", "renamed.jpg"]
    assert {r.status for r in rows} == {"graded"}
