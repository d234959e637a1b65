"""Is this photo gradable? Decided before any grade is given, seconds after the flash.

A photo that fails is reported as "ungradable" with a stable ``code`` and the words a health
worker acts on, and is never graded. The measures do not depend on the file: they are taken on
the field of view resampled to one analysis scale, :data:`ANALYSIS_SIDE` pixels across (down by
area, up by interpolation), whatever the camera's resolution, the model's input side or the JPEG
quality, inside the field, and relative to the field itself where a relative measure exists
(sharpness, isotropy, contrast, colour ratios). Exposure is the exception: no pixel value says
what the exposure should have been, so it is judged on the field's median level, with the
margins measured in ``docs/quality.md``.

Order (the first failing check gives the code):

================  ==================================================================================
code              fails when
================  ==================================================================================
no_field_of_view  no field found: the whole frame then says why (too dark, washed out, blank,
                  monochrome) or it is not a fundus photo
greyscale         mean chroma in the field < ``grey_chroma``
not_a_fundus      green over red or blue over red: no fundus, however exposed, has these colours
too_dark          median brightest channel in the field < ``dark_level``
overexposed       more than ``clipped_fraction`` of the field clipped, or washed out (pale, bright
                  and flat: saturation < ``washout_saturation``, level > ``washout_level``,
                  contrast < ``min_contrast``)
not_a_fundus      red/green, blue/red, neutral-pixel share or local contrast outside what fundus
                  photos show
too_small         field narrower than ``min_field_px`` (or ``min_fov_fraction`` x the model's side)
blurred           fine-to-coarse gradient energy < ``min_sharpness`` in the worst direction, or
                  worst over best direction < ``min_isotropy`` (smeared one way: movement)
low_contrast      local contrast < ``min_contrast``
================  ==================================================================================

Damaged files (``file_damaged``) never reach these checks: decoding refuses them
(:func:`drtrt.preprocess.decode_image`). Thresholds and the measurements behind them:
``docs/quality.md``; the benchmark that checks them: ``benchmarks/intake_real.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from drtrt.preprocess import Geometry, Preprocessed

ANALYSIS_SIDE = 512   # every photo is judged on its field resampled to 512 x 512, whatever the model's side
TILES = 8             # sharpness is the median over an 8 x 8 grid of tiles inside the field
SIGMAS = (1.0, 1.5, 3.0, 4.0)   # the Gaussians the sharpness compares gradient energies after

CODES = ("file_damaged", "no_field_of_view", "too_small", "too_dark", "overexposed", "greyscale", "not_a_fundus",
         "blurred", "low_contrast")
ADVICE = {
    "file_damaged": "the file is damaged — copy it from the camera again",
    "no_field_of_view": "no retinal field of view found — retake",
    "too_small": "retake at the camera's full resolution",
    "too_dark": "check the flash and the pupil, and retake",
    "overexposed": "lower the flash and retake",
    "greyscale": "retake in colour",
    "not_a_fundus": "photograph the retina and retake",
    "blurred": "refocus, hold still and retake",
    "low_contrast": "clean the lens, check the focus and retake (a cloudy lens or cataract: refer)",
}
"""What the health worker does about each refusal, in the words reports show."""


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the gate (see docs/quality.md for the evidence behind each).

    min_field_px: field diameter (pixels of the photo as taken) below which it is "too small": the
        analysis view would have to invent detail. min_fov_fraction: the same as a fraction of
        the model's input side (a model larger than the view must not upsample more than 2x).
    dark_level: median of the brightest channel inside the field below which it is "too dark".
    clipped_fraction: share of field pixels with a channel >= 250 above which it is "overexposed".
    washout_saturation / washout_level: a field whose median saturation is below the first while
        its median level is above the second, and its contrast below ``min_contrast``, is washed
        out by the flash ("overexposed").

    grey_chroma: mean (max - min channel) inside the field below which the photo is "greyscale".
    min_red_green / max_blue_red / max_neutral_fraction / max_contrast: outside these the field's
        colour and texture are not a fundus's ("not_a_fundus").
    min_sharpness: median over tiles of the gradient energy at sigma 1.5 over that at sigma 4
        (view pixels), in the worst of four directions; below it the photo is "blurred".
    min_isotropy: worst direction over the best (sigmas 1 and 3); below it the photo is smeared
        one way (motion blur): "blurred".
    min_contrast: standard deviation of the green channel's fine detail (minus a blur of sigma
        = side/64) over its mean; below it the field shows too little ("low_contrast").
    blank_std: whole-image luminance standard deviation below which a field-less image is blank.
    """

    min_field_px: float = 256.0
    min_fov_fraction: float = 0.5
    dark_level: float = 57.0
    clipped_fraction: float = 0.5
    washout_saturation: float = 0.4
    washout_level: float = 150.0
    grey_chroma: float = 8.0
    min_red_green: float = 1.5
    max_blue_red: float = 0.6
    max_neutral_fraction: float = 0.03
    max_contrast: float = 0.3
    min_sharpness: float = 2.65
    min_isotropy: float = 0.74
    min_contrast: float = 0.037
    blank_std: float = 6.0


