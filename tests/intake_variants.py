"""Realistic variants of real fundus photos, and things that are not fundus photos, for the intake
gate: what a clinic's first weeks bring. Used by ``tests/runtime/test_intake.py`` and by
``benchmarks/intake_real.py`` (which adds this folder to ``sys.path``).

A :class:`Variant` is the file bytes a camera (or a copy) would deliver, the outcome the gate
must give (``"graded"`` or the set of acceptable refusal codes), and, where the source has one,
the true field-of-view mask carried through the same transformation (for the IoU figure).
Sources: the eight IDRiD originals with their field-of-view masks, the 54 ``idrid-seg-512``
images, the fundus photo bundled with scikit-image (another camera), and scikit-image's
ordinary photos.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IDRID = SHARED / "idrid-samples"
SEG512 = SHARED / "idrid-seg-512"
GRADED = frozenset({"graded"})
ORDINARY = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "hubble_deep_field", "moon", "horse",
            "immunohistochemistry", "coins", "page")


@dataclass
class Variant:
    name: str
    group: str
    expected: frozenset[str]          # {"graded"} or the refusal codes that are right
    data: bytes                       # the file as delivered
    fov: np.ndarray | None = None     # true field of view (bool, the image's own size), where known
    disc: np.ndarray | None = None    # true optic disc (bool), where known
    suffix: str = ".jpg"

    @property
    def kind(self) -> str:
        """gradable (must be graded), bad (must be refused with a reason), ordinary or damaged (never graded)."""
        if self.expected == GRADED:
            return "gradable"
        return {"damaged file": "damaged", "ordinary photo": "ordinary"}.get(self.group.replace(" in a circle", ""),
                                                                           "bad")


GROUPS = {"original": "original", "jpeg": "re-encoded", "downscaled": "downscaled", "rotated": "rotated/mirrored",
          "mirrored": "rotated/mirrored", "cut": "cut flat", "padded": "padded canvas", "grey": "grey background",
          "dark": "grey background", "dimmed": "dimmed x0.5", "squashed": "squashed crop", "blurred": "blurred",
          "motion": "blurred", "underexposed": "underexposed", "overexposed": "overexposed", "washout": "washout",
          "low": "low contrast", "greyscale": "greyscale", "too": "too small"}
"""Benchmark group of each variant tag's first word."""


def _group(tag: str) -> str:
    return GROUPS[tag.split("-")[0]]


def encode(rgb: np.ndarray, suffix: str = ".jpg", quality: int = 95) -> bytes:

    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix == ".jpg" else []
    ok, data = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    return data.tobytes()


