"""Reduced precision with an accuracy gate: INT8 calibration (``drtrt calibrate``) and FP16
conversion checked against FP32 (``drtrt fp16``).

Modules: :mod:`~drtrt.calibration.source` (which images calibrate, and the held-out images
the gate uses), :mod:`~drtrt.calibration.quantize` (Q/DQ model), :mod:`~drtrt.calibration.gate`
(agreement with FP32). This module wires them into the two commands' API functions.
Needs ``onnx`` and ``onnxruntime``; no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.calibration.gate import AgreementReport, GateError, agreement, check_thresholds, enforce_gate
from drtrt.calibration.quantize import DEFAULT_EXCLUDE, METHODS, CalibrationResult, calibrate_int8
from drtrt.calibration.source import (RECOMMENDED_IMAGES, CalibrationSet, idrid_samples, select_folder, select_idrid,
                                      split_folder)
from drtrt.errors import ConfigError, DataError

__all__ = ["AgreementReport", "CalibrateConfig", "CalibrationResult", "CalibrationSet", "DEFAULT_EXCLUDE",
           "GateError", "METHODS", "PrecisionRun", "agreement", "calibrate", "calibrate_int8", "convert_fp16_checked",
           "held_out_images", "select_folder", "select_idrid"]

Progress = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``; stage is "calibrating" or "checking"."""


@dataclass(frozen=True)
class CalibrateConfig:
    """Options of ``drtrt calibrate`` (see :func:`calibrate`).

    data: IDRiD-layout folder: calibration from its training split, the gate on its test split.
    images_dir: plain images (e.g. the clinic camera's) to calibrate on instead; without
        ``data`` a fifth of them (up to ``holdout``) is set aside for the gate.
    images: calibration images wanted (fewer draws a warning below 300).
    holdout: held-out images the gate compares on (0 = no gate).
    min_agreement / min_dice: gate thresholds (None = report only).
    threads: ONNX Runtime intra-op threads for the gate (None = its default).
    """

    onnx: Path
    out: Path
    data: Path | None = None
    images_dir: Path | None = None
    images: int = RECOMMENDED_IMAGES
    method: str = "minmax"
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    holdout: int = 100
    min_agreement: float | None = None
    min_dice: float | None = None
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.images < 1 or self.holdout < 0:
            raise ConfigError(f"need --images >= 1 and --holdout >= 0, found {self.images} and {self.holdout}")
        check_thresholds(self.min_agreement, self.min_dice)


@dataclass
class PrecisionRun:
    """A converted model and, when held-out images were given, its agreement with FP32."""

    path: Path
    precision: str
    report: AgreementReport | None
    calibration: CalibrationResult | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = self.calibration.summary() if self.calibration else f"wrote {self.path} ({self.precision.upper()})"
        gate = f"\n{self.precision.upper()} vs FP32: {self.report.summary()}" if self.report else ""
        return head + gate


def held_out_images(data: str | os.PathLike | None, images_dir: str | os.PathLike | None, holdout: int,
                    calib_count: int, seed: int = 0) -> tuple[CalibrationSet | None, list[Path]]:
    """(calibration set from ``images_dir`` or None, held-out image paths for the gate).

    With ``data`` the held-out images are its test split (stratified by grade); otherwise
    they are set aside from ``images_dir`` so calibration never sees them.
    """
    calib = None
    held: list[Path] = []
    if images_dir is not None and data is None:
        calib, held = split_folder(images_dir, calib_count, holdout, seed)
    elif images_dir is not None:
        calib = select_folder(images_dir, calib_count, seed)
    if data is not None and holdout > 0:
        try:
            held = [s.image for s in idrid_samples(data, "test", holdout, seed)]
        except DataError as exc:
            raise DataError(f"{exc}; the accuracy gate compares on the test split (pass --holdout 0 to skip it)") from None
    return calib, held


def _require_held_out(held: list[Path], gated: bool) -> None:
    if gated and not held:
        raise ConfigError("--min-agreement/--min-dice need held-out images: pass --data ROOT with a test split, "
                          "more images in --images-dir, or a --holdout above 0")


