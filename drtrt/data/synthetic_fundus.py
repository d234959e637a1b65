"""Synthetic fundus photographs with lesion masks: one picture from one random generator.

The pictures are not meant to fool an ophthalmologist; they exercise a pipeline end to end
with data that behaves like IDRiD where it matters: a 3:2 frame with a black surround and a
circular field of view usually cut off at the top and bottom, an orange-red retina with
uneven illumination, vessels branching from a bright optic disc, a darker macula, JPEG
texture, and lesions whose presence follows the DR grade (:mod:`.synthetic_lesions`).
Every random draw comes from the one generator, in a fixed order, so the same generator state
gives the same picture, byte for byte; :mod:`.synth` writes a whole data set of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from drtrt.data.idrid import NUM_GRADES
from drtrt.data.synthetic_geometry import FundusGeometry, sample_geometry
from drtrt.data.synthetic_lesions import edema_risk, paint_lesions
from drtrt.errors import ConfigError

MIN_SIZE = 64
"""Smallest picture width (height: half of it) the renderer draws."""
_MAX_VESSELS = 160
_VESSEL_TAPER = 0.03
"""Width lost per step, in pixels at a 300-pixel field radius."""
_DISC_RGB = np.array([1.0, 0.80, 0.50], np.float32)
_CUP_RGB = np.array([1.0, 0.93, 0.78], np.float32)
_VEIN_ABSORPTION = np.array([0.32, 0.62, 0.58], np.float32)
_ARTERY_ABSORPTION = np.array([0.18, 0.42, 0.38], np.float32)


class _Vessel(NamedTuple):
    """A vessel to grow: start point and direction (radians), total bend, width (pixels), wiggle per step."""

    kind: str
    x: float
    y: float
    angle: float
    turn: float
    width: float
    wiggle: float


@dataclass(frozen=True)
class SyntheticFundus:
    """A rendered picture with what a writer needs besides pixels and masks."""

    image: np.ndarray
    masks: dict[str, np.ndarray]
    edema_risk: int
    geometry: FundusGeometry      # where the field, the disc and the fovea were drawn


def render_fundus(
    rng: np.random.Generator, width: int, height: int, grade: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one synthetic fundus photograph.

    Args:
        rng: source of all randomness (same state -> same picture).
        width, height: frame size in pixels.
        grade: DR grade 0-4; decides which lesions appear (see :mod:`.synthetic_lesions`).

    Returns:
        ``(image, masks)``: RGB ``uint8`` of shape ``(height, width, 3)`` and
        ``{lesion code: bool (height, width) mask}`` for the lesion types present (never an
        empty mask). Lesions lie inside the field of view.
    """
    fundus = render_picture(rng, width, height, grade)
    return fundus.image, fundus.masks


def render_picture(rng: np.random.Generator, width: int, height: int, grade: int,
                   exudates_at: Sequence[tuple[float, float]] = ()) -> SyntheticFundus:
    """Render a picture, its lesion masks, its macular-edema risk and where its fovea is.

    The fovea (a dark macula with a darker centre) lies 2.2-3.3 disc diameters temporal to the
    disc and up to 0.4 DD below it (:func:`.synthetic_geometry.sample_geometry`), as in an eye;
    ``exudates_at`` adds hard-exudate clusters at offsets from it, in disc diameters
    (:func:`.synthetic_lesions.paint_lesions`; ``((0, 0),)``: on the fovea, M1 at any grade).
    """
    if not 0 <= grade < NUM_GRADES:
        raise ConfigError(f"grade must be 0-{NUM_GRADES - 1}, got {grade}")
    if width < MIN_SIZE or height < MIN_SIZE // 2:
        raise ConfigError(f"image must be at least {MIN_SIZE}x{MIN_SIZE // 2} pixels, got {width}x{height}")
    geo = sample_geometry(rng, width, height)
    xx = np.arange(width, dtype=np.float32)[None, :]  # broadcast with yy to (height, width)
    yy = np.arange(height, dtype=np.float32)[:, None]
    rho = np.sqrt((xx - geo.cx) ** 2 + (yy - geo.cy) ** 2) / geo.radius

    image = _retina(rng, geo, xx, yy, rho)
    _draw_optic_disc(image, geo, xx, yy)
    _draw_vessels(rng, image, geo, proliferative=grade == 4)
    masks = paint_lesions(rng, image, geo, grade, rho, exudates_at)

    edge = np.clip((1.0 - rho) * geo.radius + 0.5, 0.0, 1.0)
    image *= edge[..., None]
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(0.012)
    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return SyntheticFundus(pixels, masks, edema_risk(masks.get("EX"), geo, xx, yy), geo)


