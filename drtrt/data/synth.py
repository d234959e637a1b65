"""A synthetic data set in the official IDRiD layout, from the pictures of :mod:`drtrt.data.synthetic_fundus`.

:func:`write_synthetic_idrid` writes the layout :mod:`drtrt.data.idrid` reads, plus a file that
is *not* part of the official release, ``synthetic-truth.csv``, with the grade and
macular-edema risk of every image (segmentation images included), for tests.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from drtrt.errors import ConfigError
from drtrt.data.idrid import (
    CSV_COLUMNS,
    GRADING_CSVS,
    GRADING_DIR,
    GRADING_TRUTH_DIR,
    IMAGES_DIR,
    LESION_DIRS,
    NUM_GRADES,
    SEGMENTATION_DIR,
    SEGMENTATION_TRUTH_DIR,
    SPLIT_DIRS,
    SPLITS,
    SUBSETS,
)
from drtrt.data.masks import write_lesion_mask
from drtrt.data.synthetic_fundus import MIN_SIZE, render_picture

IDRID_WIDTH, IDRID_HEIGHT = 4288, 2848
GRADING_DISTRIBUTION = (0.33, 0.05, 0.33, 0.18, 0.11)
"""Share of each grade 0-4 in the synthetic grading set, close to IDRiD-D's training set."""
SEGMENTATION_GRADES = (1, 2, 3, 4)
"""Grades drawn for the segmentation set (every IDRiD-S image shows DR), in proportion to
:data:`GRADING_DISTRIBUTION`."""
MIN_IMAGES_FOR_ALL_GRADES = 10
"""From this many images on, every grade of a subset appears at least once in its training split."""
JPEG_QUALITY = 92
TRUTH_CSV = "synthetic-truth.csv"
"""Not part of the official layout: name, subset, split, grade, edema risk, image path of every image."""
GRADING_CSV_PADDING = 9
"""Empty columns the real training CSV carries after its three named ones (reproduced)."""

@dataclass(frozen=True)
class SynthSummary:
    """What :func:`write_synthetic_idrid` wrote.

    Attributes:
        root: the output folder.
        counts: subset -> split -> number of images.
        grade_histogram: subset -> number of images of each grade 0-4 (both splits).
    """

    root: Path
    counts: dict[str, dict[str, int]]
    grade_histogram: dict[str, list[int]]

    @property
    def total(self) -> int:
        """Number of images written."""
        return sum(sum(splits.values()) for splits in self.counts.values())


