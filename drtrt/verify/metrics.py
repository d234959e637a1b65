"""Task metrics shared by training, evaluation and parity checks.

Grade metrics come from scikit-learn (imported inside the functions, so this module imports
with numpy alone); Dice and IoU are two lines of numpy over confusion counts, which
scikit-learn has no direct equivalent for on label maps.

:class:`TaskMetricsAccumulator` gathers them from outputs already computed. Parity runs every
model on the same preprocessed tensors (and, on the device, on tensors read from golden
files); :func:`drtrt.verify.evaluate.evaluate_runner` preprocesses by itself. Both feed the
accumulator, so both compute the same figures the same way (grade metrics from softmax
probabilities; lesion Dice/IoU from the plain argmax against the model-space target; PR-AUC
from lesion softmax). PR-AUC may use at most ``pixels_per_image`` pixels of each image (parity's
default), drawn with a seed fixed per image index, so every model is scored on the same pixels
and memory stays bounded; ``evaluate_runner`` uses every pixel unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from drtrt.runtime.postprocess import softmax
from drtrt.task import TaskSpec


def grade_metrics(y_true: Sequence[int], probabilities: np.ndarray,
                  referable_min_grade: int) -> dict[str, float | list]:
    """Accuracy, macro-F1, ROC-AUC (one-vs-rest, macro), referable-DR sensitivity/specificity.

    ``probabilities`` is [N, 5]. AUC is NaN when a class is absent from ``y_true`` or only
    one class is present (scikit-learn cannot score it); the other figures are always set.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    labels = list(range(n_classes))
    y_pred = probabilities.argmax(axis=1)
    present = np.unique(y_true)
    auc = float("nan")
    if len(present) > 1:
        # Score only the classes that occur, renormalising their probabilities, so a
        # validation split without severe cases still gets an AUC over the others.
        sub = probabilities[:, present]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        if len(present) == 2:
            auc = float(roc_auc_score(y_true == present[1], sub[:, 1]))
        else:
            auc = float(roc_auc_score(y_true, sub, multi_class="ovr", average="macro", labels=present))
    ref_true = y_true >= referable_min_grade
    ref_pred = y_pred >= referable_min_grade
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "auc": auc,
        "referable_sensitivity": _ratio(np.sum(ref_pred & ref_true), np.sum(ref_true)),
        "referable_specificity": _ratio(np.sum(~ref_pred & ~ref_true), np.sum(~ref_true)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(len(y_true)),
    }


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


class SegmentationScores:
    """Accumulates per-lesion Dice and IoU over a data set (pixels pooled over images).

    Pooling over the whole set, rather than averaging per image, keeps images without a
    lesion of some type from scoring an undefined 0/0.
    """

    def __init__(self, lesion_names: Sequence[str]) -> None:
        """``lesion_names``: class names by label value, background first (``TaskSpec.lesion_names``)."""
        self.lesion_names = tuple(lesion_names)
        n_classes = self.n_classes = len(self.lesion_names)
        self.tp = np.zeros(n_classes, np.int64)
        self.fp = np.zeros(n_classes, np.int64)
        self.fn = np.zeros(n_classes, np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray, ignore: int = 255) -> None:
        """``target`` and ``prediction`` are integer label maps of the same shape."""
        valid = target != ignore
        t = target[valid].astype(np.int64)
        p = prediction[valid].astype(np.int64)
        cm = np.bincount(t * self.n_classes + p, minlength=self.n_classes**2)
        cm = cm.reshape(self.n_classes, self.n_classes)
        diag = np.diag(cm)
        self.tp += diag
        self.fp += cm.sum(axis=0) - diag
        self.fn += cm.sum(axis=1) - diag

    def result(self) -> dict[str, float]:
        """``dice_EX`` … ``iou_HE`` per lesion plus ``mean_dice`` / ``mean_iou`` over lesions.

        A lesion absent from both target and prediction is left out of the means (NaN).
        """
        out: dict[str, float] = {}
        dices, ious = [], []
        for c in range(1, self.n_classes):
            den = 2 * self.tp[c] + self.fp[c] + self.fn[c]
            dice = 2 * self.tp[c] / den if den else float("nan")
            iou = self.tp[c] / (den - self.tp[c]) if den else float("nan")
            out[f"dice_{self.lesion_names[c]}"] = float(dice)
            out[f"iou_{self.lesion_names[c]}"] = float(iou)
            if den:
                dices.append(dice)
                ious.append(iou)
        out["mean_dice"] = float(np.mean(dices)) if dices else float("nan")
        out["mean_iou"] = float(np.mean(ious)) if ious else float("nan")
        return out


