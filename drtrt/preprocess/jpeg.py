"""Strict JPEG decoding and the decode size limit, shared by image files (:mod:`.decode`) and the
JPEG-baseline frames of DICOM photos (:mod:`.dicom`): the same photo as a JPEG file and as DICOM
then gives the same pixels, and is refused for the same damage. A module of its own because
:mod:`.decode` hands DICOM files to :mod:`.dicom`, which needs this decoder.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

from drtrt.errors import ImageError

MAX_DECODED_PIXELS = 100_000_000   # larger decodes are refused (a reduced JPEG decode only counts its reduced size)
_HARMLESS = "extraneous bytes before marker 0xd9"   # padding after the last scan: every pixel is intact


def decode_jpeg(data: bytes, name: str, height: int, width: int) -> np.ndarray | None:
    """RGB of a JPEG at the smallest DCT scale of at least ``height`` x ``width`` (stored frame), or
    None when libjpeg-turbo cannot convert it (CMYK, 12-bit): the caller then falls back to OpenCV.

    libjpeg-turbo through simplejpeg in strict mode, because OpenCV and PIL only warn on damaged
    entropy-coded data and return an image half grey or smeared, which the fundus checks would
    then misjudge (blurred, not a fundus). Any decoder warning but trailing padding is damage."""
    def decode(strict: bool) -> np.ndarray:
        return simplejpeg.decode_jpeg(data, "RGB", min_height=height, min_width=width, strict=strict)

    try:
        return decode(strict=True)
    except ValueError as exc:
        problem = str(exc)
    try:
        rgb = decode(strict=False)
    except ValueError:
        return None                                      # not damage: a JPEG libjpeg-turbo will not convert
    if _HARMLESS in problem:
        return rgb
    what = "truncated JPEG (the copy stopped early)" if "Premature end" in problem else f"damaged JPEG data ({problem})"
    raise ImageError(f"{name}: {what}; copy the file from the camera again")
