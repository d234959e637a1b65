"""The camera folder: a file is handed out when the camera closes or renames it (events) or once quiet (polling),
and only whole — a writer that pauses mid-file, or closes and appends later, is never read half-way.

The clock is the test's (``ready(clock)``); events are waited for by what the observer reported, not by time.
"""

from __future__ import annotations

import os
import queue
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from drtrt.clinic import camera_folder
from drtrt.clinic.camera_folder import CameraFolder
from drtrt.errors import ConfigError
from drtrt.preprocess.complete import missing_end

pytest.importorskip("watchdog", reason="watchdog (the station extra) is not installed")


def photo(seed: int = 0, ext: str = ".jpg", params: tuple = ()) -> bytes:
    rng = np.random.default_rng(seed)
    picture = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 2)
    return cv2.imencode(ext, picture, list(params))[1].tobytes()


def dicom(syntax: str) -> bytes:
    pytest.importorskip("pydicom")
    from dicom_files import op_image, write

    path = write(Path(os.environ.get("TMPDIR", "/tmp")) / f"drtrt-complete-{os.getpid()}-{syntax}.dcm",
                 op_image(cv2.cvtColor(cv2.imdecode(np.frombuffer(photo(), np.uint8), 1), cv2.COLOR_BGR2RGB)), syntax)
    try:
        return path.read_bytes()
    finally:
        path.unlink()


@pytest.mark.parametrize("kind", ["jpeg", "progressive jpeg", "png", "tiff", "bmp", "dicom explicit",
                                  "dicom implicit", "dicom jpeg"])
