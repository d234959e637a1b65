"""Artefact commands: ``export`` (checkpoint → ONNX), ``fp16`` and ``calibrate`` (precision baked
into the ONNX, gated against FP32), ``build`` (ONNX → TensorRT engine), ``bundle`` (what a site
without internet carries to the station) and ``bundle verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from drtrt.cli.common import (AllowUncheckedOpt, Flag, Opt, _Command, app, cli_errors, command, console, err, progress,
                              stage_progress, warn)

ThresholdOpt = Annotated[Optional[list[str]], Opt("Gate override KEY=VALUE (grade_agreement, referable_agreement, "
                                                  "lesion_dice, metric_drop, logit_rel_delta); repeatable.",
                                                  "KEY=VALUE")]
GateOpt = Annotated[bool, Flag("Fail (exit 4, model renamed *.rejected.onnx) when the check against FP32 fails; "
                               "--no-gate reports only.", "--gate/--no-gate")]
HoldoutOpt = Annotated[int, Opt("Held-out images the check against FP32 runs on (0 = no check).", "N")]


@command()
def export(checkpoint: Annotated[Path, Opt("Checkpoint from `drtrt train` (.pt).", "CHECKPOINT", show_default=False)],
           out: Annotated[Path, Opt("ONNX file to write.", "FILE", show_default=False)],
           simplify: Annotated[bool, Flag("Simplify the graph with onnxslim.", "--simplify/--no-simplify")] = True
           ) -> None:
    """Export a checkpoint to ONNX and check it against PyTorch."""
    from drtrt.train.checkpoint import export_checkpoint

    with console.status("exporting to ONNX"):
        result = export_checkpoint(checkpoint, out, simplify=simplify)
    console.print(result.summary())


def _thresholds(pairs: list[str] | None, min_agreement: float | None = None,
                min_dice: float | None = None) -> tuple[tuple[str, str], ...]:
    from drtrt.calibration.gate import overrides_from
    from drtrt.verify.thresholds import parse_overrides

    return tuple(overrides_from(tuple(parse_overrides(pairs or []).items()), min_agreement, min_dice).items())


@command()
def fp16(onnx: Annotated[Path, Opt("FP32 model from `drtrt export`.", "FILE", show_default=False)],
         out: Annotated[Path, Opt("FP16 model to write (e.g. model.fp16.onnx).", "FILE", show_default=False)],
         data: Annotated[Optional[Path], Opt("IDRiD-layout folder: check against FP32 on its test split.",
                                             "DIR")] = None,
         holdout: HoldoutOpt = 100,
         threshold: ThresholdOpt = None,
         gate: GateOpt = True) -> None:
    """FP16 by mixed-precision conversion (I/O, softmax, reductions, heads stay FP32), checked against FP32
    with parity's FP16 thresholds."""
    from drtrt.calibration.api import convert_fp16_checked

    with progress() as bars:
        run = convert_fp16_checked(onnx, out, data, holdout, _thresholds(threshold), gate,
                                   on_progress=stage_progress(bars))
    for warning in run.warnings:
        warn(warning)
    console.print(run.summary(), highlight=False, soft_wrap=True)