def _compare(fp32: Path, candidate: Path, held: list[Path], threads: int | None,
             on_progress: Progress | None) -> AgreementReport | None:
    if not held:
        return None
    progress = (lambda d, t: on_progress("checking", d, t)) if on_progress else None
    return agreement(fp32, candidate, held, threads=threads, on_progress=progress)


def _enforce(report: AgreementReport | None, candidate: Path, what: str, min_agreement: float | None,
             min_dice: float | None, hint: str) -> None:
    """GateError when ``report`` misses the thresholds; the candidate is renamed ``<stem>.rejected.onnx``
    first, so nothing downstream picks it up by mistake."""
    if report is None:
        return
    try:
        enforce_gate(report, what, min_agreement, min_dice, hint)
    except GateError as exc:
        rejected = candidate.with_name(f"{candidate.stem}.rejected{candidate.suffix}")
        candidate.replace(rejected)
        raise GateError(f"{exc} (model moved to {rejected})") from None


def calibrate(cfg: CalibrateConfig, on_progress: Progress | None = None) -> PrecisionRun:
    """``drtrt calibrate``: INT8 Q/DQ model, then the accuracy gate on held-out images.

    Raises:
        GateError: the INT8 model misses ``min_agreement``/``min_dice``; it is renamed
            ``<stem>.rejected.onnx`` so nothing downstream picks it up by mistake.
        ConfigError, DataError, ArtefactError, ImageError: bad options, data or files.
    """
    if cfg.data is None and cfg.images_dir is None:
        raise ConfigError("calibration needs images: pass --data ROOT (IDRiD layout) and/or --images-dir DIR")
    calib, held = held_out_images(cfg.data, cfg.images_dir, cfg.holdout, cfg.images, cfg.seed)
    gated = cfg.min_agreement is not None or cfg.min_dice is not None
    _require_held_out(held, gated)
    progress = (lambda d, t: on_progress("calibrating", d, t)) if on_progress else None
    source = calib if calib is not None else cfg.data
    result = calibrate_int8(cfg.onnx, cfg.out, source, cfg.method, cfg.exclude, images=cfg.images, seed=cfg.seed,
                            on_progress=progress)
    report = _compare(Path(cfg.onnx), result.path, held, cfg.threads, on_progress)
    if report is not None:
        record = json.loads(result.record.read_text())
        record["agreement_vs_fp32"] = report.to_dict()
        record["gate"] = {"min_agreement": cfg.min_agreement, "min_dice": cfg.min_dice,
                          "failures": report.failures(cfg.min_agreement or 0.0, cfg.min_dice or 0.0) if gated else []}
        result.record.write_text(json.dumps(record, indent=2))
    _enforce(report, result.path, "the INT8 model", cfg.min_agreement, cfg.min_dice,
             "calibrate on more images, try --method percentile, or --exclude the nodes that drift "
             "(--auto-exclude finds them)")
    return PrecisionRun(result.path, "int8", report, result, list(result.warnings))


def convert_fp16_checked(onnx: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None = None,
                         holdout: int = 100, min_agreement: float | None = None, min_dice: float | None = None,
                         seed: int = 0, threads: int | None = None,
                         on_progress: Progress | None = None) -> PrecisionRun:
    """``drtrt fp16``: :func:`drtrt.export.precision.convert_fp16`, then, with ``data``, the
    same agreement figures as ``drtrt calibrate`` on its test split (and the gate, if asked)."""
    from drtrt.export.precision import convert_fp16

    check_thresholds(min_agreement, min_dice)
    held = held_out_images(data, None, holdout, 0, seed)[1] if data is not None else []
    _require_held_out(held, min_agreement is not None or min_dice is not None)
    path = convert_fp16(onnx, out)
    report = _compare(Path(onnx), path, held, threads, on_progress)
    _enforce(report, path, "the FP16 model", min_agreement, min_dice, "keep more ops in FP32 or ship the FP32 model")
    return PrecisionRun(path, "fp16", report)
