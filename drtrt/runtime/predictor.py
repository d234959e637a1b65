"""Screening images: decode → preprocess → quality gate → runner (batched) → findings.

The same code path for every backend (ONNX Runtime, TensorRT, PyTorch for parity work), so
results differ only by what the runner computes. A bad image never raises out of
:meth:`Predictor.screen_batch`: it becomes a result with status ``error`` (cannot read) or
``ungradable`` (read, but not judgeable: retake or refer), and never carries a grade.

Grade probabilities are temperature-scaled when the model carries a calibration
(``drtrt.calibration``): the record says ``calibrated: true`` and its ECE. Without one the record
keeps the raw softmax for research output and says ``calibrated: false``; no page shows it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drtrt.cpu import keep_freed_memory
from drtrt.errors import ConfigError, DrtrtError, ImageError, ServerUnavailable
from drtrt.messages import to_record
from drtrt.model_info import grade_calibration
from drtrt.preprocess import Geometry, OpticDisc, decode_image, locate_disc, preprocess_rgb
from drtrt.preprocess.dicom import dicom_info
from drtrt.runtime.inference import BatchedInference
from drtrt.runtime.macula import EXUDATE, Fovea, MaculaAssessment, assess_macula, locate_fovea
from drtrt.runtime.postprocess import LesionFinding, decode_grade, lesion_findings, lesion_label_map
from drtrt.runtime.quality import QualityConfig, QualityVerdict, analysis_view, assess_quality, decode_side
from drtrt.runtime.registry import load_runner

Source = str | os.PathLike | bytes


@dataclass
class ScreeningResult:
    """One image's outcome. Lesion areas are in original-image pixels; timings in ms."""

    image: str
    status: str                                   # "graded" | "ungradable" | "error"
    reason: str | None = None                     # why ungradable / error, in a health worker's words
    code: str | None = None                       # why, as a stable code (quality.CODES, ImageError.code)
    grade: int | None = None
    grade_name: str | None = None
    referable: bool | None = None
    probabilities: list[float] | None = None
    calibrated: bool = False                      # probabilities temperature-scaled on held-out data (else raw)
    ece: float | None = None                      # the calibration's expected calibration error after scaling
    lesions: dict[str, LesionFinding] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    quality: QualityVerdict | None = None
    geometry: Geometry | None = None
    disc: OpticDisc | None = None                 # the optic disc and the eye it implies (gradable photos)
    macula: MaculaAssessment | None = None        # fovea and maculopathy M1/M0/not assessed (graded photos)
    warnings: list[str] = field(default_factory=list)   # drtrt.messages.message() where built with values
    batch_size: int = 0                           # images in the forward pass this one rode in
    labels: np.ndarray | None = None              # model-space lesion label map (keep_arrays)
    rgb: np.ndarray | None = None                 # decoded image (maybe reduced scale), for overlays
    dicom: dict | None = None                     # a DICOM file's identifiers (DicomInfo.to_dict)

    def to_dict(self) -> dict:
        return {
            "image": self.image, "status": self.status, "grade": self.grade, "grade_name": self.grade_name,
            "referable": self.referable,
            "probabilities": None if self.probabilities is None else [round(p, 6) for p in self.probabilities],
            "calibrated": self.calibrated, "ece": self.ece,
            "lesions": {k: v.to_dict() for k, v in self.lesions.items()},
            "error": self.reason if self.status == "error" else None,
            "reason": self.reason,
            "code": self.code,
            "quality": None if self.quality is None else self.quality.to_dict(),
            "field_of_view": None if self.geometry is None else self.geometry.fov.to_dict(),
            "disc": None if self.disc is None else self.disc.to_dict(),
            "macula": None if self.macula is None else self.macula.to_dict(),
            **to_record(self.warnings),
            "original_size": None if self.geometry is None else list(self.geometry.original_size),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            **({"dicom": self.dicom} if self.dicom else {}),
        }


@dataclass
class _Prepared:
    index: int
    name: str
    rgb: np.ndarray
    tensor: np.ndarray
    geometry: Geometry
    quality: QualityVerdict
    disc: OpticDisc | None
    timings: dict[str, float]
    dicom: dict | None = None
    fovea: tuple[Fovea | None, str] = (None, "no optic disc found, and the fovea is placed from the disc")


