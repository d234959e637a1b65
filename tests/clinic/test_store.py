"""The session store survives power cuts: real SIGKILLs in the middle of a session, then a re-run."""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import pytest

from drtrt.errors import ConfigError
from drtrt.clinic.store import FileEntry, SessionStore
from drtrt.task import TaskSpec


def test_store_settings_and_round_trip(tmp_path):
    with SessionStore(tmp_path / "s" / "session.db") as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2          # FULL
        task = replace(TaskSpec(), grade_names=("none", "some", "more", "much", "most"))
        store.bind_model("a" * 64, "m.onnx", task)
        assert store.task() == task                  # reports name grades as the session's model does
        run = store.begin_run("screen x")
        entry = FileEntry("/x/1.jpg", "f" * 64, 10, 5, "P1", "left", "screened")
        store.record_image("f" * 64, {"status": "graded", "grade": 3, "reason": None}, entry, run)
        store.record_file(FileEntry("/x/2.jpg", "f" * 64, 10, 6, "P1", "left", "duplicate", "same image",
                                    "/x/1.jpg"), run)
        store.record_file(FileEntry("/x/3.jpg", None, None, None, None, None, "unreadable", "cannot read"), run)
        rows = store.rows()
        assert [(r.name, r.status) for r in rows] == [("1.jpg", "graded"), ("2.jpg", "duplicate"), ("3.jpg", "error")]
        assert rows[0].record["grade"] == 3 and rows[1].record == {} and rows[1].duplicate_of == "/x/1.jpg"
        assert store.integrity_check() == "ok"
        with pytest.raises(ConfigError, match="was screened with model m.onnx"):
            store.bind_model("b" * 64, "other.onnx", task)


def test_a_failed_transaction_leaves_nothing(tmp_path):
    with SessionStore(tmp_path / "session.db") as store:
        run = store.begin_run("x")
        with pytest.raises(TypeError):
            store.record_image("e" * 64, {"status": "graded", "bad": object()}, FileEntry("/a", "e" * 64, 1, 1, None,
                                                                                      None, "screened"), run)
        assert store.count("images") == 0 and store.count("files") == 0


def _session_files(photo_root: Path, folder: Path, n: int) -> list[Path]:
    """n distinct small fundus JPEGs (different bytes, so different content hashes)."""
    sources = sorted((photo_root / "B. Disease Grading" / "1. Original Images").glob("*/*.jpg"))
    folder.mkdir()
    files = []
    for i in range(n):
        image = cv2.imread(str(sources[i % len(sources)]))
        image[0, 0] = (i % 256, i // 256, 7)                          # one pixel of the black surround
        path = folder / f"img {i:03d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        files.append(path)
    return files


def _count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_mid_session_then_rerun_loses_nothing_and_repeats_nothing(tiny_onnx, photo_root, tmp_path):
    files = _session_files(photo_root, tmp_path / "camera", 40)
    out = tmp_path / "session"
    db = out / "session.db"
    command = [sys.executable, "-m", "drtrt.cli", "screen", str(tmp_path / "camera"), "--model", str(tiny_onnx),
               "--out", str(out), "--batch-size", "1"]
    rng = random.Random(0)
    kills = []
    for attempt in range(3):
        before = _count(db, "images")
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = before + rng.randint(2, 6)
        deadline = time.monotonic() + 120
        while _count(db, "images") < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))                              # land anywhere within an image
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        with sqlite3.connect(db) as con:                              # what a power cut leaves behind
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            done = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            assert con.execute("SELECT COUNT(*) FROM files WHERE status='screened'").fetchone()[0] == done
        kills.append(done)
        assert before < done < len(files), kills                     # killed mid-session, after progress
    with sqlite3.connect(db) as con:
        first_runs = dict(con.execute("SELECT sha256, run_id FROM images").fetchall())
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    with SessionStore(db) as store:
        assert store.integrity_check() == "ok"
        rows = store.rows()
        assert len(rows) == len(files) and {r.status for r in rows} == {"graded"}
        assert store.count("images") == len(files)
        runs = dict(store.db.execute("SELECT sha256, run_id FROM images").fetchall())
        assert all(runs[sha] == run for sha, run in first_runs.items())         # nothing screened twice
        assert sum(run == 4 for run in runs.values()) == len(files) - kills[-1]  # the re-run did only the rest
    assert len(list((out / "overlays").glob("*.png"))) == len(files)
    assert all(cv2.imread(str(p)) is not None for p in (out / "overlays").glob("*.png"))   # no torn file
    assert not list(out.rglob(".*.tmp-*"))
    assert len((out / "results.jsonl").read_text().splitlines()) == len(files)


def test_killed_session_folder_can_be_copied_and_read(tiny_onnx, photo_root, tmp_path):
    """The WAL file belongs to the database: a copy of the folder (with -wal) reads back complete."""
    files = _session_files(photo_root, tmp_path / "camera", 3)
    from drtrt.clinic.session import screen_images

    screen_images(files, tiny_onnx, tmp_path / "s")
    shutil.copytree(tmp_path / "s", tmp_path / "copy")
    with SessionStore(tmp_path / "copy" / "session.db") as store:
        assert len(store.rows()) == 3