def _retina(rng: np.random.Generator, geo: FundusGeometry, xx: np.ndarray, yy: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Background fundus colour: pigmentation, vignetting, uneven light, macula, texture."""
    height, width = rho.shape
    base = np.array([rng.uniform(0.66, 0.82), rng.uniform(0.24, 0.36), rng.uniform(0.04, 0.12)], np.float32)
    vignette = 1.0 - rng.uniform(0.35, 0.55) * np.minimum(rho, 1.0) ** rng.uniform(2.0, 3.0)
    tilt = rng.uniform(-0.12, 0.12) * (xx - geo.cx) / geo.radius + rng.uniform(-0.08, 0.08) * (yy - geo.cy) / geo.radius
    light = vignette * np.exp(tilt + _smooth_noise(rng, (height, width), 6, 0.08))
    macula = np.exp(-((xx - geo.fovea_x) ** 2 + (yy - geo.fovea_y) ** 2) / (2 * (0.2 * geo.radius) ** 2))
    fovea = np.exp(-((xx - geo.fovea_x) ** 2 + (yy - geo.fovea_y) ** 2) / (2 * (0.045 * geo.radius) ** 2))
    shade = light * (1.0 - rng.uniform(0.2, 0.35) * macula - 0.15 * fovea)
    texture = np.exp(_smooth_noise(rng, (height, width), max(8, width // 6), 0.03))
    image = base * (shade * texture)[..., None]
    image[..., 0] *= 1.0 - 0.06 * macula  # the macula looks browner, not only darker
    return image.astype(np.float32, copy=False)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, sigma: float) -> np.ndarray:
    """Low-frequency Gaussian noise: a coarse random grid upsampled with bicubic interpolation."""
    height, width = shape
    grid_w = max(2, cells)
    grid_h = max(2, round(cells * height / width))
    grid = rng.normal(0.0, sigma, (grid_h, grid_w)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _draw_optic_disc(image: np.ndarray, geo: FundusGeometry, xx: np.ndarray, yy: np.ndarray) -> None:
    """Bright yellowish disc with a paler cup and a soft rim, blended in place."""
    r = geo.disc_radius
    x0, x1 = max(int(geo.disc_x - 2 * r), 0), min(int(geo.disc_x + 2 * r) + 1, image.shape[1])
    y0, y1 = max(int(geo.disc_y - 2 * r), 0), min(int(geo.disc_y + 2 * r) + 1, image.shape[0])
    dx = (xx[:, x0:x1] - geo.disc_x) / r
    dy = (yy[y0:y1, :] - geo.disc_y) / (1.1 * r)
    dist = np.sqrt(dx * dx + dy * dy)
    disc = np.clip((1.0 - dist) / 0.2, 0.0, 1.0)[..., None]
    cup = np.clip((0.45 - dist) / 0.2, 0.0, 1.0)[..., None]
    halo = np.exp(-(dist**2) / (2 * 0.8**2))[..., None] * 0.25
    patch = image[y0:y1, x0:x1]
    patch *= 1.0 + halo
    patch[:] = patch * (1 - disc) + _DISC_RGB * disc
    patch[:] = patch * (1 - cup) + _CUP_RGB * cup


def _draw_vessels(rng: np.random.Generator, image: np.ndarray, geo: FundusGeometry, proliferative: bool) -> None:
    """Arteries and veins branching from the disc (and new vessels for grade 4), darkening in place."""
    height, width = image.shape[:2]
    scale = geo.radius / 300.0
    layers = {"vein": np.zeros((height, width), np.uint8), "artery": np.zeros((height, width), np.uint8)}
    temporal = math.pi if geo.side > 0 else 0.0
    nasal = temporal + math.pi
    stack: list[_Vessel] = []
    for kind, trunk in (("vein", 4.2 * scale), ("artery", 3.2 * scale)):
        for up in (-1, 1):  # image y grows downwards: up = -1 is the superior arcade
            bend = up * geo.side
            stack.append(
                _Vessel(kind, geo.disc_x, geo.disc_y, temporal - bend * math.radians(rng.uniform(70, 90)),
                        bend * math.radians(rng.uniform(55, 75)), trunk * rng.uniform(0.9, 1.1), 0.025)
            )
            stack.append(
                _Vessel(kind, geo.disc_x, geo.disc_y, nasal + bend * math.radians(rng.uniform(20, 65)),
                        rng.normal(0.0, 0.3), 0.65 * trunk * rng.uniform(0.85, 1.1), 0.04)
            )
        stack.append(
            _Vessel(kind, geo.disc_x, geo.disc_y, temporal + rng.uniform(-0.25, 0.25), 0.0, 0.3 * trunk, 0.05)
        )
    drawn = 0
    while stack and drawn < _MAX_VESSELS:
        stack += _grow_vessel(rng, layers[stack[-1].kind], geo, stack.pop())
        drawn += 1
    if proliferative:
        _draw_new_vessels(rng, layers["vein"], geo)
    blur = max(0.5, 0.6 * scale)
    for kind, absorption in (("vein", _VEIN_ABSORPTION), ("artery", _ARTERY_ABSORPTION)):
        density = cv2.GaussianBlur(layers[kind].astype(np.float32) / 255.0, (0, 0), blur)
        image *= 1.0 - density[..., None] * absorption


def _grow_vessel(rng: np.random.Generator, layer: np.ndarray, geo: FundusGeometry, vessel: _Vessel) -> list[_Vessel]:
    """Draw one vessel as a tapering random walk and return the branches it spawns.

    The walk stops at the edge of the field, at the foveal avascular zone, or where the
    vessel has thinned out; the width falls linearly, so thin branches are short.
    """
    step = 0.02 * geo.radius
    steps = int(2.2 / 0.02)
    decay = 0.03
    bends = vessel.turn * decay * (1 - decay) ** np.arange(steps) + rng.normal(0.0, vessel.wiggle, steps)
    angles = vessel.angle + np.cumsum(bends)
    xs = vessel.x + np.cumsum(step * np.cos(angles))
    ys = vessel.y + np.cumsum(step * np.sin(angles))
    widths = vessel.width - _VESSEL_TAPER * (geo.radius / 300.0) * np.arange(1, steps + 1)
    off_fovea = (xs - geo.fovea_x) ** 2 + (ys - geo.fovea_y) ** 2 > (0.07 * geo.radius) ** 2
    keep = geo.inside(xs, ys, 1.02) & off_fovea & (widths > 0.3)
    end = steps if keep.all() else int(np.argmin(keep)) + 1
    points = np.column_stack([np.r_[vessel.x, xs[:end]], np.r_[vessel.y, ys[:end]]])
    for i in range(0, end, 4):  # short chunks of constant width
        chunk = np.round(points[i : i + 5] * 16).astype(np.int32)
        if len(chunk) < 2:
            break
        width = max(widths[i], 0.3)
        cv2.polylines(layer, [chunk], False, int(255 * min(width, 1.0)), max(1, round(width)), cv2.LINE_AA, 4)
    branch_at = np.flatnonzero(rng.random(end) < 0.08)
    branch_at = branch_at[(branch_at > 3) & (widths[branch_at] > 0.8)]
    sides = rng.choice((-1.0, 1.0), len(branch_at))
    spreads = rng.uniform(0.5, 1.1, len(branch_at))
    shrink = rng.uniform(0.5, 0.75, len(branch_at))
    turns = rng.normal(0.0, 0.5, len(branch_at))
    return [
        _Vessel(vessel.kind, xs[i], ys[i], angles[i] + side * spread, turn, widths[i] * k, 0.05)
        for i, side, spread, k, turn in zip(branch_at, sides, spreads, shrink, turns)
    ]


def _draw_new_vessels(rng: np.random.Generator, layer: np.ndarray, geo: FundusGeometry) -> None:
    """Tangled thin vessels on and around the disc (proliferative DR)."""
    step = 0.012 * geo.radius
    width = max(1, round(geo.radius / 300.0))
    for _ in range(int(rng.integers(5, 10))):
        angle0 = rng.uniform(0, 2 * math.pi)
        dist = geo.disc_radius * rng.uniform(0.6, 1.8)
        x, y = geo.disc_x + dist * math.cos(angle0), geo.disc_y + dist * math.sin(angle0)
        angles = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0.0, 0.6, int(rng.integers(15, 35))))
        xs = x + np.cumsum(step * np.cos(angles))
        ys = y + np.cumsum(step * np.sin(angles))
        inside = geo.inside(xs, ys, 0.98)
        points = np.round(np.column_stack([xs[inside], ys[inside]]) * 16).astype(np.int32)
        cv2.polylines(layer, [points], False, 200, width, cv2.LINE_AA, 4)
