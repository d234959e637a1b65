"""Task metrics of any runner (ONNX now; engines and checkpoints through the same interface)
on the held-out part of an IDRiD-layout folder. Torch-free, so it runs on the device too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from drtrt.idrid import IdridSample, load_label_map
from drtrt.manifest import INPUT_NAME
from drtrt.metrics import SegmentationScores, grade_metrics, lesion_pr_auc
from drtrt.postprocess import softmax
from drtrt.preprocess import preprocess
from drtrt.runtime.base import Runner


def evaluate_runner(runner: Runner, samples: Sequence[IdridSample], batch_size: int = 4,
                    on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Grade metrics over samples with a grade; lesion Dice/IoU/PR-AUC over samples with masks.

    Lesion maps are compared in model space (the masks warped with the image's own geometry).
    """
    spec = runner.info.preprocess
    grades, grade_probs = [], []
    seg = SegmentationScores()
    seg_targets, seg_probs = [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        pres = [preprocess(s.image, spec) for s in chunk]
        outputs = runner.infer({INPUT_NAME: np.stack([p.tensor for p in pres])})
        for i, (sample, pre) in enumerate(zip(chunk, pres)):
            if "grade_logits" in outputs and sample.grade is not None:
                grades.append(sample.grade)
                grade_probs.append(softmax(outputs["grade_logits"][i].astype(np.float64)))
            if "lesion_logits" in outputs and sample.has_masks:
                target = pre.geometry.to_model(load_label_map(sample), interpolation="nearest")
                logits = outputs["lesion_logits"][i]
                seg.update(target, logits.argmax(0))
                seg_targets.append(target)
                seg_probs.append(softmax(logits.astype(np.float32), axis=0))
        if on_progress:
            on_progress(min(start + batch_size, len(samples)), len(samples))
    metrics: dict = {}
    if grades:
        metrics.update(grade_metrics(grades, np.stack(grade_probs)))
        counts = np.bincount(grades, minlength=5)
        metrics["majority_rate"] = float(counts.max() / counts.sum())
    if seg_targets:
        metrics.update(seg.result())
        metrics.update(lesion_pr_auc(np.stack(seg_targets), np.stack(seg_probs)))
        metrics["n_segmentation"] = len(seg_targets)
    return metrics
