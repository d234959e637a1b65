"""TensorRT backend: a raw engine plan plus its manifest (``model.engine`` + ``model.engine.json``).

Engines are tied to the TensorRT version and the GPU that built them. The manifest written by
``drtrt build`` records both; :class:`TrtRunner` checks them (and the engine's sha256) before
deserialising, and says how to rebuild when they differ. I/O is name-based (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``): device buffers and pinned host buffers are
allocated once for the profile's largest batch, on one CUDA stream; any batch inside the
optimisation profile runs, anything else is a :class:`ShapeError`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drtrt.errors import ArtefactError, ConfigError, DrtrtError
from drtrt.manifest import ModelInfo
from drtrt.runtime.base import Runner
from drtrt.runtime.cuda_mem import CudaMemory, GpuInfo, load_cuda

MANIFEST_SCHEMA = "drtrt-engine/1"


class ShapeError(ConfigError):
    """A feed does not match the engine's inputs or lies outside its optimisation profile."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]        # -1 for dynamic dimensions
    dtype: str                    # NumPy dtype name, "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class EngineManifest:
    """The sidecar ``<engine>.json``: what the engine was built from, with what, for which GPU."""

    engine_sha256: str
    tensorrt: str
    gpu: dict[str, Any]                       # name, compute_capability, total_memory
    cuda: dict[str, str]                      # driver, runtime, library
    precision: str                            # fp32 | fp16 | int8
    onnx: dict[str, str]                      # file, sha256 (and source when calibrated here)
    metadata: dict[str, str]                  # the ONNX's drtrt.* metadata (ModelInfo)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profile: dict[str, dict[str, list[int]]]  # input -> min / opt / max shapes
    build: dict[str, Any] = field(default_factory=dict)   # options, flags, timings, command
    calibration_sha256: str = ""
    strongly_typed: bool = False
    engine_bytes: int = 0
    created: str = ""
    drtrt_version: str = ""

    @property
    def rebuild_command(self) -> str:
        return self.build.get("command") or "drtrt build --onnx MODEL.onnx --out MODEL.engine"

    def to_dict(self, engine_file: str) -> dict[str, Any]:
        preprocess = json.loads(self.metadata.get("drtrt.preprocess", "{}"))
        return {"schema": MANIFEST_SCHEMA, "drtrt_version": self.drtrt_version, "created": self.created,
                "engine": {"file": engine_file, "sha256": self.engine_sha256, "bytes": self.engine_bytes},
                "tensorrt": self.tensorrt, "cuda": self.cuda, "gpu": self.gpu, "precision": self.precision,
                "strongly_typed": self.strongly_typed, "onnx": self.onnx, "calibration_sha256": self.calibration_sha256,
                "preprocess": preprocess, "metadata": self.metadata,
                "io": {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]},
                "profile": self.profile, "build": self.build}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> "EngineManifest":
        if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
            raise ArtefactError(f"{source} is not a drtrt engine manifest (schema {MANIFEST_SCHEMA}); "
                                "rebuild the engine with `drtrt build`")
        try:
            specs = lambda key: tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"])  # noqa: E731
                                      for t in data["io"][key])
            return cls(engine_sha256=data["engine"]["sha256"], engine_bytes=data["engine"].get("bytes", 0),
                       tensorrt=data["tensorrt"], gpu=data["gpu"], cuda=data["cuda"], precision=data["precision"],
                       onnx=data["onnx"], metadata=data["metadata"], inputs=specs("inputs"), outputs=specs("outputs"),
                       profile=data["profile"], build=data.get("build", {}),
                       calibration_sha256=data.get("calibration_sha256", ""),
                       strongly_typed=bool(data.get("strongly_typed", False)), created=data.get("created", ""),
                       drtrt_version=data.get("drtrt_version", ""))
        except (KeyError, TypeError) as exc:
            raise ArtefactError(f"{source} is damaged (missing {exc}); rebuild the engine with `drtrt build`") from None


def manifest_path(engine: str | Path) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_engine_manifest(engine: str | Path) -> EngineManifest:
    path = manifest_path(engine)
    if not Path(engine).is_file():
        raise ArtefactError(f"engine file not found: {engine}")
    if not path.is_file():
        raise ArtefactError(f"no manifest {path.name} beside {engine}: drtrt checks every engine against this "
                            f"machine's TensorRT and GPU before loading it; rebuild with `drtrt build --out {engine}`")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"cannot read {path}: {exc}") from None
    return EngineManifest.from_dict(data, str(path))


