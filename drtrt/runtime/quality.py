"""Is this image gradable? Checked before any grade is given.

An image that fails is reported as "ungradable" with a reason a health worker can act on,
never graded. The checks run on the image the predictor already decoded (at reduced scale)
and on the field of view (FOV) the preprocessing found; together they cost a few ms.

Order (the first failing check gives the reason):

1. no FOV found: too dark / overexposed / blank / greyscale when the whole image is, else "not a
   fundus photo";
2. FOV too small for the model's input;
3. exposure of the field: too dark, overexposed;
4. colour: greyscale, or colours unlike a fundus (red must dominate);
5. detail: a featureless field, then blur (Crete et al. 2007 "blur effect", see :func:`blur_effect`).

Every threshold, what it was measured on and why it sits where it does: ``docs/quality.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from drtrt.preprocess import Geometry, Preprocessed

QUALITY_VIEW_SIDE = 512   # side (px) of the FOV crop the exposure, colour and blur checks look at


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the gate; 8-bit levels unless stated (see docs/quality.md for the evidence).

    min_fov_fraction: FOV diameter / model input side below which the image is "too small"
        (the model would upsample more than 2x).
    dark_mean: mean of the brightest channel inside the field below which it is "too dark".
    overexposed_fraction: share of field pixels with a channel >= 250 above which it is "overexposed".
    grey_chroma: mean (max - min channel) inside the field below which the image is "greyscale".
    min_red_green: median red / median green inside the field below which it is "not fundus-coloured".
    min_detail_std: standard deviation of luminance inside the field below which it shows nothing.
    max_blur: Crete blur effect (0 sharp ... 1 flat) of the field's float luminance above which it is "blurred".
    blank_std: whole-image luminance standard deviation below which a FOV-less image is "blank".
    """

    min_fov_fraction: float = 0.5
    dark_mean: float = 50.0
    overexposed_fraction: float = 0.25
    grey_chroma: float = 8.0
    min_red_green: float = 1.3
    min_detail_std: float = 3.0
    max_blur: float = 0.55
    blank_std: float = 6.0


@dataclass(frozen=True)
class QualityVerdict:
    """gradable, a short ``code`` (machine-readable), ``reason`` (a health worker's words), ``measures``."""

    gradable: bool
    reason: str | None = None
    code: str = "ok"
    measures: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"gradable": self.gradable, "code": self.code, "reason": self.reason,
                "measures": {k: round(v, 4) for k, v in self.measures.items()}}


def _fail(code: str, reason: str, measures: dict[str, float]) -> QualityVerdict:
    return QualityVerdict(False, reason, code, measures)


def assess_quality(rgb: np.ndarray, pre: Preprocessed, cfg: QualityConfig = QualityConfig()) -> QualityVerdict:
    """Checks ``rgb`` (HxWx3 uint8, the whole image at any uniform scale) and its preprocessing ``pre``."""
    geometry = pre.geometry
    if not geometry.fov.found:
        return _no_fov_verdict(rgb, cfg)
    diameter, need = 2 * geometry.fov.radius, cfg.min_fov_fraction * geometry.size
    m: dict[str, float] = {"fov_diameter_px": diameter}
    if diameter < need:
        return _fail("too_small", f"image too small: field of view {diameter:.0f} px across, need at least "
                                  f"{need:.0f} — retake at full camera resolution", m)
    view, inside = quality_view(rgb, pre)
    r, g, b = cv2.split(view)
    brightest = cv2.max(cv2.max(r, g), b)[inside]                # per-pixel channel max/min, inside the field
    darkest = cv2.min(cv2.min(r, g), b)[inside]
    m["mean_brightness"] = float(brightest.mean())
    m["overexposed_fraction"] = float(np.count_nonzero(brightest >= 250) / max(1, brightest.size))
    if m["mean_brightness"] < cfg.dark_mean:
        return _fail("too_dark", f"image too dark (brightness {m['mean_brightness']:.0f} of 255, need "
                                 f"≥ {cfg.dark_mean:.0f}) — check the flash and retake", m)
    if m["overexposed_fraction"] > cfg.overexposed_fraction:
        return _fail("overexposed", f"image overexposed ({100 * m['overexposed_fraction']:.0f}% of the retina "
                                    "washed out) — lower the flash and retake", m)
    m["chroma"] = float(cv2.subtract(brightest, darkest).mean())
    if m["chroma"] < cfg.grey_chroma:
        return _fail("greyscale", "greyscale image: the model needs a colour fundus photo — retake in colour", m)
    m["red_green"] = float(_median_u8(r[inside]) / max(_median_u8(g[inside]), 1.0))
    if m["red_green"] < cfg.min_red_green:
        return _fail("not_fundus", "colours do not look like a retina (not a fundus photo?) — retake", m)
    luminance = view_luminance(rgb, pre, view.shape[0])
    m["detail_std"] = float(luminance[inside].std())
    if m["detail_std"] < cfg.min_detail_std:
        return _fail("no_detail", "no retinal detail visible in the field — retake", m)
    m["blur"] = blur_effect(luminance, inside)
    if m["blur"] > cfg.max_blur:
        return _fail("blurred", f"image too blurred (blur {m['blur']:.2f}, limit {cfg.max_blur:.2f}) — "
                                "refocus and retake", m)
    return QualityVerdict(True, None, "ok", m)


