"""Screening a list of files: the loop behind ``drtrt screen`` (torch-free)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2

from drtrt.errors import DataError
from drtrt.postprocess import overlay
from drtrt.runtime.predictor import Predictor, ScreeningResult

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


def safe_stem(path: Path) -> str:
    """A file-name-safe stem (no separators, no traversal) for output files."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "image"
    return stem[:100]


def screen_images(paths: Sequence[Path], model: str | os.PathLike, out: str | os.PathLike | None = None,
                  on_result: Callable[[ScreeningResult], None] | None = None) -> list[ScreeningResult]:
    """Screen every path; with ``out``, write ``results.jsonl`` and one overlay PNG per graded image."""
    out_dir = Path(out) if out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "overlays").mkdir(exist_ok=True)
    results = []
    with Predictor(model) as predictor:
        for path in paths:
            result = predictor.screen(path, keep_arrays=out_dir is not None)
            if out_dir:
                _write_outputs(result, path, out_dir)
            results.append(result)
            if on_result:
                on_result(result)
    return results


def _write_outputs(result: ScreeningResult, path: Path, out_dir: Path) -> None:
    record = result.to_dict()
    if result.status == "graded" and result.labels is not None and result.rgb is not None:
        picture = overlay(result.rgb, result.labels, result.geometry)
        target = out_dir / "overlays" / f"{safe_stem(path)}.png"
        cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        record["overlay"] = str(target.relative_to(out_dir))
    with (out_dir / "results.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    result.labels = result.rgb = None  # free the arrays once written
