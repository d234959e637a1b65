"""ONNX → TensorRT engine (``drtrt build``): a raw plan plus the manifest the runtime checks.

The engine file is the plan exactly as TensorRT serialises it (trtexec, Triton and DeepStream
load it as is); everything drtrt knows about it goes into ``<engine>.json`` (see
:class:`drtrt.runtime.backends.trt_manifest.EngineManifest`). Precision follows SPEC §5: it lives in the ONNX
(FP16 conversion, INT8 Q/DQ nodes from :mod:`drtrt.calibration`): from 10.x on the network is
strongly typed, on 8.5–8.6 the FP16/INT8 flags go with it and the layers the FP16 ONNX keeps in
FP32 are pinned there, so one command gives the same numerics on every version. Version
differences are all in :mod:`drtrt.runtime.backends.trt_compat`.

Beside it: the options (:mod:`.build_config`), the timing cache (:mod:`.timing_cache`), whether
an engine must be built again (:mod:`.staleness`) and DLA (:mod:`.dla`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from drtrt import __version__
from drtrt.errors import ArtefactError, BackendUnavailable, ConfigError, DrtrtError
from drtrt.export.build_config import BuildConfig
from drtrt.export.dla import dla_features, dla_placement, placement_summary, use_dla
from drtrt.export.staleness import rebuild_command
from drtrt.export.timing_cache import load_timing_cache, save_timing_cache, timing_cache_key, timing_cache_path
from drtrt.fileio import atomic_write, sha256_file
from drtrt.model_info import GATE_KEY, ModelInfo, gate_record
from drtrt.runtime.backends import trt_compat as compat
from drtrt.runtime.base import TensorSpec
from drtrt.runtime.backends.cuda import GpuInfo, load_cuda
from drtrt.runtime.backends.ort import open_session
from drtrt.runtime.backends.trt_manifest import EngineFile, EngineIO, EngineManifest, manifest_path


class BuildListener(Protocol):
    """Receives build progress: ``begin`` once TensorRT and the GPU are found, then TensorRT's
    phases and steps (10.x+; 8.x reports none, so ``begin`` should start a spinner)."""

    def begin(self, description: str) -> None: ...
    def phase_start(self, name: str, parent: str | None, steps: int) -> None: ...
    def step(self, name: str, step: int) -> bool: ...      # False cancels the build
    def phase_finish(self, name: str) -> None: ...


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    manifest: Path
    precision: str
    seconds: float
    engine_bytes: int
    timing_cache: Path
    timing_cache_reused: bool
    onnx: Path                     # the ONNX actually built (the calibrated one after --int8 calibration)
    progress_reported: bool
    placement: dict | None = None  # a DLA build: which layers may run on DLA (:func:`.dla.dla_placement`)

    def summary(self) -> str:
        cache = "reused" if self.timing_cache_reused else "new"
        where = f"; {placement_summary(self.placement)}" if self.placement else ""
        return (f"wrote {self.engine} ({self.engine_bytes / 2**20:.1f} MiB, {self.precision}) and {self.manifest.name} "
                f"in {self.seconds:.1f} s from {self.onnx}{where}; timing cache {cache}: {self.timing_cache}")


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ONNX's ``metadata_props`` through ONNX Runtime (no ``onnx`` package needed on the device)."""
    session = open_session(path, threads=1, optimize=False)   # reads metadata, runs nothing
    return dict(session.get_modelmeta().custom_metadata_map)


def resolve_precision(requested: str | None, qdq: bool, onnx_precision: str, onnx: Path) -> str:
    """The precision to build, refusing combinations that would silently build something else."""
    if requested is None:
        return "int8" if qdq else onnx_precision if onnx_precision in ("fp16", "fp32") else "fp32"
    if qdq and requested != "int8":
        raise ConfigError(f"{onnx.name} holds Q/DQ nodes (an INT8 model) but {requested} was asked for; "
                          "pass --int8, or give the FP32 ONNX")
    if requested == "fp32" and onnx_precision == "fp16":
        raise ConfigError(f"{onnx.name} is an FP16 model but fp32 was asked for; pass --fp16 or give the FP32 ONNX")
    return requested


