"""Building for a Jetson's DLA cores (``drtrt build --dla-core``): which TensorRT can, and the
builder settings that put the network there. Untested on hardware."""

from __future__ import annotations

import dataclasses
from typing import Any

from drtrt.errors import ConfigError
from drtrt.export.build_config import BuildConfig
from drtrt.runtime.backends import trt_compat as compat


def dla_features(feats: compat.TrtFeatures) -> compat.TrtFeatures:
    """Which TensorRT can build for DLA, and how: up to 10.7 (JetPack 6.x) with the FP16/INT8 flags
    of a weakly typed network, as trtexec --useDLACore does; 11.4.1 on from the ONNX's own types.
    10.8-11.4.0 have no DLA on Linux, and Jetson Thor none at all (NVIDIA's DLA notes)."""
    patch = int((feats.version.split(".") + ["0", "0"])[2] or 0)
    if (10, 8) <= (feats.major, feats.minor) < (11, 4) or (feats.major, feats.minor, patch) == (11, 4, 0):
        raise ConfigError(f"TensorRT {feats.version} cannot build for DLA (10.7 was the last 10.x with DLA; on "
                          "Linux it returns with 11.4.1 on AGX Orin): build for the GPU without --dla-core")
    if feats.major == 10:
        return dataclasses.replace(feats, strongly_typed=False)
    return feats


def use_dla(trt: Any, builder: Any, config: Any, cfg: BuildConfig, precision: str) -> list[str]:
    """Run the network on DLA core ``cfg.dla_core`` (Orin AGX and NX have DLA cores; Orin Nano has none),
    with GPU fallback for the layers DLA cannot run when asked. Untested on hardware."""
    cores = int(builder.num_DLA_cores)
    if cfg.dla_core >= cores:
        raise ConfigError(f"--dla-core {cfg.dla_core} asked for, but this device has {cores} DLA core(s) "
                          "(Orin AGX and NX have two, Orin Nano none)")
    if precision == "fp32":
        raise ConfigError("DLA runs FP16 or INT8 only: add --fp16, or give an INT8 (Q/DQ) model")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = cfg.dla_core
    if not cfg.gpu_fallback:
        return []
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return ["GPU_FALLBACK"]
