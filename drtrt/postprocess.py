"""Model outputs → clinical findings (NumPy + OpenCV only; shared by every backend).

Softmax and argmax live here, not in the exported graph, so they never run in INT8.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from drtrt import LESION_LONG_NAMES, LESION_NAMES, REFERABLE_MIN_GRADE
from drtrt.preprocess import Geometry

# BGR-free RGB colours per lesion class for overlays (index = class id).
LESION_COLOURS = np.array([(0, 0, 0), (255, 230, 0), (255, 255, 255), (0, 255, 255), (255, 0, 160)], np.uint8)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


@dataclass(frozen=True)
class LesionFinding:
    code: str
    name: str
    area_px: int            # in original-image pixels
    area_fov_pct: float     # % of the field of view
    count: int              # connected components

    def to_dict(self) -> dict:
        return {"name": self.name, "area_px": self.area_px, "area_fov_pct": round(self.area_fov_pct, 4),
                "count": self.count}


def decode_grade(grade_logits: np.ndarray) -> tuple[np.ndarray, int, bool]:
    """[5] logits → (probabilities, grade, referable DR = grade ≥ 2)."""
    probs = softmax(grade_logits.astype(np.float64))
    grade = int(np.argmax(probs))
    return probs, grade, grade >= REFERABLE_MIN_GRADE


def lesion_label_map(lesion_logits: np.ndarray, geometry: Geometry) -> np.ndarray:
    """[C,S,S] logits → [S,S] uint8 labels, zero outside the field of view and the image.

    The padded band above/below a cut-off field is black input; whatever the model says
    there is not a finding.
    """
    labels = np.argmax(lesion_logits, axis=0).astype(np.uint8)
    labels[~valid_region(geometry)] = 0
    return labels


def valid_region(geometry: Geometry) -> np.ndarray:
    """Model-space bool mask of pixels inside both the field of view and the original image."""
    h, w = geometry.original_size
    inside = geometry.to_model(np.ones((h, w), np.uint8), interpolation="nearest").astype(bool)
    return inside & geometry.fov_mask("model")


def lesion_findings(labels: np.ndarray, geometry: Geometry) -> dict[str, LesionFinding]:
    """Area and count per lesion type from a model-space label map.

    Counting and measuring in model space is exact up to the resize: each model pixel stands
    for (crop side / model side)² original pixels.
    """
    x0, _, x1, _ = geometry.crop
    pixel_area = ((x1 - x0) / geometry.size) ** 2
    fov_px = max(1, int(valid_region(geometry).sum()))
    findings = {}
    for cls in range(1, len(LESION_NAMES)):
        mask = (labels == cls).astype(np.uint8)
        n_px = int(mask.sum())
        count = cv2.connectedComponents(mask, connectivity=8)[0] - 1 if n_px else 0
        code = LESION_NAMES[cls]
        findings[code] = LesionFinding(code, LESION_LONG_NAMES[code], int(round(n_px * pixel_area)),
                                       100.0 * n_px / fov_px, int(count))
    return findings


def overlay(rgb: np.ndarray, labels: np.ndarray, geometry: Geometry, alpha: float = 0.6) -> np.ndarray:
    """Draw model-space ``labels`` onto ``rgb`` (the original image at any uniform scale)."""
    h, w = rgb.shape[:2]
    full = geometry.to_original(labels, interpolation="nearest")
    if full.shape[:2] != (h, w):
        full = cv2.resize(full, (w, h), interpolation=cv2.INTER_NEAREST)
    out = rgb.copy()
    hit = full > 0
    out[hit] = (alpha * LESION_COLOURS[full[hit]] + (1 - alpha) * rgb[hit]).astype(np.uint8)
    return out
