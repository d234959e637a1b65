"""Model outputs → clinical findings (NumPy, OpenCV, Pillow; shared by every backend).

Softmax and argmax live here, not in the exported graph, so they never run in INT8.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np

from drtrt.preprocess import Geometry, OpticDisc
from drtrt.task import TaskSpec

MAX_MASK_PIXELS = 40_000_000   # lesion masks of larger originals are written at a reduced integer scale

# RGB colours per lesion label value for overlays (0 = background).
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


def decode_grade(grade_logits: np.ndarray, task: TaskSpec) -> tuple[np.ndarray, int, bool]:
    """[G] logits → (probabilities, grade, referable DR = grade ≥ ``task.referable_min_grade``)."""
    probs = softmax(grade_logits.astype(np.float64))
    grade = int(np.argmax(probs))
    return probs, grade, task.is_referable(grade)


def lesion_label_map(lesion_logits: np.ndarray, geometry: Geometry) -> np.ndarray:
    """[C,S,S] logits → [S,S] uint8 labels, zero outside the field of view and the image.

    The padded band above/below a cut-off field is black input; whatever the model says
    there is not a finding.
    """
    labels = np.argmax(lesion_logits, axis=0).astype(np.uint8)
    labels[~valid_region(geometry)] = 0
    return labels


def valid_region(geometry: Geometry) -> np.ndarray:
    """Model-space bool mask of pixels inside both the field of view and the original image.

    Computed from the geometry (pixel centres), not by warping an original-size array: the
    latter costs a 12-megapixel allocation per 4288x2848 image."""
    return geometry.fov_mask("model")


def lesion_findings(labels: np.ndarray, geometry: Geometry, task: TaskSpec) -> dict[str, LesionFinding]:
    """Area and count per lesion type from a model-space label map.

    Counting and measuring in model space is exact up to the resize: each model pixel stands
    for (crop width / model side) x (crop height / model side) original pixels.
    """
    step_x, step_y = geometry.steps
    pixel_area = step_x ** 2 if step_x == step_y else step_x * step_y
    fov_px = max(1, int(valid_region(geometry).sum()))
    findings = {}
    for code in task.lesion_codes:
        mask = (labels == task.label(code)).astype(np.uint8)
        n_px = int(mask.sum())
        count = cv2.connectedComponents(mask, connectivity=8)[0] - 1 if n_px else 0
        findings[code] = LesionFinding(code, task.long_name(code), int(round(n_px * pixel_area)),
                                       100.0 * n_px / fov_px, int(count))
    return findings


def labels_to_image(labels: np.ndarray, geometry: Geometry, out_hw: tuple[int, int]) -> np.ndarray:
    """Model-space ``labels`` (size x size) → an (h, w) array covering the whole original image.

    ``out_hw`` is the original size or any uniform reduction of it (a reduced decode, a
    thumbnail); nearest-neighbour, zeros outside the crop. One warp straight to the wanted
    size, so a 12000x9000 original never needs a full-resolution intermediate.
    """
    if labels.shape[:2] != (geometry.size, geometry.size):
        raise ValueError(f"expected a {geometry.size}x{geometry.size} label map, found {labels.shape[:2]}")
    (oh, ow), (h, w) = geometry.original_size, out_hw
    sx, sy = ow / w, oh / h                                  # original pixels per output pixel
    zoom_x, zoom_y = geometry.zooms
    x0, y0 = geometry.crop[:2]
    matrix = np.array([[sx * zoom_x, 0, (0.5 * sx - x0) * zoom_x - 0.5], [0, sy * zoom_y, (0.5 * sy - y0) * zoom_y - 0.5]])
    return cv2.warpAffine(labels, matrix, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def lesion_mask_original(labels: np.ndarray, geometry: Geometry,
                         max_pixels: int = MAX_MASK_PIXELS) -> tuple[np.ndarray, int]:
    """The lesion label map at the original resolution, and its scale (1 = original pixels).

    Originals above ``max_pixels`` get the mask at the smallest integer reduction k that fits
    (scale k: mask pixel (i, j) covers original pixels [k*i, k*(i+1)) x [k*j, k*(j+1))), so memory
    stays bounded on huge inputs.
    """
    oh, ow = geometry.original_size
    k = 1
    while -(-oh // k) * -(-ow // k) > max_pixels:
        k += 1
    return labels_to_image(labels, geometry, (-(-oh // k), -(-ow // k))), k


def encode_label_png(mask: np.ndarray) -> bytes:
    """uint8 label map → palette PNG bytes: pixel values are the label values (0 background,
    then the task's lesion codes in order), shown in the overlay colours by any image viewer."""
    from PIL import Image

    image = Image.fromarray(mask, mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(LESION_COLOURS)] = LESION_COLOURS
    image.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def overlay(rgb: np.ndarray, labels: np.ndarray, geometry: Geometry, task: TaskSpec, alpha: float = 0.6,
            findings: dict[str, LesionFinding] | None = None, legend: bool = False,
            disc: OpticDisc | None = None) -> np.ndarray:
    """Draw model-space ``labels`` onto ``rgb`` (the original image at any uniform scale).

    Lesion pixels are blended with their class colour, the field of view is outlined, the optic
    ``disc`` (when given) is ringed in white with a cross at its centre, and (``legend``) a band
    under the picture names each colour with its lesion count when ``findings`` are given.
    Returns a new RGB uint8 array (taller than ``rgb`` with a legend).
    """
    h, w = rgb.shape[:2]
    full = labels_to_image(labels, geometry, (h, w))
    out = rgb.copy()
    hit = full > 0
    out[hit] = (alpha * LESION_COLOURS[full[hit]] + (1 - alpha) * rgb[hit]).astype(np.uint8)
    if geometry.fov.found:
        s = w / geometry.original_size[1]
        fov = geometry.fov.rescale(s, s)
        centre, axes = (round(fov.cx), round(fov.cy)), (round(fov.radius), round(fov.radius_y))
        cv2.ellipse(out, centre, axes, 0, 0, 360, (90, 90, 90), max(1, w // 600), cv2.LINE_AA)
    if disc is not None:
        s = w / geometry.original_size[1]
        centre, radius, thick = (round(disc.x * s), round(disc.y * s)), max(3, round(disc.radius * s)), max(2, w // 400)
        cv2.circle(out, centre, radius, (255, 255, 255), thick, cv2.LINE_AA)
        cv2.drawMarker(out, centre, (255, 255, 255), cv2.MARKER_CROSS, max(5, radius // 2), thick, cv2.LINE_AA)

    return np.vstack([out, legend_band(w, task, findings)]) if legend else out


def legend_band(width: int, task: TaskSpec, findings: dict[str, LesionFinding] | None = None) -> np.ndarray:
    """A white band naming each lesion colour (and count): the overlay's legend.

    One row of four entries when the width allows, else two rows of two, else one entry per
    row; entries drop the long lesion name when even that does not fit (small images)."""
    scale = float(np.clip(width / 1800, 0.3, 1.5))
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(1.5 * scale))
    box, pad, line = round(22 * scale), round(8 * scale), round(40 * scale)
    codes = task.lesion_codes

    def label(code: str, long: bool) -> str:
        count = f" ({findings[code].count})" if findings and code in findings else ""
        return f"{code} {task.long_name(code)}{count}" if long else f"{code}{count}"

    def entry_width(text: str) -> int:
        return pad + box + pad + cv2.getTextSize(text, font, 0.75 * scale, thick)[0][0] + pad

    for long in (True, False):
        widest = max(entry_width(label(c, long)) for c in codes)
        per_row = next((n for n in (4, 2, 1) if n * widest <= width), 0)
        if per_row:
            break
    per_row = per_row or 1
    rows = -(-len(codes) // per_row)
    band = np.full((rows * line + pad, width, 3), 255, np.uint8)
    for i, code in enumerate(codes):
        x, y = (i % per_row) * (width // per_row) + pad, (i // per_row) * line + pad + (line - box) // 2
        colour = LESION_COLOURS[task.label(code)].tolist()
        cv2.rectangle(band, (x, y), (x + box, y + box), colour, -1)
        cv2.rectangle(band, (x, y), (x + box, y + box), (0, 0, 0), 1)
        cv2.putText(band, label(code, long), (x + box + pad, y + box - max(1, box // 6)), font, 0.75 * scale,
                    (0, 0, 0), thick, cv2.LINE_AA)
    return band
