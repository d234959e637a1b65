"""A pseudo-label folder read back: where its files lie, and the labels it gives training items.

The folder is written by :func:`drtrt.train.pseudo.make_pseudo_labels`, which trains its two
baselines with the trainer; the trainer reads the folder through this module, so the reading side
stays free of the making side and the two import each other in one direction only.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from drtrt.errors import DataError
from drtrt.train.data import LabelledSample

GRADES_CSV = "grades.csv"
PROVENANCE_JSON = "provenance.json"
MASKS_DIR = "masks"


def mask_file(labels: Path, key: str) -> Path:
    """Where a sample's pseudo mask lies: keys hold ``/`` (subset and split), file names cannot."""
    return Path(labels) / MASKS_DIR / (key.replace("/", "__") + ".png")


def apply_pseudo_labels(items: Sequence[LabelledSample], labels: str | Path) -> list[LabelledSample]:
    """Fill each item's missing grade and mask from a ``make_pseudo_labels`` folder.

    Raises:
        DataError: the folder is not a pseudo-label folder, or lacks a label an item needs
            (labels made for another data set): re-run ``drtrt pseudo-label``.
    """
    labels = Path(labels)
    grades_csv = labels / GRADES_CSV
    if not grades_csv.is_file() or not (labels / PROVENANCE_JSON).is_file():
        raise DataError(f"{labels} is not a pseudo-label folder (no grades.csv / provenance.json); "
                        "create it with `drtrt pseudo-label --data ROOT --out LABELS`")
    with grades_csv.open(newline="") as fh:
        grades = {row["key"]: int(row["grade"]) for row in csv.DictReader(fh)}
    out = []
    for item in items:
        grade, mask = item.grade, None
        if grade is None:
            if item.sample.key not in grades:
                raise DataError(f"{labels} has no pseudo grade for {item.sample.key}; the labels were made for "
                                "other data: re-run `drtrt pseudo-label` on this data set")
            grade = grades[item.sample.key]
        if not item.sample.has_masks:
            mask = mask_file(labels, item.sample.key)
            if not mask.is_file():
                raise DataError(f"{labels} has no pseudo mask for {item.sample.key} ({mask}); "
                                "re-run `drtrt pseudo-label` on this data set")
        out.append(LabelledSample(item.sample, grade, True, mask))
    return out
