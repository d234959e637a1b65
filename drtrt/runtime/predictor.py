"""Screening one image: preprocess → runner → findings, identical for every backend.

A bad image never raises out of :meth:`Predictor.screen`: it becomes a result with status
``error`` (cannot read) or ``ungradable`` (read, but not judgeable: retake or refer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drtrt.errors import ConfigError, DrtrtError, ImageError
from drtrt.manifest import INPUT_NAME
from drtrt.postprocess import LesionFinding, decode_grade, lesion_findings, lesion_label_map
from drtrt.preprocess import Geometry, decode_image, preprocess_rgb
from drtrt.runtime.base import Runner
from drtrt.runtime.quality import QualityVerdict, assess_quality

BACKENDS = {".onnx": "ort"}


@dataclass
class ScreeningResult:
    image: str
    status: str                                   # "graded" | "ungradable" | "error"
    reason: str | None = None                     # why ungradable / error, in a health worker's words
    grade: int | None = None
    grade_name: str | None = None
    referable: bool | None = None
    probabilities: list[float] | None = None
    lesions: dict[str, LesionFinding] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    geometry: Geometry | None = None
    labels: np.ndarray | None = None              # model-space lesion label map
    rgb: np.ndarray | None = None                 # decoded image (maybe reduced scale), for overlays

    def to_dict(self) -> dict:
        return {
            "image": self.image, "status": self.status, "grade": self.grade, "grade_name": self.grade_name,
            "referable": self.referable,
            "probabilities": None if self.probabilities is None else [round(p, 6) for p in self.probabilities],
            "lesions": {k: v.to_dict() for k, v in self.lesions.items()},
            "error": self.reason if self.status == "error" else None,
            "reason": self.reason,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


def load_runner(model: str | Path, backend: str = "auto", providers: tuple[str, ...] = ("cpu",)) -> Runner:
    """Pick the runner for ``model`` by its suffix (or ``backend``) and activate it."""
    path = Path(model)
    if backend == "auto":
        backend = BACKENDS.get(path.suffix.lower(), "")
        if not backend:
            raise ConfigError(f"cannot tell the backend for '{path.name}' from its suffix; "
                              f"expected one of {', '.join(BACKENDS)}")
    if backend == "ort":
        from drtrt.runtime.ort import OrtRunner

        runner: Runner = OrtRunner(path, providers=providers)
    else:
        raise ConfigError(f"unknown backend '{backend}'; available: {', '.join(sorted(set(BACKENDS.values())))}")
    runner.activate()
    return runner


class Predictor:
    """Loads a model once; ``screen(path)`` returns a :class:`ScreeningResult`."""

    def __init__(self, model: str | Path, backend: str = "auto", providers: tuple[str, ...] = ("cpu",)) -> None:
        self.runner = load_runner(model, backend, providers)
        self.info = self.runner.info
        self.spec = self.info.preprocess

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def screen(self, path: str | Path, keep_arrays: bool = False) -> ScreeningResult:
        name = str(path)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        try:
            rgb, original_size, _ = decode_image(path, self.spec.size)
        except ImageError as exc:
            return ScreeningResult(name, "error", str(exc))
        timings["decode"] = (time.perf_counter() - start) * 1e3
        tick = time.perf_counter()
        pre = preprocess_rgb(rgb, self.spec, original_size=original_size)
        timings["preprocess"] = (time.perf_counter() - tick) * 1e3
        verdict: QualityVerdict = assess_quality(rgb, pre)
        if not verdict.gradable:
            return ScreeningResult(name, "ungradable", verdict.reason, timings_ms=timings,
                                   geometry=pre.geometry, rgb=rgb if keep_arrays else None)
        tick = time.perf_counter()
        try:
            outputs = self.runner.infer({INPUT_NAME: pre.tensor[None]})
        except DrtrtError as exc:
            return ScreeningResult(name, "error", str(exc), timings_ms=timings)
        timings["inference"] = (time.perf_counter() - tick) * 1e3
        tick = time.perf_counter()
        result = ScreeningResult(name, "graded", timings_ms=timings, geometry=pre.geometry)
        if "grade_logits" in outputs:
            probs, grade, referable = decode_grade(outputs["grade_logits"][0])
            result.probabilities = probs.tolist()
            result.grade, result.referable = grade, referable
            result.grade_name = self.info.grade_names[grade]
        if "lesion_logits" in outputs:
            labels = lesion_label_map(outputs["lesion_logits"][0], pre.geometry)
            result.lesions = lesion_findings(labels, pre.geometry)
            if keep_arrays:
                result.labels = labels
        if keep_arrays:
            result.rgb = rgb
        timings["postprocess"] = (time.perf_counter() - tick) * 1e3
        timings["total"] = (time.perf_counter() - start) * 1e3
        return result
