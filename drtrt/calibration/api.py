"""The API behind ``drtrt calibrate`` (INT8) and ``drtrt fp16``: convert, then gate against FP32.

Both write the reduced-precision ONNX, judge it on held-out images with ``drtrt parity``'s
thresholds (:mod:`drtrt.calibration.gate`), write the verdict into its metadata (``drtrt.gate``:
passed, failed, or unchecked without held-out images, ``--no-gate`` or not) and rename it
``<stem>.rejected.onnx`` with a :class:`~drtrt.errors.GateError` when it fails (with ``--gate``),
whether the exclusions were given or searched (``--auto-exclude``). Needs ``onnx`` and ``onnxruntime``; no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.calibration import gate
from drtrt.calibration.quantize import (BIAS_CORRECTION_IMAGES, DEFAULT_EXCLUDE, METHODS, CalibrationResult,
                                        calibrate_int8)
from drtrt.calibration.source import RECOMMENDED_IMAGES
from drtrt.errors import ConfigError
from drtrt.fileio import json_ready
from drtrt.verify.parity import CandidateReport

Progress = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``; stage is "calibrating", "correcting biases" or "checking"."""
FP16_HINT = "keep more ops in FP32 or ship the FP32 model"


def int8_hint(method: str, auto_exclude: bool) -> str:
    """What to try after a failed INT8 gate: never the method or the search this run already used."""
    tries = ["calibrate on more images (--images)"]
    if method != "percentile":
        tries.append("try --method percentile")
    tries.append("keep more layers in FP32 (--exclude NODE, named in the .auto-exclude.json record)" if auto_exclude
                 else "keep the layers that drift in FP32 (--auto-exclude finds them)")
    return ", ".join(tries[:-1]) + f", or {tries[-1]}"


@dataclass(frozen=True)
class CalibrateConfig:
    """Options of ``drtrt calibrate`` (see :func:`calibrate`).

    data: IDRiD-layout folder: calibration from its training split, the gate on its test split.
    images_dir: plain images (e.g. the clinic camera's) to calibrate on instead; without
        ``data`` a fifth of them (up to ``holdout``) is set aside for the gate.
    images: calibration images wanted (fewer draws a warning below 300).
    holdout: held-out images the gate compares on (0 = none: the model is not checked).
    thresholds: overrides of the INT8 parity thresholds (``--threshold``, ``--min-agreement``, ``--min-dice``).
    gate: fail (exit 4, model renamed) when the check fails; False reports only.
    auto_exclude: search the layers to keep in FP32 until the gate passes.
    threads: ONNX Runtime intra-op threads for the gate (None = the CPUs this process may use).
    bias_correction: calibration images the bias correction averages over (0 = none).
    """

    onnx: Path
    out: Path
    data: Path | None = None
    images_dir: Path | None = None
    images: int = RECOMMENDED_IMAGES
    method: str = "minmax"
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    holdout: int = 100
    thresholds: tuple[tuple[str, str], ...] = ()
    gate: bool = True
    auto_exclude: bool = False
    seed: int = 0
    threads: int | None = None
    bias_correction: int = BIAS_CORRECTION_IMAGES

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.images < 1 or self.holdout < 0 or self.bias_correction < 0:
            raise ConfigError(f"need --images >= 1, --holdout >= 0 and --bias-correction >= 0, found {self.images}, "
                              f"{self.holdout} and {self.bias_correction}")
        if self.data is None and self.images_dir is None:
            raise ConfigError("calibration needs images: pass --data ROOT (IDRiD layout) and/or --images-dir DIR")
        gate.overrides_from(self.thresholds)


@dataclass
class PrecisionRun:
    """A converted model and, when held-out images were given, its judgement against FP32."""

    path: Path
    precision: str
    report: CandidateReport | None
    calibration: CalibrationResult | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = self.calibration.summary() if self.calibration else f"wrote {self.path} ({self.precision.upper()})"
        check = f"\n{self.precision.upper()} vs FP32: {gate.summary(self.report)}" if self.report else ""
        return head + check


