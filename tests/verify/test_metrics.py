import math

import numpy as np
import pytest

from drtrt.task import TaskSpec
from drtrt.verify.metrics import SegmentationScores, grade_metrics, lesion_pr_auc

TASK = TaskSpec()


def test_grade_metrics_match_hand_computation():
    y = [0, 0, 1, 2, 3, 4, 2, 2]
    pred = [0, 1, 1, 2, 3, 4, 0, 2]
    probs = np.full((8, 5), 0.01)
    probs[np.arange(8), pred] = 0.96
    m = grade_metrics(y, probs, TASK.referable_min_grade)
    assert m["accuracy"] == pytest.approx(6 / 8)
    # referable = grade >= 2: true {2,3,4,2,2} -> one (index 6) predicted 0 -> sensitivity 4/5
    assert m["referable_sensitivity"] == pytest.approx(4 / 5)
    assert m["referable_specificity"] == pytest.approx(1.0)
    assert np.array(m["confusion_matrix"]).sum() == 8
    assert 0.0 <= m["auc"] <= 1.0


def test_grade_auc_with_missing_classes_is_still_defined():
    y = [0, 0, 2, 2]
    probs = np.array([[0.9, 0, 0.1, 0, 0], [0.6, 0, 0.4, 0, 0], [0.2, 0, 0.8, 0, 0], [0.3, 0, 0.7, 0, 0]])
    assert grade_metrics(y, probs, 2)["auc"] == pytest.approx(1.0)
    assert math.isnan(grade_metrics([1, 1], probs[:2], 2)["auc"])


def test_dice_and_iou_pooled_over_images():
    target = np.zeros((2, 4, 4), np.uint8)
    pred = np.zeros((2, 4, 4), np.uint8)
    target[0, :2, :2] = 1          # 4 EX pixels
    pred[0, :2, :1] = 1            # 2 of them found
    target[1, 3, 3] = 3            # one MA pixel missed
    scores = SegmentationScores(TASK.lesion_names)
    for t, p in zip(target, pred):
        scores.update(t, p)
    r = scores.result()
    assert r["dice_EX"] == pytest.approx(2 * 2 / (2 + 4))
    assert r["iou_EX"] == pytest.approx(2 / 4)
    assert r["dice_MA"] == 0.0
    assert math.isnan(r["dice_SE"])  # absent everywhere: not counted
    assert r["mean_dice"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_ignored_pixels_do_not_count():
    scores = SegmentationScores(TASK.lesion_names)
    target = np.full((3, 3), 255, np.uint8)
    target[0, 0] = 1
    scores.update(target, np.ones((3, 3), np.uint8))
    assert scores.result()["dice_EX"] == 1.0


def test_pr_auc_perfect_ranking():
    t = np.zeros((1, 4, 4), np.uint8)
    t[0, 0, :2] = 1
    p = np.zeros((1, 5, 4, 4), np.float32)
    p[0, 0] = 1.0
    p[0, 1, 0, :2] = 0.9
    r = lesion_pr_auc(t, p, TASK.lesion_names)
    assert r["pr_auc_EX"] == pytest.approx(1.0)
    assert math.isnan(r["pr_auc_HE"])


def test_referable_threshold_comes_from_the_task():
    """Sensitivity and specificity follow the vocabulary's referable grade, not a constant."""
    y, probs = [1, 2], np.eye(5)[[1, 2]]
    assert grade_metrics(y, probs, 2)["referable_sensitivity"] == 1.0
    assert grade_metrics(y, probs, 1)["referable_specificity"] != grade_metrics(y, probs, 2)["referable_specificity"]
