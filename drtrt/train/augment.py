"""Training-time augmentation (thesis §4.1.3), applied jointly to image and lesion mask.

It works in model space, on the output of :func:`drtrt.preprocess.preprocess` before
normalisation, so the decode / field-of-view / crop geometry stays the single shared one.
One affine warp does shift, scale and rotation at once; flips are free index reversals.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5          # probability
    vflip: float = 0.5          # probability
    shift: float = 0.05         # max translation, fraction of the side
    scale: float = 0.1          # max relative zoom in/out
    rotation: float = 30.0      # max degrees
    contrast: float = 0.2       # max relative contrast change
    crop: int = 0               # random square crop side in pixels after the warp; 0 = whole image


def augment(rgb: np.ndarray, label: np.ndarray, rng: np.random.Generator,
            cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Random flip/shift/scale/rotate/contrast (then crop) of ``rgb`` (S,S,3 uint8) and ``label`` (S,S uint8).

    Returns arrays of side ``cfg.crop`` when ``0 < cfg.crop < S`` (must be a multiple of 32
    for the network), else of side S.

    The label is warped with nearest-neighbour interpolation so class ids stay valid; pixels
    warped in from outside are black in the image and background (0) in the label, except
    that an ignore-valued label (255) stays ignored everywhere.
    """
    if rng.random() < cfg.hflip:
        rgb, label = rgb[:, ::-1], label[:, ::-1]
    if rng.random() < cfg.vflip:
        rgb, label = rgb[::-1], label[::-1]
    side = rgb.shape[0]
    angle = rng.uniform(-cfg.rotation, cfg.rotation)
    zoom = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    shift = rng.uniform(-cfg.shift, cfg.shift, size=2) * side
    matrix = cv2.getRotationMatrix2D((side / 2 - 0.5, side / 2 - 0.5), angle, zoom)
    matrix[:, 2] += shift
    rgb = cv2.warpAffine(np.ascontiguousarray(rgb), matrix, (side, side), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    fill = 255 if (label == 255).all() else 0
    label = cv2.warpAffine(np.ascontiguousarray(label), matrix, (side, side), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    if cfg.contrast:
        factor = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        mean = rgb.reshape(-1, 3).mean(axis=0)
        rgb = np.clip((rgb.astype(np.float32) - mean) * factor + mean, 0, 255).astype(np.uint8)
    if 0 < cfg.crop < side:
        # Patch training: the network is fully convolutional, so it trains on crops and
        # validates on whole images; a 256² crop costs a quarter of a 512² step.
        top, left = (int(v) for v in rng.integers(0, side - cfg.crop + 1, size=2))
        rgb = rgb[top:top + cfg.crop, left:left + cfg.crop]
        label = label[top:top + cfg.crop, left:left + cfg.crop]
    return np.ascontiguousarray(rgb), np.ascontiguousarray(label)
