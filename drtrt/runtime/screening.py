"""Screening a list of files: the loop behind ``drtrt screen`` (torch-free)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from drtrt.errors import DataError
from drtrt.preprocess.dicom import DICOM_SUFFIXES

if TYPE_CHECKING:   # the session modules import this one
    from drtrt.runtime.patients import Assignment
    from drtrt.runtime.session import SessionConfig
    from drtrt.runtime.store import SessionRow
    from drtrt.task import TaskSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"} | DICOM_SUFFIXES   # DICOM: .dcm, .dicom


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def collect_images(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Expand folders (sorted, images by suffix, hidden files skipped; subfolders too with ``recursive``).

    Files named explicitly are kept whatever their suffix: the screen reports them as
    unreadable rather than silently dropping them.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            found = sorted(p for p in candidates if _is_image(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                where = f"folder {path}" + (" or its subfolders" if recursive else "")
                hint = ("" if recursive or not unsearched_images([path])
                        else "; it has images in subfolders: add --recursive")
                raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {where}{hint}")
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    return paths


def unsearched_images(inputs: Iterable[str | os.PathLike]) -> int:
    """Images in subfolders of the folders in ``inputs`` (what a non-recursive screen leaves out)."""
    count = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            count += sum(1 for sub in path.iterdir() if sub.is_dir() and not sub.name.startswith(".")
                         for p in sub.rglob("*") if _is_image(p))
    return count


def resolve_inputs(images: Sequence[str | os.PathLike], patient_list: str | os.PathLike | None = None,
                   patient: str | None = None, eye: str | None = None,
                   recursive: bool = False) -> tuple[list[Path], dict[Path, Assignment], Assignment]:
    """CLI inputs → (paths, resolved path → Assignment from the patient list, default Assignment).

    Without ``images`` the patient list's files are screened. ``patient``/``eye`` apply to every
    file the list does not name.
    """
    from drtrt.runtime.patients import Assignment, normalise_eye, read_patient_list, validate_patient_id

    default = Assignment(validate_patient_id(patient), normalise_eye(eye))
    assignments = read_patient_list(patient_list) if patient_list else {}
    paths = collect_images(images, recursive) if images else list(assignments)
    if not paths:
        raise DataError("nothing to screen: give image files or folders, or --patients CSV")
    return paths, assignments, default


@dataclass
class ScreeningRun:
    """What :func:`screen_images` did: a row per input file (in order), the model's vocabulary,
    and how many files this run screened and how many an earlier run of the session had."""

    rows: list[SessionRow]
    task: TaskSpec
    screened: int = 0
    already_done: int = 0
    notes: list[str] = field(default_factory=list)



def safe_stem(path: Path) -> str:
    """A file-name-safe stem (no separators, no traversal) for output files."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "image"
    return stem[:100]


def screen_images(paths: Sequence[str | os.PathLike], model: str | os.PathLike, out: str | os.PathLike | None = None,
                  on_result: Callable[[SessionRow], None] | None = None, cfg: SessionConfig | None = None,
                  assignments: Mapping[Path, Assignment] | None = None, default: Assignment | None = None,
                  command: str = "") -> ScreeningRun:
    """Screen every path into the session folder ``out`` (None: in memory, nothing written).

    Returns a :class:`ScreeningRun` with one :class:`~drtrt.runtime.store.SessionRow` per path, in
    order; ``on_result`` gets each row as soon as it is settled. With ``out``: ``session.db``, ``overlays/``,
    ``masks/``, ``thumbs/``, ``reports/``, ``results.jsonl``, ``summary.csv``/``.html``, ``patients.csv``.
    ``cfg``: a SessionConfig; ``assignments``: resolved path → Assignment; ``default``: the
    Assignment of paths not in ``assignments``.
    """
    from drtrt.runtime.patients import Assignment
    from drtrt.runtime.session import ScreeningSession, SessionConfig

    with ScreeningSession(model, out, cfg or SessionConfig(), command=command, on_row=on_result) as session:
        rows = session.screen(paths, assignments, default or Assignment())
        session.flush()
        session.write_reports()
    return ScreeningRun(rows, session.predictor.task, session.screened, session.already_done,
                        list(session.predictor.notes))

