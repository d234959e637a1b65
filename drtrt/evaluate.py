"""Task metrics of any runner (ONNX, TensorRT engines, PyTorch checkpoints through
:class:`drtrt.train.torch_runner.TorchRunner`) on an IDRiD-layout folder. Torch-free, so it
runs on the device too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from drtrt import LESION_NAMES
from drtrt.errors import ConfigError, DataError
from drtrt.idrid import IdridSample, load_label_map
from drtrt.manifest import INPUT_NAME
from drtrt.preprocess import preprocess
from drtrt.runtime.base import Runner
from drtrt.verify.task_metrics import TaskMetricsAccumulator


def evaluate_runner(runner: Runner, samples: Sequence[IdridSample], batch_size: int = 4,
                    on_progress: Callable[[int, int], None] | None = None,
                    pixels_per_image: int | None = None) -> dict:
    """Grade metrics over samples with a grade; lesion Dice/IoU/PR-AUC over samples with masks.

    Lesion maps are compared in model space (the masks warped with the image's own geometry).
    The figures are :class:`~drtrt.verify.task_metrics.TaskMetricsAccumulator`'s, the same
    code parity judges task metrics with; PR-AUC uses every pixel unless ``pixels_per_image``
    caps it (bounded memory on large sets). Adds ``majority_rate``: the share of the commonest grade.
    """
    spec = runner.info.preprocess
    acc = TaskMetricsAccumulator(pixels_per_image)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        pres = [preprocess(s.image, spec) for s in chunk]
        outputs = runner.infer({INPUT_NAME: np.stack([p.tensor for p in pres])})
        for i, (sample, pre) in enumerate(zip(chunk, pres)):
            target = (pre.geometry.to_model(load_label_map(sample), interpolation="nearest")
                      if sample.has_masks and "lesion_logits" in outputs else None)
            acc.update(start + i, {k: v[i] for k, v in outputs.items()}, sample.grade, target)
        if on_progress:
            on_progress(min(start + batch_size, len(samples)), len(samples))
    metrics = acc.result()
    if acc.grades:
        counts = np.bincount(acc.grades, minlength=5)
        metrics["majority_rate"] = float(counts.max() / counts.sum())
    return metrics


def select_samples(data: str | Path, split: str = "test", subset: str | None = None) -> list[IdridSample]:
    """Samples of ``split`` ("train" | "test" | "all") and ``subset`` (None = both) under ``data``.

    Raises:
        ConfigError: unknown split; DataError: nothing selected (the message says what exists).
    """
    from drtrt.idrid import read_idrid

    if split not in ("train", "test", "all"):
        raise ConfigError(f"unknown split {split!r}; use test, train or all")
    index = read_idrid(data)
    samples = index.select(subset=subset, split=None if split == "all" else split)
    if not samples:
        raise DataError(f"no {subset or 'IDRiD'} images in the {split} split under {data}; "
                        f"it holds {len(index.samples)} images in all")
    return samples


def metrics_tables(metrics: dict, title: str = "") -> list:
    """Rich tables: task metrics (grade, referable DR, per-lesion) and the grade confusion matrix."""
    from rich.table import Table

    def fmt(value) -> str:
        return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"

    tables = []
    summary = Table(title=title or "metrics")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key in ("accuracy", "macro_f1", "auc", "referable_sensitivity", "referable_specificity", "majority_rate",
                "mean_dice", "mean_iou", "mean_pr_auc"):
        if key in metrics:
            summary.add_row(key, fmt(metrics[key]))
    for key in ("n", "n_segmentation"):
        if key in metrics:
            summary.add_row(key, str(metrics[key]))
    tables.append(summary)
    if "mean_dice" in metrics:
        lesions = Table(title="lesions")
        for col in ("lesion", "Dice", "IoU", "PR-AUC"):
            lesions.add_column(col, justify="right" if col != "lesion" else "left")
        for code in LESION_NAMES[1:]:
            lesions.add_row(code, *(fmt(metrics.get(f"{k}_{code}")) for k in ("dice", "iou", "pr_auc")))
        tables.append(lesions)
    if "confusion_matrix" in metrics:
        matrix = Table(title="grade confusion matrix (rows: truth, columns: predicted)")
        matrix.add_column("")
        for g in range(len(metrics["confusion_matrix"])):
            matrix.add_column(str(g), justify="right")
        for g, row in enumerate(metrics["confusion_matrix"]):
            matrix.add_row(str(g), *(str(v) for v in row))
        tables.append(matrix)
    return tables
