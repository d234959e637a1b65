"""Where the fovea is, and whether hard exudates threaten it: the photo's maculopathy grade (M).

The English NHS Diabetic Eye Screening Programme grades retinopathy (R) and maculopathy (M)
apart and refers M1 whatever R is; drtrt's DR grade alone would send exudates on the fovea of a
grade 0-1 eye back in twelve months. This module gives the image side of M (numpy and OpenCV):

**The fovea** (:func:`locate_fovea`), from the optic disc that :func:`drtrt.preprocess.locate_disc`
found, on the same 128-px view of the field (:data:`~drtrt.preprocess.disc.DISC_VIEW`):

1. the prior: :data:`FOVEA_DD` = 2.5 disc diameters (DD) temporal to the disc's centre and
   :data:`FOVEA_BELOW_DD` = 0.25 DD below it. Rohrschneider (IOVS 2004;45:3257, 104 eyes, SLO):
   the fovea lies 15.5 ± 1.1 degrees temporal and 1.5 ± 0.9 degrees below the disc's centre,
   about 4.5 mm, against a disc 1.8 mm across (Jonas et al., IOVS 1988;29:1151: 1.76 ×
   1.92 mm): 2.5 DD across and 0.25 DD down, the figure clinicians use ("2-3 DD"). Temporal is
   away from the nasal side the disc lies on (:mod:`drtrt.preprocess.disc`): to the image's
   left in a right eye, to its right in a left eye. The disc diameter is :data:`DD_FIELD` =
   0.30 field radii: the experts' disc masks of the 54 ``idrid-seg-512`` photos measure 0.29
   (width), 0.32 (height), 0.31 (equal-area diameter), medians; the disc finder's 0.12-radius
   is its search scale, not a measurement of this disc.
2. the refinement: the macula's pigment makes the fovea the darkest smooth region of the green
   channel. Vessels and dark dots are closed away (a grey closing :data:`CLOSE_DD` across),
   a median :data:`MEDIAN_DD` wide removes what is left of small lesions, the field's slow
   illumination is divided out (a Gaussian of sigma :data:`BACKGROUND_DD`), and the result is
   smoothed (sigma :data:`SMOOTH_DD`); the fovea is its lowest point within :data:`SEARCH_DD`
   of the prior and 2-3.2 DD from the disc's centre (:data:`DISC_RANGE_DD`: a large exudate
   plaque on the fovea must not pull it onto the disc), a point nearer the prior winning a
   near tie (a penalty of :data:`PULL` per DD²).
3. the evidence: how much darker the fovea is than the median of the ring 1-2 DD around it,
   as a fraction of the local level; below :data:`MIN_DEPTH` there is no dark macula to see
   (a pale, washed-out or exudate-covered centre) and the fovea is not placed.

It gives up (None and a one-line reason) when there is no disc; when the disc does not tell
the eye and the photo is not centred on the macula (a disc-centred photo, a turned one: which
way is temporal?); when the prior falls outside the field; or when the evidence is too weak.
A macula-centred photo whose disc is straight above or below the centre (no eye) takes the
direction from the disc towards the field's centre.

**M** (:func:`assess_macula`), from the fovea, the disc diameter and the model's hard-exudate
mask ("EX", IDRiD's naming; :mod:`drtrt.task`), after the NHS's grading definitions (NHS DESP
"Grading definitions for referable disease", v1.4 2012 and later):

- M1 when any hard exudate lies within 1 DD of the fovea's centre;
- M1 when a group of exudates lies within the macula: the NHS's macula is the circle centred on
  the fovea whose radius is the distance from the fovea's centre to the disc's temporal margin
  (about 2 DD); the NHS gives no size for a group, and drtrt calls it one when the exudate
  inside the macula covers at least :data:`GROUP_DISC_AREAS` of the disc's area (0.05 disc
  areas: about 0.13 mm², a patch 0.4 mm across, or some 16 deposits 100 µm across, well above
  the few model pixels of a single speck: 0.05 disc areas are 180 pixels of a 512-px model);
- M0 when the fovea was found and neither holds;
- None ("M not assessed") when the fovea was not found or the model has no hard-exudate output.

The NHS's other M1 criteria need what drtrt does not have: retinal thickening within 1 DD
(stereo photography or OCT), and a microaneurysm or haemorrhage within 1 DD of the fovea
*with a best visual acuity of 6/12 or worse* — drtrt records no acuity, so it does not use
microaneurysms or haemorrhages for M at all. M not assessed is never M0: the verdict reads it
as "maculopathy unknown". Measured on real and synthetic photos: ``docs/maculopathy.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from drtrt.preprocess import Geometry, OpticDisc
from drtrt.preprocess.disc import DISC_VIEW

DD_FIELD = 0.30            # the disc diameter, in field radii (the experts' discs on IDRiD)
FOVEA_DD = 2.5             # the fovea's distance temporal to the disc's centre, in disc diameters
FOVEA_BELOW_DD = 0.25      # ... and below it
DISC_RANGE_DD = (2.0, 3.2) # the fovea is looked for this far from the disc's centre (DD)
SEARCH_DD = 1.0            # ... and within this many DD of the prior
PULL = 0.02                # penalty per DD² of distance from the prior (in the level's units)
CLOSE_DD = 0.2             # vessels and dark dots narrower than this are closed away
MEDIAN_DD = 0.5            # then a median this wide removes what is left of small lesions
BACKGROUND_DD = 1.0        # the slow illumination: a Gaussian of this sigma
SMOOTH_DD = 0.15           # the darkness map's smoothing (sigma)
MIN_DEPTH = 0.05           # the fovea at least this much darker than the ring 1-2 DD around it
NEAR_DD = 1.0              # hard exudate within this many DD of the fovea's centre: M1
GROUP_DISC_AREAS = 0.05    # hard exudate in the macula covering this many disc areas: a group, M1
EXUDATE = "EX"             # the task's hard-exudate lesion code


@dataclass(frozen=True)
class Fovea:
    """The fovea's centre (x, y) in original pixels (like :class:`OpticDisc`'s), the disc diameter
    in original pixels along x, the macula's radius (fovea to the disc's temporal margin) in disc
    diameters, the evidence (depth: how much darker than its surroundings) and how far the
    refinement moved it from the anatomical prior, in DD."""

    x: float
    y: float
    disc_diameter: float
    macula_dd: float
    depth: float
    moved_dd: float


@dataclass(frozen=True)
class MaculaAssessment:
    """A photo's maculopathy grade: m ("M1" | "M0" | None = not assessed, never to be read as M0),
    the fovea (None when not found), a one-line reason (why M1, why not assessed, or for M0 what
    was checked), and the nearest hard exudate's distance from the fovea's centre in disc
    diameters (None: no fovea, or no exudate). :meth:`to_dict` is the record's ``macula``."""

    m: str | None
    fovea: Fovea | None
    reason: str
    exudate_distance_dd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        f = self.fovea
        return {"m": self.m, "fovea": None if f is None else [round(f.x, 1), round(f.y, 1)],
                "disc_diameter": None if f is None else round(f.disc_diameter, 2), "reason": self.reason,
                "exudate_distance_dd": None if self.exudate_distance_dd is None
                else round(self.exudate_distance_dd, 3)}


