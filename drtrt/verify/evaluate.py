"""Task metrics of any runner (ONNX, TensorRT engines, PyTorch checkpoints through
:class:`drtrt.train.torch_runner.TorchRunner`) on an IDRiD-layout folder. Torch-free, so it
runs on the device too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from drtrt.data.idrid import IdridSample
from drtrt.errors import ArtefactError, ConfigError, DataError
from drtrt.runtime.base import Runner
from drtrt.runtime.inference import BatchedInference
from drtrt.verify.items import items_from_samples
from drtrt.verify.metrics import TaskMetricsAccumulator


def evaluate_runner(runner: Runner, samples: Sequence[IdridSample], batch_size: int = 4,
                    on_progress: Callable[[int, int], None] | None = None,
                    pixels_per_image: int | None = None) -> dict:
    """Grade metrics over samples with a grade; lesion Dice/IoU/PR-AUC over samples with masks.

    Lesion maps are compared in model space (the masks warped with the image's own geometry).
    The figures are :class:`~drtrt.verify.metrics.TaskMetricsAccumulator`'s, the same code
    parity judges task metrics with; PR-AUC uses every pixel unless ``pixels_per_image`` caps
    it (bounded memory on large sets). Adds ``majority_rate``: the share of the commonest grade.
    """
    task = runner.info.task
    acc = TaskMetricsAccumulator(task, pixels_per_image)
    items = items_from_samples(samples, runner.info.preprocess, task, targets=task.lesion_output is not None)
    done = 0
    for batch in BatchedInference(runner, batch_size)(items):
        for item, outputs in zip(batch.items, batch.per_image()):
            if not all(np.isfinite(array).all() for array in outputs.values()):   # else sklearn fails on the NaN
                raise ArtefactError(f"{runner.name} gives NaN or infinite outputs on {item.name}: its weights are "
                                    "damaged (a corrupt file) or its training diverged; export or train it again")
            acc.update(done, outputs, item.grade, item.target)
            done += 1
        if on_progress:
            on_progress(done, len(samples))
    metrics = acc.result()
    if acc.grades:
        counts = np.bincount(acc.grades, minlength=task.n_grades)
        metrics["majority_rate"] = float(counts.max() / counts.sum())
    return metrics


def select_samples(data: str | Path, split: str = "test", subset: str | None = None) -> list[IdridSample]:
    """Samples of ``split`` ("train" | "test" | "all") and ``subset`` (None = both) under ``data``.

    Raises:
        ConfigError: unknown split; DataError: nothing selected (the message says what exists).
    """
    from drtrt.data.idrid import read_idrid

    if split not in ("train", "test", "all"):
        raise ConfigError(f"unknown split {split!r}; use test, train or all")
    index = read_idrid(data)
    samples = index.select(subset=subset, split=None if split == "all" else split)
    if not samples:
        raise DataError(f"no {subset or 'IDRiD'} images in the {split} split under {data}; "
                        f"it holds {len(index.samples)} images in all")
    return samples