def _median_u8(values: np.ndarray) -> float:
    """Median of uint8 values from their histogram (a sort of 250 k values is ten times slower)."""
    cum = np.cumsum(np.bincount(values.ravel(), minlength=256))
    return float(np.searchsorted(cum, cum[-1] / 2))


def _no_fov_verdict(rgb: np.ndarray, cfg: QualityConfig) -> QualityVerdict:
    """Why no field was found: a dark, washed-out or blank frame, or something that is not a fundus."""
    small = rgb if max(rgb.shape[:2]) <= 1024 else cv2.resize(rgb, None, fx=0.25, fy=0.25,
                                                              interpolation=cv2.INTER_AREA)
    brightest = small.max(axis=2)
    luminance = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    m = {"p99_brightness": float(np.percentile(brightest, 99)), "p1_brightness": float(np.percentile(brightest, 1)),
         "luminance_std": float(luminance.std())}
    if m["p99_brightness"] < cfg.dark_mean:
        return _fail("too_dark", "image too dark to find the retina — check the flash and retake", m)
    if m["p1_brightness"] >= 250:
        return _fail("overexposed", "image completely washed out — lower the flash and retake", m)
    if m["luminance_std"] < cfg.blank_std:
        return _fail("blank", "blank image (lens cap on, or a grey card?) — retake", m)
    lit = brightest >= np.percentile(brightest, 50)
    m["chroma"] = float(cv2.subtract(brightest, small.min(axis=2))[lit].mean())
    m["dark_surround"] = float((brightest < 0.25 * m["p99_brightness"]).mean())
    if m["chroma"] < cfg.grey_chroma and m["dark_surround"] >= 0.1:   # a monochrome (red-free) fundus photo
        return _fail("greyscale", "greyscale image: the model needs a colour fundus photo — retake in colour", m)
    return _fail("no_fov", "no retinal field of view found (not a fundus photo?) — retake", m)


def quality_view(rgb: np.ndarray, pre: Preprocessed) -> tuple[np.ndarray, np.ndarray]:
    """The FOV crop at min(512, FOV diameter in ``rgb`` pixels) px, and the field's inner mask.

    Never upsampled, so blur is judged at the detail the file holds. The mask leaves out a rim
    of 2.5 % of the side, where the field's edge and vignetting would dominate every measure.
    """
    g = pre.geometry
    decoded_per_original = rgb.shape[0] / g.original_size[0]
    side = int(max(16, min(QUALITY_VIEW_SIDE, round(2 * g.fov.radius * decoded_per_original))))
    if side == g.size and pre.rgb.shape[:2] == (side, side):
        view = pre.rgb
        view_geometry = g
    else:
        view_geometry = Geometry(g.original_size, g.crop, side, g.fov)
        view = view_geometry.to_model(rgb, "area")
    rim = max(1, round(0.025 * side))
    inside = cv2.erode(view_geometry.fov_mask("model").astype(np.uint8), np.ones((2 * rim + 1,) * 2, np.uint8))
    return view, inside.astype(bool)


def view_luminance(rgb: np.ndarray, pre: Preprocessed, side: int) -> np.ndarray:
    """Float32 luminance of the quality view (side x side): area-averaged without rounding to
    8 bits, so the quantisation steps of a smooth, blurred image do not read as detail."""
    g = pre.geometry
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return Geometry(g.original_size, g.crop, side, g.fov).to_model(gray, "area")


def blur_effect(gray: np.ndarray, mask: np.ndarray, size: int = 11) -> float:
    """Crete et al. (2007) no-reference blur: 0 = sharp, towards 1 = blurred, contrast-invariant.

    Re-blurs the image along rows and columns with a ``size``-tap box filter and measures how
    much of the neighbour-to-neighbour variation that removes; a blurred image loses little.
    Written here (about 10 lines) because scikit-image's ``measure.blur_effect`` would add a
    large dependency to the lean runtime install and takes no mask.
    """
    g = np.ascontiguousarray(gray, dtype=np.float32)
    inside = mask.astype(np.uint8)
    scores = []
    for axis, kernel in ((0, (1, size)), (1, (size, 1))):   # cv2 ksize is (width, height): blur along axis
        blurred = cv2.blur(g, kernel)
        if axis == 0:
            pairs, keep = [(g[1:], g[:-1]), (blurred[1:], blurred[:-1])], inside[1:] & inside[:-1]
        else:
            pairs, keep = [(g[:, 1:], g[:, :-1]), (blurred[:, 1:], blurred[:, :-1])], inside[:, 1:] & inside[:, :-1]
        d_sharp, d_blur = (cv2.absdiff(np.ascontiguousarray(a), np.ascontiguousarray(b)) for a, b in pairs)
        lost = cv2.max(cv2.subtract(d_sharp, d_blur), 0.0)       # variation the re-blur removed
        n = cv2.countNonZero(keep)
        total = cv2.mean(d_sharp, keep)[0] * n
        if total <= 0:
            return 1.0
        scores.append((total - cv2.mean(lost, keep)[0] * n) / total)
    return max(scores)