def _blur(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average of ``image`` over the pixels where ``weight`` is 1."""
    num = cv2.GaussianBlur(image * weight, (0, 0), sigma)
    return num / np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-3)


def _darkness(green: np.ndarray, weight: np.ndarray, dd: float) -> np.ndarray:
    """The green channel (uint8) with vessels and small lesions removed, the illumination divided
    out and smoothed: 1 is the local level, the macula dips below it."""
    size = max(3, round(CLOSE_DD * dd) | 1)
    closed = cv2.morphologyEx(green, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    smooth = cv2.medianBlur(closed, max(3, round(MEDIAN_DD * dd) | 1)).astype(np.float32)
    flat = smooth / np.maximum(_blur(smooth, weight, BACKGROUND_DD * dd), 1.0)
    return _blur(flat, weight, SMOOTH_DD * dd)


def locate_fovea(model_rgb: np.ndarray, geometry: Geometry, disc: OpticDisc | None) -> tuple[Fovea | None, str]:
    """The fovea in ``model_rgb`` (the field as ``geometry`` crops it, as for
    :func:`~drtrt.preprocess.locate_disc`) from the optic ``disc``, or None; and a one-line
    reason (why not found, or how it was placed)."""
    if disc is None or not geometry.fov.found:
        return None, "no optic disc found, and the fovea is placed from the disc"
    view_geometry = Geometry(geometry.original_size, geometry.crop, DISC_VIEW, geometry.fov)
    step_x, step_y = view_geometry.steps
    x0, y0 = view_geometry.crop[:2]
    fov = view_geometry.fov_in_model()
    dx0, dy0 = (disc.x + 0.5 - x0) / step_x - 0.5, (disc.y + 0.5 - y0) / step_y - 0.5   # the disc in the view
    dd = DD_FIELD * fov.radius                                   # the disc diameter in view pixels
    if disc.eye in ("right", "left"):
        ux, uy = (-1.0 if disc.eye == "right" else 1.0), 0.0
    elif disc.centred == "macula":
        ux, uy = fov.cx - dx0, fov.cy - dy0
        norm = math.hypot(ux, uy)
        ux, uy = ux / norm, uy / norm
    else:
        return None, ("the optic disc does not tell the eye and the photo is not centred on the macula, "
                      "so which side the fovea lies on is unknown")
    px, py = dx0 + FOVEA_DD * dd * ux, dy0 + FOVEA_DD * dd * uy + FOVEA_BELOW_DD * dd
    inside = view_geometry.fov_mask("model")
    ix, iy = round(px), round(py)
    if not (0 <= ix < DISC_VIEW and 0 <= iy < DISC_VIEW and inside[iy, ix]):
        return None, "the fovea's expected place (2.5 disc diameters from the disc) lies outside the photo's field"

    shrink = cv2.INTER_AREA if geometry.size >= DISC_VIEW else cv2.INTER_LINEAR
    view = cv2.resize(model_rgb, (DISC_VIEW, DISC_VIEW), interpolation=shrink)
    if view.dtype != np.uint8:
        view = np.clip(view, 0, 255).astype(np.uint8)
    weight = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    dark = _darkness(np.ascontiguousarray(view[..., 1]), weight, dd)

    ys, xs = np.mgrid[:DISC_VIEW, :DISC_VIEW].astype(np.float32)
    from_prior = np.hypot(xs - px, ys - py) / dd
    from_disc = np.hypot(xs - dx0, ys - dy0) / dd
    window = (from_prior <= SEARCH_DD) & (weight > 0) & (from_disc >= DISC_RANGE_DD[0]) & (from_disc <= DISC_RANGE_DD[1])
    if not window.any():
        return None, "the fovea's expected place lies outside the photo's field"
    score = np.where(window, dark + PULL * from_prior ** 2, np.inf)
    fy, fx = np.unravel_index(int(np.argmin(score)), score.shape)
    from_fovea = np.hypot(xs - fx, ys - fy) / dd
    ring = (from_fovea >= 1.0) & (from_fovea <= 2.0) & (weight > 0) & (from_disc > 1.0)
    if ring.sum() < 20:
        return None, "too little of the field around the fovea's expected place to find it"
    depth = float(np.median(dark[ring]) - dark[fy, fx])
    if depth < MIN_DEPTH:
        return None, f"no dark macula near the fovea's expected place (contrast {depth:.3f} < {MIN_DEPTH})"
    centre_dist = math.hypot(fx - dx0, fy - dy0) / dd
    return (Fovea(float(x0 + (fx + 0.5) * step_x - 0.5), float(y0 + (fy + 0.5) * step_y - 0.5),
                  float(dd * step_x), centre_dist - 0.5, depth, float(from_prior[fy, fx])),
            "the darkest region near 2.5 disc diameters temporal to the disc")


def assess_macula(fovea: Fovea | None, why_not: str, exudates: np.ndarray | None,
                  geometry: Geometry) -> MaculaAssessment:
    """M1 / M0 / not assessed from the ``fovea`` (or ``why_not`` it was not found) and ``exudates``,
    the model's hard-exudate mask (bool, model space: the square crop ``geometry`` describes, at
    any side; None when the model has no hard-exudate output)."""
    if fovea is None:
        return MaculaAssessment(None, None, f"M not assessed: {why_not}")
    if exudates is None:
        return MaculaAssessment(None, fovea, "M not assessed: this model does not find hard exudates")
    side = exudates.shape[0]
    step = (geometry.crop[2] - geometry.crop[0]) / side, (geometry.crop[3] - geometry.crop[1]) / side
    fx, fy = ((fovea.x + 0.5 - geometry.crop[0]) / step[0] - 0.5, (fovea.y + 0.5 - geometry.crop[1]) / step[1] - 0.5)
    dd = fovea.disc_diameter / step[0]
    ys, xs = np.nonzero(exudates)
    if not len(xs):
        return MaculaAssessment("M0", fovea, "no hard exudates")
    dist = np.hypot(xs - fx, ys - fy) / dd
    nearest = float(dist.min())
    if nearest <= NEAR_DD:
        return MaculaAssessment("M1", fovea, f"hard exudate {nearest:.2f} disc diameters from the fovea's centre "
                                f"(within {NEAR_DD:g})", nearest)
    in_macula = float((dist <= fovea.macula_dd).sum()) / (math.pi * (dd / 2) ** 2)
    if in_macula >= GROUP_DISC_AREAS:
        return MaculaAssessment("M1", fovea, f"a group of hard exudates in the macula ({in_macula:.2f} disc areas, "
                                f"at least {GROUP_DISC_AREAS:g})", nearest)
    return MaculaAssessment("M0", fovea, f"nearest hard exudate {nearest:.2f} disc diameters from the fovea, "
                            f"{in_macula:.3f} disc areas of it in the macula", nearest)
