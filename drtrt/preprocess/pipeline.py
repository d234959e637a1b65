"""decode → field of view → crop → resize → normalise: the function every stage calls."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import numpy as np

from drtrt.preprocess.decode import decode_image
from drtrt.preprocess.fov import find_fov
from drtrt.preprocess.geometry import FieldOfView, Geometry, array_scale
from drtrt.preprocess.spec import PreprocessSpec


@dataclass(frozen=True)
class Preprocessed:
    """tensor: (3, S, S) float32 normalised model input. rgb: (S, S, 3) uint8 model-space image.
    geometry: the crop. timings: milliseconds per step."""

    tensor: np.ndarray
    geometry: Geometry
    rgb: np.ndarray
    timings: dict[str, float]



def normalise(rgb_model: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (3, S, S) float32 (x / 255 - mean) / std."""
    scale = 1 / (255 * np.asarray(spec.std, np.float32))
    offset = np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)
    out = np.empty((3, *rgb_model.shape[:2]), np.float32)
    for c in range(3):
        np.multiply(rgb_model[..., c], scale[c], out=out[c], casting="unsafe")
        out[c] -= offset[c]
    return out


def preprocess_rgb(rgb: np.ndarray, spec: PreprocessSpec,
                   original_size: tuple[int, int] | None = None) -> Preprocessed:
    """Preprocesses a decoded HxWx3 uint8 RGB image, possibly a reduced decode of original_size."""
    original_size = original_size or rgb.shape[:2]
    ticks = [time.perf_counter()]
    fov = find_fov(rgb, spec)
    fov = fov.rescale(*array_scale(rgb.shape, original_size)) if fov.found else FieldOfView.whole(*original_size)
    geometry = Geometry.from_fov(fov, original_size, spec.size, spec.margin)
    ticks.append(time.perf_counter())
    model_rgb = geometry.to_model(rgb, spec.interpolation)
    ticks.append(time.perf_counter())
    tensor = normalise(model_rgb, spec)
    ticks.append(time.perf_counter())
    timings = {step: (b - a) * 1e3 for step, a, b in zip(("fov", "resize", "normalise"), ticks, ticks[1:])}
    return Preprocessed(tensor, geometry, model_rgb, timings)


def preprocess(source: str | os.PathLike | bytes, spec: PreprocessSpec) -> Preprocessed:
    """decode_image(source, spec.size) then preprocess_rgb: the function training and runtime share."""
    start = time.perf_counter()
    rgb, original_size, _ = decode_image(source, spec.size)
    decode_ms = (time.perf_counter() - start) * 1e3
    result = preprocess_rgb(rgb, spec, original_size)
    return replace(result, timings={"decode": decode_ms, **result.timings})
