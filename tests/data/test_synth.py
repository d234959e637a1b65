"""Synthetic IDRiD generator: layout, labels, mask format, lesion rules, determinism."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drtrt.errors import ConfigError
from drtrt.data.idrid import CSV_COLUMNS, GRADING_CSVS, LESION_DIRS, read_grading_csv, read_idrid
from drtrt.data.masks import read_lesion_mask
from drtrt.data.synthetic_fundus import render_fundus
from drtrt.data.synth import GRADING_DISTRIBUTION, SynthSummary, TRUTH_CSV, write_synthetic_idrid

SEG = Path("A. Segmentation")
GRADING = Path("B. Disease Grading")
EXPECTED_LESIONS = {
    1: {"MA"},
    2: {"MA", "HE", "EX"},
    3: {"MA", "HE", "EX", "SE"},
    4: {"MA", "HE", "EX", "SE"},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary, list[dict[str, str]]]:
    """A small synthetic release: 30 grading + 12 segmentation images, 320 px wide."""
    root = tmp_path_factory.mktemp("synth") / "idrid"
    calls: list[tuple[int, int]] = []
    summary = write_synthetic_idrid(root, grading=30, segmentation=12, size=320, seed=3, progress=lambda *a: calls.append(a))
    assert calls == [(i, 42) for i in range(1, 43)]
    with (root / TRUTH_CSV).open(newline="") as handle:
        truth = list(csv.DictReader(handle))
    return root, summary, truth


def _truth(truth: list[dict[str, str]], subset: str, split: str | None = None) -> list[dict[str, str]]:
    return [row for row in truth if row["subset"] == subset and (split is None or row["split"] == split)]


def test_layout_matches_the_official_release(dataset: tuple[Path, SynthSummary, list[dict[str, str]]]) -> None:
    root, summary, _ = dataset
    assert summary.counts == {"segmentation": {"train": 10, "test": 2}, "grading": {"train": 24, "test": 6}}
    assert summary.total == 42
    seg_train = sorted(p.name for p in (root / SEG / "1. Original Images" / "a. Training Set").iterdir())
    seg_test = sorted(p.name for p in (root / SEG / "1. Original Images" / "b. Testing Set").iterdir())
    assert seg_train == [f"IDRiD_{i:02d}.jpg" for i in range(1, 11)]
    assert seg_test == ["IDRiD_11.jpg", "IDRiD_12.jpg"]  # numbering continues across splits
    for split_dir in ("a. Training Set", "b. Testing Set"):
        truth_dir = root / SEG / "2. All Segmentation Groundtruths" / split_dir
        assert sorted(p.name for p in truth_dir.iterdir()) == sorted(LESION_DIRS.values())
    assert (root / SEG / "2. All Segmentation Groundtruths" / "a. Training Set" / "1. Microaneurysms" / "IDRiD_01_MA.tif").is_file()
    grading_train = sorted(p.name for p in (root / GRADING / "1. Original Images" / "a. Training Set").iterdir())
    grading_test = sorted(p.name for p in (root / GRADING / "1. Original Images" / "b. Testing Set").iterdir())
    assert grading_train == [f"IDRiD_{i:03d}.jpg" for i in range(1, 25)]
    assert grading_test == [f"IDRiD_{i:03d}.jpg" for i in range(1, 7)]  # restarts at 001, as in IDRiD
    for name in GRADING_CSVS.values():
        assert (root / GRADING / "2. Groundtruths" / name).is_file()
    assert sorted(p.name for p in root.iterdir()) == sorted([SEG.name, GRADING.name, TRUTH_CSV])


def test_images_are_jpegs_with_idrid_aspect(dataset: tuple[Path, SynthSummary, list[dict[str, str]]]) -> None:
    root, _, truth = dataset
    for row in truth:
        with Image.open(root / row["image"]) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (320, round(320 * 2848 / 4288))


def test_grading_csv_has_the_official_columns(dataset: tuple[Path, SynthSummary, list[dict[str, str]]]) -> None:
    root, _, truth = dataset
    for split, name in GRADING_CSVS.items():
        with (root / GRADING / "2. Groundtruths" / name).open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert tuple(rows[0][:3]) == CSV_COLUMNS
        assert CSV_COLUMNS[2].endswith(" ")
        assert all(cell == "" for cell in rows[0][3:])
        expected = {row["name"]: (row["grade"], row["edema_risk"]) for row in _truth(truth, "grading", split)}
        assert {row[0]: (row[1], row[2]) for row in rows[1:]} == expected
        assert all(not row[0].endswith(".jpg") for row in rows[1:])
    training_header = (root / GRADING / "2. Groundtruths" / GRADING_CSVS["train"]).read_text().splitlines()[0]
    assert training_header.startswith("Image name,Retinopathy grade,Risk of macular edema ,")


def test_read_idrid_reads_it_back(dataset: tuple[Path, SynthSummary, list[dict[str, str]]]) -> None:
    root, summary, truth = dataset
    index = read_idrid(root)
    assert index.skipped == []
    assert len(index.samples) == summary.total
    for subset, splits in summary.counts.items():
        for split, count in splits.items():
            assert len(index.select(subset, split)) == count
    by_key = {f"{row['subset']}/{row['split']}/{row['name']}": row for row in truth}
    assert {s.key for s in index.samples} == set(by_key)
    for sample in index.samples:
        row = by_key[sample.key]
        assert sample.image == root / row["image"]
        if sample.subset == "grading":
            assert sample.grade == int(row["grade"])
            assert not sample.has_masks and sample.masks == {}
        else:
            assert sample.grade is None
            assert sample.has_masks
    grades = [int(row["grade"]) for row in _truth(truth, "grading")]
    assert np.bincount(grades, minlength=5).tolist() == summary.grade_histogram["grading"]


def test_masks_are_one_bit_palette_tiffs(dataset: tuple[Path, SynthSummary, list[dict[str, str]]]) -> None:
    root, _, _ = dataset
    masks = sorted((root / SEG).rglob("*.tif"))
    assert masks
    for path in masks:
        with Image.open(path) as image:
            assert image.mode in ("P", "1")
            assert image.info["compression"] == "raw"
            assert image.tag_v2[258] in (1, (1,))  # bits per sample
            assert image.tag_v2[262] == 3  # palette colour
            assert image.getpalette()[:6] == [0, 0, 0, 255, 0, 0]
            values = np.unique(np.asarray(image))
        assert set(values.tolist()) == {0, 1}


def test_lesion_presence_follows_the_grade(dataset: tuple[Path, SynthSummary, list[dict[str, str]]]) -> None:
    root, _, truth = dataset
    index = read_idrid(root)
    grades = {f"{r['subset']}/{r['split']}/{r['name']}": int(r["grade"]) for r in truth}
    for sample in index.select("segmentation"):
        grade = grades[sample.key]
        assert 1 <= grade <= 4
        assert set(sample.masks) == EXPECTED_LESIONS[grade], sample.key
        for path in sample.masks.values():
            assert read_lesion_mask(path).any()
    for row in _truth(truth, "grading"):
        if int(row["grade"]) <= 1:
            assert row["edema_risk"] == "0"  # no exudates below grade 2


@pytest.mark.parametrize("grade", range(5))
def test_render_fundus_lesions_by_grade(grade: int) -> None:
    for seed in range(3):
        image, masks = render_fundus(np.random.default_rng(seed), 384, 255, grade)
        assert image.shape == (255, 384, 3) and image.dtype == np.uint8
        assert set(masks) == EXPECTED_LESIONS.get(grade, set())
        for mask in masks.values():
            assert mask.shape == (255, 384) and mask.dtype == bool and mask.any()


def _field(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Field of view found the way a preprocessor would (red channel), and its radius."""
    field = image[..., 0] > 20
    columns = np.flatnonzero(field.any(axis=0))
    return field, (columns[-1] - columns[0] + 1) / 2


