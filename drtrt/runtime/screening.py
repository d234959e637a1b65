"""Screening a list of files: the loop behind ``drtrt screen`` (torch-free)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from drtrt.errors import DataError

if TYPE_CHECKING:   # the session modules import this one
    from drtrt.runtime.patients import Assignment
    from drtrt.runtime.session import SessionConfig
    from drtrt.runtime.store import SessionRow

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders (non-recursive, sorted, images by suffix, hidden files skipped).

    Files named explicitly are kept whatever their suffix: the screen reports them as
    unreadable rather than silently dropping them.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {path}")
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    return paths


def resolve_inputs(images: Sequence[str | os.PathLike], manifest: str | os.PathLike | None = None,
                   patient: str | None = None,
                   eye: str | None = None) -> tuple[list[Path], dict[Path, Assignment], Assignment]:
    """CLI inputs → (paths, resolved path → Assignment from the manifest, default Assignment).

    Without ``images`` the manifest's files are screened. ``patient``/``eye`` apply to every
    file the manifest does not list.
    """
    from drtrt.runtime.patients import Assignment, normalise_eye, read_manifest, validate_patient_id

    default = Assignment(validate_patient_id(patient), normalise_eye(eye))
    assignments = read_manifest(manifest) if manifest else {}
    paths = collect_images(images) if images else list(assignments)
    if not paths:
        raise DataError("nothing to screen: give image files or folders, or --manifest CSV")
    return paths, assignments, default


def safe_stem(path: Path) -> str:
    """A file-name-safe stem (no separators, no traversal) for output files."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "image"
    return stem[:100]


def screen_images(paths: Sequence[str | os.PathLike], model: str | os.PathLike, out: str | os.PathLike | None = None,
                  on_result: Callable[[SessionRow], None] | None = None, cfg: SessionConfig | None = None,
                  assignments: Mapping[Path, Assignment] | None = None, default: Assignment | None = None,
                  command: str = "") -> list[SessionRow]:
    """Screen every path into the session folder ``out`` (None: in memory, nothing written).

    Returns one :class:`~drtrt.runtime.store.SessionRow` per path, in order; ``on_result`` gets
    each row as soon as it is settled. With ``out``: ``session.db``, ``overlays/``, ``masks/``,
    ``thumbs/``, ``reports/``, ``results.jsonl``, ``summary.csv``/``.html``, ``patients.csv``.
    ``cfg``: a SessionConfig; ``assignments``: resolved path → Assignment; ``default``: the
    Assignment of paths not in ``assignments``.
    """
    from drtrt.runtime.patients import Assignment
    from drtrt.runtime.session import ScreeningSession, SessionConfig

    with ScreeningSession(model, out, cfg or SessionConfig(), command=command, on_row=on_result) as session:
        rows = session.screen(paths, assignments, default or Assignment())
        session.flush()
        session.write_reports()
    return rows
