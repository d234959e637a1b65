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
    of a weakly typed network, as trtexec --useDLACore does; 11.4.1 on (JetPack 7.2.2, AGX Orin)
    strongly typed, from the ONNX's own types, so an FP16 build starts from the FP16 ONNX
    (:func:`~drtrt.export.trt_build.convert_to_fp16`): DLA takes no FP32 layer, and with GPU
    fallback an FP32 ONNX would run all on the GPU. 10.8-11.4.0 have no DLA on Linux, and Jetson
    Thor none at all (NVIDIA's DLA notes)."""
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


def dla_placement(trt: Any, network: Any, config: Any, core: int) -> dict[str, Any]:
    """Where each layer of a DLA build may run, as TensorRT answers before the build
    (``IBuilderConfig.can_run_on_DLA``: the op, its parameters and FP16/INT8 — strongly typed, the
    layer's own types); the rest runs on the GPU (with --gpu-fallback, silently: without it the build
    fails). Recorded in the manifest, so an engine that runs all on the GPU never reads as a DLA one.

    TensorRT may still move more layers to the GPU (DLA's subgraph limits), which only the built
    engine shows (``trtexec --loadEngine ... --useDLACore N --dumpLayerInfo``); untested on hardware.
    """
    on_dla, on_gpu = [], []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        (on_dla if config.can_run_on_DLA(layer) else on_gpu).append(layer.name)
    device = "dla" if not on_gpu else "dla+gpu" if on_dla else "gpu"
    return {"device": device, "dla_core": core if on_dla else None, "dla_layers": len(on_dla),
            "gpu_layers": on_gpu, "checked_with": "IBuilderConfig.can_run_on_DLA"}


def placement_summary(placement: dict[str, Any]) -> str:
    """One clause for the build's summary line."""
    gpu = len(placement["gpu_layers"])
    if placement["device"] == "gpu":
        return f"no layer can run on DLA: all {gpu} run on the GPU"
    return f"{placement['dla_layers']} layers on DLA core {placement['dla_core']}, {gpu} on the GPU"
