"""Reader for the official IDRiD release layout (SPEC §3).

::

    A. Segmentation/
      1. Original Images/{a. Training Set, b. Testing Set}/IDRiD_01.jpg ...
      2. All Segmentation Groundtruths/{a. Training Set, b. Testing Set}/
         1. Microaneurysms/IDRiD_01_MA.tif   2. Haemorrhages/..._HE.tif
         3. Hard Exudates/..._EX.tif         4. Soft Exudates/..._SE.tif   (5. Optic Disc/..._OD.tif)
    B. Disease Grading/
      1. Original Images/{a. Training Set, b. Testing Set}/IDRiD_001.jpg ...
      2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv
                      b. IDRiD_Disease Grading_Testing Labels.csv

Facts about the real release that this module relies on:

- Folder and file names are matched after collapsing whitespace and ignoring case, so
  trailing spaces, ``.JPG`` and ``.TIF`` are accepted. A subset folder nested in a folder of
  the same name (``B. Disease Grading/B. Disease Grading/``, as some archives unpack) is
  accepted too.
- The grading test images are numbered from ``IDRiD_001`` again, so a name alone does not
  identify a grading image: use :attr:`IdridSample.key`.
- Lesion types are IDRiD's own codes (MA, HE, EX, SE) from the folder names; reading the masks
  and turning them into label maps is :mod:`drtrt.data.masks`.
- The grading CSVs carry a header ``"Risk of macular edema "`` with a trailing space, empty
  padding columns and blank rows; headers are matched after ``strip()`` + ``casefold()``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.errors import ConfigError, DataError

SUBSETS: tuple[str, ...] = ("segmentation", "grading")
SPLITS: tuple[str, ...] = ("train", "test")

SEGMENTATION_DIR = "A. Segmentation"
GRADING_DIR = "B. Disease Grading"
IMAGES_DIR = "1. Original Images"
SEGMENTATION_TRUTH_DIR = "2. All Segmentation Groundtruths"
GRADING_TRUTH_DIR = "2. Groundtruths"
SPLIT_DIRS: dict[str, str] = {"train": "a. Training Set", "test": "b. Testing Set"}
LESION_DIRS: dict[str, str] = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
}
OPTIC_DISC_DIR = "5. Optic Disc"
GRADING_CSVS: dict[str, str] = {
    "train": "a. IDRiD_Disease Grading_Training Labels.csv",
    "test": "b. IDRiD_Disease Grading_Testing Labels.csv",
}
CSV_COLUMNS: tuple[str, str, str] = ("Image name", "Retinopathy grade", "Risk of macular edema ")
"""Header of the official grading CSVs, verbatim (the third name ends with a space)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIXES = (".tif", ".tiff")
NUM_GRADES = 5

_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class IdridSample:
    """One image of the release with its labels.

    Attributes:
        name: file stem, e.g. ``"IDRiD_01"`` (segmentation) or ``"IDRiD_001"`` (grading).
        image: path of the JPEG.
        subset: ``"segmentation"`` or ``"grading"``.
        split: ``"train"`` or ``"test"``.
        grade: DR grade 0-4 from the grading CSV; ``None`` for segmentation images.
        masks: lesion code -> mask file, only for the masks that exist (a missing file means
            no lesion of that type).
    """

    name: str
    image: Path
    subset: str
    split: str
    grade: int | None
    masks: dict[str, Path] = field(default_factory=dict, hash=False)

    @property
    def has_masks(self) -> bool:
        """True for every segmentation-set image, even one without mask files (all background)."""
        return self.subset == "segmentation"

    @property
    def key(self) -> str:
        """Unique identifier ``subset/split/name`` (grading names repeat across splits)."""
        return f"{self.subset}/{self.split}/{self.name}"


@dataclass
class IdridIndex:
    """Everything :func:`read_idrid` found under ``root``, in a deterministic order."""

    root: Path
    samples: list[IdridSample]
    skipped: list[str]

    def select(self, subset: str | None = None, split: str | None = None) -> list[IdridSample]:
        """Samples of one subset and/or split (``None`` = any)."""
        if subset is not None and subset not in SUBSETS:
            raise ConfigError(f"unknown IDRiD subset {subset!r}: expected one of {', '.join(SUBSETS)}")
        if split is not None and split not in SPLITS:
            raise ConfigError(f"unknown IDRiD split {split!r}: expected one of {', '.join(SPLITS)}")
        return [
            s
            for s in self.samples
            if (subset is None or s.subset == subset) and (split is None or s.split == split)
        ]


