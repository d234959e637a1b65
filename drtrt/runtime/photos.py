"""Which files are photos: the image files a folder or a list of paths holds (``drtrt screen``,
``drtrt watch``, calibration), by suffix, hidden files and folders skipped."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from drtrt.errors import DataError
from drtrt.preprocess.dicom import DICOM_SUFFIXES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"} | DICOM_SUFFIXES   # DICOM: .dcm, .dicom


def is_image(path: Path) -> bool:
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
            found = sorted(p for p in candidates if is_image(p)
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
                         for p in sub.rglob("*") if is_image(p))
    return count
