"""Task metrics against ground truth, accumulated from outputs already computed.

Parity runs every model on the same preprocessed tensors (and, on the device, on tensors read
from golden files); :func:`drtrt.evaluate.evaluate_runner` preprocesses by itself. Both feed
this accumulator, so both compute the same figures the same way (grade metrics from softmax
probabilities; lesion Dice/IoU from the plain argmax against the model-space target; PR-AUC
from lesion softmax). PR-AUC may use at most ``pixels_per_image`` pixels of each image (parity's
default), drawn with a seed fixed per image index, so every model is scored on the same pixels
and memory stays bounded; ``evaluate_runner`` uses every pixel unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from drtrt.metrics import SegmentationScores, grade_metrics, lesion_pr_auc
from drtrt.postprocess import softmax

METRIC_KEYS = ("accuracy", "macro_f1", "auc", "referable_sensitivity", "referable_specificity",
               "mean_dice", "mean_iou", "mean_pr_auc")
"""Task metrics whose drop against the reference is gated (higher is better for all)."""


class TaskMetricsAccumulator:
    """``update`` once per image with its ground truth and this model's outputs for it."""

    def __init__(self, pixels_per_image: int | None = 65536, n_lesion_classes: int = 5) -> None:
        """``pixels_per_image`` None = every pixel enters the PR-AUC (exact; memory grows with the set)."""
        self.pixels_per_image = pixels_per_image
        self.grades: list[int] = []
        self.grade_probs: list[np.ndarray] = []
        self.seg = SegmentationScores(n_lesion_classes)
        self.seg_targets: list[np.ndarray] = []
        self.seg_probs: list[np.ndarray] = []

    def update(self, index: int, outputs: Mapping[str, np.ndarray], grade: int | None,
               target: np.ndarray | None) -> None:
        """``outputs`` of ONE image (no batch axis); ``target`` [S, S] uint8 labels (255 = ignore).

        ``index`` (the image's position in the set) seeds the PR-AUC pixel sample.
        """
        if grade is not None and "grade_logits" in outputs:
            self.grades.append(int(grade))
            self.grade_probs.append(softmax(outputs["grade_logits"].astype(np.float64)))
        if target is not None and "lesion_logits" in outputs:
            logits = outputs["lesion_logits"]
            self.seg.update(target, logits.argmax(0))
            flat_target = target.reshape(-1)
            probs = softmax(logits.astype(np.float32), axis=0).reshape(logits.shape[0], -1)
            if self.pixels_per_image and flat_target.size > self.pixels_per_image:
                pick = np.random.default_rng(index).choice(flat_target.size, self.pixels_per_image, replace=False)
                flat_target, probs = flat_target[pick], probs[:, pick]
            self.seg_targets.append(flat_target)
            self.seg_probs.append(probs)

    def result(self) -> dict:
        metrics: dict = {}
        if self.grades:
            metrics.update(grade_metrics(self.grades, np.stack(self.grade_probs)))
        if self.seg_targets:
            metrics.update(self.seg.result())
            targets = np.concatenate(self.seg_targets)[None, :, None]                 # [1, P, 1]
            probs = np.concatenate(self.seg_probs, axis=1)[None, :, :, None]          # [1, C, P, 1]
            metrics.update(lesion_pr_auc(targets, probs))
            metrics["n_segmentation"] = len(self.seg_targets)
        return metrics


def metric_deltas(reference: Mapping[str, float], candidate: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Per gated metric present in both: reference value, candidate value and drop (ref - cand)."""
    out = {}
    for key in METRIC_KEYS:
        if key in reference and key in candidate:
            ref, cand = float(reference[key]), float(candidate[key])
            out[key] = {"reference": ref, "candidate": cand, "drop": ref - cand}
    return out