def read_idrid(root: str | Path) -> IdridIndex:
    """Index an IDRiD folder in the official layout without decoding any image.

    ``root`` must contain ``A. Segmentation`` and/or ``B. Disease Grading``. Inside a subset
    that exists, the images folder and the ground-truth folder (grading: the CSV of every
    split that has images) are required; a split missing entirely is noted in ``skipped``.
    Anything that cannot be used (an image without a CSV row, a CSV row without an image, an
    unreadable grade, a mask file that matches no image or lesion folder, the optic-disc
    masks) is left out with one line in ``skipped``.

    Raises:
        DataError: ``root`` is not a folder, holds neither subset, or a subset lacks a
            required folder or CSV (the message names the missing path).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"IDRiD folder {root} does not exist or is not a folder")
    seg_dir = _subset_dir(root, SEGMENTATION_DIR)
    grading_dir = _subset_dir(root, GRADING_DIR)
    if seg_dir is None and grading_dir is None:
        found = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
        raise DataError(
            f"no IDRiD data under {root}: expected a folder '{SEGMENTATION_DIR}' and/or "
            f"'{GRADING_DIR}' (official release layout), found: {found}"
        )
    samples: list[IdridSample] = []
    skipped: list[str] = []
    if seg_dir is not None:
        samples += _read_segmentation(seg_dir, skipped)
    if grading_dir is not None:
        samples += _read_grading(grading_dir, skipped)
    samples.sort(key=lambda s: (SUBSETS.index(s.subset), SPLITS.index(s.split), _natural_key(s.name)))
    return IdridIndex(root=root, samples=samples, skipped=skipped)


def read_grading_csv(path: str | Path, skipped: list[str] | None = None) -> dict[str, int]:
    """Read an official grading CSV into ``{image name: grade}``.

    Headers are matched after ``strip()`` + ``casefold()``; ``"Image name"`` and
    ``"Retinopathy grade"`` are required, other columns (macular-edema risk, empty padding
    columns) are ignored. A UTF-8 byte-order mark, blank rows and an image extension in the
    name column are tolerated. Rows without a name, with a grade that is not an integer 0-4,
    or repeating an earlier name are left out; when ``skipped`` is given, one line per such
    row is appended to it.

    Raises:
        DataError: the file cannot be read, is empty, or lacks a required column.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read grading CSV {path}: {error}") from error
    if not rows:
        raise DataError(f"grading CSV {path} is empty: expected a header with columns {_quoted(CSV_COLUMNS[:2])}")
    header = [cell.strip().casefold() for cell in rows[0]]
    missing = [name for name in CSV_COLUMNS[:2] if name.strip().casefold() not in header]
    if missing:
        raise DataError(
            f"grading CSV {path} lacks column(s) {_quoted(missing)}: found {_quoted(rows[0])}, "
            f"expected {_quoted(CSV_COLUMNS)}"
        )
    name_col = header.index(CSV_COLUMNS[0].strip().casefold())
    grade_col = header.index(CSV_COLUMNS[1].strip().casefold())
    notes = skipped if skipped is not None else []
    grades: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        row = row + [""] * (len(header) - len(row))
        name = row[name_col].strip()
        if Path(name).suffix.casefold() in IMAGE_SUFFIXES:
            name = Path(name).stem
        grade = _parse_grade(row[grade_col])
        if not name:
            notes.append(f"{path}: data row {number} has no image name")
        elif grade is None:
            notes.append(f"{path}: {name}: unreadable grade {row[grade_col]!r} (expected an integer 0-4)")
        elif name in grades:
            notes.append(f"{path}: {name}: repeated row (kept the first grade, {grades[name]})")
        else:
            grades[name] = grade
    return grades


def _read_segmentation(subset_dir: Path, skipped: list[str]) -> list[IdridSample]:
    """Index ``A. Segmentation``: images of each split with their lesion masks."""
    images_dir = _require_dir(subset_dir, IMAGES_DIR)
    truth_dir = _require_dir(subset_dir, SEGMENTATION_TRUTH_DIR)
    samples: list[IdridSample] = []
    for split, split_images in _split_dirs(images_dir, skipped):
        images = _list_images(split_images, skipped)
        split_truth = _find_child(truth_dir, SPLIT_DIRS[split])
        if split_truth is None:
            raise DataError(
                f"{truth_dir / SPLIT_DIRS[split]} is missing: the masks of {split_images} are expected there"
            )
        masks = _collect_masks(split_truth, images, skipped)
        samples += [
            IdridSample(name, image, "segmentation", split, None, masks.get(name, {}))
            for name, image in images.items()
        ]
    return samples


def _read_grading(subset_dir: Path, skipped: list[str]) -> list[IdridSample]:
    """Index ``B. Disease Grading``: images of each split joined with their CSV grades."""
    images_dir = _require_dir(subset_dir, IMAGES_DIR)
    truth_dir = _require_dir(subset_dir, GRADING_TRUTH_DIR)
    samples: list[IdridSample] = []
    for split, split_images in _split_dirs(images_dir, skipped):
        csv_path = _find_child(truth_dir, GRADING_CSVS[split], want_dir=False)
        if csv_path is None:
            raise DataError(
                f"{truth_dir / GRADING_CSVS[split]} is missing: the grades of {split_images} are expected there"
            )
        images = _list_images(split_images, skipped)
        grades = read_grading_csv(csv_path, skipped)
        for name, image in images.items():
            if name in grades:
                samples.append(IdridSample(name, image, "grading", split, grades[name]))
            else:
                skipped.append(f"{image}: no row in {csv_path.name}")
        skipped += [
            f"{csv_path}: {name}: no image in {split_images}" for name in sorted(grades.keys() - images.keys(), key=_natural_key)
        ]
    return samples


