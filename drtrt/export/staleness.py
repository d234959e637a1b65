"""Whether an engine must be built again (:func:`stale_reason`), and the command that builds it
(:func:`rebuild_command`: kept in the engine's manifest, quoted by the runtime when it refuses the
engine). Apart from :mod:`.trt_build`: a service's start asks only the first question.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from drtrt.errors import ArtefactError
from drtrt.export.build_config import BuildConfig
from drtrt.fileio import sha256_file
from drtrt.runtime.backends import trt_compat as compat
from drtrt.runtime.backends.cuda import load_cuda
from drtrt.runtime.backends.trt_manifest import check_engine_compatible, read_engine_manifest


def rebuild_command(onnx: Path, out: Path, precision: str, cfg: BuildConfig) -> str:
    """The ``drtrt build`` line that makes this engine again: where it was built may not be where it
    is refused, so the manifest carries the whole command."""
    flag = {"fp32": "", "fp16": " --fp16", "int8": " --int8"}[precision]
    dla = "" if cfg.dla_core is None else \
        f" --dla-core {cfg.dla_core}" + (" --gpu-fallback" if cfg.gpu_fallback else "")
    return (f"drtrt build --onnx {onnx} --out {out}{flag} --max-batch {cfg.max_batch} "
            f"--workspace {cfg.workspace_gib:g}{dla}")


def stale_reason(cfg: BuildConfig) -> str | None:
    """Why the engine at ``cfg.out`` must be built; None when it is current: built from this ONNX
    with these options, intact, for this TensorRT, CUDA and GPU. What a service checks at every
    start (``drtrt build --if-stale``), so that an over-the-air JetPack update rebuilds the engine
    instead of leaving every screening refused."""
    cfg.validate()
    if not Path(cfg.out).is_file():
        return f"{Path(cfg.out).name} does not exist yet"
    try:
        manifest = read_engine_manifest(cfg.out)
    except ArtefactError as exc:
        return str(exc)
    if sha256_file(cfg.onnx) not in (manifest.onnx.get("source_sha256"), manifest.onnx.get("sha256")):
        return f"{Path(cfg.onnx).name} is not the ONNX the engine was built from"
    if cfg.precision and cfg.precision != manifest.precision:
        return f"the engine is {manifest.precision}, {cfg.precision} was asked for"
    if any(shapes["max"][0] != cfg.max_batch for shapes in manifest.profile.values()):
        return f"the engine's largest batch is not {cfg.max_batch}"
    if (manifest.build.get("dla_core"), bool(manifest.build.get("gpu_fallback"))) != (cfg.dla_core, cfg.gpu_fallback):
        return "the engine was built for another device (GPU or DLA core) or fallback"
    if manifest.build.get("dla_core") is not None and "placement" not in manifest.build:
        return ("the DLA engine was built before drtrt recorded which layers run on DLA (TensorRT 11.4.1 would "
                "have built the FP32 ONNX all on the GPU)")
    if manifest.tf32:
        return "the engine was built with TF32 on (its FP32 layers round their inputs), not as ONNX Runtime computes"
    if sha256_file(cfg.out) != manifest.engine.sha256:
        return f"{Path(cfg.out).name} changed after its build (damaged?)"
    trt = compat.import_tensorrt()
    mem = load_cuda(cfg.cuda, cfg.device)
    try:
        gpu = mem.gpu_info()
    finally:
        mem.close()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")           # another GPU model or driver CUDA: rebuild for this one
            check_engine_compatible(manifest, Path(cfg.out), trt.__version__, gpu)
    except (ArtefactError, UserWarning) as exc:
        return str(exc).split("; ")[0]
    return None
