"""Model outputs → clinical findings (NumPy, OpenCV; shared by every backend).

Softmax and argmax live here, not in the exported graph, so they never run in INT8; so does the
grade head's temperature, when the model's metadata carries one (``drtrt.calibration``).
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from drtrt.preprocess import Geometry, OpticDisc
from drtrt.task import TaskSpec

MAX_MASK_PIXELS = 40_000_000   # lesion masks of larger originals are written at a reduced integer scale

# RGB colours per lesion label value for overlays (0 = background): EX, SE, MA, HE from the Okabe–Ito
# palette (Okabe & Ito 2008, designed to stay apart for protan, deutan and tritan viewers): orange, white,
# sky blue, and its blue darkened (0,114,178 → 0,90,180) so it stays apart from sky blue for a tritan
# viewer. The optic disc ring is black, a colour of its own. Each pair of the five differs by CIEDE2000
# ΔE ≥ 25 under protanopia, deuteranopia and tritanopia (Machado 2009), and each stands out from the
# retina's orange-red (tests/station/test_station_colours.py measures it).
LESION_COLOURS = np.array([(0, 0, 0), (230, 159, 0), (255, 255, 255), (86, 180, 233), (0, 90, 180)], np.uint8)
DISC_COLOUR = (0, 0, 0)
LESION_FILL_ALPHA = 0.25          # a light fill, so the lesion under it stays visible; its outline is opaque


def lesion_outline(on: np.ndarray, width: int = 2) -> np.ndarray:
    """The ring of pixels just outside the ``on`` region (``width`` px): a lesion's outline that covers
    none of the lesion itself."""
    if not on.any():
        return np.zeros_like(on, bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(on.astype(np.uint8), kernel).astype(bool) & ~on


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


def decode_grade(grade_logits: np.ndarray, task: TaskSpec, temperature: float = 1.0) -> tuple[np.ndarray, int, bool]:
    """[G] logits → (probabilities, grade, referable DR = grade ≥ ``task.referable_min_grade``).

    ``temperature``: the model's grade calibration (``drtrt.calibration``): probabilities are
    softmax(logits / T). T > 0 changes no argmax: the grade is the same with or without it."""
    probs = softmax(grade_logits.astype(np.float64) / temperature)
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
    matrix = np.array([[sx * zoom_x, 0, (0.5 * sx - x0) * zoom_x - 0.5],
                       [0, sy * zoom_y, (0.5 * sy - y0) * zoom_y - 0.5]])
    return cv2.warpAffine(labels, matrix, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def lesion_mask_original(labels: np.ndarray, geometry: Geometry,
                         max_pixels: int = MAX_MASK_PIXELS) -> tuple[np.ndarray, int]:
    """The lesion label map at the original resolution, and its scale (1 = original pixels).

    Originals above ``max_pixels`` get the mask at the smallest integer reduction k that fits
    (scale k: mask pixel (i, j) covers original pixels [k*i, k*(i+1)) x [k*j, k*(j+1))), so memory
    stays bounded on huge inputs. Nearest neighbour: each mask pixel takes the label of the model
    pixel under its centre, zero outside the crop (what :func:`lesion_mask_png` encodes).
    """
    rows, index, k = _lesion_mask_rows(labels, geometry, max_pixels)
    return rows[index], k


def lesion_mask_png(labels: np.ndarray, geometry: Geometry, max_pixels: int = MAX_MASK_PIXELS,
                    level: int = 1) -> tuple[bytes, int]:
    """``encode_label_png(mask)`` of ``(mask, scale) = lesion_mask_original(labels, geometry)``, the
    same bytes, without making the full-resolution array: each mask row is one of the model's
    rows stretched, so only those are made (a 4288x2848 original: 0.5 of 12 megapixels)."""
    rows, index, k = _lesion_mask_rows(labels, geometry, max_pixels)
    moved = np.flatnonzero(index[1:] != index[:-1]) + 1
    words = np.zeros((len(rows), -(-rows.shape[1] // 8)), np.uint64)    # rows compared 8 bytes at a time
    words.view(np.uint8)[:, :rows.shape[1]] = rows
    alike = (words[index[moved]] == words[index[moved - 1]]).all(axis=1)  # another model row, same labels
    starts = [0, *moved[~alike].tolist()]
    return _label_png(rows.shape[1], len(index), [rows[index[y]] for y in starts], starts, level), k


def _lesion_mask_rows(labels: np.ndarray, geometry: Geometry, max_pixels: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The mask at scale k as ``rows[index]``: ``rows`` the model rows resampled to the mask width
    plus a last row of zeros, ``index`` the row of ``rows`` under each mask row's centre (-1 outside
    the crop: the zeros)."""
    size = geometry.size
    if labels.shape[:2] != (size, size):
        raise ValueError(f"expected a {size}x{size} label map, found {labels.shape[:2]}")
    oh, ow = geometry.original_size
    k = 1
    while -(-oh // k) * -(-ow // k) > max_pixels:
        k += 1
    zoom_x, zoom_y = geometry.zooms
    x0, y0 = geometry.crop[:2]

    def under(n: int, start: int, zoom: float) -> np.ndarray:       # model pixel under each centre, or -1
        index = np.floor((k * (np.arange(n) + 0.5) - start) * zoom).astype(np.intp)
        index[(index < 0) | (index >= size)] = -1
        return index

    padded = np.zeros((size + 1, size + 1), np.uint8)                  # index -1 reads the zero row/column
    padded[:size, :size] = labels
    return padded[:, under(-(-ow // k), x0, zoom_x)], under(-(-oh // k), y0, zoom_y), k


def encode_label_png(mask: np.ndarray, level: int = 1) -> bytes:
    """uint8 label map → palette PNG bytes: pixel values are the label values (0 background,
    then the task's lesion codes in order), shown in the overlay colours by any image viewer."""
    if mask.dtype != np.uint8 or mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"expected a non-empty 2-D uint8 label map, found {mask.dtype} {mask.shape}")
    starts = [0, *(np.flatnonzero((mask[1:] != mask[:-1]).any(axis=1)) + 1).tolist()]
    return _label_png(mask.shape[1], mask.shape[0], [mask[y] for y in starts], starts, level)


def _label_png(width: int, height: int, rows: list[np.ndarray], starts: list[int], level: int) -> bytes:
    """An 8-bit palette PNG whose row ``y`` is ``rows[i]`` for ``starts[i] <= y < starts[i + 1]``.

    Written here rather than by Pillow or OpenCV because of what lesion masks are: a model-space
    map upsampled by nearest neighbour, so most rows repeat the row above (about 5 in 6 for a
    4288x2848 original of a 512-px model). Both libraries push all 12 M bytes through deflate
    (20-80 ms per mask on one core); here a changed row is compressed once, and each run of
    repeated rows (PNG "Up" filter: all zeros) is a deflate segment made once per width and run
    length and spliced in after a full flush, which the format allows (RFC 1950/1951: a full
    flush leaves no back-reference across it; each segment ends byte-aligned, none is final).
    The file is an ordinary PNG that Pillow, OpenCV and browsers decode.
    """
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)       # raw deflate: the zlib wrapper is written here
    parts, a, b = [b"\x78\x01"], 1, 0                            # zlib header; Adler-32 kept as its two sums
    for row, start, end in zip(rows, starts, [*starts[1:], height]):
        line = b"\x00" + row.tobytes()                          # filter None
        parts.append(deflate.compress(line))
        adler = zlib.adler32(line, (b << 16) | a)
        a, b = adler & 0xFFFF, adler >> 16
        repeats = end - start - 1
        if repeats:
            parts.append(deflate.flush(zlib.Z_FULL_FLUSH))
            while repeats:
                n = min(repeats, _UP_RUN)
                parts.append(_up_rows(width, n, level))
                # Adler-32 of n rows "\x02" + width zeros: A grows by 2 a row, B by (width + 1) * A after each
                b = (b + (width + 1) * (n * a + n * (n + 1))) % 65521
                a = (a + 2 * n) % 65521
                repeats -= n
    parts.append(deflate.flush(zlib.Z_FINISH))
    parts.append(struct.pack(">I", (b << 16) | a))
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(LESION_COLOURS)] = LESION_COLOURS
    return b"".join([b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)),
                     _png_chunk(b"PLTE", palette.tobytes()), _png_chunk(b"IDAT", b"".join(parts)),
                     _png_chunk(b"IEND", b"")])