def test_a_photo_cut_anywhere_lacks_its_end(kind):
    data = {"jpeg": lambda: photo(), "progressive jpeg": lambda: photo(params=(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
            "png": lambda: photo(ext=".png"), "tiff": lambda: photo(ext=".tif"), "bmp": lambda: photo(ext=".bmp"),
            "dicom explicit": lambda: dicom("explicit"), "dicom implicit": lambda: dicom("implicit"),
            "dicom jpeg": lambda: dicom("jpeg")}[kind]()
    assert missing_end(data) is None and missing_end(data + b"\0" * 16) is None    # padding after the end is fine
    last = len(data) - (8 if kind == "dicom jpeg" else 1)      # its last 8 bytes: the delimiter after a whole JPEG
    for cut in sorted({*range(0, last, max(1, len(data) // 97)), last - 1}):
        assert missing_end(data[:cut]), f"{kind} cut at {cut} of {len(data)} bytes passed as whole"


def test_an_exif_thumbnail_end_marker_is_not_the_photo_end():
    data = photo()
    thumb = photo(seed=1)
    app1 = b"Exif\0\0" + thumb                              # a thumbnail's own SOI..EOI inside APP1
    with_thumb = data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:]
    assert missing_end(with_thumb) is None
    thumb_end = 6 + len(app1)                               # cut right after the thumbnail's EOI
    assert with_thumb[thumb_end - 2:thumb_end] == b"\xff\xd9"
    assert missing_end(with_thumb[:thumb_end]) == "a JPEG without its end marker"
    assert missing_end(with_thumb[:-5]) == "a JPEG without its end marker"


def test_unknown_content_is_left_to_the_screen():
    assert missing_end(b"not an image at all, but long enough to be judged by the screen " * 4) is None
    assert missing_end(b"not a photo") is None                      # short, but no photo's start either
    assert missing_end(b"") == missing_end(b"\0" * 100) == missing_end(b"\xff") == "a file too short for a photo"


class Events:
    """A CameraFolder in events mode whose observer's reports the test can wait for."""

    def __init__(self, folder: Path, **options) -> None:
        self.seen: queue.Queue[tuple[str, str]] = queue.Queue()
        self.lines: list[str] = []
        self.camera = CameraFolder(folder, settle_s=1.0, mode="events", log=self.lines.append, rescan_s=1e9, **options)
        told = self.camera.event
        self.camera.event = lambda path, how: (told(path, how), self.seen.put((path.name, how)))
        assert self.camera.start() == "events"

    def until(self, name: str, how: str) -> None:
        while True:
            if self.seen.get(timeout=30) == (name, how):
                return


@pytest.fixture
def events(tmp_path):
    made = []

    def make(**options) -> Events:
        made.append(Events(tmp_path, **options))
        return made[-1]

    yield make
    for e in made:
        e.camera.close()


def test_events_a_writer_that_pauses_mid_file_is_read_only_once_closed(tmp_path, events):
    watch, data, f = events(), photo(), tmp_path / "IMG_0001.JPG"
    assert watch.camera.ready(0.0) == []
    with f.open("wb") as fh:
        fh.write(data[:len(data) // 2])
        fh.flush()
        watch.until(f.name, "writing")
        assert watch.camera.ready(5.0) == []                 # quiet far longer than --settle, still open: not read
        fh.write(data[len(data) // 2:])
    watch.until(f.name, "closed")
    assert watch.camera.ready(5.1) == [f]
    assert watch.camera.ready(9.0) == []                     # handed out once
    assert "file-system events" in watch.lines[0]


def test_events_a_file_closed_half_written_and_appended_later_is_read_whole(tmp_path, events):
    reported = []
    watch = events(on_incomplete=lambda path, why: reported.append((path.name, why)), report_s=10.0)
    data, f = photo(), tmp_path / "IMG_0002.JPG"
    watch.camera.ready(0.0)
    f.write_bytes(data[:len(data) // 2])                     # closed after half
    watch.until(f.name, "closed")
    assert watch.camera.ready(0.1) == []                     # closed, but no end marker: waits
    assert watch.camera.ready(5.0) == [] and reported == []  # a pause longer than the old settle second
    assert watch.camera.ready(10.2) == [] and reported == [(f.name, "a JPEG without its end marker")]
    assert watch.camera.ready(20.0) == [] and len(reported) == 1     # told once
    with f.open("ab") as fh:                                 # re-opened, the rest appended
        fh.write(data[len(data) // 2:])
    watch.until(f.name, "closed")
    assert watch.camera.ready(20.1) == [f]
    assert f.read_bytes() == data


def test_events_a_file_renamed_in_is_read_at_once_and_its_temp_name_never(tmp_path, events):
    watch, data = events(), photo()
    watch.camera.ready(0.0)
    temp, final = tmp_path / ".IMG_0003.JPG.part", tmp_path / "IMG_0003.JPG"
    temp.write_bytes(data)
    watch.until(temp.name, "closed")
    assert watch.camera.ready(0.1) == []                     # the temp name is not a photo's
    os.replace(temp, final)
    watch.until(final.name, "closed")
    assert watch.camera.ready(0.2) == [final]

    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere.jpg"   # moved in from another folder
    elsewhere.write_bytes(photo(seed=2))
    os.replace(elsewhere, tmp_path / "IMG_0004.JPG")
    watch.until("IMG_0004.JPG", "closed")
    assert watch.camera.ready(0.3) == [tmp_path / "IMG_0004.JPG"]


def test_events_a_file_there_before_the_watch_waits_the_quiet_time(tmp_path):
    f = tmp_path / "old.jpg"
    f.write_bytes(photo())
    with CameraFolder(tmp_path, settle_s=1.0, mode="events", log=lambda line: None) as camera:
        assert camera.mode == "events"
        assert camera.ready(0.0) == []
        assert camera.ready(1.5) == [f]


def test_polling_waits_for_a_file_to_stop_growing_and_to_be_whole(tmp_path):
    lines = []
    camera = CameraFolder(tmp_path, settle_s=1.0, mode="poll", log=lines.append)
    assert camera.start() == "poll" and "polling" in lines[0] and "--watch poll" in lines[0]
    data, f = photo(), tmp_path / "a.jpg"
    f.write_bytes(data[:len(data) // 3])
    assert camera.ready(0.0) == []
    assert camera.ready(0.9) == []
    with f.open("ab") as fh:
        fh.write(data[len(data) // 3:2 * len(data) // 3])     # still being written
    assert camera.ready(1.5) == []                           # changed: the clock starts again
    assert camera.ready(2.0) == []
    assert camera.ready(2.6) == []                           # quiet for the settle time, but half a JPEG
    assert camera.ready(8.0) == []
    with f.open("ab") as fh:
        fh.write(data[2 * len(data) // 3:])
    assert camera.ready(8.1) == []
    assert camera.ready(9.2) == [f]
    assert camera.ready(19.0) == []                          # handed out once
    camera.forget()
    assert camera.ready(19.1) == [] and camera.ready(20.2) == [f]   # offered again (a patient list changed)


def test_without_watchdog_the_folder_is_polled_and_the_log_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "watchdog.observers.inotify", None)
    lines = []
    with CameraFolder(tmp_path, settle_s=1.0, log=lines.append) as camera:
        assert camera.mode == "poll"
    assert "watchdog is not installed" in lines[0] and "polling" in lines[0]
    with pytest.raises(ConfigError, match="--watch events: watchdog is not installed.*--watch poll"):
        CameraFolder(tmp_path, settle_s=1.0, mode="events").start()


def test_a_network_share_is_polled(tmp_path, monkeypatch):
    monkeypatch.setattr(camera_folder, "file_system", lambda folder: "nfs4")
    lines = []
    with CameraFolder(tmp_path, settle_s=1.0, log=lines.append) as camera:
        assert camera.mode == "poll"
    assert "nfs4 is a network or FUSE file system" in lines[0]


def test_file_system_of_a_folder_is_read_from_the_mount_table(tmp_path):
    assert camera_folder.file_system(Path("/proc")) == "proc"
    assert camera_folder.file_system(tmp_path) != ""


def test_an_unknown_mode_is_one_line():
    with pytest.raises(ConfigError, match="--watch must be one of auto, events, poll, found 'inotify'"):
        CameraFolder(Path("."), settle_s=1.0, mode="inotify")


def test_every_reason_is_listed_for_translation():
    from drtrt.preprocess import complete

    source = Path(complete.__file__).read_text()
    said = set(__import__("re").findall(r'return "([^"]+)"', source)) | {"a JPEG without its end marker"}
    assert said <= set(complete.REASONS), said - set(complete.REASONS)


def test_events_lost_by_the_kernel_send_the_watch_back_to_the_folder(tmp_path, events):
    watch = events()
    assert watch.camera.ready(0.0) == []
    watch.camera.close()                                          # from here no event arrives: as if they were lost
    f = tmp_path / "IMG_0005.JPG"
    f.write_bytes(photo())
    assert watch.camera.ready(1.0) == [] and watch.camera.ready(3.0) == []   # no event, no rescan due yet
    watch.camera.event(tmp_path, "lost")                          # the kernel's queue overflowed
    assert watch.camera.ready(3.1) == []                          # found: it waits the quiet time
    assert watch.camera.ready(4.2) == [f]


def test_a_write_whose_close_was_lost_waits_the_quiet_time(tmp_path, events):
    watch, f = events(), tmp_path / "IMG_0006.JPG"
    watch.camera.ready(0.0)
    with f.open("wb") as fh:
        fh.write(photo())
        fh.flush()
        watch.until(f.name, "writing")
        assert watch.camera.ready(0.5) == []
    watch.until(f.name, "closed")
    watch.camera.event(tmp_path / "notes.txt", "writing")                     # not a photo's name: ignored
    watch.camera.event(f, "writing")                    # as if the close were never seen
    watch.camera.event(tmp_path, "lost")
    assert watch.camera.ready(1.0) == [] and watch.camera.ready(1.5) == []
    assert watch.camera.ready(2.1) == [f]
