"""A result's files in the session folder: the overlay and lesion mask of a graded photo, the
thumbnail of one that could not be graded, each written by temp-file-and-rename.

Kept apart from the session (which decides *when* a result is written) so the post-model
sequence is written once: ``overlays/STEM.png`` (at the decoded scale), ``masks/STEM.png`` (the
label map at the original resolution), ``thumbs/STEM.jpg`` (at most 900 px). ``STEM`` is the image
name made file-name-safe plus 8 hex digits of the image's SHA-256, so two files called
``IMG_0001.jpg`` from two cameras never share an output.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from drtrt.fileio import atomic_write
from drtrt.preprocess import Geometry
from drtrt.runtime.macula import MaculaAssessment
from drtrt.runtime.postprocess import lesion_mask_png, overlay
from drtrt.runtime.predictor import ScreeningResult
from drtrt.task import TaskSpec

FOLDERS = ("overlays", "masks", "thumbs", "reports")
FOVEA_COLOUR = (57, 255, 20)   # the fovea's cross and 1-DD circle: a lime green no lesion colour uses
THUMBNAIL_SIDE = 900
# Overlay PNG: "Up" filter and run-length deflate cost half the CPU of OpenCV's default (all
# filters tried per row) for a 10 % smaller file on a 1072x741 overlay (docs/benchmarks.md).
_OVERLAY_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE] + (
    [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP] if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])  # OpenCV 4.11+


def safe_stem(path: Path) -> str:
    """A file-name-safe stem (no separators, no traversal) for output files."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "image"
    return stem[:100]


def output_stem(path: str, sha256: str) -> str:
    """Output file stem: a file-name-safe version of the image name plus 8 hex digits of its hash."""
    return f"{safe_stem(Path(path))}-{sha256[:8]}"


def write_result_files(out: Path, result: ScreeningResult, path: str, sha256: str, task: TaskSpec,
                       masks: bool = True) -> dict:
    """Overlay PNG (graded), lesion mask PNG at the original resolution (``masks``), thumbnail JPEG
    for reports (not graded). Returns the record's keys naming them; frees the result's arrays."""
    if result.rgb is None:
        return {}
    stem = output_stem(path, sha256)
    if result.status == "graded" and result.labels is not None:
        written = _overlay_and_mask(out, result, stem, task, masks)
    else:   # ungradable: keep what the camera gave, small, for the report
        written = _thumbnail(out, result, stem)
    result.rgb = result.labels = None   # free the arrays once written
    return written


def _overlay_and_mask(out: Path, result: ScreeningResult, stem: str, task: TaskSpec, masks: bool) -> dict:
    picture = overlay(result.rgb, result.labels, result.geometry, task, findings=result.lesions,
                      legend=True, disc=result.disc)
    draw_fovea(picture[:result.rgb.shape[0]], result.macula, result.geometry)     # not on the legend
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), _OVERLAY_PNG)
    atomic_write(out / "overlays" / f"{stem}.png", png.tobytes())
    written: dict = {"overlay": f"overlays/{stem}.png",   # at the decoded scale (1/k of the original)
                     "overlay_scale": result.geometry.original_size[1] / picture.shape[1]}
    if masks:
        png, scale = lesion_mask_png(result.labels, result.geometry)   # = lesion_mask_original's, encoded
        atomic_write(out / "masks" / f"{stem}.png", png)
        written.update(mask=f"masks/{stem}.png", mask_scale=scale)
    return written


def draw_fovea(picture: np.ndarray, macula: MaculaAssessment | None, geometry: Geometry) -> None:
    """Mark the fovea on ``picture`` (RGB, the whole original image at any uniform scale): a small
    cross at its centre and the circle 1 disc diameter round it (where a hard exudate makes M1; an
    ellipse on a squashed photo), in :data:`FOVEA_COLOUR` on a black outline so that it reads on
    any fundus and apart from the lesion colours and the disc's white ring. Nothing without a fovea."""
    fovea = None if macula is None else macula.fovea
    if fovea is None:
        return
    scale = geometry.original_size[1] / picture.shape[1]              # original pixels per picture pixel
    centre = (round(fovea.x / scale), round(fovea.y / scale))
    axes = (max(4, round(fovea.disc_diameter / scale)), max(4, round(fovea.disc_diameter * geometry.fov.aspect / scale)))
    thick = max(1, picture.shape[1] // 500)
    for colour, width in (((0, 0, 0), 3 * thick), (FOVEA_COLOUR, thick)):
        cv2.ellipse(picture, centre, axes, 0, 0, 360, colour, width, cv2.LINE_AA)
        cv2.drawMarker(picture, centre, colour, cv2.MARKER_CROSS, max(7, axes[0] // 3), width, cv2.LINE_AA)


def _thumbnail(out: Path, result: ScreeningResult, stem: str) -> dict:
    h, w = result.rgb.shape[:2]
    f = min(1.0, THUMBNAIL_SIDE / max(h, w))
    small = cv2.resize(result.rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    atomic_write(out / "thumbs" / f"{stem}.jpg", jpg.tobytes())
    return {"thumbnail": f"thumbs/{stem}.jpg"}


def remove_stale_temp_files(out: Path) -> None:
    """Temp files a killed run left behind (``.NAME.tmp-PID``); their targets are untouched."""
    for folder in (out, *(out / name for name in FOLDERS)):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)
