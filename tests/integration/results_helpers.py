"""A screening session made by the real screening code, for the results-out and sync tests.

Patients (tiny model, synthetic photos): ``P-1`` both eyes graded; ``P-2`` right graded, left one
greyscale photo (ungradable: a quality refusal) and one truncated file (unreadable); ``Ünï 3`` right
eye only (the left not photographed). Each test gets its own copy of the folder (sync writes into
it): fixture ``session``. Test modules import the fixture functions (``*_fixture``); pytest knows
them by their ``name``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

from drtrt.clinic.patients import Assignment
from drtrt.clinic.session import ScreeningSession

PATIENTS = ("P-1", "P-2", "Ünï 3")


def grading_images(photo_root: Path) -> list[Path]:
    return sorted((photo_root / "B. Disease Grading" / "1. Original Images").glob("*/*.jpg"))


def screen_into(model: Path, out: Path, files: dict[Path, Assignment]) -> None:
    with ScreeningSession(model, out) as session:
        session.screen(list(files), {p.resolve(): a for p, a in files.items()})
        session.write_reports()


@pytest.fixture(scope="session", name="screened_session")
def screened_session_fixture(tiny_onnx, photo_root, tmp_path_factory) -> Path:
    inputs = tmp_path_factory.mktemp("camera")
    photos = grading_images(photo_root)
    grey = inputs / "grey left.png"
    cv2.imwrite(str(grey), cv2.cvtColor(cv2.imread(str(photos[0])), cv2.COLOR_BGR2GRAY))
    broken = inputs / "broken.jpg"
    broken.write_bytes(photos[1].read_bytes()[:2000])
    files = {photos[0]: Assignment("P-1", "right"), photos[1]: Assignment("P-1", "left"),
             photos[2]: Assignment("P-2", "right"), grey: Assignment("P-2", "left"), broken: Assignment("P-2", "left"),
             photos[3]: Assignment("Ünï 3", "right")}
    out = tmp_path_factory.mktemp("screened") / "session"
    screen_into(tiny_onnx, out, files)
    return out


@pytest.fixture(name="session")
def session_fixture(screened_session, tmp_path) -> Path:
    """A fresh copy of the screened session for one test."""
    copy = tmp_path / "session"
    shutil.copytree(screened_session, copy, ignore=shutil.ignore_patterns("session.db.lock"))
    return copy