def idrid_originals(names: tuple[str, ...] | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, rgb, field of view) of the eight IDRiD originals (or those ``names``) with their
    third-party field-of-view masks (0 = inside)."""
    out = []
    for image in sorted((IDRID / "A. Segmentation" / "1. Original Images").glob("*/*.jpg")):
        if names is not None and image.stem not in names:
            continue
        mask_file = next((IDRID / "fov-masks").glob(f"*/{image.stem}_MASK.tif"))
        rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
        out.append((image.stem, rgb, np.asarray(Image.open(mask_file)) == 0))
    return out


def seg512_images() -> list[tuple[str, bytes, np.ndarray]]:
    """(name, file bytes, optic disc mask) of the 54 idrid-seg-512 images."""
    out = []
    for image in sorted((SEG512 / "images").glob("IDRiD_*.jpg")):
        disc = cv2.imread(str(SEG512 / "lesion-overlays" / f"{image.stem}_OD.jpg")).max(axis=2) > 60
        out.append((image.stem, image.read_bytes(), disc))
    return out


def _resize(rgb: np.ndarray, mask: np.ndarray | None, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = rgb.shape[:2]
    size = (width, round(h * width / w))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return small, None if mask is None else cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0


def _field_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def gradable(name: str, rgb: np.ndarray, fov: np.ndarray) -> Iterator[Variant]:
    """Variants a clinic must see graded: re-encoded, resized, rotated, cut, padded, other backgrounds, dimmed."""
    def v(tag: str, image: np.ndarray, mask: np.ndarray | None, quality: int = 95, suffix: str = ".jpg") -> Variant:
        return Variant(f"{name}/{tag}", _group(tag), GRADED, encode(image, suffix, quality), mask, suffix=suffix)

    yield v("original-q95", rgb, fov)
    yield v("original-png", rgb, fov, suffix=".png")
    for q in (30, 50):
        yield v(f"jpeg-q{q}", rgb, fov, q)
    for width in (512, 640, 800):
        yield v(f"downscaled-{width}", *_resize(rgb, fov, width))
    yield v("rotated-180", rgb[::-1, ::-1], fov[::-1, ::-1])
    yield v("rotated-90", np.ascontiguousarray(np.rot90(rgb)), np.rot90(fov))
    yield v("mirrored", rgb[:, ::-1], fov[:, ::-1])
    x0, y0, x1, y1 = _field_box(fov)
    cut = (y1 - y0) // 8                                          # the field cut flat 1/8 further at top and bottom
    rows = slice(y0 + cut, y1 - cut)
    yield v("cut-flat", rgb[rows], fov[rows])
    band = np.zeros((60, rgb.shape[1], 3), np.uint8)
    keep = fov.copy()
    keep[:y0 + cut], keep[y1 - cut:] = False, False
    cropped = np.where(keep[..., None], rgb, 0).astype(np.uint8)[y0 + cut - 200:y1 - cut + 200]
    no_band = band[..., 0] > 0
    yield v("cut-band", np.vstack([band, cropped, band]),
            np.vstack([no_band, keep[y0 + cut - 200:y1 - cut + 200], no_band]))
    sides = slice(x0 + cut, x1 - cut)
    yield v("cut-sides", rgb[:, sides], fov[:, sides])
    small, small_fov = _resize(rgb, fov, 1600)
    canvas = np.zeros((2200, 4000, 3), np.uint8)
    mask = np.zeros(canvas.shape[:2], bool)
    top, left = 300, 1400                                          # field ≈ 40 % of the canvas width
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    mask[top:top + small.shape[0], left:left + small.shape[1]] = small_fov
    yield v("padded-canvas", canvas, mask)
    for level, tag in ((128, "grey-background"), (60, "dark-grey-background")):
        yield v(tag, np.where(fov[..., None], rgb, np.uint8(level)).astype(np.uint8), fov)
    yield v("dimmed-50", (rgb * 0.5).astype(np.uint8), fov)
    squashed = cv2.resize(rgb[:, x0:x1], (1024, 1024), interpolation=cv2.INTER_AREA)     # a third-party square crop
    yield v("squashed-crop", squashed, cv2.resize(fov[:, x0:x1].astype(np.uint8), (1024, 1024),
                                                   interpolation=cv2.INTER_NEAREST) > 0)


def bad(name: str, rgb: np.ndarray, fov: np.ndarray) -> Iterator[Variant]:
    """Variants a health worker must retake, each with the reason that is right for it."""
    x0, y0, x1, y1 = _field_box(fov)
    diameter = x1 - x0

    def v(tag: str, image: np.ndarray, codes: str, quality: int = 95) -> Variant:
        return Variant(f"{name}/{tag}", _group(tag), frozenset(codes.split()), encode(image, quality=quality))

    for fraction in (0.005, 0.01):                                     # the same blur, whatever the file
        blurred = cv2.GaussianBlur(rgb, (0, 0), fraction * diameter)
        yield v(f"blurred-{fraction:g}", blurred, "blurred")
        yield v(f"blurred-{fraction:g}-q35", blurred, "blurred", 35)
        yield v(f"blurred-{fraction:g}-at-640", _resize(blurred, None, 640)[0], "blurred")
    length = int(0.015 * diameter) | 1
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2] = 1 / length
    yield v("motion-blurred", cv2.filter2D(rgb, -1, kernel), "blurred")
    yield v("underexposed-25", (rgb * 0.25).astype(np.uint8), "too_dark")
    yield v("underexposed-12", (rgb * 0.12).astype(np.uint8), "too_dark")
    yield v("overexposed-250", np.clip(rgb * 2.5, 0, 255).astype(np.uint8), "overexposed")
    washed = np.where(fov[..., None], rgb * 0.35 + 255 * 0.65, rgb).astype(np.uint8)      # flash washout
    yield v("washout", washed, "overexposed")
    hazy = np.where(fov[..., None], rgb * 0.25 + rgb[fov].mean(axis=0) * 0.75, rgb).astype(np.uint8)
    yield v("low-contrast", hazy, "low_contrast")
    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    yield v("greyscale", grey, "greyscale")
    yield v("too-small", _resize(rgb, None, 240)[0], "too_small")


def damaged(name: str, data: bytes) -> Iterator[Variant]:
    """A copy gone wrong: truncated, garbage or zeros in the middle of the compressed data."""
    start = data.find(b"\xff\xda")
    mid = start + (len(data) - start) // 2
    noise = np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8).tobytes()
    expected = frozenset({"file_damaged"})
    yield Variant(f"{name}/truncated", "damaged file", expected, data[:mid])
    yield Variant(f"{name}/garbage-middle", "damaged file", expected, data[:mid] + noise + data[mid + len(noise):])
    yield Variant(f"{name}/zeros-middle", "damaged file", expected, data[:mid] + bytes(20000) + data[mid + 20000:])


def ordinary(circle: bool = False) -> Iterator[Variant]:
    """scikit-image's bundled photos: plain, or masked to a circle on black like a fundus field."""
    import skimage.data

    for photo in ORDINARY:
        rgb = getattr(skimage.data, photo)()
        if rgb.dtype != np.uint8:                                  # a binary or float picture
            rgb = (rgb.astype(np.float64) / max(float(rgb.max()), 1e-9) * 255).astype(np.uint8)
        rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB) if rgb.ndim == 2 else rgb[..., :3]

        expected = "not_a_fundus no_field_of_view greyscale"        # any of these: "not a retina, retake"
        if circle:
            h, w = rgb.shape[:2]
            mask = np.zeros((h, w), np.uint8)
            cv2.circle(mask, (w // 2, h // 2), min(h, w) // 2 - 4, 1, -1)
            rgb = rgb * mask[..., None]
        group = "ordinary photo in a circle" if circle else "ordinary photo"
        yield Variant(f"{photo}{'-circle' if circle else ''}", group,
                      frozenset(expected.split()), encode(rgb, ".png"), suffix=".png")


def other_camera() -> Variant:
    """The fundus photo bundled with scikit-image (another camera, full circle, a notch)."""
    import skimage.data

    return Variant("skimage-retina", "other camera", GRADED, encode(skimage.data.retina()))


def everything(idrid: bool = True, seg512: bool = True, limit: int | None = None,
               keep: Callable[[Variant], bool] = lambda v: True,
               originals: tuple[str, ...] | None = None) -> Iterator[Variant]:
    """Every variant of every source (``limit``: the first N IDRiD originals only; ``originals``:
    only these)."""
    if idrid:
        for name, rgb, fov in idrid_originals(originals)[:limit]:
            for variant in (*gradable(name, rgb, fov), *bad(name, rgb, fov), *damaged(name, encode(rgb))):
                if keep(variant):
                    yield variant
    if seg512:
        for name, data, disc in seg512_images():
            yield Variant(f"seg512/{name}", "idrid-seg-512", GRADED, data, disc=disc)
    yield other_camera()
    yield from ordinary()
    yield from ordinary(circle=True)