@command()
def calibrate(onnx: Annotated[Path, Opt("FP32 model from `drtrt export`.", "FILE", show_default=False)],
              out: Annotated[Path, Opt("INT8 Q/DQ model to write (e.g. model.int8.onnx).", "FILE", show_default=False)],
              data: Annotated[Optional[Path], Opt("IDRiD-layout folder: calibrate on its training split, check on "
                                                  "its test split.", "DIR")] = None,
              images_dir: Annotated[Optional[Path], Opt("Plain images (e.g. your camera's) to calibrate on.",
                                                        "DIR")] = None,
              images: Annotated[int, Opt("Calibration images (a warning below 300).", "N")] = 300,
              method: Annotated[str, Opt("minmax | percentile | entropy (entropy clips the activation tail where "
                                         "bright lesions live: check lesion Dice).", "METHOD")] = "minmax",
              exclude: Annotated[Optional[list[str]], Opt("Node kept in FP32, or first-conv | last-conv | heads | softmax "
                                                          "| none; repeatable; replaces the default (the four "
                                                          "groups).", "NODE")] = None,
              holdout: HoldoutOpt = 100,
              threshold: ThresholdOpt = None,
              min_agreement: Annotated[Optional[float], Opt("Shorthand for --threshold grade_agreement=X "
                                                            "[default: 0.97, parity's INT8 gate].", "X")] = None,
              min_dice: Annotated[Optional[float], Opt("Shorthand for --threshold lesion_dice=X [default: 0.95].",
                                                       "X")] = None,
              gate: GateOpt = True,
              seed: Annotated[int, Opt("Seed of the image draws.", "N")] = 0,
              bias_correction: Annotated[int, Opt("Calibration images over which each quantised conv's bias is "
                                                  "corrected for the mean INT8 shifts (0 = no correction; "
                                                  "slow on a full-size model: docs/reproducibility.md).",
                                                  "N")] = 8,
              auto_exclude: Annotated[bool, Flag("Keep the layers that diverge most in FP32 until the gate passes "
                                                 "(exit 4 if it cannot).", "--auto-exclude")] = False) -> None:
    """INT8 by calibration: a Q/DQ model for TensorRT and ONNX Runtime, checked against FP32 with the
    thresholds `drtrt parity` judges INT8 by."""
    from drtrt.calibration.api import CalibrateConfig, calibrate as run_calibration
    from drtrt.calibration.quantize import DEFAULT_EXCLUDE

    cfg = CalibrateConfig(onnx=onnx, out=out, data=data, images_dir=images_dir, images=images, method=method,
                          exclude=tuple(exclude) if exclude else DEFAULT_EXCLUDE, holdout=holdout,
                          thresholds=_thresholds(threshold, min_agreement, min_dice), gate=gate,
                          auto_exclude=auto_exclude, seed=seed, bias_correction=bias_correction)
    with progress() as bars:
        run = run_calibration(cfg, stage_progress(bars), log=lambda line: err.print(line, highlight=False,
                                                                                   soft_wrap=True))
    for warning in run.warnings:
        warn(warning)
    console.print(run.summary(), highlight=False, soft_wrap=True)


@command()
def build(onnx: Annotated[Path, Opt("ONNX model (FP32, FP16, or INT8 with Q/DQ nodes).", "FILE", show_default=False)],
          out: Annotated[Path, Opt("Engine to write (a raw TensorRT plan), plus OUT.json, its manifest.", "FILE",
                                   show_default=False)],
          fp16: Annotated[bool, Flag("Half precision.", "--fp16")] = False,
          int8: Annotated[bool, Flag("INT8: a Q/DQ model, or calibrate with --calib-data.", "--int8")] = False,
          calib_data: Annotated[Optional[Path], Opt("Images to calibrate INT8 on (ONNX without Q/DQ).",
                                                    "DIR")] = None,
          max_batch: Annotated[int, Opt("Largest batch of the optimisation profile (1…N).", "N")] = 4,
          workspace: Annotated[float, Opt("Builder workspace limit in GiB.", "GIB")] = 1.0,
          timing_cache: Annotated[Optional[Path], Opt("Timing cache file or folder (default: one per GPU + TensorRT "
                                                      "under ~/.cache/drtrt).", "PATH")] = None,
          if_stale: Annotated[bool, Flag("Build only when OUT is missing or stale (another ONNX, option, TensorRT, "
                                         "CUDA or GPU): for a service's start.", "--if-stale")] = False,
          dla_core: Annotated[Optional[int], Opt("Run on this DLA core (Orin AGX/NX; static batch = --max-batch, "
                                                 "FP16 or INT8). Untested on hardware.", "N")] = None,
          gpu_fallback: Annotated[bool, Flag("With --dla-core: layers DLA cannot run go to the GPU.",
                                             "--gpu-fallback")] = False) -> None:
    """Build a TensorRT engine from ONNX (needs TensorRT and an NVIDIA GPU). Precision defaults to the ONNX's own."""
    from drtrt.cli.tables import RichBuildProgress
    from drtrt.errors import ConfigError
    from drtrt.export.build_config import BuildConfig
    from drtrt.export.staleness import stale_reason
    from drtrt.export.trt_build import build_engine

    if fp16 and int8:
        raise ConfigError("choose one of --fp16 and --int8")
    cfg = BuildConfig(onnx=onnx, out=out, precision="fp16" if fp16 else "int8" if int8 else None,
                      calib_data=calib_data, max_batch=max_batch, workspace_gib=workspace, timing_cache=timing_cache,
                      dla_core=dla_core, gpu_fallback=gpu_fallback)
    if if_stale:
        reason = stale_reason(cfg)
        if reason is None:
            console.print(f"{out} is up to date for this ONNX, TensorRT and GPU: nothing to build")
            return
        console.print(f"building {out}: {reason}")
    with progress() as bars:
        result = build_engine(cfg, listener=RichBuildProgress(bars), log=bars.console.print)
    console.print(result.summary())