_UP_RUN = 16   # repeated rows per cached deflate segment (longer runs use several)


@functools.lru_cache(maxsize=64)
def _up_rows(width: int, rows: int, level: int) -> bytes:
    """Self-contained, byte-aligned, non-final deflate blocks for ``rows`` scanlines that repeat the
    row above ("Up" filter byte 2, then ``width`` zeros)."""
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    return deflate.compress((b"\x02" + bytes(width)) * rows) + deflate.flush(zlib.Z_SYNC_FLUSH)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def overlay(rgb: np.ndarray, labels: np.ndarray, geometry: Geometry, task: TaskSpec, alpha: float = LESION_FILL_ALPHA,
            findings: dict[str, LesionFinding] | None = None, legend: bool = False,
            disc: OpticDisc | None = None) -> np.ndarray:
    """Draw model-space ``labels`` onto ``rgb`` (the original image at any uniform scale).

    Lesion pixels are lightly blended with their class colour and outlined in it, the field of view is
    outlined, the optic ``disc`` (when given) is ringed in :data:`DISC_COLOUR` with a cross at its centre, and (``legend``) a band
    under the picture names each colour with its lesion count when ``findings`` are given.
    Returns a new RGB uint8 array (taller than ``rgb`` with a legend).
    """
    h, w = rgb.shape[:2]
    full = labels_to_image(labels, geometry, (h, w))
    out = rgb.copy()
    hit = full > 0
    out[hit] = (alpha * LESION_COLOURS[full[hit]] + (1 - alpha) * rgb[hit]).astype(np.uint8)
    for label in np.unique(full[hit]):
        out[lesion_outline(full == label, max(1, w // 800))] = LESION_COLOURS[label]
    if geometry.fov.found:
        s = w / geometry.original_size[1]
        fov = geometry.fov.rescale(s, s)
        centre, axes = (round(fov.cx), round(fov.cy)), (round(fov.radius), round(fov.radius_y))
        cv2.ellipse(out, centre, axes, 0, 0, 360, (90, 90, 90), max(1, w // 600), cv2.LINE_AA)
    if disc is not None:
        s = w / geometry.original_size[1]
        centre, radius, thick = (round(disc.x * s), round(disc.y * s)), max(3, round(disc.radius * s)), max(2, w // 400)
        cv2.circle(out, centre, radius, DISC_COLOUR, thick, cv2.LINE_AA)
        cv2.drawMarker(out, centre, DISC_COLOUR, cv2.MARKER_CROSS, max(5, radius // 2), thick, cv2.LINE_AA)

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