def lesion_pr_auc(targets: np.ndarray, probabilities: np.ndarray, lesion_names: Sequence[str],
                  max_pixels: int = 2_000_000, seed: int = 0) -> dict[str, float]:
    """Per-lesion PR-AUC (average precision) from pixel probabilities.

    ``targets`` [N, H, W] labels, ``probabilities`` [N, C, H, W], ``lesion_names`` by label value
    (background first). Pixels are subsampled to
    ``max_pixels`` (fixed seed) to bound memory on full-size sets.
    """
    from sklearn.metrics import average_precision_score

    t = targets.reshape(-1)
    p = np.moveaxis(probabilities, 1, -1).reshape(-1, probabilities.shape[1])
    keep = t != 255
    t, p = t[keep], p[keep]
    if len(t) > max_pixels:
        idx = np.random.default_rng(seed).choice(len(t), max_pixels, replace=False)
        t, p = t[idx], p[idx]
    out, values = {}, []
    for c in range(1, probabilities.shape[1]):
        positives = t == c
        ap = float(average_precision_score(positives, p[:, c])) if positives.any() else float("nan")
        out[f"pr_auc_{lesion_names[c]}"] = ap
        if positives.any():
            values.append(ap)
    out["mean_pr_auc"] = float(np.mean(values)) if values else float("nan")
    return out


METRIC_KEYS = ("accuracy", "macro_f1", "auc", "referable_sensitivity", "referable_specificity",
               "mean_dice", "mean_iou", "mean_pr_auc")
"""Task metrics whose drop against the reference is gated (higher is better for all)."""


class TaskMetricsAccumulator:
    """``update`` once per image with its ground truth and this model's outputs for it."""

    def __init__(self, task: TaskSpec, pixels_per_image: int | None = 65536) -> None:
        """``pixels_per_image`` None = every pixel enters the PR-AUC (exact; memory grows with the set)."""
        self.task = task
        self.pixels_per_image = pixels_per_image
        self.grades: list[int] = []
        self.grade_probs: list[np.ndarray] = []
        self.seg = SegmentationScores(task.lesion_names)
        self.seg_targets: list[np.ndarray] = []
        self.seg_probs: list[np.ndarray] = []

    def update(self, index: int, outputs: Mapping[str, np.ndarray], grade: int | None,
               target: np.ndarray | None) -> None:
        """``outputs`` of ONE image (no batch axis); ``target`` [S, S] uint8 labels (255 = ignore).

        ``index`` (the image's position in the set) seeds the PR-AUC pixel sample.
        """
        grade_key, lesion_key = self.task.grade_output, self.task.lesion_output
        if grade is not None and grade_key in outputs:
            self.grades.append(int(grade))
            self.grade_probs.append(softmax(outputs[grade_key].astype(np.float64)))
        if target is not None and lesion_key in outputs:
            logits = outputs[lesion_key]
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
            metrics.update(grade_metrics(self.grades, np.stack(self.grade_probs), self.task.referable_min_grade))
        if self.seg_targets:
            metrics.update(self.seg.result())
            targets = np.concatenate(self.seg_targets)[None, :, None]                 # [1, P, 1]
            probs = np.concatenate(self.seg_probs, axis=1)[None, :, :, None]          # [1, C, P, 1]
            metrics.update(lesion_pr_auc(targets, probs, self.task.lesion_names))
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
