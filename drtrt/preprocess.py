"""The one preprocessing used by training, evaluation, calibration and the runtime (SPEC §4).

decode (at reduced scale when the source is large) → find the circular field of view (FOV) →
square crop around the FOV circle (zero padding where it leaves the image) → resize to the
model side → normalise. :class:`Geometry` records the crop so that model-space outputs can be
drawn back onto the original image.

Coordinates are in pixels with pixel centres at integers (the OpenCV convention). An array
"at scale s" covers the whole original image with its pixel ``i`` spanning original pixels
``[s*i, s*(i+1))``; a JPEG decoded at 1/k by DCT scaling is at scale exactly k.
"""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from drtrt.errors import ConfigError, ImageError

MAX_DECODED_PIXELS = 100_000_000   # larger decodes are refused (a reduced JPEG decode only counts its reduced size)
_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                  4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}
_CV_DTYPES = {np.dtype(bool): np.uint8, np.dtype(np.int64): np.int32}   # warped as these, returned as given
_FOV_WORK_SIDE = 512   # find_fov shrinks its input by an integer factor to a shorter side in [512, 1024)
_FOV_BORDER = 3        # boundary points this close to the image edge lie on the frame, not on the circle


def _build(cls: type, d: Any, **convert: Any) -> Any:
    """``cls(**d)`` with conversions; unknown or missing keys raise ConfigError."""
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, found {type(d).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(names)}")
    try:
        return cls(**{k: convert[k](v) if k in convert else v for k, v in d.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: invalid values ({exc}); fix the configuration") from None


@dataclass(frozen=True)
class PreprocessSpec:
    """Every parameter of the preprocessing; recorded in checkpoints and exported models.

    size: model input side in pixels (square). mean/std: RGB, applied to pixel/255.
    margin: extra border around the FOV circle, as a fraction of its radius.
    interpolation: how the image is resized to the model side ("area" anti-aliases downscaling).
    fov_threshold: the field is where the smoothed brightest channel exceeds
        background + fov_threshold * (field level - background).
    fov_min_contrast: field level minus background, in 8-bit levels, below which no field is found.
    fov_min_area: smallest fraction of the image the field must cover.
    fov_min_iou: smallest IoU between the thresholded field and the fitted circle (inside the image).
    """

    size: int = 512
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    margin: float = 0.0
    interpolation: str = "area"
    fov_threshold: float = 0.25
    fov_min_contrast: float = 10.0
    fov_min_area: float = 0.03
    fov_min_iou: float = 0.95

    def __post_init__(self) -> None:
        try:   # JSON lists become tuples, so specs compare and hash by value
            mean, std = (tuple(float(x) for x in v) for v in (self.mean, self.std))
        except (TypeError, ValueError):
            mean = std = ()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"preprocess mean/std must be 3 numbers each (std > 0), "
                              f"found {self.mean!r}, {self.std!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if (not isinstance(self.size, int) or self.size < 8 or self.interpolation not in _INTERPOLATIONS
                or self.margin < 0 or not 0 < self.fov_threshold < 1 or not 0 < self.fov_min_iou <= 1):
            raise ConfigError(f"invalid {self}: need an integer size >= 8, interpolation in "
                              f"{'|'.join(_INTERPOLATIONS)}, margin >= 0, 0 < fov_threshold < 1, 0 < fov_min_iou <= 1")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """Missing keys take their defaults; unknown keys raise ConfigError."""
        return _build(cls, d)


@dataclass(frozen=True)
class FieldOfView:
    """Circle (centre cx, cy; radius; pixels) of the fundus field in some image's coordinates.

    found=False: no plausible circular field; the circle then circumscribes the whole image
    (centre of the image, radius half its longer side), so the crop is the image padded to square.
    """

    cx: float
    cy: float
    radius: float
    found: bool

    @classmethod
    def whole(cls, height: int, width: int) -> FieldOfView:
        """The not-found FOV of a height x width image."""
        return cls((width - 1) / 2, (height - 1) / 2, max(height, width) / 2, False)

    def rescale(self, sx: float, sy: float) -> FieldOfView:
        """This FOV in the coordinates of an image sx (sy) times larger along x (y)."""
        return FieldOfView((self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                           self.radius * (sx + sy) / 2, self.found)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FieldOfView:
        return _build(cls, d, cx=float, cy=float, radius=float, found=bool)


@dataclass(frozen=True)
class Geometry:
    """Maps between the original image and the square model input.

    original_size: (height, width) of the original image at full resolution.
    crop: (x0, y0, x1, y1) square box in original pixels (edges, x1 - x0 == y1 - y0); it may
        extend outside the image, which reads as zeros.
    size: model side. fov: the field of view in original coordinates.
    """

    original_size: tuple[int, int]
    crop: tuple[int, int, int, int]
    size: int
    fov: FieldOfView

    @classmethod
    def from_fov(cls, fov: FieldOfView, original_size: tuple[int, int], size: int,
                 margin: float = 0.0) -> Geometry:
        """Square crop centred on the FOV circle, side 2 * radius * (1 + margin), in whole pixels."""
        side = max(1, round(2 * fov.radius * (1 + margin)))
        x0 = round(fov.cx + 0.5 - side / 2)
        y0 = round(fov.cy + 0.5 - side / 2)
        return cls((int(original_size[0]), int(original_size[1])), (x0, y0, x0 + side, y0 + side), size, fov)

    @property
    def _side(self) -> int:
        return self.crop[2] - self.crop[0]

    def to_model(self, array: np.ndarray, interpolation: str = "linear") -> np.ndarray:
        """Whole-image array (H x W [x C], any uniform scale) -> size x size [x C] model space.

        Crops (zeros outside the image) and resizes in one warpAffine. "area" first shrinks the
        array with cv2.INTER_AREA to the model's pixel size when that is a downscale.
        """
        flag = _interpolation(interpolation)
        sx, sy = _array_scale(array.shape, self.original_size)
        shrink = self._side / (self.size * max(sx, sy))   # array pixels per model pixel
        if flag == cv2.INTER_AREA and shrink > 1:
            h, w = array.shape[:2]
            nw, nh = max(1, round(w / shrink)), max(1, round(h / shrink))
            array, sx, sy = cv2.resize(array, (nw, nh), interpolation=cv2.INTER_AREA), sx * w / nw, sy * h / nh
        if flag == cv2.INTER_AREA:
            flag = cv2.INTER_LINEAR
        step = self._side / self.size
        x0, y0 = self.crop[:2]
        matrix = np.array([[step / sx, 0, (x0 + step / 2) / sx - 0.5],
                           [0, step / sy, (y0 + step / 2) / sy - 0.5]])
        return _warp(array, matrix, (self.size, self.size), flag)

    def to_original(self, array: np.ndarray, interpolation: str = "nearest") -> np.ndarray:
        """size x size [x C] model-space array -> original (height, width) [x C]; zeros outside the crop."""
        if array.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size}x{self.size} model-space array, found {array.shape[:2]}")
        zoom = self.size / self._side
        x0, y0 = self.crop[:2]
        matrix = np.array([[zoom, 0, (0.5 - x0) * zoom - 0.5], [0, zoom, (0.5 - y0) * zoom - 0.5]])
        return _warp(array, matrix, self.original_size, _interpolation(interpolation))

    def fov_mask(self, space: str = "model") -> np.ndarray:
        """Bool mask of the field of view (inside the circle and the image): (size, size) or original_size."""
        oh, ow = self.original_size
        if space == "original":
            shape, fov, box = self.original_size, self.fov, (0.0, 0.0, ow, oh)
        elif space == "model":
            zoom = self.size / self._side
            x0, y0 = self.crop[:2]
            shape = (self.size, self.size)
            fov = FieldOfView((self.fov.cx + 0.5 - x0) * zoom - 0.5, (self.fov.cy + 0.5 - y0) * zoom - 0.5,
                              self.fov.radius * zoom, self.fov.found)
            box = (-x0 * zoom, -y0 * zoom, (ow - x0) * zoom, (oh - y0) * zoom)
        else:
            raise ValueError(f"space must be 'model' or 'original', found {space!r}")
        ys = np.arange(shape[0], dtype=np.float32)[:, None]
        xs = np.arange(shape[1], dtype=np.float32)[None, :]
        mask = (xs + 0.5 >= box[0]) & (xs + 0.5 <= box[2]) & (ys + 0.5 >= box[1]) & (ys + 0.5 <= box[3])
        if fov.found:
            mask &= (xs - fov.cx) ** 2 + (ys - fov.cy) ** 2 <= fov.radius ** 2
        return mask

    def to_dict(self) -> dict[str, Any]:
        return {"original_size": list(self.original_size), "crop": list(self.crop), "size": self.size,
                "fov": self.fov.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        ints = lambda v: tuple(int(x) for x in v)  # noqa: E731
        return _build(cls, d, original_size=ints, crop=ints, size=int, fov=FieldOfView.from_dict)


@dataclass(frozen=True)
class Preprocessed:
    """tensor: (3, S, S) float32 normalised model input. rgb: (S, S, 3) uint8 model-space image.
    geometry: the crop. timings: milliseconds per step."""

    tensor: np.ndarray
    geometry: Geometry
    rgb: np.ndarray
    timings: dict[str, float]


def _array_scale(shape: tuple[int, ...], original_size: tuple[int, int]) -> tuple[float, float]:
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


def _interpolation(name: str) -> int:
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


def _fit_circle(pts: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Kasa least-squares circle through (N, 2) points, refitted twice without outliers
    (beyond 3 robust sigmas, at least 1.5 px). Returns cx, cy, radius and the inlier mask."""
    origin = pts.mean(axis=0)
    p = pts - origin
    keep = np.ones(len(p), bool)
    for _ in range(3):
        x, y = p[keep, 0], p[keep, 1]
        (a, b, c), *_ = np.linalg.lstsq(np.column_stack([x, y, np.ones_like(x)]), x * x + y * y, rcond=None)
        cx, cy = a / 2, b / 2
        r = math.sqrt(max(c + cx * cx + cy * cy, 0.0))
        resid = np.hypot(p[:, 0] - cx, p[:, 1] - cy) - r
        keep = np.abs(resid) <= max(1.5, 4.5 * float(np.median(np.abs(resid[keep]))))
    return cx + origin[0], cy + origin[1], r, keep


def _find_fov(rgb: np.ndarray, spec: PreprocessSpec) -> FieldOfView | None:
    h, w = rgb.shape[:2]
    r, g, b = cv2.split(rgb)
    level = cv2.blur(cv2.max(cv2.max(r, g), b), (5, 5))   # brightest channel: red in a fundus, robust when dim
    otsu, _ = cv2.threshold(level, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    cum = np.cumsum(cv2.calcHist([level], [0], None, [256], [0, 256]).ravel())
    split = cum[int(otsu)]
    background = float(np.searchsorted(cum, split / 2))
    field = float(np.searchsorted(cum, (split + cum[-1]) / 2))
    if field - background < spec.fov_min_contrast:
        return None
    _, inside = cv2.threshold(level, background + spec.fov_threshold * (field - background), 1, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)   # outline of the largest region, holes filled
    component = cv2.drawContours(np.zeros((h, w), np.uint8), [contour], -1, 1, cv2.FILLED)
    area = cv2.countNonZero(component)
    pts = contour[:, 0, :].astype(np.float64)
    pts = pts[(pts[:, 0] >= _FOV_BORDER) & (pts[:, 0] < w - _FOV_BORDER)
              & (pts[:, 1] >= _FOV_BORDER) & (pts[:, 1] < h - _FOV_BORDER)]
    if area < spec.fov_min_area * h * w or len(pts) < 32:
        return None
    cx, cy, r, keep = _fit_circle(pts)
    if not (0 <= cx < w and 0 <= cy < h) or keep.mean() < 0.5:
        return None
    disc = cv2.circle(np.zeros((h, w), np.uint8), (round(cx * 16), round(cy * 16)), round(r * 16), 1,
                      cv2.FILLED, cv2.LINE_8, 4)
    disc_area = cv2.countNonZero(disc)
    overlap = cv2.countNonZero(disc & component)
    plausible = (disc_area >= 0.5 * math.pi * r * r             # the circle is mostly in view
                 and disc_area <= 0.97 * h * w                   # with dark background around it
                 and overlap / (area + disc_area - overlap) >= spec.fov_min_iou)
    return FieldOfView(float(cx), float(cy), r, True) if plausible else None


def find_fov(rgb: np.ndarray, spec: PreprocessSpec | None = None) -> FieldOfView:
    """Circular field of view of an HxWx3 uint8 RGB image, in that image's pixel coordinates.

    Thresholds the smoothed brightest channel between the background and field levels, takes
    the largest component, fits a circle (Kasa, outliers rejected) to its boundary points that
    are not on the image border (so fields cut off by the frame work), and checks that the
    component is that circle. Returns found=False (see FieldOfView.whole) when it is not.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, found {rgb.dtype} {rgb.shape}")
    spec = spec or PreprocessSpec()
    h, w = rgb.shape[:2]
    f = max(1, min(h, w) // _FOV_WORK_SIDE)
    work = rgb if f == 1 else cv2.resize(rgb, (w // f, h // f), interpolation=cv2.INTER_AREA)
    fov = _find_fov(work, spec)
    return FieldOfView.whole(h, w) if fov is None else fov.rescale(w / work.shape[1], h / work.shape[0])


def normalise(rgb_model: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (3, S, S) float32 (x / 255 - mean) / std."""
    scale = 1 / (255 * np.asarray(spec.std, np.float32))
    offset = np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)
    out = np.empty((3, *rgb_model.shape[:2]), np.float32)
    for c in range(3):
        np.multiply(rgb_model[..., c], scale[c], out=out[c], casting="unsafe")
        out[c] -= offset[c]
    return out


def preprocess_rgb(rgb: np.ndarray, spec: PreprocessSpec,
                   original_size: tuple[int, int] | None = None) -> Preprocessed:
    """Preprocesses a decoded HxWx3 uint8 RGB image, possibly a reduced decode of original_size."""
    original_size = original_size or rgb.shape[:2]
    ticks = [time.perf_counter()]
    fov = find_fov(rgb, spec)
    fov = fov.rescale(*_array_scale(rgb.shape, original_size)) if fov.found else FieldOfView.whole(*original_size)
    geometry = Geometry.from_fov(fov, original_size, spec.size, spec.margin)
    ticks.append(time.perf_counter())
    model_rgb = geometry.to_model(rgb, spec.interpolation)
    ticks.append(time.perf_counter())
    tensor = normalise(model_rgb, spec)
    ticks.append(time.perf_counter())
    timings = {step: (b - a) * 1e3 for step, a, b in zip(("fov", "resize", "normalise"), ticks, ticks[1:])}
    return Preprocessed(tensor, geometry, model_rgb, timings)


def preprocess(source: str | os.PathLike | bytes, spec: PreprocessSpec) -> Preprocessed:
    """decode_image(source, spec.size) then preprocess_rgb: the function training and runtime share."""
    start = time.perf_counter()
    rgb, original_size, _ = decode_image(source, spec.size)
    decode_ms = (time.perf_counter() - start) * 1e3
    result = preprocess_rgb(rgb, spec, original_size)
    return replace(result, timings={"decode": decode_ms, **result.timings})