class _Parsed:
    """A parsed network with what the build needs from it."""

    def __init__(self, trt: Any, feats: compat.TrtFeatures, builder: Any, logger: Any, path: Path) -> None:
        self.path, self.network = path, builder.create_network(compat.network_flags(trt, feats))
        self.parser = trt.OnnxParser(self.network, logger)
        mark = logger.mark()
        if not self.parser.parse_from_file(str(path)):
            errors = compat.parser_errors(self.parser) or logger.errors(mark) or ["no message"]
            raise ArtefactError(f"TensorRT's ONNX parser rejected {path}: {'; '.join(errors[:3])}")
        self.qdq = compat.has_qdq(trt, self.network)
        self.metadata = read_onnx_metadata(path)
        self.info = ModelInfo.from_metadata(self.metadata, source=str(path))

    def tensors(self, trt: Any, outputs: bool) -> tuple[TensorSpec, ...]:
        count = self.network.num_outputs if outputs else self.network.num_inputs
        get = self.network.get_output if outputs else self.network.get_input
        return tuple(TensorSpec(t.name, tuple(int(d) for d in t.shape), compat.numpy_dtype(trt, t.dtype).name)
                     for t in (get(i) for i in range(count)))


def _prepared_onnx(cfg: BuildConfig, trt: Any, feats: compat.TrtFeatures, builder: Any, logger: Any,
                   log: Callable[[str], None]) -> tuple[_Parsed, str]:
    """Parse the ONNX; calibrate (INT8) or convert (FP16 for the GPU) first when needed.

    Every GPU FP16 build starts from the same FP16 ONNX (drtrt's conversion, FP32 kept where it keeps
    it): strongly typed it is the precision, weakly typed (8.x) its FP32 layers are pinned by
    :func:`hold_fp32`. DLA, which has no FP32: weakly typed (up to 10.7) the FP32 ONNX with the FP16
    flag, as trtexec --useDLACore --fp16; strongly typed (11.4.1) the FP16 ONNX too, since the types
    are the precision and an FP32 layer never goes to DLA."""
    parsed = _Parsed(trt, feats, builder, logger, Path(cfg.onnx))
    precision = resolve_precision(cfg.precision, parsed.qdq, parsed.info.precision, parsed.path)
    if precision == "int8" and not parsed.qdq:
        if cfg.calib_data is None:
            raise ConfigError(f"{parsed.path.name} has no Q/DQ nodes, so --int8 needs calibration images: pass "
                              "--calib-data ROOT (an IDRiD-layout or image folder), or give an ONNX from "
                              "`drtrt calibrate`")
        log(f"calibrating INT8 on {cfg.calib_data} (no Q/DQ nodes in {parsed.path.name})")
        parsed = _Parsed(trt, feats, builder, logger, calibrate(parsed.path, cfg.calib_data, cfg.out, log))
        if not parsed.qdq:
            raise ArtefactError(f"calibration wrote {parsed.path} without Q/DQ nodes; cannot build INT8 from it")
    if precision == "fp16" and (cfg.dla_core is None or feats.strongly_typed) and parsed.info.precision != "fp16":
        log(f"converting {parsed.path.name} to FP16 first (the same FP16 model on every TensorRT version"
            + ("; DLA takes FP16 layers only)" if cfg.dla_core is not None else ")"))
        parsed = _Parsed(trt, feats, builder, logger, convert_to_fp16(parsed.path, cfg.out))
    return parsed, precision


def fp32_tensors(onnx_path: Path) -> set[str]:
    """Outputs of the compute nodes an FP16 ONNX keeps in FP32 (float32-typed; casts, constants and
    shape arithmetic aside) — what a weakly typed build must pin to FP32 to match it."""
    import onnx

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    graph, float32 = proto.graph, onnx.TensorProto.FLOAT
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    return {name for node in graph.node if node.op_type not in ("Cast", "Constant", "Shape")
            and node.output and all(types.get(o) == float32 for o in node.output) for name in node.output}


def calibrate(onnx: Path, calib_data: Path, out: Path, log: Callable[[str], None] = lambda message: None) -> Path:
    """INT8 Q/DQ ONNX beside the engine (``model.int8.onnx``) via :mod:`drtrt.calibration.quantize`
    with its defaults (IDRiD training split stratified by grade, or any image folder)."""
    from drtrt.calibration.quantize import calibrate_int8

    result = calibrate_int8(onnx, out.with_name(f"{out.stem}.int8.onnx"), calib_data)
    for warning in result.warnings:
        log(f"warning: {warning}")
    log(result.summary())
    return Path(result.path)