def write_synthetic_idrid(
    out: str | Path,
    grading: int,
    segmentation: int,
    size: int = 768,
    seed: int = 0,
    test_fraction: float = 0.2,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic data set in the official IDRiD layout.

    Images are ``size`` pixels wide with IDRiD's aspect ratio. Segmentation images are
    numbered across splits (``IDRiD_01`` ... in training, the numbers go on in testing) and
    get grades 1-4; grading images are numbered from ``IDRiD_001`` in each split, as in the
    real release, with grades drawn in the proportions of :data:`GRADING_DISTRIBUTION`. Both
    splits are stratified by grade. Mask files are written only for lesions present. The
    output depends only on the arguments: the same call writes byte-identical files.

    Args:
        out: folder to create (or an empty one).
        grading: number of grading-set images (0 = no ``B. Disease Grading``).
        segmentation: number of segmentation-set images (0 = no ``A. Segmentation``).
        size: image width in pixels.
        seed: random seed.
        test_fraction: share of each subset put in the testing split.
        progress: called as ``progress(done, total)`` after each image.

    Raises:
        ConfigError: invalid counts, size or fraction, or ``out`` is a non-empty folder.
    """
    out = Path(out)
    _check_options(out, grading, segmentation, size, test_fraction)
    frame = (size, round(size * IDRID_HEIGHT / IDRID_WIDTH))
    master = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    plans = {
        "segmentation": _plan_subset(master, segmentation, SEGMENTATION_GRADES, test_fraction),
        "grading": _plan_subset(master, grading, tuple(range(NUM_GRADES)), test_fraction),
    }
    plans = {subset: plan for subset, plan in plans.items() if plan["train"] or plan["test"]}
    truth_rows: list[list[str | int]] = []
    for subset, plan in plans.items():
        for row in _write_subset(out, subset, plan, seed, frame):
            truth_rows.append(row)
            if progress is not None:
                progress(len(truth_rows), grading + segmentation)
    _write_truth_csv(out / TRUTH_CSV, truth_rows)
    return SynthSummary(
        root=out,
        counts={subset: {split: len(plan[split]) for split in SPLITS} for subset, plan in plans.items()},
        grade_histogram={
            subset: np.bincount(plan["train"] + plan["test"], minlength=NUM_GRADES).tolist()
            for subset, plan in plans.items()
        },
    )


def _write_subset(
    out: Path, subset: str, plan: dict[str, list[int]], seed: int, frame: tuple[int, int]
) -> Iterator[list[str | int]]:
    """Render and write one subset; yields the truth row of each image once it is on disk.

    Each image has its own random generator, seeded by (seed, subset, split, position), so
    it does not depend on how many images come before it.
    """
    segmentation = subset == "segmentation"
    subset_dir = out / (SEGMENTATION_DIR if segmentation else GRADING_DIR)
    digits = max(2 if segmentation else 3, len(str(len(plan["train"]) + len(plan["test"]))))
    number = 0
    for split in SPLITS:
        if not segmentation:  # the grading test images are numbered from 001 again, as in IDRiD
            number = 0
        image_dir = subset_dir / IMAGES_DIR / SPLIT_DIRS[split]
        image_dir.mkdir(parents=True, exist_ok=True)
        csv_rows: list[tuple[str, int, int]] = []
        for index, grade in enumerate(plan[split]):
            number += 1
            name = f"IDRiD_{number:0{digits}d}"
            entropy = [seed, 1, SUBSETS.index(subset), SPLITS.index(split), index]
            fundus = render_picture(np.random.default_rng(np.random.SeedSequence(entropy)), *frame, grade)
            image_path = image_dir / f"{name}.jpg"
            _write_jpeg(image_path, fundus.image)
            if segmentation:
                _write_masks(subset_dir / SEGMENTATION_TRUTH_DIR / SPLIT_DIRS[split], name, fundus.masks)
            csv_rows.append((name, grade, fundus.edema_risk))
            yield [name, subset, split, grade, fundus.edema_risk, image_path.relative_to(out).as_posix()]
        if not segmentation:
            truth_dir = subset_dir / GRADING_TRUTH_DIR
            truth_dir.mkdir(parents=True, exist_ok=True)
            _write_grading_csv(truth_dir / GRADING_CSVS[split], csv_rows, padding=split == "train")


def _check_options(out: Path, grading: int, segmentation: int, size: int, test_fraction: float) -> None:
    """Reject arguments that cannot produce a useful data set."""
    if grading < 0 or segmentation < 0 or grading + segmentation == 0:
        raise ConfigError(
            f"image counts must be >= 0 and not both 0, got grading={grading}, segmentation={segmentation}"
        )
    if size < MIN_SIZE:
        raise ConfigError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder: choose a new or empty output folder")


def _plan_subset(
    rng: np.random.Generator, count: int, grades: tuple[int, ...], test_fraction: float
) -> dict[str, list[int]]:
    """Grades of the training and testing images of one subset, stratified by grade."""
    weights = np.array([GRADING_DISTRIBUTION[g] for g in grades])
    minimum = 1 if count >= MIN_IMAGES_FOR_ALL_GRADES else 0
    per_grade = _apportion(count, weights, np.full(len(grades), minimum), np.full(len(grades), count))
    test_caps = np.maximum(per_grade - 1, 0)
    per_grade_test = _apportion(
        min(round(count * test_fraction), int(test_caps.sum())), per_grade.astype(float), np.zeros_like(per_grade), test_caps
    )
    plan: dict[str, list[int]] = {}
    for split, numbers in (("train", per_grade - per_grade_test), ("test", per_grade_test)):
        split_grades = np.repeat(np.array(grades), numbers)
        plan[split] = rng.permutation(split_grades).tolist()
    return plan


def _apportion(total: int, weights: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` within ``[lower, upper]``.

    Start from the rounded-down proportional quotas clipped to the bounds, then add (or
    remove) one unit at a time where the count is furthest below (above) its quota.
    Deterministic; ``total`` must be reachable within the bounds.
    """
    quota = total * weights / weights.sum() if weights.sum() > 0 else np.zeros(len(weights))
    counts = np.clip(np.floor(quota).astype(int), lower, upper)
    while counts.sum() != total:
        if counts.sum() < total:
            room = np.where(counts < upper, quota - counts, -np.inf)
            counts[int(np.argmax(room))] += 1
        else:
            room = np.where(counts > lower, counts - quota, -np.inf)
            counts[int(np.argmax(room))] -= 1
    return counts


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Baseline JPEG at fixed quality, no metadata (cv2 writes no timestamps)."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"JPEG encoding failed for {path}")
    path.write_bytes(data.tobytes())


def _write_masks(truth_split_dir: Path, name: str, masks: dict[str, np.ndarray]) -> None:
    """One palette TIFF per lesion present, in the official lesion folders."""
    for code, folder in LESION_DIRS.items():
        lesion_dir = truth_split_dir / folder
        lesion_dir.mkdir(parents=True, exist_ok=True)
        if code in masks:
            write_lesion_mask(lesion_dir / f"{name}_{code}.tif", masks[code])


def _write_grading_csv(path: Path, rows: list[tuple[str, int, int]], padding: bool) -> None:
    """Grading CSV in the official format (training file with its empty padding columns)."""
    extra = [""] * (GRADING_CSV_PADDING if padding else 0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow([*CSV_COLUMNS, *extra])
        writer.writerows([name, grade, risk, *extra] for name, grade, risk in rows)


def _write_truth_csv(path: Path, rows: list[list[str | int]]) -> None:
    """The synthetic-only ground truth of every image."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["name", "subset", "split", "grade", "edema_risk", "image"])
        writer.writerows(rows)