def _same_trt(built: str, installed: str) -> bool:
    """Engines need the TensorRT that built them: compare major.minor.patch ("10.3.0" == "10.3.0.30")."""
    return built.split(".")[:3] == installed.split(".")[:3]


def check_engine_compatible(manifest: EngineManifest, engine: Path, trt_version: str, gpu: GpuInfo) -> None:
    """Raise :class:`ArtefactError` naming both sides when the engine cannot run here; warn on another GPU model."""
    built_cc, built_gpu = str(manifest.gpu.get("compute_capability")), manifest.gpu.get("name", "?")
    if not _same_trt(manifest.tensorrt, trt_version) or built_cc != gpu.compute_capability:
        raise ArtefactError(
            f"{engine.name} was built with TensorRT {manifest.tensorrt} for {built_gpu} (compute capability "
            f"{built_cc}) but this machine has TensorRT {trt_version} and {gpu.name} (compute capability "
            f"{gpu.compute_capability}); engines are tied to both, rebuild it here: {manifest.rebuild_command}")
    if built_gpu != gpu.name:
        warnings.warn(f"{engine.name} was built on {built_gpu}, running on {gpu.name} (same compute capability "
                      f"{built_cc}); it works but may be slower: rebuild here for best speed", stacklevel=3)


@dataclass
class _Binding:
    spec: TensorSpec
    dtype: np.dtype
    device: int
    host: np.ndarray                   # pinned, uint8, sized for the largest shape
    low: tuple[int, ...] = ()          # profile min (inputs)
    high: tuple[int, ...] = ()         # profile max (inputs)