class Predictor:
    """Loads a model once; ``screen(source)`` / ``screen_batch(sources)`` return ScreeningResults.

    batch_size: gradable images per forward pass; lowered to what the model accepts (a TensorRT
    engine's optimisation profile), which :attr:`notes` then says. Inference time is shared
    equally by the images of a batch.
    """

    def __init__(self, model: str | Path, backend: str = "auto", providers: Sequence[str] | None = None,
                 batch_size: int = 1, quality: QualityConfig = QualityConfig(), **options) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, found {batch_size}")
        keep_freed_memory()     # every photo's arrays reuse the last one's pages, not fresh ones (drtrt.cpu)
        self.runner = load_runner(model, backend, providers, **options)
        self.info = self.runner.info
        self.task = self.info.task
        self.spec = self.info.preprocess
        try:
            self.calibration = grade_calibration(self.info, self.runner.name)   # None: raw probabilities
        except BaseException:
            self.runner.deactivate()
            raise
        self.quality = quality
        self.notes: list[str] = list(getattr(self.runner, "notes", []))   # a served model's (triton.py)
        try:
            self.set_batch_size(batch_size)
        except BaseException:
            self.runner.deactivate()
            raise

    def set_batch_size(self, batch_size: int) -> None:
        """Gradable images per forward pass from now on (lowered to what the model accepts, with a note)."""
        self.loop: BatchedInference[_Prepared] = BatchedInference(self.runner, batch_size)
        self.batch_size = self.loop.batch_size
        if self.loop.lowered_from:
            self.notes.append(f"batch size {batch_size} lowered to {self.batch_size}, the largest batch "
                              f"{self.runner.name} accepts")


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
        The same as :meth:`infer_batch` of :meth:`prepare_batch`, which a pipeline calls apart.
        """
        return self.infer_batch(self.prepare_batch(sources, keep_arrays, names), keep_arrays)

    def prepare_batch(self, sources: Sequence[Source], keep_arrays: bool = False,
                      names: Sequence[str] | None = None) -> list[_Prepared | ScreeningResult]:
        """Everything before the model for each image: decode, preprocess, quality gate, optic disc.

        An item is a ScreeningResult when the image is settled without the model (error, ungradable),
        else the prepared input for :meth:`infer_batch`. Touches no runner, so it may run on another
        thread while the model runs on the caller's (the next images prepared during inference).
        """
        names = list(names) if names is not None else [str(s) if not isinstance(s, bytes) else "<bytes>"
                                                       for s in sources]
        return [self._prepare(i, source, name, keep_arrays) for i, (source, name) in enumerate(zip(sources, names))]

    def infer_batch(self, prepared: Sequence[_Prepared | ScreeningResult],
                    keep_arrays: bool = False) -> list[ScreeningResult]:
        """:meth:`prepare_batch`'s items → results in the same order, the gradable images through the
        model ``batch_size`` at a time, on the calling thread (a CUDA context may be bound to it)."""
        results: list[ScreeningResult | None] = [item if isinstance(item, ScreeningResult) else None
                                                 for item in prepared]
        queue = [item for item in prepared if not isinstance(item, ScreeningResult)]
        for chunk in self.loop.batches(queue):
            for p, result in zip(chunk, self._infer(chunk, keep_arrays)):
                results[p.index] = result
        return results  # type: ignore[return-value]

    def _prepare(self, index: int, source: Source, name: str, keep_arrays: bool) -> _Prepared | ScreeningResult:
        prepared = self._prepare_image(index, source, name, keep_arrays)
        info = dicom_info(source)                          # a DICOM file's identifiers go into its record
        prepared.dicom = info.to_dict() if info else None
        return prepared

    def _prepare_image(self, index: int, source: Source, name: str,
                       keep_arrays: bool) -> _Prepared | ScreeningResult:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        if isinstance(source, bytes) and not source:
            return ScreeningResult(name, "error", f"{Path(name).name}: empty file (0 bytes) — copy it again",
                                   "file_damaged")
        try:
            rgb, original_size, _ = decode_image(source, decode_side(self.spec.size))
        except ImageError as exc:
            return ScreeningResult(name, "error", str(exc).replace("<bytes>", Path(name).name), exc.code)
        except MemoryError:
            return ScreeningResult(name, "error", f"{Path(name).name}: not enough memory to decode; downscale it",
                                   "file_too_large")
        tick = time.perf_counter()
        timings["decode"] = (tick - start) * 1e3
        pre = preprocess_rgb(rgb, self.spec, original_size=original_size)
        timings["preprocess"] = (time.perf_counter() - tick) * 1e3
        tick = time.perf_counter()
        view = analysis_view(rgb, pre) if pre.geometry.fov.found else None
        verdict = assess_quality(rgb, pre, self.quality, view)
        timings["quality"] = (time.perf_counter() - tick) * 1e3
        if not verdict.gradable:
            timings["total"] = sum(timings.values())
            return ScreeningResult(name, "ungradable", verdict.reason, verdict.code, timings_ms=timings,
                                   quality=verdict, geometry=pre.geometry, rgb=rgb if keep_arrays else None)
        tick = time.perf_counter()
        disc = locate_disc(view.image, view.geometry) if view is not None else None
        fovea = locate_fovea(view.image, view.geometry, disc) if view is not None else _Prepared.fovea
        timings["disc"] = (time.perf_counter() - tick) * 1e3          # the disc and, from it, the fovea
        return _Prepared(index, name, rgb, pre.tensor, pre.geometry, verdict, disc, timings, fovea=fovea)

    def _infer(self, chunk: list[_Prepared], keep_arrays: bool) -> list[ScreeningResult]:
        try:
            batch = self.loop.run(chunk)
        except ServerUnavailable:
            raise       # not these images' fault: the run stops and the same command resumes it
        except DrtrtError as exc:
            return [ScreeningResult(p.name, "error", f"inference failed: {exc}", "inference_failed",
                                    timings_ms=p.timings, quality=p.quality, geometry=p.geometry, dicom=p.dicom)
                    for p in chunk]
        share = batch.seconds[0] * 1e3 / len(chunk)
        task, results = self.task, []
        for p, outputs in zip(chunk, batch.per_image()):
            tick = time.perf_counter()
            p.timings["inference"] = share
            if not all(np.isfinite(value).all() for value in outputs.values()):
                results.append(_not_a_number(p))        # never a grade from NaN: argmax would say "no DR"
                continue
            result = ScreeningResult(p.name, "graded", timings_ms=p.timings, quality=p.quality,
                                     geometry=p.geometry, disc=p.disc, batch_size=len(chunk), dicom=p.dicom)

            if task.grade_output in outputs:
                calibration = self.calibration
                probs, grade, referable = decode_grade(outputs[task.grade_output], task,
                                                       calibration.temperature if calibration else 1.0)
                result.probabilities = probs.tolist()
                result.calibrated = calibration is not None
                result.ece = calibration.ece_after if calibration else None
                result.grade, result.referable = grade, referable
                result.grade_name = task.grade_names[grade]
            exudates = None
            if task.lesion_output in outputs:
                labels = lesion_label_map(outputs[task.lesion_output], p.geometry)
                result.lesions = lesion_findings(labels, p.geometry, task)
                result.labels = labels if keep_arrays else None
                exudates = labels == task.label(EXUDATE) if EXUDATE in task.lesion_codes else None
            result.macula = assess_macula(*p.fovea, exudates, p.geometry)
            result.rgb = p.rgb if keep_arrays else None
            p.timings["postprocess"] = (time.perf_counter() - tick) * 1e3
            p.timings["total"] = sum(p.timings.values())   # this image's stages, not its batch-mates'
            results.append(result)
        return results


def _not_a_number(p: _Prepared) -> ScreeningResult:
    """A photo the model answered with NaN or infinity: not judged. The model file is damaged (or the
    engine broken on this device); a retake cannot help, a person must look, and IT must replace it."""
    p.timings["total"] = sum(p.timings.values())
    return ScreeningResult(p.name, "error", f"{Path(p.name).name}: the model gave no usable answer (NaN or infinite "
                           "outputs) — this photo was NOT judged: refer or have it read, and ask IT to reinstall "
                           "the model", "inference_failed", timings_ms=p.timings, quality=p.quality,
                           geometry=p.geometry, dicom=p.dicom)