def convert_to_fp16(onnx: Path, out: Path) -> Path:
    """FP16 ONNX beside the engine (``model.fp16.onnx``) via :mod:`drtrt.calibration.fp16`."""
    from drtrt.calibration.fp16 import convert_fp16

    target = out.with_name(f"{out.stem}.fp16.onnx")

    return Path(convert_fp16(onnx, target))


def build_engine(cfg: BuildConfig, listener: BuildListener | None = None,
                 log: Callable[[str], None] = lambda message: None) -> BuildResult:
    """Build ``cfg.onnx`` into ``cfg.out`` + ``cfg.out.json``; see :class:`BuildConfig` for the options.

    Raises BackendUnavailable without TensorRT or a GPU (before any calibration work),
    ConfigError for contradictory options, ArtefactError when TensorRT rejects the model.
    """
    cfg.validate()
    trt = compat.import_tensorrt()
    feats = compat.features(trt)
    if cfg.dla_core is not None:
        feats = dla_features(feats)
    mem = load_cuda(cfg.cuda, cfg.device)
    try:
        gpu = mem.gpu_info()
    finally:
        mem.close()
    start = time.perf_counter()
    if listener is not None:
        listener.begin(f"building a TensorRT {feats.version} engine for {gpu.name}")
    logger = compat.make_logger(trt)
    mark = logger.mark()
    try:
        builder = trt.Builder(logger)
    except TypeError:   # pybind's "factory function returned nullptr": TensorRT could not use the GPU
        raise BackendUnavailable(f"TensorRT could not create a builder on {gpu.name}: "
                                 f"{'; '.join(logger.errors(mark)) or 'no message'}. {compat.CPU_PATH}") from None
    parsed, precision = _prepared_onnx(cfg, trt, feats, builder, logger, log)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * 2**30))
    flags = compat.apply_precision(trt, config, feats, precision, dla=cfg.dla_core is not None)
    tf32 = compat.clear_tf32(trt, config)       # FP32 layers compute FP32, as ONNX Runtime does
    held, placement = [], None
    if cfg.dla_core is not None:
        flags += use_dla(trt, builder, config, cfg, precision)
        placement = dla_placement(trt, parsed.network, config, cfg.dla_core)
        if placement["device"] == "gpu":
            log(f"warning: no layer of {parsed.path.name} can run on DLA core {cfg.dla_core}: the engine runs on "
                "the GPU only (its manifest says so)")
    elif precision == "fp16" and not feats.strongly_typed:
        held = compat.hold_fp32(trt, parsed.network, fp32_tensors(parsed.path))
    profile_shapes = _add_profile(trt, builder, config, parsed, cfg)
    cache_file = timing_cache_path(cfg.timing_cache, gpu, feats.version)
    cache_key = timing_cache_key(gpu, feats.version)
    reused = load_timing_cache(config, cache_file, cache_key, log)
    monitor = None
    if listener is not None:
        monitor = compat.make_progress_monitor(trt, feats, listener.phase_start, listener.step, listener.phase_finish)
        if monitor is not None:
            config.progress_monitor = monitor
    plan = builder.build_serialized_network(parsed.network, config)
    if plan is None:
        raise ArtefactError(f"TensorRT could not build {parsed.path.name}: "
                            f"{'; '.join(logger.errors(mark)[-3:]) or 'no message'}")
    data = memoryview(plan)
    atomic_write(cfg.out, data)
    save_timing_cache(config, cache_file, cache_key, log)
    seconds = time.perf_counter() - start
    build = {"max_batch": cfg.max_batch, "opt_batch": cfg.opt_batch, "workspace_gib": cfg.workspace_gib,
             "dla_core": cfg.dla_core, "gpu_fallback": cfg.gpu_fallback,
             **({"placement": placement} if placement else {}),
             "builder_flags": flags, "fp32_layers": held, "timing_cache": str(cache_file),
             "timing_cache_reused": reused,
             "progress_monitor": monitor is not None, "seconds": round(seconds, 2),
             "command": rebuild_command(parsed.path, cfg.out, precision, cfg)}
    target = manifest_path(cfg.out)
    manifest = _manifest(trt, feats, gpu, parsed, precision, data, profile_shapes, build, cfg.onnx, cfg.out.name,
                         tf32)
    atomic_write(target, json.dumps(manifest.to_dict(), indent=2) + "\n")
    return BuildResult(cfg.out, target, precision, seconds, data.nbytes, cache_file, reused, parsed.path,
                       monitor is not None, placement)


