"""The field of view and the invertible crop between an original image and the model input.

Coordinates are in pixels with pixel centres at integers (the OpenCV convention). An array
"at scale s" covers the whole original image with its pixel ``i`` spanning original pixels
``[s*i, s*(i+1))``; a JPEG decoded at 1/k by DCT scaling is at scale exactly k.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

_INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}
_CV_DTYPES = {np.dtype(bool): np.uint8, np.dtype(np.int64): np.int32}   # warped as these, returned as given


SIDES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class FieldOfView:
    """The fundus field in some image's coordinates (pixels, centres at integers).

    An ellipse centred on (cx, cy) with horizontal radius ``radius`` and vertical radius
    ``radius * aspect``: a circle (aspect 1) unless a third party squashed the photo. ``top``,
    ``bottom``, ``left``, ``right``: where the field is cut flat, as the line between the last
    field pixel and the first outside it (None: not cut on that side). A cut may lie on the frame
    (IDRiD's field runs off the top and bottom) or inside the image, with a black band beyond.

    found=False: no plausible field; the circle then circumscribes the whole image (centre of
    the image, radius half its longer side), so the crop is the image padded to square.
    """

    cx: float
    cy: float
    radius: float
    found: bool
    aspect: float = 1.0
    top: float | None = None
    bottom: float | None = None
    left: float | None = None
    right: float | None = None

    @classmethod
    def whole(cls, height: int, width: int) -> FieldOfView:
        """The not-found FOV of a height x width image."""
        return cls((width - 1) / 2, (height - 1) / 2, max(height, width) / 2, False)

    @property
    def radius_y(self) -> float:
        return self.radius * self.aspect

    @property
    def cuts(self) -> tuple[str, ...]:
        """The sides on which the field is cut flat."""
        return tuple(side for side in SIDES if getattr(self, side) is not None)

    def rescale(self, sx: float, sy: float) -> FieldOfView:
        """This FOV in the coordinates of an image sx (sy) times larger along x (y)."""
        x = lambda v: None if v is None else (v + 0.5) * sx - 0.5  # noqa: E731
        y = lambda v: None if v is None else (v + 0.5) * sy - 0.5  # noqa: E731

        if self.aspect == 1.0:     # a circle stays a circle under the near-uniform scale of a reduced decode
            radius, aspect = self.radius * (sx + sy) / 2, 1.0
        else:
            radius, aspect = self.radius * sx, self.aspect * sy / sx
        return FieldOfView(x(self.cx), y(self.cy), radius, self.found, aspect, y(self.top), y(self.bottom),
                           x(self.left), x(self.right))

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Bool (height, width) mask of the field in these coordinates: inside the ellipse and the cuts
        (not clipped to any image: the caller intersects it with its own frame)."""
        ys = np.arange(shape[0], dtype=np.float32)[:, None]
        xs = np.arange(shape[1], dtype=np.float32)[None, :]
        if self.aspect == 1.0:
            inside = (xs - self.cx) ** 2 + (ys - self.cy) ** 2 <= self.radius ** 2
        else:
            inside = ((xs - self.cx) / self.radius) ** 2 + ((ys - self.cy) / self.radius_y) ** 2 <= 1
        for side, axis, sign in (("top", ys, 1), ("bottom", ys, -1), ("left", xs, 1), ("right", xs, -1)):
            line = getattr(self, side)
            if line is not None:
                inside = inside & (sign * (axis - line) >= 0)
        return inside

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FieldOfView:
        from drtrt.config import from_dict

        return from_dict(cls, d, where="fov.")


@dataclass(frozen=True)
class Geometry:
    """Maps between the original image and the square model input.

    original_size: (height, width) of the original image at full resolution.
    crop: (x0, y0, x1, y1) box in original pixels (edges) around the field: square for a circular
        field, the ellipse's box for a squashed one (the model then sees the field round again).
        It may extend outside the image, which reads as zeros.
    size: model side. fov: the field of view in original coordinates.
    """

    original_size: tuple[int, int]
    crop: tuple[int, int, int, int]
    size: int
    fov: FieldOfView

    @classmethod
    def from_fov(cls, fov: FieldOfView, original_size: tuple[int, int], size: int,
                 margin: float = 0.0) -> Geometry:
        """The box centred on the field, 2 * radius * (1 + margin) across each way, in whole pixels."""
        width = max(1, round(2 * fov.radius * (1 + margin)))
        height = width if fov.aspect == 1.0 else max(1, round(2 * fov.radius_y * (1 + margin)))
        x0 = round(fov.cx + 0.5 - width / 2)
        y0 = round(fov.cy + 0.5 - height / 2)
        return cls((int(original_size[0]), int(original_size[1])), (x0, y0, x0 + width, y0 + height), size, fov)

    @property
    def steps(self) -> tuple[float, float]:
        """Original pixels per model pixel along x and y (equal for a circular field)."""
        return (self.crop[2] - self.crop[0]) / self.size, (self.crop[3] - self.crop[1]) / self.size

    @property
    def zooms(self) -> tuple[float, float]:
        """Model pixels per original pixel along x and y."""
        return self.size / (self.crop[2] - self.crop[0]), self.size / (self.crop[3] - self.crop[1])

    def to_model(self, array: np.ndarray, interpolation: str = "linear") -> np.ndarray:
        """Whole-image array (H x W [x C], any uniform scale) -> size x size [x C] model space.

        Crops (zeros outside the image) and resizes in one warpAffine. "area" first shrinks the
        array with cv2.INTER_AREA to the model's pixel size when that is a downscale.
        """
        flag = interpolation_flag(interpolation)
        sx, sy = array_scale(array.shape, self.original_size)
        step_x, step_y = self.steps
        x0, y0, x1, y1 = self.crop
        shrink_x, shrink_y = ((x1 - x0) / (self.size * max(sx, sy)),               # array pixels per model pixel
                              (y1 - y0) / (self.size * max(sx, sy)))
        if flag == cv2.INTER_AREA and max(shrink_x, shrink_y) > 1:
            h, w = array.shape[:2]
            nw, nh = max(1, round(w / max(shrink_x, 1))), max(1, round(h / max(shrink_y, 1)))
            array, sx, sy = cv2.resize(array, (nw, nh), interpolation=cv2.INTER_AREA), sx * w / nw, sy * h / nh
        if flag == cv2.INTER_AREA:
            flag = cv2.INTER_LINEAR
        matrix = np.array([[step_x / sx, 0, (x0 + step_x / 2) / sx - 0.5],
                           [0, step_y / sy, (y0 + step_y / 2) / sy - 0.5]])
        return _warp(array, matrix, (self.size, self.size), flag)

    def to_original(self, array: np.ndarray, interpolation: str = "nearest") -> np.ndarray:
        """size x size [x C] model-space array -> original (height, width) [x C]; zeros outside the crop."""
        if array.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size}x{self.size} model-space array, found {array.shape[:2]}")
        zoom_x, zoom_y = self.zooms
        x0, y0 = self.crop[:2]
        matrix = np.array([[zoom_x, 0, (0.5 - x0) * zoom_x - 0.5], [0, zoom_y, (0.5 - y0) * zoom_y - 0.5]])
        return _warp(array, matrix, self.original_size, interpolation_flag(interpolation))

    def fov_in_model(self) -> FieldOfView:
        """The field of view in model coordinates (round again for a squashed field)."""
        zoom_x, zoom_y = self.zooms
        x0, y0 = self.crop[:2]
        fov = self.fov
        x = lambda v: None if v is None else (v + 0.5 - x0) * zoom_x - 0.5  # noqa: E731
        y = lambda v: None if v is None else (v + 0.5 - y0) * zoom_y - 0.5  # noqa: E731
        aspect = 1.0 if fov.aspect == 1.0 else fov.aspect * zoom_y / zoom_x
        return FieldOfView(x(fov.cx), y(fov.cy), fov.radius * zoom_x, fov.found, aspect, y(fov.top), y(fov.bottom),
                           x(fov.left), x(fov.right))

    def fov_mask(self, space: str = "model") -> np.ndarray:
        """Bool mask of the field of view (inside the field, its cuts and the image): (size, size) or original_size."""
        oh, ow = self.original_size
        if space == "original":
            shape, fov, box = self.original_size, self.fov, (0.0, 0.0, ow, oh)
        elif space == "model":
            zoom_x, zoom_y = self.zooms
            x0, y0 = self.crop[:2]
            shape, fov = (self.size, self.size), self.fov_in_model()
            box = (-x0 * zoom_x, -y0 * zoom_y, (ow - x0) * zoom_x, (oh - y0) * zoom_y)

        else:
            raise ValueError(f"space must be 'model' or 'original', found {space!r}")
        ys = np.arange(shape[0], dtype=np.float32)[:, None]
        xs = np.arange(shape[1], dtype=np.float32)[None, :]
        mask = (xs + 0.5 >= box[0]) & (xs + 0.5 <= box[2]) & (ys + 0.5 >= box[1]) & (ys + 0.5 <= box[3])
        return mask & fov.mask(shape) if fov.found else mask

    def to_dict(self) -> dict[str, Any]:
        return {"original_size": list(self.original_size), "crop": list(self.crop), "size": self.size,
                "fov": self.fov.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        from drtrt.config import from_dict

        return from_dict(cls, d, where="geometry.")


def array_scale(shape: tuple[int, ...], original_size: tuple[int, int]) -> tuple[float, float]:
    """(sx, sy): original pixels per pixel of an array of this shape covering the whole original image."""
    h, w = shape[:2]
    oh, ow = original_size
    for k in (1, 2, 4, 8):   # JPEG DCT scaling rounds sizes up and keeps the scale exactly k
        if (h, w) == (-(-oh // k), -(-ow // k)):
            return float(k), float(k)
    sx, sy = ow / w, oh / h
    if abs(sx - sy) > 0.01 * max(sx, sy):
        raise ValueError(f"array of shape {shape[:2]} does not cover the original {original_size} at a uniform scale")
    return sx, sy


def interpolation_flag(name: str) -> int:
    if name not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(_INTERPOLATIONS)}, found {name!r}")
    return _INTERPOLATIONS[name]


def _warp(array: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int], flag: int) -> np.ndarray:
    """cv2.warpAffine with ``matrix`` mapping output pixels to input pixels; zeros outside.

    Handles bool/int64 (via uint8/int32), any channel count, and keeps an explicit channel axis."""
    src = array.astype(_CV_DTYPES[array.dtype]) if array.dtype in _CV_DTYPES else array
    chunks = [src] if src.ndim == 2 or src.shape[2] <= 4 else [src[..., i:i + 4] for i in range(0, src.shape[2], 4)]
    out = [cv2.warpAffine(c, matrix, (out_hw[1], out_hw[0]), flags=flag | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) for c in chunks]
    out = [o.reshape(*out_hw, -1) for o in out] if src.ndim == 3 else out
    result = out[0] if len(out) == 1 else np.concatenate(out, axis=2)
    return result.astype(array.dtype, copy=False)

