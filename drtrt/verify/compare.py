"""Model-versus-model agreement: the statistics parity and the INT8 gate are judged on.

A candidate's outputs are compared with a reference's outputs for the same input tensors:

- grade: agreement of the argmax grade and of referable DR (grade >= 2), the reference
  (rows) x candidate (columns) confusion matrix, and every flip with the gap between the
  reference's two most probable grades (a flip where that gap is below :data:`NEAR_TIE` is
  a case the reference itself could not decide: any change of arithmetic can turn it);
- logits, per output: max, mean and p99 of |Δ|, and max |Δ| relative to the reference's
  largest |logit| (``max_rel``); non-finite candidate values are counted, not averaged;
- lesions: per-lesion Dice and IoU of the candidate's label map against the reference's,
  pixels pooled over images, restricted to the field of view exactly as the runtime
  reports lesions (:func:`drtrt.runtime.postprocess.lesion_label_map`), and pixel agreement;
  the same Dice over the pixels the reference *decides* (its two most probable classes at
  least :data:`NEAR_TIE` apart: ``decided_mean_dice``, what the gate judges; lesion types that
  are all fog are left out, see :data:`FOG_DECIDED`) and the share of lesion pixels left out as
  near-ties (``near_tie_share``). A pixel where the reference's top two classes are within a few
  hundredths is a coin the reference tossed: on the small models drtrt trains for demos and
  tests, 6-66 % of all lesion pixels are such ties and 80 % of the pixels an INT8 model changes
  are among them (docs/reproducibility.md), so a Dice over every pixel measures the reference's
  indecision more than the candidate's faithfulness.

The worst images (referable flips first, then grade flips, then lowest mask Dice) are kept
with their arrays so a report can show them side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from drtrt.errors import ArtefactError
from drtrt.preprocess import Geometry
from drtrt.runtime.postprocess import lesion_label_map
from drtrt.task import TaskSpec
from drtrt.verify.metrics import SegmentationScores

NEAR_TIE = 0.05
"""A reference whose two most probable grades (or lesion classes at a pixel) lie within this
(probability) is near a tie."""
FOG_DECIDED = 0.10
"""A lesion type the reference decides on fewer than this share of its pixels is not judged (fog)."""
_DECADE_STEPS = 100            # |Δ| histogram: 100 log-spaced bins per decade (quantiles within 2.4 %)
_LOG_MIN, _LOG_MAX = -12, 6    # bin 0 holds |Δ| < 1e-12 (reported as 0); the last bin everything >= 1e6


class DeltaStats:
    """Streaming max / mean / p99 of |candidate - reference| over every element of one output.

    Quantiles come from a log-spaced histogram (an exact p99 would need every |Δ| in memory:
    5 x 512 x 512 floats per image) and are reported as the upper edge of their bin.
    """

    def __init__(self) -> None:
        self.hist = np.zeros((_LOG_MAX - _LOG_MIN) * _DECADE_STEPS + 2, np.int64)
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.ref_max = 0.0
        self.nonfinite = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref = np.asarray(reference, np.float64)
        delta = np.abs(np.asarray(candidate, np.float64) - ref).ravel()
        finite = np.isfinite(delta)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            delta = delta[finite]
        if delta.size:
            with np.errstate(divide="ignore"):
                idx = np.floor((np.log10(delta) - _LOG_MIN) * _DECADE_STEPS) + 1
            idx = np.clip(np.nan_to_num(idx, neginf=0), 0, len(self.hist) - 1).astype(np.int64)
            self.hist += np.bincount(idx, minlength=len(self.hist))
            self.count += delta.size
            self.total += float(delta.sum())
            self.max = max(self.max, float(delta.max()))
        self.ref_max = max(self.ref_max, float(np.max(np.abs(ref))) if ref.size else 0.0)

    def quantile(self, q: float) -> float:
        if not self.count:
            return float("nan")
        k = np.searchsorted(np.cumsum(self.hist), math.ceil(q * self.count))
        return 0.0 if k == 0 else min(self.max, 10.0 ** (_LOG_MIN + k / _DECADE_STEPS))

    def result(self) -> dict[str, float | int]:
        mean = self.total / self.count if self.count else float("nan")
        return {"max": self.max, "mean": mean, "p99": self.quantile(0.99),
                "max_rel": self.max / self.ref_max if self.ref_max else float("nan"), "nonfinite": self.nonfinite}


@dataclass
class WorstCase:
    """One image where the two models disagree most; arrays are model-space (S x S)."""

    name: str
    ref_grade: int | None
    cand_grade: int | None
    mask_dice: float                 # mean over lesions present in either mask; NaN when none is
    max_abs_delta: float             # over all outputs of this image
    severity: tuple[float, ...]
    rgb: np.ndarray | None = None    # (S, S, 3) uint8 model-space image, when known
    ref_labels: np.ndarray | None = None
    cand_labels: np.ndarray | None = None
    geometry: Geometry | None = None

    def to_dict(self) -> dict:
        return {"image": self.name, "reference_grade": self.ref_grade, "candidate_grade": self.cand_grade,
                "mask_dice": self.mask_dice, "max_abs_delta": self.max_abs_delta}


@dataclass
class Agreement:
    """What :class:`AgreementAccumulator` found; ``to_dict`` is JSON-ready apart from NaN."""

    n_images: int
    grade_agreement: float | None
    referable_agreement: float | None
    confusion: list[list[int]] | None
    logits: dict[str, dict[str, float | int]]
    lesions: dict[str, float]
    pixel_agreement: float | None
    worst: list[WorstCase] = field(default_factory=list)
    lesion_pixels: dict[str, dict[str, int]] = field(default_factory=dict)   # per lesion: reference / candidate
    grade_flips: list[dict] = field(default_factory=list)   # image, both grades, the reference's top-two gap

    @property
    def near_tie_flips(self) -> int:
        return sum(f["reference_top2_gap"] < NEAR_TIE for f in self.grade_flips)

    def to_dict(self) -> dict:
        return {"n_images": self.n_images, "grade_agreement": self.grade_agreement,
                "referable_agreement": self.referable_agreement, "confusion_reference_x_candidate": self.confusion,
                "grade_flips": self.grade_flips, "near_tie_flips": self.near_tie_flips,
                "logits": self.logits, "lesions_vs_reference": self.lesions, "lesion_pixels": self.lesion_pixels,
                "pixel_agreement": self.pixel_agreement, "worst": [w.to_dict() for w in self.worst]}


class AgreementAccumulator:
    """Feed it batches of (reference outputs, candidate outputs); ``result()`` summarises.

    Outputs are name -> array with the batch first: the task's grade output [N, G] and/or its
    lesion output [N, C, S, S]; other outputs get |Δ| statistics only. ``keep_worst`` images are
    retained with their arrays for reports.
    """

    def __init__(self, task: TaskSpec, keep_worst: int = 6) -> None:
        self.task, self.keep_worst = task, keep_worst
        self.deltas: dict[str, DeltaStats] = {}
        self.confusion = np.zeros((task.n_grades, task.n_grades), np.int64)
        self.seg = SegmentationScores(task.lesion_names)
        self.decided = SegmentationScores(task.lesion_names)
        self.lesion_pixels = self.near_tie_pixels = 0
        self.pixels_same = self.pixels = self.n_images = 0
        self.worst: list[WorstCase] = []
        self.grade_flips: list[dict] = []

    def update(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
               names: Sequence[str], geometries: Sequence[Geometry | None] | None = None,
               rgbs: Sequence[np.ndarray | None] | None = None) -> None:
        missing = [k for k in reference if k not in candidate]
        if missing:
            raise ArtefactError(f"the candidate has no output {missing[0]!r} (it has {', '.join(candidate)}); "
                                "compare models exported from the same architecture")
        n = len(names)
        for key, ref in reference.items():
            cand = candidate[key]
            if cand.shape != ref.shape:
                raise ArtefactError(f"output {key!r}: candidate shape {tuple(cand.shape)} differs from the "
                                    f"reference's {tuple(ref.shape)}; both must take the same input size")
            self.deltas.setdefault(key, DeltaStats()).update(ref, cand)
        for i in range(n):
            self._update_image(reference, candidate, i, names[i],
                               geometries[i] if geometries else None, rgbs[i] if rgbs else None)
        self.n_images += n

    def _update_image(self, reference, candidate, i: int, name: str, geometry: Geometry | None,
                      rgb: np.ndarray | None) -> None:
        task, ref_grade, cand_grade = self.task, None, None
        if task.grade_output in reference:
            ref_grade = int(np.argmax(reference[task.grade_output][i]))
            cand_grade = int(np.argmax(np.nan_to_num(candidate[task.grade_output][i], nan=-np.inf)))
            self.confusion[ref_grade, cand_grade] += 1
            if ref_grade != cand_grade:
                self.grade_flips.append({"image": name, "reference_grade": ref_grade, "candidate_grade": cand_grade,
                                         "reference_top2_gap": top2_gap(reference[task.grade_output][i])})
        mask_dice, ref_labels, cand_labels = float("nan"), None, None
        if task.lesion_output in reference:
            ref_labels = _labels(reference[task.lesion_output][i], geometry)
            cand_labels = _labels(np.nan_to_num(candidate[task.lesion_output][i], nan=-np.inf), geometry)
            self.seg.update(ref_labels, cand_labels)
            tie = near_tie_pixels(reference[task.lesion_output][i])
            either = (ref_labels > 0) | (cand_labels > 0)
            self.lesion_pixels += int(either.sum())
            self.near_tie_pixels += int((either & tie).sum())
            self.decided.update(np.where(tie, 255, ref_labels), cand_labels)
            image_seg = SegmentationScores(task.lesion_names)
            image_seg.update(ref_labels, cand_labels)
            mask_dice = image_seg.result()["mean_dice"]
            self.pixels_same += int((ref_labels == cand_labels).sum())
            self.pixels += ref_labels.size
        delta = max(float(np.nanmax(np.abs(candidate[k][i].astype(np.float64) - reference[k][i])))
                    if np.isfinite(candidate[k][i]).all() else math.inf for k in reference)
        flips = (ref_grade is not None and ref_grade != cand_grade,
                 ref_grade is not None and task.is_referable(ref_grade) != task.is_referable(cand_grade))
        severity = (float(flips[1]), float(flips[0]), 0.0 if math.isnan(mask_dice) else 1.0 - mask_dice, delta)
        if self.keep_worst and (len(self.worst) < self.keep_worst or severity > self.worst[-1].severity):
            self.worst.append(WorstCase(name, ref_grade, cand_grade, mask_dice, delta, severity,
                                        rgb, ref_labels, cand_labels, geometry))
            self.worst.sort(key=lambda w: w.severity, reverse=True)
            del self.worst[self.keep_worst:]

    def _decided_dice(self) -> dict[str, float]:
        """``decided_dice_<LESION>`` and their mean ``decided_mean_dice`` (what the gate judges).

        A lesion type the reference decides on fewer than :data:`FOG_DECIDED` of its own pixels is
        *fog*: an undertrained channel hovering at a tie with the background over large areas (on
        faithful INT8 models such types had 0-2 % of their pixels decided; real findings 30-98 %).
        It has no finding to agree with: NaN, left out of the mean, its pixel counts still reported.
        """
        seg, everything = self.decided, self.seg
        out = {}
        for c, name in enumerate(seg.lesion_names[1:], 1):
            decided_ref, all_ref = seg.tp[c] + seg.fn[c], everything.tp[c] + everything.fn[c]
            fog = decided_ref == 0 or decided_ref < FOG_DECIDED * all_ref
            out[f"decided_dice_{name}"] = (float("nan") if fog else
                                           float(2 * seg.tp[c] / (2 * seg.tp[c] + seg.fp[c] + seg.fn[c])))
        values = [v for v in out.values() if not math.isnan(v)]
        out["decided_mean_dice"] = float(np.mean(values)) if values else float("nan")
        return out

    def result(self) -> Agreement:
        n = self.confusion.sum()
        grade = referable = confusion = None
        if n:
            grade = float(np.trace(self.confusion) / n)
            ref_pos = np.arange(self.task.n_grades) >= self.task.referable_min_grade
            same = self.confusion[np.ix_(ref_pos, ref_pos)].sum() + self.confusion[np.ix_(~ref_pos, ~ref_pos)].sum()
            referable = float(same / n)
            confusion = self.confusion.tolist()
        lesions = self.seg.result() if self.pixels else {}
        if self.pixels:
            lesions.update(self._decided_dice())
            lesions["near_tie_share"] = self.near_tie_pixels / self.lesion_pixels if self.lesion_pixels else 0.0
        seg = self.seg
        pixels = {code: {"reference": int(seg.tp[c] + seg.fn[c]), "candidate": int(seg.tp[c] + seg.fp[c])}
                  for c, code in enumerate(self.task.lesion_codes, 1)} if self.pixels else {}

        return Agreement(self.n_images, grade, referable, confusion,
                         {k: v.result() for k, v in self.deltas.items()}, lesions,
                         self.pixels_same / self.pixels if self.pixels else None, list(self.worst), pixels,
                         list(self.grade_flips))


def top2_gap(logits: np.ndarray) -> float:
    """[G] grade logits -> the gap between the two largest softmax probabilities."""
    z = np.asarray(logits, np.float64)
    p = np.sort(np.exp(z - z.max()) / np.exp(z - z.max()).sum())
    return float(p[-1] - p[-2])


def near_tie_grade(logits: np.ndarray) -> bool:
    """[G] reference grade logits -> whether its two most probable grades are within :data:`NEAR_TIE`."""
    return top2_gap(logits) < NEAR_TIE


def near_tie_pixels(logits: np.ndarray) -> np.ndarray:
    """[C, S, S] reference logits -> [S, S] bool: pixels whose two most probable classes are within
    :data:`NEAR_TIE` of each other (softmax probabilities)."""
    z = logits.astype(np.float32) - logits.max(axis=0, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=0, keepdims=True)
    top2 = np.partition(p, -2, axis=0)[-2:]
    return (top2[1] - top2[0]) < NEAR_TIE


def _labels(logits: np.ndarray, geometry: Geometry | None) -> np.ndarray:
    """[C, S, S] logits -> [S, S] uint8 labels, inside the field of view when the geometry is known."""
    if geometry is None:
        return np.argmax(logits, axis=0).astype(np.uint8)
    return lesion_label_map(logits, geometry)
