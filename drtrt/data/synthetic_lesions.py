"""The lesions of a synthetic fundus picture: painted into it, with their masks, as the DR grade asks.

====== ==============================================================================
grade  lesions
====== ==============================================================================
0      none
1      a few microaneurysms (MA)
2      MA, haemorrhages (HE), hard exudates (EX)
3      many HE, soft exudates (SE), EX, MA
4      as 3, plus abnormal new vessels near the disc (drawn, not a mask class)
====== ==============================================================================

Sizes are proportional to the field radius, so a microaneurysm stays 2-4 pixels wide once
the field is resized to a 512-pixel model input, whatever the generated image size. Apart from
:mod:`.synthetic_fundus`, which paints the retina they lie on: the lesions are what the labels
(masks, grade, macular-edema risk) are made of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from drtrt.data.masks import LABEL_PRIORITY
from drtrt.data.synthetic_geometry import FundusGeometry

_DARK_LESION_TINT = {
    "MA": np.array([0.50, 0.28, 0.30], np.float32),
    "HE": np.array([0.55, 0.30, 0.33], np.float32),
}
_EXUDATE_RGB = np.array([1.0, 0.86, 0.34], np.float32)
_COTTON_WOOL_RGB = np.array([0.96, 0.86, 0.68], np.float32)


def paint_lesions(
    rng: np.random.Generator, image: np.ndarray, geo: FundusGeometry, grade: int, rho: np.ndarray,
    exudates_at: Sequence[tuple[float, float]] = (),
) -> dict[str, np.ndarray]:
    """Draw the lesions the grade calls for into ``image`` and return their masks.

    exudates_at: more hard-exudate clusters, whatever the grade, centred (dx, dy) disc diameters
    from the fovea (+x to the image's right, +y down): ``((0, 0),)`` puts exudates on the fovea,
    a maculopathy at any grade (the random draws for them come after the grade's, so a picture
    without them is the same as before).
    """
    height, width = image.shape[:2]
    r = geo.radius
    canvases: dict[str, np.ndarray] = {}

    def canvas(code: str) -> np.ndarray:
        return canvases.setdefault(code, np.zeros((height, width), np.uint8))

    if grade >= 1:
        count = int(rng.integers(2, 7)) if grade == 1 else int(rng.integers(6, 16)) if grade == 2 else int(rng.integers(12, 30))
        for x, y in _lesion_sites(rng, geo, count):
            _circle(canvas("MA"), x, y, max(1.0, r * rng.uniform(0.0045, 0.008)))
    if grade >= 2:
        count = int(rng.integers(3, 9)) if grade == 2 else int(rng.integers(12, 26))
        for x, y in _lesion_sites(rng, geo, count):
            _haemorrhage(rng, canvas("HE"), x, y, r)
        clusters = int(rng.integers(1, 4)) if grade == 2 else int(rng.integers(2, 6))
        near_fovea = rng.random() < (0.4 if grade == 2 else 0.6)
        for i, (x, y) in enumerate(_lesion_sites(rng, geo, clusters, around_fovea=True)):
            if i == 0 and near_fovea:
                offset = geo.disc_radius * rng.uniform(0.5, 1.6)
                direction = rng.uniform(0, 2 * math.pi)
                x, y = geo.fovea_x + offset * math.cos(direction), geo.fovea_y + offset * math.sin(direction)
            _exudate_cluster(rng, canvas("EX"), x, y, r, large=grade >= 3)
    if grade >= 3:
        for x, y in _lesion_sites(rng, geo, int(rng.integers(1, 5)), around_disc=True):
            _cotton_wool_spot(rng, canvas("SE"), x, y, r)
    dd = 2 * geo.disc_radius
    for dx, dy in exudates_at:
        _exudate_cluster(rng, canvas("EX"), geo.fovea_x + dx * dd, geo.fovea_y + dy * dd, r, large=False)

    field = rho < 1.0
    masks = {code: (canvases[code] > 0) & field for code in LABEL_PRIORITY if code in canvases}
    soft = max(0.5, 0.002 * r)
    for code, mask in masks.items():  # painted in label priority, so what shows on top is what the label map says
        if code == "EX":
            alpha = _soft_edges(mask, soft) * 0.92
            image[:] = image * (1.0 - alpha) + rng.uniform(0.85, 1.0) * _EXUDATE_RGB * alpha
        elif code == "SE":
            fuzzy = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.012 * r)[..., None]
            alpha = np.clip(fuzzy * 1.3, 0.0, 1.0) * rng.uniform(0.55, 0.75)
            image[:] = image * (1.0 - alpha) + _COTTON_WOOL_RGB * alpha
        else:
            image *= 1.0 - _soft_edges(mask, soft) * (1.0 - _DARK_LESION_TINT[code])
    return {code: mask for code, mask in masks.items() if mask.any()}


def _soft_edges(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Opacity ``(H, W, 1)``: 1 on the mask, fading out just beyond it."""
    solid = mask.astype(np.float32)
    return np.maximum(solid, cv2.GaussianBlur(solid, (0, 0), sigma))[..., None]


def _lesion_sites(
    rng: np.random.Generator, geo: FundusGeometry, count: int, around_fovea: bool = False, around_disc: bool = False
) -> list[tuple[float, float]]:
    """``count`` lesion centres inside the field, off the optic disc.

    By default uniform over the field; ``around_fovea`` favours the posterior pole (where
    exudates gather), ``around_disc`` the area around the disc (where cotton-wool spots sit
    along the arcades).
    """
    sites: list[tuple[float, float]] = []
    while len(sites) < count:
        n = 4 * count + 8
        if around_fovea or around_disc:
            cx, cy = (geo.fovea_x, geo.fovea_y) if around_fovea else (geo.disc_x, geo.disc_y)
            dist = geo.radius * rng.uniform(0.1 if around_disc else 0.0, 0.55, n)
            theta = rng.uniform(0, 2 * math.pi, n)
            xs, ys = cx + dist * np.cos(theta), cy + dist * np.sin(theta)
        else:
            dist = geo.radius * np.sqrt(rng.random(n))
            theta = rng.uniform(0, 2 * math.pi, n)
            xs, ys = geo.cx + dist * np.cos(theta), geo.cy + dist * np.sin(theta)
        off_disc = (xs - geo.disc_x) ** 2 + (ys - geo.disc_y) ** 2 > (1.4 * geo.disc_radius) ** 2
        ok = geo.inside(xs, ys, 0.88) & off_disc
        sites += list(zip(xs[ok].tolist(), ys[ok].tolist()))
    return sites[:count]


def _haemorrhage(rng: np.random.Generator, canvas: np.ndarray, x: float, y: float, r: float) -> None:
    """A dot/blot haemorrhage (a few overlapping ellipses) or, sometimes, an elongated flame."""
    size = r * rng.uniform(0.01, 0.028)
    if rng.random() < 0.25:
        _ellipse(canvas, x, y, size * rng.uniform(1.8, 2.6), size * 0.45, rng.uniform(0, 180))
        return
    for _ in range(int(rng.integers(1, 4))):
        dx, dy = rng.normal(0.0, 0.45 * size, 2)
        _ellipse(canvas, x + dx, y + dy, size * rng.uniform(0.6, 1.0), size * rng.uniform(0.45, 0.9), rng.uniform(0, 180))


def _cotton_wool_spot(rng: np.random.Generator, canvas: np.ndarray, x: float, y: float, r: float) -> None:
    """An irregular pale patch: two or three overlapping ellipses."""
    size = r * rng.uniform(0.025, 0.045)
    for _ in range(int(rng.integers(2, 4))):
        dx, dy = rng.normal(0.0, 0.5 * size, 2)
        _ellipse(canvas, x + dx, y + dy, size * rng.uniform(0.7, 1.1), size * rng.uniform(0.4, 0.8), rng.uniform(0, 180))


def _exudate_cluster(rng: np.random.Generator, canvas: np.ndarray, x: float, y: float, r: float, large: bool) -> None:
    """A cluster of small bright deposits, with an occasional larger plaque."""
    spread = r * rng.uniform(0.02, 0.06)
    count = int(rng.integers(5, 22))
    offsets = rng.normal(0.0, spread, (count, 2))
    radii = r * rng.uniform(0.004, 0.012, count)
    for (dx, dy), radius in zip(offsets, radii):
        _circle(canvas, x + dx, y + dy, max(1.0, radius))
    if large and rng.random() < 0.5:
        plaque = r * rng.uniform(0.012, 0.025)
        _ellipse(canvas, x, y, plaque, plaque * rng.uniform(0.5, 1.0), rng.uniform(0, 180))


def _circle(canvas: np.ndarray, x: float, y: float, radius: float) -> None:
    """Filled circle with sub-pixel centre and radius."""
    cv2.circle(canvas, (round(x * 16), round(y * 16)), round(radius * 16), 255, -1, cv2.LINE_8, 4)


def _ellipse(canvas: np.ndarray, x: float, y: float, a: float, b: float, angle: float) -> None:
    """Filled ellipse with sub-pixel centre and axes."""
    cv2.ellipse(canvas, (round(x * 16), round(y * 16)), (round(a * 16), round(b * 16)), angle, 0, 360, 255, -1, cv2.LINE_8, 4)


def edema_risk(exudates: np.ndarray | None, geo: FundusGeometry, xx: np.ndarray, yy: np.ndarray) -> int:
    """IDRiD's risk of macular edema: 0 no exudates, 1 exudates, 2 exudates within one disc diameter of the fovea."""
    if exudates is None:
        return 0
    near = (xx - geo.fovea_x) ** 2 + (yy - geo.fovea_y) ** 2 <= (2 * geo.disc_radius) ** 2
    return 2 if (exudates & near).any() else 1
