"""Decoding any image file (JPEG, PNG, TIFF, BMP, DICOM) into 8-bit RGB, reduced when the source is much larger."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from drtrt.errors import ImageError
from drtrt.preprocess.dicom import decode_dicom
from drtrt.preprocess.jpeg import MAX_DECODED_PIXELS, decode_jpeg

_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                  4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _read(source: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    try:
        return Path(source).read_bytes(), str(source)
    except OSError as exc:
        raise ImageError(f"cannot read image {source}: {exc.strerror or exc}; check the path",
                         "file_unreadable") from None


# EXIF orientation -> the numpy steps that turn the stored pixels upright (PIL's ImageOps.exif_transpose)
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}


def decode_image(source: str | os.PathLike | bytes,
                 target_size: int | None = 512) -> tuple[np.ndarray, tuple[int, int], int]:
    """Decodes a file or its bytes into (rgb, original (height, width), reduction factor k).

    rgb is HxWx3 uint8 at scale k in {1, 2, 4, 8}: the largest factor that keeps the shorter
    side >= target_size (None: full resolution). JPEGs decode at reduced scale directly (DCT
    scaling, fast, low memory) and strictly: damaged data is refused, never decoded half grey.
    EXIF orientation is applied and original_size is in the rotated frame, read exactly from the
    header. Grey, alpha and 16-bit images become 8-bit RGB.
    DICOM files ("DICM" after the preamble) are decoded by :func:`drtrt.preprocess.dicom.decode_dicom`.
    Raises ImageError (one line naming the file) for missing, non-image, truncated, damaged or oversized files.
    """
    data, name = _read(source)
    if data[128:132] == b"DICM":
        return decode_dicom(data, name, target_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                (w, h), fmt, orientation = im.size, im.format, im.getexif().get(0x0112, 1)
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large to decode safely; downscale it first", "file_too_large") from None
    except (OSError, SyntaxError, ValueError) as exc:   # UnidentifiedImageError is an OSError
        why = "its format is not one drtrt knows" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ImageError(f"{name}: not an image drtrt can read ({why}); expected a JPEG, PNG or TIFF fundus photo "
                         "or a DICOM file") from None   # PIL's own message names its buffer object, not the file
    k = max((f for f in (8, 4, 2) if target_size and min(h, w) // f >= target_size), default=1)
    decoded_px = -(-w // k) * -(-h // k) if fmt == "JPEG" else w * h
    if decoded_px > MAX_DECODED_PIXELS:
        raise ImageError(f"{name}: {w}x{h} image too large to decode (limit {MAX_DECODED_PIXELS // 10**6} MP)",
                         "file_too_large")
    size = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    rgb = decode_jpeg(data, name, -(-h // k), -(-w // k)) if fmt == "JPEG" else None
    if rgb is not None:
        upright = _ORIENT.get(orientation)
        return (np.ascontiguousarray(upright(rgb)) if upright else rgb), size, k
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[k])   # applies the EXIF orientation itself
    if bgr is None:
        raise ImageError(f"{name}: {fmt} image could not be decoded (corrupt or unsupported); re-export it")
    reduced = {(-(-size[0] // k), -(-size[1] // k)), (size[0] // k, size[1] // k)}
    if bgr.shape[:2] not in reduced:   # the decoder disagreed with the EXIF tag about rotation
        size = (size[1], size[0])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, k

