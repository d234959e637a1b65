"""Is this image gradable? Checked before any grade is given.

An image that fails is reported as "ungradable — retake or refer" with a reason a health
worker can act on, never graded. Thresholds are deliberately conservative and documented in
``docs/quality.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drtrt.preprocess import Preprocessed

# A field of view narrower than this fraction of the model's input side would be upsampled
# more than 2×: too little detail for microaneurysms (a few pixels across at 512).
MIN_FOV_DIAMETER_FRACTION = 0.5


@dataclass(frozen=True)
class QualityVerdict:
    gradable: bool
    reason: str | None = None


def assess_quality(rgb: np.ndarray, pre: Preprocessed) -> QualityVerdict:
    """Checks the decoded image ``rgb`` and its preprocessing result ``pre``."""
    fov = pre.geometry.fov
    if not fov.found:
        return QualityVerdict(False, "no retinal field of view found (not a fundus photo?) — retake")
    need = MIN_FOV_DIAMETER_FRACTION * pre.geometry.size
    if 2 * fov.radius < need:
        return QualityVerdict(False, f"field of view too small ({2 * fov.radius:.0f} px across, "
                                     f"need ≥ {need:.0f}) — retake closer or at higher resolution")
    return QualityVerdict(True)