def calibrate(cfg: CalibrateConfig, on_progress: Progress | None = None,
              log: Callable[[str], None] = lambda line: None) -> PrecisionRun:
    """``drtrt calibrate``: INT8 Q/DQ model, then the accuracy gate on held-out images.

    Raises:
        GateError: the INT8 model fails the gate (with ``cfg.gate``); it is renamed ``<stem>.rejected.onnx``.
        ConfigError, DataError, ArtefactError, ImageError: bad options, data or files.
    """
    calib, held = gate.held_out_images(cfg.data, cfg.images_dir, cfg.holdout, cfg.images, cfg.seed)
    overrides = dict(cfg.thresholds)
    if cfg.auto_exclude:
        from drtrt.calibration.auto_exclude import AutoExcludeConfig, auto_exclude_int8

        gate.require_held_out(held, "--auto-exclude")
        search = AutoExcludeConfig(thresholds=cfg.thresholds)
        found = auto_exclude_int8(cfg.onnx, cfg.out, calib if calib is not None else cfg.data, held, cfg.method,
                                  cfg.exclude, cfg.images, cfg.seed, search, log, cfg.bias_correction)
        result, report = found.calibration, found.report
        log(found.message)

    else:
        progress = (lambda d, t: on_progress("calibrating", d, t)) if on_progress else None
        correcting = (lambda d, t: on_progress("correcting biases", d, t)) if on_progress else None
        result = calibrate_int8(cfg.onnx, cfg.out, calib if calib is not None else cfg.data, cfg.method, cfg.exclude,
                                images=cfg.images, seed=cfg.seed, bias_correction=cfg.bias_correction,
                                on_progress=progress, on_correction=correcting)
        report = _check(cfg.onnx, result.path, held, overrides, cfg.threads, on_progress)
    warnings = list(result.warnings)
    if report is None:
        warnings.append("no held-out images: the INT8 model was not checked against FP32 (pass --data or --holdout)")
    else:
        small = gate.too_small(report)
        warnings += [small] if small else []
        record = json.loads(result.record.read_text())
        record["gate"] = {"enforced": cfg.gate, "passed": report.passed, "too_small": small,
                          "report": json_ready(report.to_dict())}
        result.record.write_text(json.dumps(record, indent=2))
    gate.record(result.path, report, cfg.onnx, cfg.gate)
    if cfg.gate:
        gate.enforce(report, result.path, "the INT8 model", int8_hint(cfg.method, cfg.auto_exclude))
    return PrecisionRun(result.path, "int8", report, result, warnings)


def convert_fp16_checked(onnx: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None = None,
                         holdout: int = 100, thresholds: tuple[tuple[str, str], ...] = (), enforce: bool = True,
                         seed: int = 0, threads: int | None = None,
                         on_progress: Progress | None = None) -> PrecisionRun:
    """``drtrt fp16``: :func:`drtrt.calibration.fp16.convert_fp16`, then, with ``data``, the gate
    of ``drtrt calibrate`` with the FP16 parity thresholds on its test split."""
    from drtrt.calibration.fp16 import convert_fp16

    overrides = gate.overrides_from(thresholds)
    held = gate.held_out_images(data, None, holdout, 0, seed)[1] if data is not None else []
    path = convert_fp16(onnx, out)
    report = _check(Path(onnx), path, held, overrides, threads, on_progress)
    warnings = [] if report else ["no held-out images: the FP16 model was not checked against FP32 (pass --data)"]
    small = gate.too_small(report) if report else None
    warnings += [small] if small else []
    gate.record(path, report, Path(onnx), enforce)
    if enforce:
        gate.enforce(report, path, "the FP16 model", FP16_HINT)
    return PrecisionRun(path, "fp16", report, warnings=warnings)


def _check(fp32: Path, candidate: Path, held: gate.HeldOut, overrides: dict, threads: int | None,
           on_progress: Progress | None) -> CandidateReport | None:
    if not held:
        return None
    progress = (lambda d, t: on_progress("checking", d, t)) if on_progress else None
    return gate.judge(fp32, candidate, held, overrides, threads=threads, on_progress=progress)