bundle_app = typer.Typer(name="bundle", rich_markup_mode=None, add_completion=False,
                         help="One archive for a site without internet: models, golden files, config, aarch64 "
                              "wheels and install.sh, with a manifest of hashes. `drtrt bundle verify` checks one.")
app.add_typer(bundle_app)


@bundle_app.callback(invoke_without_command=True)
@cli_errors
def bundle(ctx: typer.Context,
           model: Annotated[Optional[list[Path]], Opt("ONNX model to carry (repeatable).", "FILE")] = None,
           golden: Annotated[Optional[Path], Opt("Golden folder from `drtrt parity --save-golden`.", "DIR")] = None,
           out: Annotated[Optional[Path], Opt("New folder, or FILE.tar, to write.", "PATH")] = None,
           jetpack: Annotated[str, Opt("JetPack of the station: 6.0, 6.2 or 7 (its Python and cuda-python).",
                                       "VERSION")] = "6.2",
           config: Annotated[Optional[Path], Opt("Site configuration file to carry.", "FILE")] = None,
           wheels: Annotated[str, Opt("download: drtrt + every dependency for aarch64 (needs internet here); "
                                      "drtrt: its wheel only; none.", "WHICH")] = "download",
           service: Annotated[str, Opt("What install.sh brings up: station (the web app), watch (a camera folder, "
                                       "log only) or receive (DICOM from the camera); the wheels carry its extras.",
                                       "SERVICE")] = "station",
           platform: Annotated[str, Opt("jetson (aarch64, the JetPack's Python) or host (this machine: to try the "
                                        "offline install on a PC).", "WHERE")] = "jetson",
           allow_unchecked_model: AllowUncheckedOpt = False) -> None:
    """Make a bundle (or, with `verify PATH`, check one)."""
    from drtrt.errors import ConfigError
    from drtrt.export.bundle import BundleSpec, make_bundle

    if ctx.invoked_subcommand is not None:
        return
    if not model or golden is None or out is None:
        raise ConfigError("drtrt bundle needs --model, --golden and --out (or: drtrt bundle verify PATH)")
    spec = BundleSpec(out=out, models=tuple(model), golden=golden, jetpack=jetpack, config=config, wheels=wheels,
                      allow_unchecked_model=allow_unchecked_model, service=service, platform=platform)
    with progress(transient=True) as bars:
        bars.add_task("bundling", total=None, info="")
        path = make_bundle(spec, log=bars.console.print)
    console.print(f"wrote {path}; on the station: drtrt bundle verify {path.name}, then "
                  f"install.sh --service {service} --source BUNDLE --model BUNDLE/models/… --golden BUNDLE/golden")


@bundle_app.command("verify", cls=_Command)
@cli_errors
def bundle_verify(path: Annotated[Path, typer.Argument(help="Bundle folder or .tar.", metavar="PATH",
                                                       show_default=False)]) -> None:
    """Check a bundle before installing anything from it: every file present, unchanged and expected."""
    from drtrt.export.bundle import describe, verify_bundle

    manifest = verify_bundle(path)
    console.print(f"{path}: {len(manifest['files'])} files intact (drtrt {manifest['drtrt_version']}, "
                  f"{describe(manifest)})", highlight=False)
