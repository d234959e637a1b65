"""The photos as the pages show them: the kept photo found by its content hash (never by a path from
the request), a screen-size JPEG of it, and each lesion type's coloured layer to lay over it. The
JPEG and the layers are made once and kept in the station folder's cache/.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException

from drtrt.fileio import atomic_write
from drtrt.runtime.postprocess import DISC_COLOUR, LESION_COLOURS, LESION_FILL_ALPHA, lesion_outline
from drtrt.station.worker import StationWorker
from drtrt.task import TaskSpec

SHA = re.compile(r"^[0-9a-f]{64}$")
LAYER = re.compile(r"layer-([A-Za-z0-9]{1,8})\.png")
VIEW_SIDE = 1024


def css_colour(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def lesion_colours(task: TaskSpec) -> dict[str, str]:
    """Each lesion code's layer colour as CSS, so the page's toggles match the layers."""
    return {code: css_colour(LESION_COLOURS[task.label(code)]) for code in task.lesion_codes}


DISC_CSS = css_colour(DISC_COLOUR)
"""The optic disc ring's colour (station.css draws the ring in it)."""


def photo_path(data_dir: Path, sha: str) -> Path:
    """The kept photo with this content hash: always inside the station's photos/ folder."""
    photos = (data_dir / "photos").resolve()
    for candidate in photos.glob(f"{sha}.*"):
        if candidate.parent == photos and candidate.is_file():
            return candidate
    raise HTTPException(404)


def view_jpeg(data_dir: Path, sha: str, photo: Path) -> Path:
    """The photo at most VIEW_SIDE px across, as JPEG (made once, kept in cache/)."""
    target = data_dir / "cache" / f"{sha}-view.jpg"
    if not target.exists():
        picture = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if picture is None:
            raise HTTPException(404, "this file is not a picture")
        h, w = picture.shape[:2]
        f = min(1.0, VIEW_SIDE / max(h, w))
        if f < 1:
            picture = cv2.resize(picture, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        ok, jpg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
        atomic_write(target, jpg.tobytes())
    return target


def full_jpeg(data_dir: Path, sha: str, photo: Path) -> Path:
    """The photo at its full resolution as JPEG (quality 95, made once, kept in cache/): what a clinician
    reads, zoomed; DICOM, TIFF and PNG photos alike."""
    target = data_dir / "cache" / f"{sha}-full.jpg"
    if not target.exists():
        picture = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if picture is None:
            raise HTTPException(404, "this file is not a picture")
        ok, jpg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
        atomic_write(target, jpg.tobytes())
    return target


def layer_bgra(mask: np.ndarray, label: int) -> np.ndarray:
    """Label ``label`` of a label map as a BGRA layer: a light tint over the lesion (it stays visible
    under it), an opaque outline in its colour just outside it, transparent elsewhere."""
    layer = np.zeros((*mask.shape[:2], 4), np.uint8)
    on = mask == label
    r, g, b = (int(v) for v in LESION_COLOURS[label])
    layer[on] = (b, g, r, round(255 * LESION_FILL_ALPHA))
    layer[lesion_outline(on, max(1, mask.shape[1] // 500))] = (b, g, r, 255)
    return layer


def lesion_layer(worker: StationWorker, data_dir: Path, sha: str, photo: Path, label: int) -> Path | None:
    """One lesion type at the view's size (PNG, cached): its pixels lightly tinted, so the lesion shows
    through, and outlined in its colour; transparent elsewhere."""
    target = data_dir / "cache" / f"{sha}-outline{label}.png"
    if target.exists():
        return target
    rows = worker.store.rows([str(photo)])
    record = rows[0].record if rows else {}
    if not record.get("mask"):
        return None
    try:   # a palette PNG whose pixel values are the labels (OpenCV would expand the palette to colours)
        with Image.open(data_dir / record["mask"]) as picture:
            mask = np.asarray(picture.convert("L") if picture.mode not in ("P", "L") else picture)
    except (OSError, UnidentifiedImageError):
        return None
    view = cv2.imread(str(view_jpeg(data_dir, sha, photo)), cv2.IMREAD_COLOR)
    if view is None:
        return None
    h, w = view.shape[:2]
    ok, png = cv2.imencode(".png", layer_bgra(cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST), label))
    atomic_write(target, png.tobytes())
    return target
