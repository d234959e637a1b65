"""Decoding any image file into 8-bit RGB, at reduced scale when the source is much larger."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from drtrt.errors import ImageError

MAX_DECODED_PIXELS = 100_000_000   # larger decodes are refused (a reduced JPEG decode only counts its reduced size)
_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                  4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _read(source: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    try:
        return Path(source).read_bytes(), str(source)
    except OSError as exc:
        raise ImageError(f"cannot read image {source}: {exc.strerror or exc}; check the path") from None


def _jpeg_complete(data: bytes) -> bool:
    """True when the main JPEG image's first scan is followed by an end-of-image marker.

    OpenCV 4.x decodes a truncated JPEG into a partly grey image with only a warning."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:   # start of scan; entropy-coded data cannot contain FF D9
            return data.find(b"\xff\xd9", pos) != -1
        if marker == 0xFF:   # fill byte
            pos += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:   # markers without a length field
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def decode_image(source: str | os.PathLike | bytes,
                 target_size: int | None = 512) -> tuple[np.ndarray, tuple[int, int], int]:
    """Decodes a file or its bytes into (rgb, original (height, width), reduction factor k).

    rgb is HxWx3 uint8 at scale k in {1, 2, 4, 8}: the largest factor that keeps the shorter
    side >= target_size (None: full resolution). JPEGs decode at reduced scale directly (DCT
    scaling, fast, low memory). EXIF orientation is applied and original_size is in the rotated
    frame, read exactly from the header. Grey, alpha and 16-bit images become 8-bit RGB.
    Raises ImageError (one line naming the file) for missing, non-image, truncated or oversized files.
    """
    data, name = _read(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                (w, h), fmt, orientation = im.size, im.format, im.getexif().get(0x0112, 1)
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large to decode safely; downscale it first") from None
    except (OSError, SyntaxError, ValueError) as exc:   # UnidentifiedImageError is an OSError
        raise ImageError(f"{name}: not a readable image ({exc}); expected a JPEG, PNG or TIFF fundus photo") from None
    if fmt == "JPEG" and not _jpeg_complete(data):
        raise ImageError(f"{name}: truncated or corrupt JPEG (no end-of-image marker); copy the file again")
    k = max((f for f in (8, 4, 2) if target_size and min(h, w) // f >= target_size), default=1)
    decoded_px = -(-w // k) * -(-h // k) if fmt == "JPEG" else w * h
    if decoded_px > MAX_DECODED_PIXELS:
        raise ImageError(f"{name}: {w}x{h} image too large to decode (limit {MAX_DECODED_PIXELS // 10**6} MP)")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[k])
    if bgr is None:
        raise ImageError(f"{name}: {fmt} image could not be decoded (corrupt or unsupported); re-export it")
    size = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    reduced = {(-(-size[0] // k), -(-size[1] // k)), (size[0] // k, size[1] // k)}
    if bgr.shape[:2] not in reduced:   # the decoder disagreed with the EXIF tag about rotation
        size = (size[1], size[0])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, k