@dataclass(frozen=True)
class QualityVerdict:
    """gradable, a stable ``code`` (``ok`` or one of :data:`CODES`), ``reason`` (a health worker's
    words: what is wrong and what to do), ``measures`` (every number the gate looked at)."""

    gradable: bool
    reason: str | None = None
    code: str = "ok"
    measures: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"gradable": self.gradable, "code": self.code, "reason": self.reason,
                "measures": {k: round(v, 4) for k, v in self.measures.items()}}


def refusal(code: str, what: str, measures: dict[str, float] | None = None) -> QualityVerdict:
    """A refusal: ``what`` is wrong, then the advice for ``code``."""
    return QualityVerdict(False, f"{what} — {ADVICE[code]}", code, measures or {})


def assess_quality(rgb: np.ndarray, pre: Preprocessed, cfg: QualityConfig = QualityConfig(),
                   view: AnalysisView | None = None) -> QualityVerdict:
    """Checks ``rgb`` (HxWx3 uint8, the whole image at any uniform scale) and its preprocessing ``pre``
    (``view``: their :func:`analysis_view`, when the caller has it already)."""
    geometry = pre.geometry
    if not geometry.fov.found:
        return _no_fov_verdict(rgb, cfg)
    diameter = 2 * min(geometry.fov.radius, geometry.fov.radius_y)
    m: dict[str, float] = {"fov_diameter_px": diameter}
    view = analysis_view(rgb, pre) if view is None else view
    r8, g8, b8 = cv2.split(view.image)
    brightest = cv2.max(cv2.max(r8, g8), b8)
    chroma = cv2.subtract(brightest, cv2.min(cv2.min(r8, g8), b8))
    saturation = cv2.divide(chroma, brightest, scale=255)                # 0-255; 0 where black
    hist = {name: cv2.calcHist([channel], [0], view.inside, [256], [0, 256]).ravel()
            for name, channel in (("r", r8), ("g", g8), ("b", b8), ("brightest", brightest), ("chroma", chroma),
                                  ("saturation", saturation))}
    n = max(1.0, float(hist["r"].sum()))
    r, g, b = (_hist_median(hist[c]) for c in "rgb")
    m["chroma"] = float(hist["chroma"] @ np.arange(256)) / n
    m["red_green"], m["blue_red"] = r / max(g, 1.0), b / max(r, 1.0)
    if m["chroma"] < cfg.grey_chroma:
        return refusal("greyscale", "greyscale image: the model needs a colour fundus photo", m)
    if m["red_green"] < 1.0 or m["blue_red"] > 1.0:      # any fundus, however exposed, is red over green over blue
        return _not_a_fundus(m)
    m["brightness"] = _hist_median(hist["brightest"])
    m["clipped_fraction"] = float(hist["brightest"][250:].sum()) / n
    m["saturation"] = _hist_median(hist["saturation"]) / 255
    inside = view.inside.astype(bool)
    green = g8.astype(np.float32)
    m["contrast"] = local_contrast(green, inside)
    if m["brightness"] < cfg.dark_level:
        return refusal("too_dark", f"image too dark (brightness {m['brightness']:.0f} of 255, need "
                                   f"{cfg.dark_level:.0f})", m)
    if m["clipped_fraction"] > cfg.clipped_fraction:
        return refusal("overexposed", f"image overexposed ({100 * m['clipped_fraction']:.0f}% of the retina "
                                      "burnt white)", m)
    if (m["saturation"] < cfg.washout_saturation and m["brightness"] > cfg.washout_level
            and m["contrast"] < cfg.min_contrast):        # faded to white all over: bright, pale and flat
        return refusal("overexposed", "image washed out by the flash (colours faded to white)", m)
    m["neutral_fraction"] = float(hist["saturation"][:64].sum()) / n          # saturation below 0.25
    if (m["red_green"] < cfg.min_red_green or m["blue_red"] > cfg.max_blue_red
            or m["neutral_fraction"] > cfg.max_neutral_fraction or m["contrast"] > cfg.max_contrast):
        return _not_a_fundus(m)
    need = max(cfg.min_field_px, cfg.min_fov_fraction * geometry.size)
    if diameter < need:
        return refusal("too_small", f"image too small (field of view {diameter:.0f} px across, need {need:.0f})", m)
    m["sharpness"], m["isotropy"] = sharpness(green, inside)
    if m["sharpness"] < cfg.min_sharpness:
        return refusal("blurred", f"image too blurred (sharpness {m['sharpness']:.2f}, need "
                                  f"{cfg.min_sharpness:.2f})", m)
    if m["isotropy"] < cfg.min_isotropy:
        return refusal("blurred", f"image smeared by movement (sharpness {m['isotropy']:.2f} of itself across, "
                                  f"need {cfg.min_isotropy:.2f})", m)
    if m["contrast"] < cfg.min_contrast:
        return refusal("low_contrast", f"too little contrast in the retina ({m['contrast']:.3f}, need "
                                       f"{cfg.min_contrast:.3f})", m)
    return QualityVerdict(True, None, "ok", m)