def _manifest(trt: Any, feats: compat.TrtFeatures, gpu: GpuInfo, parsed: _Parsed, precision: str, plan: memoryview,
              profile: dict, build: dict, source: Path, engine_file: str, tf32: bool) -> EngineManifest:
    return EngineManifest(
        engine=EngineFile(engine_file, hashlib.sha256(plan).hexdigest(), plan.nbytes), tensorrt=feats.version,
        gpu={"name": gpu.name, "compute_capability": gpu.compute_capability, "total_memory": gpu.total_memory,
             "multiprocessors": gpu.multiprocessors, "integrated": gpu.integrated, "board": gpu.board},
        cuda={"driver": gpu.driver_version, "runtime": gpu.runtime_version, "library": gpu.library},
        precision=precision, strongly_typed=feats.strongly_typed, tf32=tf32,
        onnx={"file": str(parsed.path), "sha256": sha256_file(parsed.path), "source": str(source),
              "source_sha256": sha256_file(source)},
        calibration_sha256=parsed.metadata.get("drtrt.calibration_sha256", ""),
        metadata=_engine_metadata(parsed, precision),
        io=EngineIO(parsed.tensors(trt, outputs=False), parsed.tensors(trt, outputs=True)), profile=profile,
        preprocess=parsed.info.preprocess.to_dict(), build=build,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), drtrt_version=__version__)


def _engine_metadata(parsed: _Parsed, precision: str) -> dict[str, str]:
    """The ONNX's ``drtrt.*`` keys, its accuracy check (``drtrt.gate``) included, so the engine is refused
    where its ONNX would be; an engine TensorRT made in another precision than the ONNX's (DLA's FP16 of
    an FP32 ONNX) was never compared with that ONNX: "unchecked"."""
    meta = {k: v for k, v in parsed.metadata.items() if k.startswith("drtrt.")}
    if precision != parsed.info.precision:
        meta[f"drtrt.{GATE_KEY}"] = gate_record("unchecked", "fp32", sha256_file(parsed.path),
                                                f"TensorRT built {precision} from this {parsed.info.precision} ONNX; "
                                                "not compared with it")
    return meta


def _add_profile(trt: Any, builder: Any, config: Any, parsed: _Parsed,
                 cfg: BuildConfig) -> dict[str, dict[str, list[int]]]:
    """One optimisation profile: batch 1 … max_batch (opt ``opt_batch``); other dimensions must be fixed.
    DLA takes static shapes only: then the one batch is ``max_batch`` (smaller batches are padded)."""
    profile, shapes = builder.create_optimization_profile(), {}
    for spec in parsed.tensors(trt, outputs=False):
        batch, rest = spec.shape[0] if spec.shape else 0, spec.shape[1:]
        if not spec.shape or any(d < 1 for d in rest):
            raise ConfigError(f"input '{spec.name}' has shape {spec.shape}; drtrt engines need a fixed image size "
                              "and only the batch dynamic — re-export with `drtrt export`")
        if batch > 0 and batch != cfg.max_batch:
            raise ConfigError(f"input '{spec.name}' has a fixed batch of {batch}; re-export with a dynamic "
                              "batch (`drtrt export` does) or pass --max-batch to match")
        batches = (1, cfg.opt_batch, cfg.max_batch) if batch < 0 else (batch, batch, batch)
        if cfg.dla_core is not None:
            batches = (batches[2],) * 3
        low, opt, high = ((n, *rest) for n in batches)
        profile.set_shape(spec.name, low, opt, high)
        shapes[spec.name] = {"min": list(low), "opt": list(opt), "max": list(high)}
    if config.add_optimization_profile(profile) < 0:
        raise DrtrtError(f"TensorRT rejected the optimisation profile {shapes}")
    return shapes
