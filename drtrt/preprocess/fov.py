"""Finding the circular field of view of a fundus photograph."""

from __future__ import annotations

import math

import cv2
import numpy as np

from drtrt.preprocess.geometry import FieldOfView
from drtrt.preprocess.spec import PreprocessSpec

_FOV_WORK_SIDE = 512   # find_fov shrinks its input by an integer factor to a shorter side in [512, 1024)
_FOV_BORDER = 3        # boundary points this close to the image edge lie on the frame, not on the circle


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