def _not_a_fundus(m: dict[str, float]) -> QualityVerdict:
    return refusal("not_a_fundus", "this does not look like a retina (colours or texture of another kind of photo)", m)


def _hist_median(hist: np.ndarray) -> float:
    """Median of 8-bit values from their histogram (a sort of 200 k values is ten times slower)."""
    cum = np.cumsum(hist)
    return float(np.searchsorted(cum, cum[-1] / 2))


def _no_fov_verdict(rgb: np.ndarray, cfg: QualityConfig) -> QualityVerdict:
    """Why no field was found: a dark, washed-out, blank or monochrome frame, or not a fundus photo."""
    small = rgb if max(rgb.shape[:2]) <= 1024 else cv2.resize(rgb, None, fx=0.25, fy=0.25,
                                                              interpolation=cv2.INTER_AREA)
    brightest = small.max(axis=2)
    luminance = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    m = {"p99_brightness": float(np.percentile(brightest, 99)), "p1_brightness": float(np.percentile(brightest, 1)),
         "luminance_std": float(luminance.std())}
    if m["p99_brightness"] < cfg.dark_level:
        return refusal("too_dark", "image too dark to find the retina", m)
    if m["p1_brightness"] >= 250:
        return refusal("overexposed", "image completely washed out", m)
    if m["luminance_std"] < cfg.blank_std:
        return refusal("no_field_of_view", "blank image (lens cap on, or a grey card?)", m)
    lit = brightest >= np.percentile(brightest, 50)
    m["chroma"] = float(cv2.subtract(brightest, small.min(axis=2))[lit].mean())
    m["dark_surround"] = float((brightest < 0.25 * m["p99_brightness"]).mean())
    if m["chroma"] < cfg.grey_chroma and m["dark_surround"] >= 0.1:   # a monochrome (red-free) fundus photo
        return refusal("greyscale", "greyscale image: the model needs a colour fundus photo", m)
    return refusal("no_field_of_view", "no retinal field of view found (not a fundus photo?)", m)


class AnalysisView(NamedTuple):
    """The field at the analysis scale: ``image`` (ANALYSIS_SIDE square, RGB uint8), ``inside`` (uint8
    mask, 1 in the field less its rim) and ``geometry`` (the crop that maps it onto the photo)."""

    image: np.ndarray
    inside: np.ndarray
    geometry: Geometry


def analysis_view(rgb: np.ndarray, pre: Preprocessed) -> AnalysisView:
    """The field resampled to :data:`ANALYSIS_SIDE` (down by area, up by linear interpolation), and
    the field's inner mask (a rim of 2.5 % of the side left out, where the field's edge and
    vignetting would dominate every measure). ``rgb`` should hold the field at >= ANALYSIS_SIDE
    pixels across (:func:`decode_side`), or every measure sees an upsampled, softer field."""
    g = pre.geometry
    decoded_per_original = rgb.shape[0] / g.original_size[0]
    downscale = 2 * min(g.fov.radius, g.fov.radius_y) * decoded_per_original >= ANALYSIS_SIDE
    if g.size == ANALYSIS_SIDE and pre.rgb.shape[:2] == (ANALYSIS_SIDE, ANALYSIS_SIDE) and downscale:
        view, view_geometry = pre.rgb, g                       # the model's input is the view: no resampling
    else:
        view_geometry = Geometry(g.original_size, g.crop, ANALYSIS_SIDE, g.fov)
        view = view_geometry.to_model(rgb, "area" if downscale else "linear")
    rim = round(0.025 * ANALYSIS_SIDE)
    inside = cv2.erode(view_geometry.fov_mask("model").astype(np.uint8), np.ones((2 * rim + 1,) * 2, np.uint8))
    return AnalysisView(view, inside, view_geometry)


def decode_side(model_side: int) -> int:
    """The shorter side to decode a photo at so that both the model and the gate see enough pixels."""
    return max(model_side, ANALYSIS_SIDE)


