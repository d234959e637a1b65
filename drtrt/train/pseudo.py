"""Pseudo-labels as the thesis makes them (§4.1.3), stored on disk with their provenance.

A VGG16 grader trained on IDRiD-D grades the IDRiD-S images; a U-Net-VGG16 trained on IDRiD-S
draws lesion masks for the IDRiD-D images; an image graded 0 (real or pseudo) gets an
all-background mask. Only training-split images are labelled; test images stay untouched.

Folder written (``LABELS``)::

    grades.csv        key, grade, source (real | pseudo), p0..p4 (grader probabilities)
    masks/KEY.png     label map 0-4 at the image's original resolution (``/`` in KEY → ``__``)
    provenance.json   drtrt version, date, data root, both checkpoints with SHA-256, counts

Masks are stored in original-image coordinates so any later preprocessing size maps them
through the same geometry as real masks. Training reads the folder back through
:mod:`.pseudo_folder`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from drtrt import __version__
from drtrt.data.idrid import IdridIndex, IdridSample, read_idrid
from drtrt.errors import DataError
from drtrt.fileio import sha256_file
from drtrt.runtime.inference import BatchedInference
from drtrt.train.pseudo_folder import GRADES_CSV, MASKS_DIR, PROVENANCE_JSON, mask_file
from drtrt.train.torch_runner import TorchRunner
from drtrt.train.train_config import TrainConfig
from drtrt.train.trainer import train
from drtrt.verify.items import ImageItem, items_from_samples


@dataclass(frozen=True)
class PseudoLabels:
    root: Path
    grader: Path
    segmenter: Path
    graded: int      # images that received a pseudo grade
    masked: int      # images that received a pseudo mask


def make_pseudo_labels(data: str | Path | IdridIndex, out: str | Path, cfg: TrainConfig,
                       grader: str | Path | None = None, segmenter: str | Path | None = None,
                       log: Callable[[str], None] = print, cache_dir: str | Path | None = None,
                       on_progress: Callable[[dict], None] | None = None) -> PseudoLabels:
    """Train (or load) the two baselines and write the labels of every training image to ``out``.

    ``cfg`` is the training recipe of both baselines (its ``model.arch`` is replaced by
    "vgg16" / "unet-vgg16"); the grader trains on IDRiD-D only, the segmenter on IDRiD-S only.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = data if isinstance(data, IdridIndex) else read_idrid(data)
    for name, arch, subset in (("grader", "vgg16", "grading"), ("segmenter", "unet-vgg16", "segmentation")):
        if (grader if name == "grader" else segmenter) is None:
            if not index.select(subset=subset, split="train"):
                raise DataError(f"cannot train the pseudo-label {name}: no {subset} training images under {index.root}")
            log(f"training the {name} ({arch}) on the {subset} set")
            sub_cfg = replace(cfg, labels="partial", pseudo_labels=None, subsets=(subset,),
                              model=replace(cfg.model, arch=arch))
            train(sub_cfg, index, out / name, log=log, cache_dir=cache_dir, on_progress=on_progress)
            if name == "grader":
                grader = out / name / "best.pt"
            else:
                segmenter = out / name / "best.pt"
    grader, segmenter = Path(grader), Path(segmenter)
    (out / MASKS_DIR).mkdir(exist_ok=True)
    todo = [s for s in index.select(split="train") if s.grade is None or not s.has_masks]
    rows, grades, sizes = [], {}, {}
    with TorchRunner(grader) as grade_runner:
        for sample, item, logits in _predict(grade_runner, todo, grade_runner.info.task.grade_output):
            probs = np.exp(logits.astype(np.float64) - logits.max())
            probs /= probs.sum()
            grades[sample.key] = sample.grade if sample.grade is not None else int(probs.argmax())
            sizes[sample.key] = item.geometry.original_size   # (height, width)
            rows.append([sample.key, grades[sample.key], "real" if sample.grade is not None else "pseudo",
                         *(f"{p:.6f}" for p in probs)])
    unmasked = [s for s in todo if not s.has_masks]
    with TorchRunner(segmenter) as seg_runner:
        lesion_output = seg_runner.info.task.lesion_output
        for sample, item, lesion in _predict(seg_runner, [s for s in unmasked if grades[s.key] != 0], lesion_output):
            label = item.geometry.to_original(lesion.argmax(0).astype(np.uint8), interpolation="nearest")
            cv2.imwrite(str(mask_file(out, sample.key)), label)
    for sample in unmasked:
        if grades[sample.key] == 0:
            cv2.imwrite(str(mask_file(out, sample.key)), np.zeros(sizes[sample.key], np.uint8))
    graded, masked = sum(s.grade is None for s in todo), len(unmasked)
    with (out / GRADES_CSV).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "grade", "source", *(f"p{i}" for i in range(len(rows[0]) - 3 if rows else 0))])
        writer.writerows(rows)
    provenance = {
        "drtrt_version": __version__, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data_root": str(index.root), "images_graded": graded, "images_masked": masked,
        "grader": {"checkpoint": str(grader), "sha256": sha256_file(grader)},
        "segmenter": {"checkpoint": str(segmenter), "sha256": sha256_file(segmenter)},
        "rule": "grade-0 images (real or pseudo) get an all-background mask",
    }
    (out / PROVENANCE_JSON).write_text(json.dumps(provenance, indent=2))
    return PseudoLabels(out, grader, segmenter, graded, masked)


def _predict(runner, samples: Sequence[IdridSample], output: str) -> Iterator[tuple[IdridSample, ImageItem, np.ndarray]]:
    """``runner``'s ``output`` for each sample, one image per forward pass, with its preprocessed item."""
    items = items_from_samples(samples, runner.info.preprocess, runner.info.task, targets=False)
    for sample, batch in zip(samples, BatchedInference(runner, batch_size=1)(items)):
        yield sample, batch.items[0], batch.outputs[0][output][0]