def test_picture_looks_like_a_fundus() -> None:
    image, _ = render_fundus(np.random.default_rng(11), 768, 510, 0)
    field, radius = _field(image)
    assert image[:8, :8].mean() < 5 and image[-8:, -8:].mean() < 5  # black surround, as dark as IDRiD's
    assert 0.3 * 768 < radius < 0.5 * 768
    red, green, blue = (image[..., c][field].mean() for c in range(3))
    assert red > green > blue  # orange-red retina


def test_lesions_lie_inside_the_field() -> None:
    for seed in range(6):
        image, masks = render_fundus(np.random.default_rng(seed), 512, 340, 3 + seed % 2)
        field, _ = _field(image)
        field = cv2.erode(field.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        for code, mask in masks.items():
            assert not (mask & ~field).any(), code


@pytest.mark.parametrize("width", [512, 1024])
def test_microaneurysms_stay_a_few_pixels_at_model_size(width: int) -> None:
    diameters = []
    for seed in range(4):
        image, masks = render_fundus(np.random.default_rng(seed), width, round(width * 2848 / 4288), 3)
        _, radius = _field(image)
        count, _, stats, _ = cv2.connectedComponentsWithStats(masks["MA"].astype(np.uint8))
        areas = stats[1:, cv2.CC_STAT_AREA]
        diameters += (2 * np.sqrt(areas / np.pi) * 512 / (2 * radius)).tolist()
    assert 1.5 < np.median(diameters) < 5.0


def test_field_sometimes_fits_inside_the_frame() -> None:
    cut, inside = 0, 0
    for seed in range(30):
        image, _ = render_fundus(np.random.default_rng(seed), 192, 128, 0)
        touches = image[0].max() > 20 and image[-1].max() > 20
        cut, inside = cut + touches, inside + (not touches)
    assert cut > inside > 0


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    args = dict(grading=4, segmentation=3, size=160)
    first = files(write_synthetic_idrid(tmp_path / "a", seed=5, **args).root)
    second = files(write_synthetic_idrid(tmp_path / "b", seed=5, **args).root)
    other = files(write_synthetic_idrid(tmp_path / "c", seed=6, **args).root)
    assert first == second
    images = [name for name in first if name.endswith(".jpg")]
    assert images and all(first[name] != other.get(name) for name in images)


def test_grades_are_stratified_and_all_present(tmp_path: Path) -> None:
    summary = write_synthetic_idrid(tmp_path / "d", grading=60, segmentation=10, size=96, seed=0)
    index = read_idrid(summary.root)
    expected = np.array(GRADING_DISTRIBUTION) * 60
    histogram = np.array(summary.grade_histogram["grading"])
    assert np.all(np.abs(histogram - expected) <= 1.0)
    test_grades = np.bincount([s.grade for s in index.select("grading", "test")], minlength=5)
    train_grades = np.bincount([s.grade for s in index.select("grading", "train")], minlength=5)
    assert test_grades.sum() == 12
    assert np.all(train_grades > 0)
    assert np.all(np.abs(test_grades - 0.2 * histogram) <= 1.0)
    with (summary.root / TRUTH_CSV).open(newline="") as handle:
        seg_train = [int(r["grade"]) for r in csv.DictReader(handle) if r["subset"] == "segmentation" and r["split"] == "train"]
    assert set(seg_train) == {1, 2, 3, 4}
    assert read_grading_csv(summary.root / GRADING / "2. Groundtruths" / GRADING_CSVS["test"]).keys() == {
        s.name for s in index.select("grading", "test")
    }


def test_writes_one_subset_only(tmp_path: Path) -> None:
    summary = write_synthetic_idrid(tmp_path / "g", grading=3, segmentation=0, size=96)
    assert not (summary.root / SEG).exists()
    assert summary.counts == {"grading": {"train": 3, "test": 0}}  # one image per grade: all kept for training
    assert len(read_idrid(summary.root).samples) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(grading=0, segmentation=0),
        dict(grading=-1, segmentation=2),
        dict(grading=2, segmentation=0, size=16),
        dict(grading=2, segmentation=0, test_fraction=1.0),
    ],
)
def test_rejects_bad_options(tmp_path: Path, kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ConfigError):
        write_synthetic_idrid(tmp_path / "x", **kwargs)


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("data")
    with pytest.raises(ConfigError, match="not an empty folder"):
        write_synthetic_idrid(tmp_path, grading=2, segmentation=0, size=96)


def test_render_rejects_bad_grade() -> None:
    with pytest.raises(ConfigError):
        render_fundus(np.random.default_rng(0), 128, 85, 5)
