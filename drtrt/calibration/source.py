"""Which images calibrate INT8, and how they reach the quantiser.

A :class:`CalibrationSet` is an ordered list of image files plus where they came from. It
is picked either from the **training split** of an IDRiD-layout folder, stratified by DR
grade (:func:`select_idrid`; the test split is never touched, it is what the accuracy gate
runs on), or from any folder of plain images such as a clinic's own camera
(:func:`select_folder`). Its :attr:`~CalibrationSet.sha256` identifies the exact images
(names and bytes), so an engine manifest can say what it was calibrated on.

:class:`TensorReader` is the ONNX Runtime ``CalibrationDataReader`` that feeds those images
through :func:`drtrt.preprocess.preprocess`, the runtime's own preprocessing, with the
model's recorded :class:`~drtrt.preprocess.PreprocessSpec`.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from drtrt.data.idrid import IdridSample, read_idrid
from drtrt.errors import ConfigError, DataError
from drtrt.fileio import sha256_file
from drtrt.model_info import ModelInfo
from drtrt.preprocess import preprocess
from drtrt.runtime.photos import collect_images

RECOMMENDED_IMAGES = 300
"""Fewer calibration images than this draws a warning (activation ranges get noisy)."""
UNGRADED = "lesion set"
"""Stratum of IDRiD segmentation images, which carry lesion masks but no grade."""


@dataclass(frozen=True)
class CalibrationSet:
    """Images in a fixed order. ``grades[i]`` is image i's DR grade, or None when unknown.

    origin: human-readable description of where the images were picked from.
    """

    images: tuple[Path, ...]
    grades: tuple[int | None, ...]
    origin: str

    def __post_init__(self) -> None:
        if len(self.images) != len(self.grades):
            raise ValueError("CalibrationSet: images and grades must have the same length")

    def __len__(self) -> int:
        return len(self.images)

    @cached_property
    def file_hashes(self) -> tuple[str, ...]:
        """sha256 of each image file's bytes, in order."""
        return tuple(sha256_file(p) for p in self.images)

    @cached_property
    def sha256(self) -> str:
        """sha256 over ``name<TAB>file sha256<LF>`` of every image, in order: same images, same hash."""
        digest = hashlib.sha256()
        for path, file_hash in zip(self.images, self.file_hashes):
            digest.update(f"{path.name}\t{file_hash}\n".encode())
        return digest.hexdigest()

    def listing(self, relative_to: Path | None = None) -> list[dict]:
        """One ``{"image", "grade", "sha256"}`` entry per image (paths relative when possible)."""
        rows = []
        for path, grade, file_hash in zip(self.images, self.grades, self.file_hashes):
            shown = path
            if relative_to is not None:
                try:
                    shown = path.relative_to(relative_to)
                except ValueError:
                    pass
            rows.append({"image": str(shown), "grade": grade, "sha256": file_hash})
        return rows

    def grade_counts(self) -> dict[str, int]:
        """Images per stratum: grade ``"0"`` ... ``"4"``, or ``"no grade"`` (IDRiD lesion set, plain folders)."""
        counts: dict[str, int] = {}
        for g in self.grades:
            key = "no grade" if g is None else str(g)
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def reader(self, info: ModelInfo, batch_size: int = 1) -> TensorReader:
        return TensorReader(self.images, info, batch_size)


class TensorReader(CalibrationDataReader):
    """``get_next()`` -> ``{input name: float32 [B, 3, S, S]}`` batches of preprocessed images, then None.

    ONNX Runtime's calibrator runs the model on these feeds itself. Images are decoded and
    preprocessed lazily with the model's recorded spec, one batch at a time, so memory stays at
    one batch whatever the set size. ``rewind()`` starts over.
    """

    def __init__(self, images: Sequence[Path], info: ModelInfo, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ConfigError(f"calibration batch size must be >= 1, found {batch_size}")
        self.images = list(images)
        self.spec = info.preprocess
        self.input_name = info.task.input_name
        self.batch_size = batch_size
        self._batches: Iterator[dict[str, np.ndarray]] = self._generate()

    def _generate(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.images), self.batch_size):
            chunk = self.images[start:start + self.batch_size]
            yield {self.input_name: np.stack([preprocess(p, self.spec).tensor for p in chunk])}


    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._generate()

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