class TrtRunner(Runner):
    """Runs a TensorRT engine built by ``drtrt build`` on GPU ``device`` (default 0).

    ``cuda`` picks the CUDA binding for memory ("auto": cuda-python, else pycuda). ``check_hash``
    verifies the engine's sha256 against the manifest before loading (default on).
    """

    backend = "trt"

    def __init__(self, path: str | Path, device: int = 0, cuda: str = "auto", check_hash: bool = True) -> None:
        super().__init__(path)
        self.device, self.cuda_library, self.check_hash = device, cuda, check_hash
        self.manifest: EngineManifest | None = None
        self.gpu: GpuInfo | None = None
        self._mem: CudaMemory | None = None
        self._trt = self._logger = self._runtime = self._engine = self._context = None
        self._stream: int | None = None
        self._inputs: dict[str, _Binding] = {}
        self._outputs: dict[str, _Binding] = {}

    def activate(self) -> None:
        if self.active:
            return
        from drtrt.export.trt_compat import import_tensorrt, make_logger

        manifest = read_engine_manifest(self.path)
        trt = import_tensorrt()
        self._mem = load_cuda(self.cuda_library, self.device)
        try:
            self.gpu = self._mem.gpu_info()
            check_engine_compatible(manifest, self.path, trt.__version__, self.gpu)
            plan = self.path.read_bytes()
            if self.check_hash and hashlib.sha256(plan).hexdigest() != manifest.engine_sha256:
                raise ArtefactError(f"{self.path} does not match the sha256 in its manifest (changed or damaged "
                                    f"after the build); rebuild it: {manifest.rebuild_command}")
            self._trt, self._logger = trt, make_logger(trt)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise ArtefactError(f"TensorRT could not load {self.path}: {self._last_error()}; "
                                    f"rebuild it: {manifest.rebuild_command}")
            self._context = self._engine.create_execution_context()
            self._stream = self._mem.create_stream()
            self.manifest = manifest
            self._bind()
        except BaseException:
            self.deactivate()
            raise
        self.active = True

    def _bind(self) -> None:
        """Allocate device + pinned buffers for the profile's largest shapes and bind their addresses once."""
        from drtrt.export.trt_compat import numpy_dtype

        trt, engine, context = self._trt, self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        expected = [t.name for t in self.manifest.outputs]
        if sorted(outputs) != sorted(expected) or sorted(inputs) != sorted(t.name for t in self.manifest.inputs):
            raise ArtefactError(f"{self.path} has inputs {inputs} and outputs {outputs} but its manifest says "
                                f"{[t.name for t in self.manifest.inputs]} and {expected}; rebuild it")
        for name in inputs:
            low, _, high = (tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(name, 0))
            context.set_input_shape(name, high)
            self._allocate(self._inputs, name, numpy_dtype(trt, engine.get_tensor_dtype(name)), high, low, high)
        for name in expected:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            self._allocate(self._outputs, name, numpy_dtype(trt, engine.get_tensor_dtype(name)), shape)

    def _allocate(self, into: dict[str, _Binding], name: str, dtype: np.dtype, shape: tuple[int, ...],
                  low: tuple[int, ...] = (), high: tuple[int, ...] = ()) -> None:
        if any(d < 0 for d in shape):
            raise ArtefactError(f"cannot size '{name}' in {self.path}: shape {shape} is still dynamic at the "
                                "profile's largest input; rebuild it")
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        device = self._mem.alloc(nbytes)
        try:
            host = self._mem.alloc_pinned(nbytes)
        except BaseException:
            self._mem.free(device)
            raise
        into[name] = _Binding(TensorSpec(name, shape, dtype.name), dtype, device, host, low, high)
        if not self._context.set_tensor_address(name, device):
            raise DrtrtError(f"TensorRT refused the address for '{name}': {self._last_error()}")

    def _check_feed(self, name: str, array: np.ndarray, binding: _Binding) -> None:
        if array.dtype != binding.dtype:
            raise ShapeError(f"input '{name}' must be {binding.dtype.name}, found {array.dtype.name}")
        if array.ndim != len(binding.low) or any(not lo <= d <= hi for d, lo, hi in zip(array.shape, binding.low, binding.high)):
            raise ShapeError(f"input '{name}' shape {tuple(array.shape)} is outside the engine's optimisation profile "
                             f"(min {binding.low}, max {binding.high}); split the batch or rebuild with a larger "
                             f"--max-batch: {self.manifest.rebuild_command}")

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.active:
            raise RuntimeError("TrtRunner.infer() called before activate()")
        if set(feeds) != set(self._inputs):
            raise ShapeError(f"expected inputs {sorted(self._inputs)}, found {sorted(feeds)}")
        mem, context, stream = self._mem, self._context, self._stream
        for name, value in feeds.items():
            binding, array = self._inputs[name], np.asarray(value)
            self._check_feed(name, array, binding)
            staged = binding.host[:array.nbytes].view(binding.dtype).reshape(array.shape)
            np.copyto(staged, array)
            mem.copy_to_device(binding.device, staged, stream)
            if not context.set_input_shape(name, tuple(array.shape)):
                raise ShapeError(f"TensorRT rejected shape {tuple(array.shape)} for '{name}': {self._last_error()}")
        if not context.execute_async_v3(stream):
            raise DrtrtError(f"TensorRT inference failed: {self._last_error()}")
        results = {}
        for name, binding in self._outputs.items():
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * binding.dtype.itemsize
            results[name] = binding.host[:nbytes].view(binding.dtype).reshape(shape)
            mem.copy_to_host(results[name], binding.device, stream)
        mem.synchronize(stream)
        return {name: array.copy() for name, array in results.items()}   # pinned buffers are reused next call

    def deactivate(self) -> None:
        """Release TensorRT objects (context, engine, runtime, in that order) while the CUDA
        context is still current, then the buffers, the stream and the binding's context."""
        self._context = None
        self._engine = None
        self._runtime = None
        mem = self._mem
        if mem is not None:
            for binding in [*self._inputs.values(), *self._outputs.values()]:
                mem.free(binding.device)
                mem.free_pinned(binding.host)
            if self._stream is not None:
                mem.destroy_stream(self._stream)
            mem.close()
        self._inputs, self._outputs, self._stream, self._mem = {}, {}, None, None
        self.active = False

    def _last_error(self) -> str:
        errors = self._logger.errors() if self._logger is not None else []
        return errors[-1] if errors else "no message from TensorRT"

    @property
    def info(self) -> ModelInfo:
        if self.manifest is None:
            raise RuntimeError("TrtRunner.info read before activate()")
        return ModelInfo.from_metadata(self.manifest.metadata, source=str(manifest_path(self.path)))

    @property
    def max_batch(self) -> int:
        """Largest batch the engine's optimisation profile accepts (after ``activate``)."""
        if not self._inputs:
            raise RuntimeError("TrtRunner.max_batch read before activate()")
        return min(binding.high[0] for binding in self._inputs.values())

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.manifest is None:
            raise RuntimeError("TrtRunner.output_names read before activate()")
        return tuple(t.name for t in self.manifest.outputs)
