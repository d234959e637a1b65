"""Screening images: decode → preprocess → quality gate → runner (batched) → findings.

The same code path for every backend (ONNX Runtime, TensorRT, PyTorch for parity work), so
results differ only by what the runner computes. A bad image never raises out of
:meth:`Predictor.screen_batch`: it becomes a result with status ``error`` (cannot read) or
``ungradable`` (read, but not judgeable: retake or refer), and never carries a grade.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drtrt.errors import BackendUnavailable, ConfigError, DrtrtError, ImageError
from drtrt.manifest import INPUT_NAME
from drtrt.postprocess import LesionFinding, decode_grade, lesion_findings, lesion_label_map
from drtrt.preprocess import Geometry, decode_image, preprocess_rgb
from drtrt.runtime.base import Runner
from drtrt.runtime.quality import QualityConfig, QualityVerdict, assess_quality

# File suffix → backend; backend → runner class as an import path, so importing drtrt.runtime
# never imports torch or tensorrt (only the chosen runner's module is imported, on load).
BACKENDS = {".onnx": "ort", ".engine": "trt", ".plan": "trt", ".pt": "torch"}
RUNNERS = {"ort": "drtrt.runtime.ort:OrtRunner", "trt": "drtrt.runtime.trt:TrtRunner",
           "torch": "drtrt.train.torch_runner:TorchRunner"}
_BACKEND_EXTRAS = {"trt": "TensorRT (JetPack's python3-libnvinfer, or pip install 'drtrt[gpu]' with tensorrt)",
                   "torch": "torch (pip install 'drtrt[train]')"}

Source = str | os.PathLike | bytes


@dataclass
class ScreeningResult:
    """One image's outcome. Lesion areas are in original-image pixels; timings in ms."""

    image: str
    status: str                                   # "graded" | "ungradable" | "error"
    reason: str | None = None                     # why ungradable / error, in a health worker's words
    grade: int | None = None
    grade_name: str | None = None
    referable: bool | None = None
    probabilities: list[float] | None = None
    lesions: dict[str, LesionFinding] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    quality: QualityVerdict | None = None
    geometry: Geometry | None = None
    batch_size: int = 0                           # images in the forward pass this one rode in
    labels: np.ndarray | None = None              # model-space lesion label map (keep_arrays)
    rgb: np.ndarray | None = None                 # decoded image (maybe reduced scale), for overlays

    def to_dict(self) -> dict:
        return {
            "image": self.image, "status": self.status, "grade": self.grade, "grade_name": self.grade_name,
            "referable": self.referable,
            "probabilities": None if self.probabilities is None else [round(p, 6) for p in self.probabilities],
            "lesions": {k: v.to_dict() for k, v in self.lesions.items()},
            "error": self.reason if self.status == "error" else None,
            "reason": self.reason,
            "quality": None if self.quality is None else self.quality.to_dict(),
            "original_size": None if self.geometry is None else list(self.geometry.original_size),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


def load_runner(model: str | Path, backend: str = "auto", providers: Sequence[str] | None = None,
                **options) -> Runner:
    """Pick the runner for ``model`` by its suffix (or ``backend``: ort | trt | torch) and activate it.

    ``providers`` (ONNX Runtime only; default ("cpu",)) is used exactly as given: a missing
    provider is an error, never a silent fall-back. ``options`` go to the runner's constructor.
    """
    path = Path(model)
    if backend == "auto":
        backend = BACKENDS.get(path.suffix.lower(), "")
        if not backend:
            raise ConfigError(f"cannot tell the backend for '{path.name}' from its suffix; expected one of "
                              f"{', '.join(BACKENDS)}, or pass --backend {'|'.join(RUNNERS)}")
    if backend not in RUNNERS:
        raise ConfigError(f"unknown backend '{backend}'; available: {', '.join(RUNNERS)}")
    if backend == "ort":
        options["providers"] = tuple(providers or ("cpu",))
    elif providers:
        raise ConfigError(f"providers {', '.join(providers)} apply to ONNX Runtime only, not backend '{backend}'")
    runner: Runner = runner_class(backend)(path, **options)
    runner.activate()
    return runner


def runner_class(backend: str) -> type[Runner]:
    """Import the runner class registered for ``backend`` (BackendUnavailable when it cannot be)."""
    module_name, _, class_name = RUNNERS[backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        if missing == module_name:
            raise BackendUnavailable(f"backend '{backend}' is not part of this drtrt build ({module_name} "
                                     f"is missing); use an .onnx model with --backend ort") from None
        need = _BACKEND_EXTRAS.get(backend, missing)
        raise BackendUnavailable(f"backend '{backend}' needs {missing}, which is not installed; "
                                 f"install {need}") from None
    return getattr(module, class_name)


@dataclass
class _Prepared:
    index: int
    name: str
    rgb: np.ndarray
    tensor: np.ndarray
    geometry: Geometry
    quality: QualityVerdict
    timings: dict[str, float]


class Predictor:
    """Loads a model once; ``screen(source)`` / ``screen_batch(sources)`` return ScreeningResults.

    batch_size: gradable images per forward pass (the model's batch axis is dynamic; a TensorRT
    engine's profile bounds it). Inference time is shared equally by the images of a batch.
    """

    def __init__(self, model: str | Path, backend: str = "auto", providers: Sequence[str] | None = None,
                 batch_size: int = 1, quality: QualityConfig = QualityConfig(), **options) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, found {batch_size}")
        self.model = Path(model)
        self.runner = load_runner(model, backend, providers, **options)
        self.info = self.runner.info
        self.spec = self.info.preprocess
        self.batch_size = batch_size
        self.quality = quality

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def screen(self, source: Source, keep_arrays: bool = False, name: str | None = None) -> ScreeningResult:
        """Screen one image (a path, or its bytes with ``name``)."""
        return self.screen_batch([source], keep_arrays, None if name is None else [name])[0]

    def screen_batch(self, sources: Sequence[Source], keep_arrays: bool = False,
                     names: Sequence[str] | None = None) -> list[ScreeningResult]:
        """Screen several images, running the gradable ones through the model ``batch_size`` at a time.

        keep_arrays: keep the decoded image and the model-space label map on each result (overlays).
        """
        names = list(names) if names is not None else [str(s) if not isinstance(s, bytes) else "<bytes>"
                                                       for s in sources]
        results: list[ScreeningResult | None] = [None] * len(sources)
        queue: list[_Prepared] = []
        for i, (source, name) in enumerate(zip(sources, names)):
            prepared = self._prepare(i, source, name, keep_arrays)
            if isinstance(prepared, ScreeningResult):
                results[i] = prepared
            else:
                queue.append(prepared)
        for start in range(0, len(queue), self.batch_size):
            chunk = queue[start:start + self.batch_size]
            for p, result in zip(chunk, self._infer(chunk, keep_arrays)):
                results[p.index] = result
        return results  # type: ignore[return-value]

    def _prepare(self, index: int, source: Source, name: str, keep_arrays: bool) -> _Prepared | ScreeningResult:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        if isinstance(source, bytes) and not source:
            return ScreeningResult(name, "error", f"{Path(name).name}: empty file (0 bytes) — copy it again")
        try:
            rgb, original_size, _ = decode_image(source, self.spec.size)
        except ImageError as exc:
            return ScreeningResult(name, "error", str(exc).replace("<bytes>", Path(name).name))
        except MemoryError:
            return ScreeningResult(name, "error", f"{Path(name).name}: not enough memory to decode; downscale it")
        tick = time.perf_counter()
        timings["decode"] = (tick - start) * 1e3
        pre = preprocess_rgb(rgb, self.spec, original_size=original_size)
        timings["preprocess"] = (time.perf_counter() - tick) * 1e3
        tick = time.perf_counter()
        verdict = assess_quality(rgb, pre, self.quality)
        timings["quality"] = (time.perf_counter() - tick) * 1e3
        if not verdict.gradable:
            timings["total"] = sum(timings.values())
            return ScreeningResult(name, "ungradable", verdict.reason, timings_ms=timings, quality=verdict,
                                   geometry=pre.geometry, rgb=rgb if keep_arrays else None)
        return _Prepared(index, name, rgb, pre.tensor, pre.geometry, verdict, timings)

    def _infer(self, chunk: list[_Prepared], keep_arrays: bool) -> list[ScreeningResult]:
        tick = time.perf_counter()
        try:
            outputs = self.runner.infer({INPUT_NAME: np.stack([p.tensor for p in chunk])})
        except DrtrtError as exc:
            return [ScreeningResult(p.name, "error", f"inference failed: {exc}", timings_ms=p.timings,
                                    quality=p.quality, geometry=p.geometry) for p in chunk]
        share = (time.perf_counter() - tick) * 1e3 / len(chunk)
        results = []
        for i, p in enumerate(chunk):
            tick = time.perf_counter()
            p.timings["inference"] = share
            result = ScreeningResult(p.name, "graded", timings_ms=p.timings, quality=p.quality,
                                     geometry=p.geometry, batch_size=len(chunk))
            if "grade_logits" in outputs:
                probs, grade, referable = decode_grade(outputs["grade_logits"][i])
                result.probabilities = probs.tolist()
                result.grade, result.referable = grade, referable
                result.grade_name = self.info.grade_names[grade]
            if "lesion_logits" in outputs:
                labels = lesion_label_map(outputs["lesion_logits"][i], p.geometry)
                result.lesions = lesion_findings(labels, p.geometry)
                result.labels = labels if keep_arrays else None
            result.rgb = p.rgb if keep_arrays else None
            p.timings["postprocess"] = (time.perf_counter() - tick) * 1e3
            p.timings["total"] = sum(p.timings.values())   # this image's stages, not its batch-mates'
            results.append(result)
        return results