def stratified_pick(strata: dict[str, list], count: int, seed: int) -> list:
    """``count`` items drawn across strata in proportion to their sizes (largest remainder).

    Every non-empty stratum gets at least one item when ``count`` allows it. Within a
    stratum the draw is a seeded shuffle, so the pick is reproducible. Returns all items
    when ``count`` >= their number. Output order: strata in key order, then draw order.
    """
    total = sum(len(v) for v in strata.values())
    keys = [k for k in sorted(strata) if strata[k]]
    if count >= total:
        return [item for k in keys for item in strata[k]]
    quota = {k: count * len(strata[k]) / total for k in keys}
    take = {k: int(quota[k]) for k in keys}
    if count >= len(keys):
        for k in keys:
            take[k] = max(take[k], 1)
    while sum(take.values()) > count:   # the minimum of one overshot: trim strata that keep at least one
        k = max((k for k in keys if take[k] > 1), key=lambda k: (take[k] - quota[k], take[k]))
        take[k] -= 1
    by_remainder = sorted(keys, key=lambda k: (quota[k] - take[k], len(strata[k])), reverse=True)
    for k in by_remainder:
        if sum(take.values()) >= count:
            break
        if take[k] < len(strata[k]):
            take[k] += 1
    rng = random.Random(seed)
    picked = []
    for k in keys:
        items = list(strata[k])
        rng.shuffle(items)
        picked += items[:take[k]]
    return picked


def _strata(samples: Sequence[IdridSample]) -> dict[str, list[IdridSample]]:
    strata: dict[str, list[IdridSample]] = {}
    for s in samples:
        strata.setdefault(UNGRADED if s.grade is None else str(s.grade), []).append(s)
    return strata


def idrid_samples(root: str | os.PathLike, split: str, count: int, seed: int = 0) -> list[IdridSample]:
    """Up to ``count`` samples of one split of both IDRiD subsets, stratified by grade."""
    index = read_idrid(root)
    samples = index.select(split=split)
    if not samples:
        raise DataError(f"{root} has no {split}-split images in either IDRiD subset; "
                        f"expected '{split}' images under 'A. Segmentation' or 'B. Disease Grading'")
    return stratified_pick(_strata(samples), count, seed)


def select_idrid(root: str | os.PathLike, count: int = RECOMMENDED_IMAGES, seed: int = 0) -> CalibrationSet:
    """Calibration images from the TRAINING split of an IDRiD-layout folder, stratified by grade.

    Grading images are stratified by their grade; segmentation images (no grade, all with
    lesions) form one more stratum, so the lesion branch sees lesions during calibration.
    """
    if count < 1:
        raise ConfigError(f"the number of calibration images must be >= 1, found {count}")
    picked = idrid_samples(root, "train", count, seed)
    return CalibrationSet(tuple(s.image for s in picked), tuple(s.grade for s in picked),
                          f"IDRiD training split of {root}")


def select_folder(folder: str | os.PathLike, count: int | None = RECOMMENDED_IMAGES, seed: int = 0,
                  exclude: Sequence[Path] = ()) -> CalibrationSet:
    """Up to ``count`` images (seeded random draw) of a plain folder, e.g. a clinic camera's export.

    ``exclude``: files never picked (e.g. the held-out images of the accuracy gate).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"calibration image folder {folder} does not exist or is not a folder")
    skip = {Path(p).resolve() for p in exclude}
    images = [p for p in collect_images([folder]) if p.resolve() not in skip]
    if not images:
        raise DataError(f"no calibration images left in {folder} once the held-out images are set aside")
    picked = stratified_pick({"all": images}, len(images) if count is None else count, seed)
    picked.sort()
    return CalibrationSet(tuple(picked), (None,) * len(picked), f"image folder {folder}")


def split_folder(folder: str | os.PathLike, count: int, holdout: int, seed: int = 0) -> tuple[CalibrationSet, list[Path]]:
    """A folder's images split into a calibration set and disjoint held-out images for the gate.

    The held-out images are drawn first (up to ``holdout``, at most a fifth of the folder so
    calibration keeps most of it); calibration takes up to ``count`` of the rest.
    """
    images = collect_images([Path(folder)])
    n_hold = min(holdout, len(images) // 5)
    held = sorted(stratified_pick({"all": images}, n_hold, seed + 1)) if n_hold else []
    return select_folder(folder, count, seed, exclude=held), held


def calibration_set(source: CalibrationSet | str | os.PathLike, count: int, seed: int = 0) -> CalibrationSet:
    """A CalibrationSet as is; an IDRiD-layout folder -> its training split, stratified by grade;
    any other folder -> up to ``count`` of its images."""
    if isinstance(source, CalibrationSet):
        return source
    try:
        return select_idrid(source, count, seed)
    except DataError as idrid_error:
        try:
            collect_images([Path(source)])
        except DataError:
            raise idrid_error from None
        return select_folder(source, count, seed)
