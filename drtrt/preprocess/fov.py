"""Finding the field of view of a fundus photograph, whatever the framing.

The field is the bright, coloured disc a fundus camera records; around it lies a surround that is
usually black, sometimes grey (an exported or pasted photo). The field may run off the frame
(IDRiD's top and bottom), be cut flat inside the frame with a black band beyond (a third party's
crop padded to square), sit small on a large canvas, or be squashed into an ellipse by a crop
resized to a square. The finder:

1. separates field from surround: the smoothed brightest channel on a dark surround (the
   usual case), or the colour distance from the surround's colour (read in the four corners)
   on a lighter one;
2. outlines the largest region and drops the boundary points that are not the field's rim:
   those on the frame, and straight horizontal or vertical runs (flat cuts; fitted separately,
   as retinalysis-fundusprep does);
3. fits a circle to the rim (Kasa least squares, outliers rejected), or an axis-aligned ellipse
   when no circle matches (a squashed crop);
4. accepts the fit only if the region is that shape within its cuts (IoU >= ``fov_min_iou``).

Every cut side is reported, so the mask of the field is the ellipse within its cuts.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from drtrt.preprocess.geometry import FieldOfView
from drtrt.preprocess.spec import PreprocessSpec

_FOV_WORK_SIDE = 512   # find_fov shrinks its input by an integer factor to a shorter side in [512, 1024)
_FOV_BORDER = 3        # boundary points this close to the image edge lie on the frame, not on the rim
_DARK_SURROUND = 40    # a surround whose brightest channel stays below this is black (a camera's own output)
_CORNER = 0.04         # corner patches, as a fraction of the shorter side, where the surround is read
_CUT_RUN = 0.5         # a flat cut runs at least this long (x the field's radius) along its row or column
_CIRCLE_ASPECT = 0.015  # an ellipse whose radii differ by less than this is a circle


def _corners(image: np.ndarray) -> np.ndarray:
    """The pixels of the four corner patches (N x channels), where a field never reaches."""
    h, w = image.shape[:2]
    c = max(2, round(_CORNER * min(h, w)))
    patches = [image[:c, :c], image[:c, -c:], image[-c:, :c], image[-c:, -c:]]
    return np.concatenate(patches).reshape(4 * c * c, -1)


def _surround(rgb: np.ndarray) -> np.ndarray:
    """Median colour of the four corner patches: the surround."""
    return np.median(_corners(rgb), axis=0)



def _field_level(rgb: np.ndarray) -> np.ndarray:
    """uint8 map that is high on the field and low on the surround."""
    r, g, b = cv2.split(rgb)
    surround = _surround(rgb)
    if surround.max() < _DARK_SURROUND:
        return cv2.blur(cv2.max(cv2.max(r, g), b), (5, 5))   # brightest channel: red in a fundus, robust when dim
    distance = cv2.absdiff(rgb, np.full_like(rgb, surround.astype(np.uint8)))
    return cv2.blur(distance.max(axis=2), (5, 5))



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


def _fit_ellipse(pts: np.ndarray) -> tuple[float, float, float, float, np.ndarray] | None:
    """Axis-aligned ellipse A x² + C y² + D x + E y = 1 through (N, 2) points by least squares,
    refitted twice without outliers; (cx, cy, rx, ry, inliers), or None when the points fit no ellipse."""
    origin = pts.mean(axis=0)
    scale = float(np.abs(pts - origin).max()) or 1.0
    p = (pts - origin) / scale
    keep = np.ones(len(p), bool)
    for _ in range(3):
        x, y = p[keep, 0], p[keep, 1]
        (a, c, d, e), *_ = np.linalg.lstsq(np.column_stack([x * x, y * y, x, y]), np.ones_like(x), rcond=None)
        if a <= 0 or c <= 0:
            return None
        cx, cy = -d / (2 * a), -e / (2 * c)
        k = 1 + a * cx * cx + c * cy * cy
        if k <= 0:
            return None
        rx, ry = math.sqrt(k / a), math.sqrt(k / c)
        resid = (np.hypot((p[:, 0] - cx) / rx, (p[:, 1] - cy) / ry) - 1) * min(rx, ry) * scale
        keep = np.abs(resid) <= max(1.5, 4.5 * float(np.median(np.abs(resid[keep]))))
    return cx * scale + origin[0], cy * scale + origin[1], rx * scale, ry * scale, keep


def _straight_cuts(pts: np.ndarray, box: tuple[int, int, int, int], radius: float) -> tuple[np.ndarray, dict]:
    """Boundary points on flat cuts and where each cut lies: (mask of those points, {side: edge}).

    A cut is a straight edge along the region's outermost rows (or columns). The boundary points
    within 3 px of the extreme row form a band; a circle's band spans about 2 * sqrt(6 * radius)
    along the row, a cut its whole chord, so the band is a cut when it spans ``_CUT_RUN`` x radius
    and 6 x sqrt(radius), densely (a point for at least every other pixel). A soft edge (JPEG,
    a resampled crop) spreads the cut over two or three rows: it lies at their median.
    """
    x, y, w, h = box
    span = max(_CUT_RUN * radius, 6 * math.sqrt(radius))
    on_cut = np.zeros(len(pts), bool)
    cuts = {}
    for side, across, along, extreme, sign in (("top", pts[:, 1], pts[:, 0], y, 1),
                                               ("bottom", pts[:, 1], pts[:, 0], y + h - 1, -1),
                                               ("left", pts[:, 0], pts[:, 1], x, 1),
                                               ("right", pts[:, 0], pts[:, 1], x + w - 1, -1)):
        band = np.abs(across - extreme) <= 3
        if not band.any():
            continue
        extent = float(along[band].max() - along[band].min())
        if extent >= span and np.count_nonzero(band) >= 0.5 * extent:
            line = float(np.median(across[band]))
            on_cut |= np.abs(across - line) <= 2.5
            cuts[side] = line - 0.5 * sign
    return on_cut, cuts



def _shape_mask(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """The ellipse (a circle when rx == ry) drawn with sub-pixel precision."""
    mask = np.zeros(shape, np.uint8)
    centre = (round(cx * 16), round(cy * 16))
    if rx == ry:
        return cv2.circle(mask, centre, round(rx * 16), 1, cv2.FILLED, cv2.LINE_8, 4)
    return cv2.ellipse(mask, centre, (round(rx * 16), round(ry * 16)), 0, 0, 360, 1, cv2.FILLED, cv2.LINE_8, 4)


def _plausible(component: np.ndarray, area: int, cx: float, cy: float, rx: float, ry: float, cuts: dict,
               spec: PreprocessSpec) -> bool:
    """The region is the fitted shape within its cuts, mostly in view, with surround around it."""
    h, w = component.shape
    if not (0 <= cx < w and 0 <= cy < h):
        return False
    shape = _shape_mask((h, w), cx, cy, rx, ry)
    shape_area = cv2.countNonZero(shape)
    within = shape.copy()
    for side, edge in cuts.items():
        line = math.ceil(edge) if side in ("top", "left") else math.floor(edge) + 1
        if side == "top":
            within[:line] = 0
        elif side == "bottom":
            within[line:] = 0
        elif side == "left":
            within[:, :line] = 0
        else:
            within[:, line:] = 0
    within_area = cv2.countNonZero(within)
    overlap = cv2.countNonZero(within & component)
    return (shape_area >= 0.5 * math.pi * rx * ry          # the shape is mostly in view
            and shape_area <= 0.99 * h * w                 # with surround around it (a corner at least)
            and overlap / (area + within_area - overlap) >= spec.fov_min_iou)


def _find_fov(rgb: np.ndarray, spec: PreprocessSpec) -> FieldOfView | None:
    h, w = rgb.shape[:2]
    level = _field_level(rgb)
    otsu, _ = cv2.threshold(level, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    cum = np.cumsum(cv2.calcHist([level], [0], None, [256], [0, 256]).ravel())
    split = cum[int(otsu)]
    background = float(np.searchsorted(cum, split / 2))
    field = float(np.searchsorted(cum, (split + cum[-1]) / 2))
    corners = float(np.median(_corners(level)))
    if background - corners > spec.fov_min_contrast:
        # Otsu split the field itself (bright centre, dim edge): with the surround only in the corners
        # (a field cut on every side) it is too small a class. The corners then say what surround is.
        background = corners
        above = int(corners + spec.fov_min_contrast) + 1
        field = float(np.searchsorted(cum, (cum[above - 1] + cum[-1]) / 2)) if above < 256 else corners
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
    box = cv2.boundingRect(contour)
    on_cut, cuts = _straight_cuts(pts, box, math.sqrt(area / math.pi))
    rim = pts[~on_cut]
    if len(rim) < 32:
        return None
    cx, cy, r, keep = _fit_circle(rim)
    circle_error = _rim_error(rim, cx, cy, r, r)
    fit = _fit_ellipse(rim)
    if fit is not None and abs(fit[3] / fit[2] - 1) >= _CIRCLE_ASPECT and fit[4].mean() >= 0.5 \
            and _rim_error(rim, *fit[:4]) < 0.5 * circle_error:    # squashed: the ellipse fits the rim far better
        ex, ey, rx, ry, _ = fit
        frame_cuts = _frame_cuts(box, (h, w), ex, ey, rx, ry, cuts)
        if _plausible(component, area, ex, ey, rx, ry, frame_cuts, spec):
            return FieldOfView(float(ex), float(ey), float(rx), True, float(ry / rx), **frame_cuts)
    if keep.mean() < 0.5:
        return None
    frame_cuts = _frame_cuts(box, (h, w), cx, cy, r, r, cuts)
    if not _plausible(component, area, cx, cy, r, r, frame_cuts, spec):
        return None
    return FieldOfView(float(cx), float(cy), r, True, **frame_cuts)


def _rim_error(rim: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> float:
    """Median distance (px, approximately) of the rim points from the ellipse."""
    return float(np.median(np.abs(np.hypot((rim[:, 0] - cx) / rx, (rim[:, 1] - cy) / ry) - 1))) * min(rx, ry)



def _frame_cuts(box: tuple[int, int, int, int], shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float,
                cuts: dict) -> dict:
    """Every side where the field ends before its shape does: the flat cuts found inside the frame,
    and the frame itself where the shape runs off it."""
    x, y, w, h = box
    tol_x, tol_y = max(2.0, 0.02 * rx), max(2.0, 0.02 * ry)
    out = dict(cuts)
    for side, reach, extreme, edge in (("top", cy - ry, y, y - 0.5), ("bottom", cy + ry, y + h - 1, y + h - 0.5),
                                       ("left", cx - rx, x, x - 0.5), ("right", cx + rx, x + w - 1, x + w - 0.5)):
        beyond = extreme - reach if side in ("top", "left") else reach - extreme
        if side not in out and beyond > (tol_y if side in ("top", "bottom") else tol_x):
            out[side] = edge
    return out


def find_fov(rgb: np.ndarray, spec: PreprocessSpec | None = None) -> FieldOfView:
    """Field of view of an HxWx3 uint8 RGB image, in that image's pixel coordinates (see the module
    docstring). Returns found=False (see FieldOfView.whole) when there is no plausible field."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, found {rgb.dtype} {rgb.shape}")
    spec = spec or PreprocessSpec()
    h, w = rgb.shape[:2]
    f = max(1, min(h, w) // _FOV_WORK_SIDE)
    work = rgb if f == 1 else cv2.resize(rgb, (w // f, h // f), interpolation=cv2.INTER_AREA)
    fov = _find_fov(work, spec)
    return FieldOfView.whole(h, w) if fov is None else fov.rescale(w / work.shape[1], h / work.shape[0])
