"""IDRiD reader: real release files, synthetic output, layout errors, CSV quirks, label maps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drtrt.errors import ConfigError, DataError, ImageError
from drtrt.data.idrid import IdridSample, read_grading_csv, read_idrid
from drtrt.data.masks import load_label_map, read_lesion_mask, write_lesion_mask
from drtrt.data.synth import write_synthetic_idrid
from drtrt.task import TaskSpec

TASK = TaskSpec()

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "idrid-samples"
SEG = Path("A. Segmentation")
GRADING = Path("B. Disease Grading")
TRAIN_CSV = "a. IDRiD_Disease Grading_Training Labels.csv"
TEST_CSV = "b. IDRiD_Disease Grading_Testing Labels.csv"
TIFF_TAGS = (258, 259, 262, 320)  # bits per sample, compression, photometric, colour map


@pytest.fixture(scope="module")
def real() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real IDRiD samples not available at {REAL}")
    return REAL


def _jpeg(path: Path, size: tuple[int, int] = (24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size[1], size[0], 3), 90, np.uint8))
    return path


def _mask(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_lesion_mask(path, mask)
    return path


def _grading_layout(root: Path, train_csv: str | None = "Image name,Retinopathy grade,Risk of macular edema \n") -> Path:
    """A grading subset with two training images and, unless ``train_csv`` is None, its CSV."""
    for name in ("IDRiD_001", "IDRiD_002"):
        _jpeg(root / GRADING / "1. Original Images" / "a. Training Set" / f"{name}.jpg")
    truth = root / GRADING / "2. Groundtruths"
    truth.mkdir(parents=True)
    if train_csv is not None:
        (truth / TRAIN_CSV).write_text(train_csv + "IDRiD_001,2,1\nIDRiD_002,0,0\n")
    return root


# --- real files -----------------------------------------------------------------------


@pytest.mark.realdata
def test_real_release_is_indexed(real: Path) -> None:
    index = read_idrid(real)
    assert index.skipped == []
    assert [s.name for s in index.select("segmentation", "train")] == ["IDRiD_01", "IDRiD_02", "IDRiD_03", "IDRiD_04"]
    assert [s.name for s in index.select("segmentation", "test")] == ["IDRiD_55", "IDRiD_56", "IDRiD_57", "IDRiD_58"]
    assert index.select("grading") == []
    for sample in index.samples:
        assert sample.has_masks and sample.grade is None
        assert sample.image.is_file()
        expected = {"MA", "HE", "EX"} | ({"SE"} if sample.name in ("IDRiD_03", "IDRiD_55", "IDRiD_56") else set())
        assert set(sample.masks) == expected


@pytest.mark.realdata
def test_real_masks_are_binary_palette_images(real: Path) -> None:
    for sample in read_idrid(real).samples:
        for code, path in sample.masks.items():
            with Image.open(path) as image:
                assert image.mode == "P"
                assert image.getpalette()[:6] == [0, 0, 0, 255, 0, 0]
                assert set(np.unique(np.asarray(image)).tolist()) == {0, 1}
            mask = read_lesion_mask(path)
            assert mask.dtype == bool and mask.shape == (2848, 4288)
            assert mask.sum() > 0, f"{sample.name} {code}"


@pytest.mark.realdata
def test_real_label_map(real: Path) -> None:
    sample = next(s for s in read_idrid(real).samples if s.name == "IDRiD_03")
    masks = {code: read_lesion_mask(path) for code, path in sample.masks.items()}
    label = load_label_map(sample)
    assert label.dtype == np.uint8 and label.shape == (2848, 4288)
    counts = np.bincount(label.ravel(), minlength=5)
    assert counts.size == 5 and np.all(counts > 0)
    assert np.all(label[masks["MA"]] == TASK.label("MA"))  # MA wins every overlap
    only_ex = masks["EX"] & ~masks["SE"] & ~masks["HE"] & ~masks["MA"]
    assert np.all(label[only_ex] == TASK.label("EX"))
    small = load_label_map(sample, size=(1072, 712))
    assert small.shape == (712, 1072)
    assert np.all(np.bincount(small.ravel(), minlength=5) > 0)  # even microaneurysms survive 4x downscaling


@pytest.mark.realdata
def test_greyscale_and_rgb_masks_read_the_same(real: Path, tmp_path: Path) -> None:
    path = next(iter(read_idrid(real).samples[0].masks.values()))
    with Image.open(path) as image:
        grey = image.convert("L")
        rgb = image.convert("RGB")
    assert set(np.unique(np.asarray(grey)).tolist()) == {0, 76}  # why 127 is the wrong threshold
    grey.save(tmp_path / "grey.png")
    rgb.save(tmp_path / "rgb.png")
    expected = read_lesion_mask(path)
    assert np.array_equal(read_lesion_mask(tmp_path / "grey.png"), expected)
    assert np.array_equal(read_lesion_mask(tmp_path / "rgb.png"), expected)


@pytest.mark.realdata
def test_written_masks_have_the_real_format(real: Path, tmp_path: Path) -> None:
    path = next(iter(read_idrid(real).samples[0].masks.values()))
    write_lesion_mask(tmp_path / "copy.tif", read_lesion_mask(path))
    with Image.open(path) as original, Image.open(tmp_path / "copy.tif") as copy:
        assert copy.mode == original.mode
        assert copy.getpalette() == original.getpalette()
        assert {t: copy.tag_v2[t] for t in TIFF_TAGS} == {t: original.tag_v2[t] for t in TIFF_TAGS}
        assert np.array_equal(np.asarray(copy), np.asarray(original))


# --- synthetic output -----------------------------------------------------------------


def test_synthetic_label_maps(tmp_path: Path) -> None:
    root = write_synthetic_idrid(tmp_path / "s", grading=0, segmentation=6, size=192, seed=2).root
    samples = read_idrid(root).select("segmentation")
    assert len(samples) == 6
    for sample in samples:
        label = load_label_map(sample)
        assert label.shape == (round(192 * 2848 / 4288), 192)
        masks = {code: read_lesion_mask(path) for code, path in sample.masks.items()}
        for mask in masks.values():
            assert np.all(label[mask] > 0)
        assert np.all(label[masks["MA"]] == TASK.label("MA"))
        assert np.array_equal(label > 0, np.logical_or.reduce(list(masks.values())))
        assert set(np.unique(label).tolist()) <= set(range(5))


# --- layout errors --------------------------------------------------------------------


def test_missing_or_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_idrid(tmp_path / "nowhere")
    with pytest.raises(DataError, match="'A. Segmentation' and/or 'B. Disease Grading'"):
        read_idrid(tmp_path)


def test_grading_without_csv(tmp_path: Path) -> None:
    _grading_layout(tmp_path, train_csv=None)
    with pytest.raises(DataError, match=TRAIN_CSV):
        read_idrid(tmp_path)


def test_grading_without_truth_folder(tmp_path: Path) -> None:
    _jpeg(tmp_path / GRADING / "1. Original Images" / "a. Training Set" / "IDRiD_001.jpg")
    with pytest.raises(DataError, match="2. Groundtruths is missing"):
        read_idrid(tmp_path)


def test_segmentation_without_images_or_masks(tmp_path: Path) -> None:
    (tmp_path / SEG / "2. All Segmentation Groundtruths").mkdir(parents=True)
    with pytest.raises(DataError, match="1. Original Images is missing"):
        read_idrid(tmp_path)
    _jpeg(tmp_path / SEG / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg")
    with pytest.raises(DataError, match="a. Training Set is missing"):
        read_idrid(tmp_path)
    (tmp_path / SEG / "2. All Segmentation Groundtruths").rmdir()
    with pytest.raises(DataError, match="2. All Segmentation Groundtruths is missing"):
        read_idrid(tmp_path)


def test_csv_missing_a_column(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("Image name,Risk of macular edema \nIDRiD_001,1\n")
    with pytest.raises(DataError, match='lacks column.*"Retinopathy grade"'):
        read_grading_csv(path)
    (tmp_path / "empty.csv").write_text("\n,,,\n")
    with pytest.raises(DataError, match="empty"):
        read_grading_csv(tmp_path / "empty.csv")


# --- tolerance ------------------------------------------------------------------------


def test_csv_quirks(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    text = (
        "\ufeffImage name , Retinopathy grade,Risk of macular edema ,,,,\r\n"
        "IDRiD_001,3,2,,,,\r\n"
        "\r\n"
        ",,,,,,\r\n"
        "IDRiD_002.jpg,2.0,1,,,,\r\n"
        " IDRiD_003 ,0,0\r\n"
        "IDRiD_004,x,0,,,,\r\n"
        "IDRiD_005,7,0,,,,\r\n"
        ",1,0,,,,\r\n"
        "IDRiD_001,4,2,,,,\r\n"
    )
    path.write_bytes(text.encode("utf-8"))
    skipped: list[str] = []
    assert read_grading_csv(path, skipped) == {"IDRiD_001": 3, "IDRiD_002": 2, "IDRiD_003": 0}
    assert len(skipped) == 4
    assert any("IDRiD_004" in line and "'x'" in line for line in skipped)
    assert any("IDRiD_005" in line for line in skipped)
    assert any("no image name" in line for line in skipped)
    assert any("IDRiD_001" in line and "repeated" in line for line in skipped)


def test_name_variations_are_accepted(tmp_path: Path) -> None:
    seg = tmp_path / "a. segmentation "
    _jpeg(seg / "1. ORIGINAL IMAGES" / "a. Training Set " / "IDRiD_01.JPG")
    _jpeg(seg / "1. ORIGINAL IMAGES" / "b.  testing set" / "IDRiD_02.jpg")
    mask = np.zeros((16, 24), bool)
    mask[4:8, 5:9] = True
    _mask(seg / "2. All Segmentation Groundtruths" / "A. TRAINING SET" / "3. hard exudates " / "IDRiD_01_EX.TIF", mask)
    (seg / "2. All Segmentation Groundtruths" / "b. Testing Set").mkdir(parents=True)
    grading = tmp_path / "B. Disease Grading" / "B. Disease Grading"  # as some archives unpack
    _jpeg(grading / "1. Original Images" / "a. Training Set" / "IDRiD_001.jpg")
    (grading / "2. Groundtruths").mkdir(parents=True)
    (grading / "2. Groundtruths" / TRAIN_CSV.upper()).write_text("image name,retinopathy grade\nIDRiD_001,1\n")
    index = read_idrid(tmp_path)
    assert [s.key for s in index.samples] == [
        "segmentation/train/IDRiD_01",
        "segmentation/test/IDRiD_02",
        "grading/train/IDRiD_001",
    ]
    assert index.samples[0].masks == {"EX": seg / "2. All Segmentation Groundtruths" / "A. TRAINING SET" / "3. hard exudates " / "IDRiD_01_EX.TIF"}
    assert index.samples[2].grade == 1
    assert any("b. Testing Set: missing" in line for line in index.skipped)  # grading has no test split


def test_skipped_items_are_reported(tmp_path: Path) -> None:
    _grading_layout(tmp_path)
    train_dir = tmp_path / GRADING / "1. Original Images" / "a. Training Set"
    _jpeg(train_dir / "IDRiD_003.jpg")  # no CSV row
    (train_dir / "Thumbs.db").write_bytes(b"\0")
    (train_dir / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored silently
    (tmp_path / GRADING / "2. Groundtruths" / TRAIN_CSV).write_text(
        "Image name,Retinopathy grade,Risk of macular edema \nIDRiD_001,2,1\nIDRiD_002,0,0\nIDRiD_009,4,2\n"
    )
    seg_images = tmp_path / SEG / "1. Original Images" / "a. Training Set"
    _jpeg(seg_images / "IDRiD_01.jpg")
    truth = tmp_path / SEG / "2. All Segmentation Groundtruths" / "a. Training Set"
    mask = np.ones((16, 24), bool)
    _mask(truth / "1. Microaneurysms" / "IDRiD_01_MA.tif", mask)
    _mask(truth / "1. Microaneurysms" / "IDRiD_01_HE.tif", mask)  # wrong folder
    _mask(truth / "2. Haemorrhages" / "IDRiD_07_HE.tif", mask)  # no such image
    _mask(truth / "5. Optic Disc" / "IDRiD_01_OD.tif", mask)
    index = read_idrid(tmp_path)
    assert [s.key for s in index.samples] == [
        "segmentation/train/IDRiD_01",
        "grading/train/IDRiD_001",
        "grading/train/IDRiD_002",
    ]
    assert index.samples[0].masks == {"MA": truth / "1. Microaneurysms" / "IDRiD_01_MA.tif"}
    report = "\n".join(index.skipped)
    for expected in (
        "IDRiD_003.jpg: no row",
        "IDRiD_009: no image",
        "Thumbs.db: not a JPEG",
        "IDRiD_01_HE.tif: unknown mask file",
        "IDRiD_07_HE.tif: no image",
        "5. Optic Disc: optic-disc masks",
        "b. Testing Set: missing",
    ):
        assert expected in report
    assert ".DS_Store" not in report


def test_grading_names_repeat_across_splits(tmp_path: Path) -> None:
    _grading_layout(tmp_path)
    _jpeg(tmp_path / GRADING / "1. Original Images" / "b. Testing Set" / "IDRiD_001.jpg")
    (tmp_path / GRADING / "2. Groundtruths" / TEST_CSV).write_text("Image name,Retinopathy grade\nIDRiD_001,4\n")
    index = read_idrid(tmp_path)
    assert [(s.split, s.name, s.grade) for s in index.select("grading")] == [
        ("train", "IDRiD_001", 2),
        ("train", "IDRiD_002", 0),
        ("test", "IDRiD_001", 4),
    ]
    assert len({s.key for s in index.samples}) == 3
    with pytest.raises(ConfigError):
        index.select(subset="grades")
    with pytest.raises(ConfigError):
        index.select(split="val")


# --- masks and label maps -------------------------------------------------------------


def _sample(tmp_path: Path, masks: dict[str, np.ndarray], image_size: tuple[int, int] = (40, 30)) -> IdridSample:
    image = _jpeg(tmp_path / "IDRiD_01.jpg", image_size)
    paths = {code: _mask(tmp_path / f"IDRiD_01_{code}.tif", mask) for code, mask in masks.items()}
    return IdridSample("IDRiD_01", image, "segmentation", "train", None, paths)


def test_label_map_priority(tmp_path: Path) -> None:
    def square(x0: int, size: int) -> np.ndarray:
        mask = np.zeros((30, 40), bool)
        mask[5 : 5 + size, x0 : x0 + size] = True
        return mask

    sample = _sample(tmp_path, {"EX": square(0, 20), "SE": square(2, 16), "HE": square(4, 12), "MA": square(6, 4)})
    label = load_label_map(sample)
    assert label[5, 0] == TASK.label("EX")
    assert label[7, 2] == TASK.label("SE")
    assert label[9, 4] == TASK.label("HE")
    assert label[6, 7] == TASK.label("MA")
    assert label[29, 39] == 0
    resized = load_label_map(sample, size=(20, 15))
    assert resized.shape == (15, 20)
    assert TASK.label("MA") in resized


def test_label_map_without_masks(tmp_path: Path) -> None:
    sample = _sample(tmp_path, {})
    assert sample.has_masks
    label = load_label_map(sample)
    assert label.shape == (30, 40) and not label.any()
    assert load_label_map(sample, size=(8, 6)).shape == (6, 8)


def test_label_map_size_mismatch(tmp_path: Path) -> None:
    sample = _sample(tmp_path, {"MA": np.ones((10, 10), bool)})
    with pytest.raises(DataError, match="must match their image"):
        load_label_map(sample)


def test_unreadable_masks(tmp_path: Path) -> None:
    (tmp_path / "broken.tif").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="broken.tif"):
        read_lesion_mask(tmp_path / "broken.tif")
    with pytest.raises(ImageError, match="missing.tif"):
        read_lesion_mask(tmp_path / "missing.tif")


def test_write_lesion_mask_round_trip(tmp_path: Path) -> None:
    mask = np.random.default_rng(0).random((33, 47)) > 0.7
    _mask(tmp_path / "m.tif", mask)
    with Image.open(tmp_path / "m.tif") as image:
        assert image.mode == "P" and image.getpalette()[:6] == [0, 0, 0, 255, 0, 0]
        assert image.info["compression"] == "raw"
    assert np.array_equal(read_lesion_mask(tmp_path / "m.tif"), mask)
    with pytest.raises(ValueError):
        write_lesion_mask(tmp_path / "bad.tif", np.zeros((2, 2, 2), bool))


def test_label_values_follow_the_task_vocabulary(tmp_path):
    """The label map speaks the model's vocabulary: another lesion order gives other label values,
    and a lesion type the task does not name stays background."""
    from dataclasses import replace

    root = tmp_path / "d"
    write_synthetic_idrid(root, grading=0, segmentation=4, size=256, seed=3)
    sample = next(s for s in read_idrid(root).select(subset="segmentation") if {"EX", "HE"} <= set(s.masks))
    default = load_label_map(sample)
    reordered = replace(TASK, lesion_codes=("HE", "EX"), lesion_long_names=("haemorrhages", "hard exudates"))
    other = load_label_map(sample, task=reordered)
    ex_only = (default == TASK.label("EX"))
    assert ex_only.any() and np.all(other[ex_only] == reordered.label("EX")) and reordered.label("EX") == 2
    assert not np.isin(other, [3, 4]).any()          # SE and MA are not in this task: background
