"""Task metrics shared by training, evaluation and parity checks.

Grade metrics come from scikit-learn (imported inside the functions, so this module imports
with numpy alone); Dice and IoU are two lines of numpy over confusion counts, which
scikit-learn has no direct equivalent for on label maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from drtrt import LESION_NAMES, REFERABLE_MIN_GRADE


def grade_metrics(y_true: Sequence[int], probabilities: np.ndarray) -> dict[str, float | list]:
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
    ref_true = y_true >= REFERABLE_MIN_GRADE
    ref_pred = y_pred >= REFERABLE_MIN_GRADE
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

    def __init__(self, n_classes: int = len(LESION_NAMES)) -> None:
        self.n_classes = n_classes
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
            out[f"dice_{LESION_NAMES[c]}"] = float(dice)
            out[f"iou_{LESION_NAMES[c]}"] = float(iou)
            if den:
                dices.append(dice)
                ious.append(iou)
        out["mean_dice"] = float(np.mean(dices)) if dices else float("nan")
        out["mean_iou"] = float(np.mean(ious)) if ious else float("nan")
        return out


def lesion_pr_auc(targets: np.ndarray, probabilities: np.ndarray, max_pixels: int = 2_000_000,
                  seed: int = 0) -> dict[str, float]:
    """Per-lesion PR-AUC (average precision) from pixel probabilities.

    ``targets`` [N, H, W] labels, ``probabilities`` [N, C, H, W]. Pixels are subsampled to
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
        out[f"pr_auc_{LESION_NAMES[c]}"] = ap
        if positives.any():
            values.append(ap)
    out["mean_pr_auc"] = float(np.mean(values)) if values else float("nan")
    return out


def json_ready(value):
    """Replace NaN (an undefined metric) by None, recursively, so the JSON written is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