def _subset_dir(root: Path, name: str) -> Path | None:
    """The subset folder, descending into a same-named folder that some archives add."""
    found = _find_child(root, name)
    if found is not None and _find_child(found, IMAGES_DIR) is None:
        nested = _find_child(found, name)
        if nested is not None:
            return nested
    return found


def _split_dirs(images_dir: Path, skipped: list[str]) -> list[tuple[str, Path]]:
    """The split folders present under an images folder; at least one must exist."""
    found: list[tuple[str, Path]] = []
    for split, name in SPLIT_DIRS.items():
        path = _find_child(images_dir, name)
        if path is None:
            skipped.append(f"{images_dir / name}: missing, no {split} images in this subset")
        else:
            found.append((split, path))
    if not found:
        raise DataError(f"{images_dir} holds neither '{SPLIT_DIRS['train']}' nor '{SPLIT_DIRS['test']}'")
    return found


def _list_images(folder: Path, skipped: list[str]) -> dict[str, Path]:
    """JPEG files of a split folder by stem, in natural order; other files are noted as skipped."""
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if path.name.startswith("."):
            continue
        if not path.is_file() or path.suffix.casefold() not in IMAGE_SUFFIXES:
            skipped.append(f"{path}: not a JPEG image")
        elif path.stem in images:
            skipped.append(f"{path}: same name as {images[path.stem].name}")
        else:
            images[path.stem] = path
    return images


def _collect_masks(split_truth: Path, images: dict[str, Path], skipped: list[str]) -> dict[str, dict[str, Path]]:
    """Mask files of one split: image stem -> lesion code -> path."""
    by_folded_name = {name.casefold(): name for name in images}
    masks: dict[str, dict[str, Path]] = {}
    for folder in sorted(split_truth.iterdir()):
        if folder.name.startswith("."):
            continue
        code = _lesion_code(folder)
        if code is None:
            reason = "optic-disc masks are not a lesion class" if _same_name(folder.name, OPTIC_DISC_DIR) else "not a lesion folder"
            skipped.append(f"{folder}: {reason}")
            continue
        for path in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
            if path.name.startswith("."):
                continue
            stem, _, suffix_code = path.stem.rpartition("_")
            name = by_folded_name.get(stem.casefold())
            if path.suffix.casefold() not in MASK_SUFFIXES or suffix_code.upper() != code:
                skipped.append(f"{path}: unknown mask file (expected <image>_{code}.tif in this folder)")
            elif name is None:
                skipped.append(f"{path}: no image {stem}.jpg in this split")
            elif code in masks.get(name, {}):
                skipped.append(f"{path}: second {code} mask for {name}")
            else:
                masks.setdefault(name, {})[code] = path
    return masks


def _lesion_code(folder: Path) -> str | None:
    """Lesion code of a ground-truth folder such as ``3. Hard Exudates``, or None."""
    if not folder.is_dir():
        return None
    for code, name in LESION_DIRS.items():
        if _same_name(folder.name, name):
            return code
    return None


def _require_dir(parent: Path, name: str) -> Path:
    """A required child folder, or a DataError naming the missing path."""
    found = _find_child(parent, name)
    if found is None:
        present = ", ".join(sorted(p.name for p in parent.iterdir())) or "nothing"
        raise DataError(f"{parent / name} is missing (official IDRiD layout); {parent} holds: {present}")
    return found


def _find_child(parent: Path, name: str, want_dir: bool = True) -> Path | None:
    """The child of ``parent`` whose name equals ``name`` up to case and whitespace."""
    matches = [
        child
        for child in sorted(parent.iterdir())
        if _same_name(child.name, name) and (child.is_dir() if want_dir else child.is_file())
    ]
    return matches[0] if matches else None


def _same_name(a: str, b: str) -> bool:
    """Names equal after collapsing whitespace and case folding."""
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that orders ``IDRiD_9`` before ``IDRiD_10``."""
    return tuple(int(part) if part.isdigit() else part.casefold() for part in _DIGITS.split(name))


def _parse_grade(text: str) -> int | None:
    """An integer grade 0-4 (``"2"`` or ``"2.0"``), or None."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not value.is_integer() or not 0 <= value < NUM_GRADES:
        return None
    return int(value)


def _quoted(names: Iterable[str]) -> str:
    """``"a", "b "`` - quoted so trailing spaces stay visible."""
    return ", ".join(f'"{name}"' for name in names)
