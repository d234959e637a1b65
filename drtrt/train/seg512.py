"""Convert ``idrid-seg-512`` (54 real IDRiD images at 512², lesion overlays as JPEG) to the IDRiD layout.

The folder holds ``images/IDRiD_XX.jpg`` and ``lesion-overlays/IDRiD_XX_{MA,HE,EX,SE,OD}.jpg``:
each overlay is the image multiplied by the lesion mask, saved lossily. Its README says a mask
is ``max over channels > ~60`` (JPEG noise stays below ~30). Converting it into the official
layout (``A. Segmentation/...``) lets every drtrt stage (reader, preprocessing, training,
evaluation) run on it unchanged: a stratified fifth goes to the "Testing Set" and is never
trained on.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from drtrt.errors import DataError
from drtrt.data.idrid import IMAGES_DIR, LESION_DIRS, SEGMENTATION_DIR, SEGMENTATION_TRUTH_DIR, SPLIT_DIRS
from drtrt.data.masks import write_lesion_mask

OVERLAY_THRESHOLD = 60
"""Mask = max over colour channels of the overlay > this (README of idrid-seg-512)."""


@dataclass(frozen=True)
class Seg512Conversion:
    root: Path
    train: list[str]
    test: list[str]


def overlay_mask(path: str | Path, threshold: int = OVERLAY_THRESHOLD) -> np.ndarray:
    """Boolean [H, W] lesion mask from one overlay JPEG (max over channels > ``threshold``)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"cannot decode lesion overlay {path}; expected a JPEG from idrid-seg-512")
    return image.max(axis=2) > threshold


def convert_seg512(src: str | Path, out: str | Path, test_fraction: float = 0.2, seed: int = 0,
                   threshold: int = OVERLAY_THRESHOLD) -> Seg512Conversion:
    """Write ``out/A. Segmentation`` (images copied, masks as official-style 1-bit TIFFs).

    The held-out fraction is stratified by whether the image has soft exudates (26 of the 54
    do; the other three lesions are in nearly every image). ``out/split.json`` records it.

    Raises:
        DataError: ``src`` lacks ``images/`` or ``lesion-overlays/`` or holds no IDRiD image.
    """
    from sklearn.model_selection import train_test_split

    src, out = Path(src), Path(out)
    images_dir, overlays_dir = src / "images", src / "lesion-overlays"
    if not images_dir.is_dir() or not overlays_dir.is_dir():
        raise DataError(f"{src} is not an idrid-seg-512 folder: expected images/ and lesion-overlays/ inside")
    images = sorted(p for p in images_dir.iterdir() if re.fullmatch(r"IDRiD_\d+\.jpe?g", p.name, re.I))
    if not images:
        raise DataError(f"no IDRiD_XX.jpg images in {images_dir}")
    names = [p.stem for p in images]
    has_se = [(overlays_dir / f"{n}_SE.jpg").exists() for n in names]
    train, test = train_test_split(names, test_size=test_fraction, random_state=seed, stratify=has_se)
    seg = out / SEGMENTATION_DIR
    for split, members in (("train", sorted(train)), ("test", sorted(test))):
        image_out = seg / IMAGES_DIR / SPLIT_DIRS[split]
        image_out.mkdir(parents=True, exist_ok=True)
        for code in LESION_DIRS:
            (seg / SEGMENTATION_TRUTH_DIR / SPLIT_DIRS[split] / LESION_DIRS[code]).mkdir(parents=True, exist_ok=True)
        for name in members:
            shutil.copyfile(images_dir / f"{name}.jpg", image_out / f"{name}.jpg")
            for code in LESION_DIRS:
                overlay = overlays_dir / f"{name}_{code}.jpg"
                if overlay.exists():  # a missing overlay means no lesion of that type, as in IDRiD
                    mask = overlay_mask(overlay, threshold)
                    write_lesion_mask(seg / SEGMENTATION_TRUTH_DIR / SPLIT_DIRS[split] / LESION_DIRS[code]
                                      / f"{name}_{code}.tif", mask)
    (out / "split.json").write_text(json.dumps({"source": str(src), "seed": seed, "threshold": threshold,
                                                "train": sorted(train), "test": sorted(test)}, indent=2))
    return Seg512Conversion(out, sorted(train), sorted(test))
