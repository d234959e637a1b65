"""Labelled images ready for a model: what evaluation, parity and golden files iterate over.

An :class:`ImageItem` is one image preprocessed once (the exact model input, its model-space
picture and geometry) with its ground truth (grade, model-space lesion target) and, when read
from golden files, the reference's stored outputs. Every model compared on an item sees the
byte-identical tensor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drtrt.data.idrid import IdridSample
from drtrt.data.masks import load_label_map
from drtrt.preprocess import Geometry, PreprocessSpec, preprocess
from drtrt.task import TaskSpec


@dataclass
class ImageItem:
    """One image ready for comparison. ``reference`` holds stored outputs (golden) or None."""

    name: str
    tensor: np.ndarray                         # (3, S, S) float32 model input
    rgb: np.ndarray | None                     # (S, S, 3) uint8 model-space picture
    geometry: Geometry | None
    grade: int | None = None
    target: np.ndarray | None = None           # (S, S) uint8 lesion labels, model space
    reference: dict[str, np.ndarray] | None = field(default=None, repr=False)


def items_from_samples(samples: Sequence[IdridSample | str | Path], spec: PreprocessSpec, task: TaskSpec,
                       targets: bool = True) -> Iterator[ImageItem]:
    """Preprocess each sample once with ``spec``, lazily; lesion targets (labelled as ``task``
    names them) are warped with the image's own geometry (``targets=False``: none are read).

    Plain image paths are accepted too (no grade, no target)."""
    for sample in samples:
        if not isinstance(sample, IdridSample):
            pre = preprocess(sample, spec)
            yield ImageItem(str(sample), pre.tensor, pre.rgb, pre.geometry)
            continue
        pre = preprocess(sample.image, spec)
        target = (pre.geometry.to_model(load_label_map(sample, task=task), interpolation="nearest")
                  if targets and sample.has_masks else None)
        yield ImageItem(sample.key, pre.tensor, pre.rgb, pre.geometry, sample.grade, target)