def sharpness(gray: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """(sharpness, isotropy) of a float image inside ``inside`` (bool or 0/1).

    Per tile of a :data:`TILES` x :data:`TILES` grid lying inside the field: the gradient energy
    after a fine Gaussian over that after a coarse one, along x, y and both diagonals; a sharp
    photo keeps much of its energy at the fine scale, a blurred one little. The median over
    tiles (so one large bright lesion does not decide) in the worst direction is the sharpness,
    at sigmas 1.5 and 4 view pixels: a coarser fine scale than the view's own pixels, where JPEG
    blocking at quality 35 would pass for detail. The worst direction over the best at sigmas 1
    and 3 is the isotropy: a photo smeared one way loses its finest detail only across the
    smear. Both are ratios of the field to itself: independent of exposure and contrast.
    """
    side = gray.shape[0] - gray.shape[0] % TILES
    gray, weight = gray[:side, :side], inside[:side, :side].astype(np.float32)
    full = _tile_means(weight) >= 0.9                                       # tiles wholly in the field
    if not full.any():
        return 0.0, 0.0
    # only the rows and columns of tiles that hold a whole tile are filtered, with the reach of the widest
    # Gaussian and of the Sobel around them (or the view's own edge): every value used is the same
    tile, rows, cols = side // TILES, np.nonzero(full.any(axis=1))[0], np.nonzero(full.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0] * tile, (rows[-1] + 1) * tile, cols[0] * tile, (cols[-1] + 1) * tile
    reach = _kernel_reach(max(SIGMAS)) + 1
    y0, y1, x0, x1 = max(0, r0 - reach), min(side, r1 + reach), max(0, c0 - reach), min(side, c1 + reach)
    region = (slice(r0 - y0, r1 - y0), slice(c0 - x0, c1 - x0))
    full = full[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    gray, weight = gray[y0:y1, x0:x1], weight[y0:y1, x0:x1]
    energy = {sigma: _tile_energies(gray, weight, sigma, full, region) for sigma in SIGMAS}
    worst = np.median(energy[1.5] / np.maximum(energy[4.0], 1e-9), axis=0)
    fine = np.median(energy[1.0] / np.maximum(energy[3.0], 1e-9), axis=0)
    return float(worst.min()), float(fine.min() / max(fine.max(), 1e-6))


def _tile_means(image: np.ndarray, tiles: tuple[int, int] = (TILES, TILES)) -> np.ndarray:
    """Mean of each of the (rows, columns) ``tiles`` (an area resize: exact when the sides divide by them)."""
    return cv2.resize(image, tiles[::-1], interpolation=cv2.INTER_AREA)


def _kernel_reach(sigma: float) -> int:
    """How far OpenCV's Gaussian of ``sigma`` reaches on a float image (half its kernel, 4 sigmas)."""
    return (round(sigma * 8 + 1) | 1) // 2


def _tile_energies(gray: np.ndarray, weight: np.ndarray, sigma: float, full: np.ndarray,
                   region: tuple[slice, slice]) -> np.ndarray:
    """Gradient energy per whole tile after a Gaussian of ``sigma``: tiles x (x, y, diagonal, antidiagonal),
    over the tiles ``full`` of ``gray[region]``. The diagonal energies 0.5 (gx +- gy)^2 come from the tile
    sums of gx^2, gy^2 and gx gy."""
    smooth = cv2.GaussianBlur(gray, (0, 0), sigma)
    gx = cv2.multiply(cv2.Sobel(smooth, cv2.CV_32F, 1, 0)[region], weight[region])
    gy = cv2.multiply(cv2.Sobel(smooth, cv2.CV_32F, 0, 1)[region], weight[region])
    xx, yy, xy = (_tile_means(cv2.multiply(a, b), full.shape)[full] for a, b in ((gx, gx), (gy, gy), (gx, gy)))
    return np.stack([xx, yy, 0.5 * (xx + yy) + xy, 0.5 * (xx + yy) - xy], axis=1)


def local_contrast(green: np.ndarray, inside: np.ndarray) -> float:
    """Standard deviation of the fine detail (the green channel minus a blur of sigma side/64) over the
    mean green level, inside the field: vessels and lesions against their background."""
    sigma = green.shape[0] / 64
    x, y, w, h = cv2.boundingRect(inside.astype(np.uint8))
    if w and h:   # blurred only around the field, with the Gaussian's reach (or to the view's edge): the same values
        reach = _kernel_reach(sigma)
        y0, x0 = max(0, y - reach), max(0, x - reach)
        green, inside = green[y0:y + h + reach, x0:x + w + reach], inside[y0:y + h + reach, x0:x + w + reach]
    detail = green - cv2.GaussianBlur(green, (0, 0), sigma)
    return float(detail[inside].std() / max(float(green[inside].mean()), 1.0))
