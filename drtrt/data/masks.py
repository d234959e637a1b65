"""IDRiD lesion masks: reading and writing them as the release stores them, and label maps.

Facts about the real release this module relies on: lesion masks are 1-bit palette TIFFs,
palette index 1 = lesion (pure red); a missing mask file means no lesion of that type;
converted to greyscale the lesion pixels become 76, so greyscale masks are read as ``> 0``,
never thresholded at 127.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin, UnidentifiedImageError

from drtrt.data.idrid import IdridSample
from drtrt.errors import DataError, ImageError
from drtrt.task import TaskSpec

LABEL_PRIORITY: tuple[str, ...] = ("EX", "SE", "HE", "MA")
"""IDRiD lesion codes in the order masks are written into a label map (codes not listed go first). Order in which masks are written into a label map; later entries win where masks overlap.

Small and rare lesions win: a microaneurysm inside a haemorrhage stays a microaneurysm,
and haemorrhages and soft exudates are kept where they overlap the (larger, more common)
hard exudates.
"""

RESIZE_MIN_COVERAGE = 0.25
"""When :func:`load_label_map` resizes, a pixel takes a lesion class once that lesion covers
at least this fraction of it, so microaneurysms of a few source pixels survive downscaling."""

_MASK_PALETTE = (0, 0, 0, 255, 0, 0)
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_PHOTOMETRIC = 262
_TIFF_COLORMAP = 320
_TIFF_PALETTE_PHOTOMETRIC = 3

def read_lesion_mask(path: str | Path) -> np.ndarray:
    """Read one lesion mask as a boolean ``(height, width)`` array.

    Palette (``"P"``) and bilevel (``"1"``) images: lesion = palette index != 0, which is how
    the official masks are stored. Anything else (greyscale, RGB): lesion = value > 0 after
    conversion to greyscale, because the official red becomes 76 there.

    Raises:
        ImageError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode in ("P", "1"):
                return np.asarray(image) != 0
            if image.mode in ("L", "I", "I;16", "F"):
                return np.asarray(image) > 0
            return np.asarray(image.convert("L")) > 0
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageError(f"cannot read lesion mask {path}: {error}") from error


def write_lesion_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a boolean mask the way the official masks are stored.

    1 bit per pixel, uncompressed, palette photometric interpretation with the two-entry
    colour map black / pure red (index 1 = lesion), no date or software tag, so the bytes
    depend on the mask alone.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a lesion mask must be 2-D, got shape {mask.shape}")
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[_TIFF_BITS_PER_SAMPLE] = (1,)
    tags[_TIFF_PHOTOMETRIC] = _TIFF_PALETTE_PHOTOMETRIC
    tags[_TIFF_COLORMAP] = tuple(257 * value for channel in range(3) for value in _MASK_PALETTE[channel::3])
    Image.fromarray(mask.astype(bool)).save(path, format="TIFF", compression="raw", tiffinfo=tags)


def load_label_map(sample: IdridSample, size: tuple[int, int] | None = None, task: TaskSpec = TaskSpec()) -> np.ndarray:
    """Combine a sample's lesion masks into one ``uint8`` label map.

    Label value ``i`` is ``task.lesion_names[i]`` (by default 1 EX, 2 SE, 3 MA, 4 HE); masks of
    lesion types the task does not name are left out. Overlaps are
    resolved by :data:`LABEL_PRIORITY` (EX written first, MA last, so MA wins). The map has
    the masks' resolution, or the image's (read from its header) when the sample has no mask
    file; it is all background then. With ``size=(width, height)`` the map is resized: a
    pixel takes a class when that lesion covers at least :data:`RESIZE_MIN_COVERAGE` of it.

    Raises:
        DataError: the masks disagree in size with each other or with the image.
        ImageError: a mask or the image header cannot be read.
    """
    masks = {code: read_lesion_mask(path) for code, path in sample.masks.items()}
    if not masks:
        width, height = size if size is not None else _image_size(sample.image)
        return np.zeros((height, width), np.uint8)
    image_size = _image_size(sample.image)
    for code, mask in masks.items():
        if (mask.shape[1], mask.shape[0]) != image_size:
            raise DataError(
                f"{sample.masks[code]} is {mask.shape[1]}x{mask.shape[0]} but its image {sample.image} is "
                f"{image_size[0]}x{image_size[1]}: masks must match their image"
            )
    if size is not None:
        masks = {code: _resize_mask(mask, size) for code, mask in masks.items()}
    label = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for code in sorted(masks, key=lambda c: LABEL_PRIORITY.index(c) if c in LABEL_PRIORITY else -1):
        if code in task.lesion_codes:
            label[masks[code]] = task.label(code)
    return label


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as error:
        raise ImageError(f"cannot read image {path}: {error}") from error


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to ``(width, height)`` by area coverage."""
    coverage = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA)
    return coverage >= round(255 * RESIZE_MIN_COVERAGE)


