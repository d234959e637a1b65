"""Where things lie in one synthetic fundus picture: the field of view, the optic disc, the fovea.

Apart from the renderer because both the picture (:mod:`.synthetic_fundus`) and its lesions
(:mod:`.synthetic_lesions`) are placed by it. Drawn first from the picture's generator, so a test
that must know where the disc was drawn gets it by drawing again from a generator in that state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FundusGeometry:
    """Where things are in one synthetic picture (pixels)."""

    cx: float
    cy: float
    radius: float
    side: int  # +1: optic disc right of centre, -1: left
    disc_x: float
    disc_y: float
    disc_radius: float
    fovea_x: float
    fovea_y: float

    def inside(self, x: np.ndarray, y: np.ndarray, margin: float) -> np.ndarray:
        """Points within ``margin * radius`` of the field centre."""
        return (x - self.cx) ** 2 + (y - self.cy) ** 2 < (margin * self.radius) ** 2


def sample_geometry(rng: np.random.Generator, width: int, height: int) -> FundusGeometry:
    """Field of view, optic disc and fovea positions for one picture."""
    if rng.random() < 0.8:  # IDRiD-like: field wider than the frame is tall
        radius = height * rng.uniform(0.54, 0.62)
    else:
        radius = height * rng.uniform(0.43, 0.48)
    radius = min(radius, 0.48 * width)
    cx = width / 2 + rng.uniform(-0.02, 0.02) * width
    jitter = 0.02 * height if radius >= height / 2 else min(0.02 * height, height / 2 - radius - 1)
    cy = height / 2 + rng.uniform(-1.0, 1.0) * jitter
    side = 1 if rng.random() < 0.5 else -1
    disc_radius = radius * rng.uniform(0.12, 0.15)
    disc_x = cx + side * radius * rng.uniform(0.55, 0.72)
    disc_y = cy + radius * rng.uniform(-0.08, 0.08)
    fovea_x = disc_x - side * radius * rng.uniform(0.66, 0.78)
    fovea_y = disc_y + radius * rng.uniform(0.0, 0.1)
    return FundusGeometry(cx, cy, radius, side, disc_x, disc_y, disc_radius, fovea_x, fovea_y)
