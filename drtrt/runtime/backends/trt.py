"""TensorRT backend: a raw engine plan plus its manifest (``model.engine`` + ``model.engine.json``).

:class:`TrtRunner` checks the manifest (:mod:`drtrt.runtime.backends.trt_manifest`) against this machine's
TensorRT and GPU, and the engine's sha256, before deserialising. I/O is name-based
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``): device buffers and pinned
host buffers are allocated once for the profile's largest batch, on one CUDA stream; any
batch inside the optimisation profile runs, anything else is a :class:`ShapeError`. CUDA's current
device/context is per thread, so inference and release first make the runner's GPU current on the
calling thread (the station activates on its main thread and infers on a worker). Every
TensorRT version difference is in :mod:`drtrt.runtime.backends.trt_compat`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drtrt.errors import ArtefactError, CudaError, DrtrtError, ShapeError
from drtrt.model_info import ModelInfo
from drtrt.runtime.base import Runner, Signature, TensorSpec
from drtrt.runtime.backends.cuda import CudaMemory, GpuInfo, load_cuda
from drtrt.runtime.backends.trt_manifest import EngineManifest, check_engine_compatible, manifest_path, read_engine_manifest


@dataclass
class _Binding:
    spec: TensorSpec
    dtype: np.dtype
    device: int
    host: np.ndarray                   # pinned (or mapped), uint8, sized for the largest shape
    mapped: bool = False               # zero-copy: ``device`` addresses ``host`` itself


class TrtRunner(Runner):
    """Runs a TensorRT engine built by ``drtrt build`` on GPU ``device`` (default 0).

    ``cuda`` picks the CUDA binding for memory ("auto": cuda-python, else pycuda). ``check_hash``
    verifies the engine's sha256 against the manifest before loading (default on). ``zero_copy``:
    "auto" binds mapped host memory on an integrated GPU (a Jetson: CPU and GPU share the DRAM, so
    the copies in and out are pure overhead) and pinned staging + device buffers elsewhere; True or
    False forces it. Not yet measured on a Jetson.
    """

    backend = "trt"
    batch_range_name = "the engine's optimisation profile"

    def __init__(self, path: str | Path, device: int = 0, cuda: str = "auto", check_hash: bool = True,
                 zero_copy: bool | str = "auto") -> None:
        super().__init__(path)
        self.device, self.cuda_library, self.check_hash = device, cuda, check_hash
        self.zero_copy_option, self.zero_copy = zero_copy, False
        self.manifest: EngineManifest | None = None
        self.gpu: GpuInfo | None = None
        self._mem: CudaMemory | None = None
        self._trt = self._logger = self._runtime = self._engine = self._context = None
        self._stream: int | None = None
        self._inputs: dict[str, _Binding] = {}
        self._outputs: dict[str, _Binding] = {}

    def _activate(self) -> Signature:
        from drtrt.runtime.backends.trt_compat import import_tensorrt, make_logger

        manifest = read_engine_manifest(self.path)
        trt = import_tensorrt()
        self._mem = load_cuda(self.cuda_library, self.device)
        self.gpu = self._mem.gpu_info()
        wanted = self.gpu.integrated if self.zero_copy_option == "auto" else bool(self.zero_copy_option)
        self.zero_copy = wanted and self._mem.supports_mapped
        check_engine_compatible(manifest, self.path, trt.__version__, self.gpu)
        plan = self.path.read_bytes()
        if self.check_hash and hashlib.sha256(plan).hexdigest() != manifest.engine.sha256:
            raise ArtefactError(f"{self.path} does not match the sha256 in its manifest (changed or damaged "
                                f"after the build); rebuild it: {manifest.rebuild_command}")
        self._trt, self._logger = trt, make_logger(trt)
        mark = self._logger.mark()
        self._runtime = trt.Runtime(self._logger)
        self._name_dla_core(manifest)                 # read by TensorRT when it deserialises, not after
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ArtefactError(f"TensorRT could not load {self.path}: {self._last_error(mark)}; "
                                f"rebuild it: {manifest.rebuild_command}")
        self._context = self._engine.create_execution_context()
        if self._context is None:                     # TensorRT's answer when the GPU has no room for it
            largest = max((shapes["max"][0] for shapes in manifest.profile.values()), default="?")
            raise CudaError(f"TensorRT could not create an execution context for {self.path.name} "
                            f"({self._last_error(mark)}): most likely the GPU is out of memory, as TensorRT reserves "
                            f"it for the engine's largest batch ({largest}) whatever --batch-size asks; rebuild with "
                            f"a smaller --max-batch (and screen with --batch-size no larger), or stop other programs "
                            f"using the GPU: {manifest.rebuild_command}")
        self._stream = self._mem.create_stream()
        self.manifest = manifest
        low, high = self._bind()
        info = ModelInfo.from_metadata(manifest.metadata, source=str(manifest_path(self.path)))
        inputs = tuple(TensorSpec(b.spec.name, (-1, *b.spec.shape[1:]), b.spec.dtype) for b in self._inputs.values())
        return Signature(info, inputs, tuple(t.name for t in manifest.io.outputs), low, high)

    def _name_dla_core(self, manifest: EngineManifest) -> None:
        """Set ``Runtime.DLA_core`` to the core the engine was built for: TensorRT runs a DLA engine on
        the runtime's core, core 0 when none was set, whatever core the build named (so two services
        built for cores 0 and 1 would share core 0). A device without that core is one line."""
        core = manifest.build.get("dla_core")
        if core is None or (manifest.build.get("placement") or {}).get("dla_layers") == 0:
            return                                    # a GPU engine (or one TensorRT placed all on the GPU)
        cores = int(self._runtime.num_DLA_cores)
        if not 0 <= int(core) < cores:
            other = f" or with --dla-core below {cores}" if cores else ""
            raise ArtefactError(f"{self.path.name} was built for DLA core {core} but this device has {cores} DLA "
                                f"core(s) (Orin AGX and NX have two, Orin Nano none): rebuild it here without "
                                f"--dla-core{other} ({manifest.rebuild_command})")
        self._runtime.DLA_core = int(core)

    def validated_sha256(self) -> str:
        """The ONNX the engine was built from, as its manifest records: engines are rebuilt per device,
        so a validation study names the ONNX (the manifest's own sha256 check ties it to this engine)."""
        manifest = self.manifest or read_engine_manifest(self.path)
        return str(manifest.onnx.get("sha256", ""))

    def _bind(self) -> tuple[int, int]:
        """Allocate device + pinned buffers for the profile's largest shapes and bind their addresses
        once; returns the profile's batch range."""
        from drtrt.runtime.backends.trt_compat import numpy_dtype

        trt, engine, context = self._trt, self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        expected_in = [t.name for t in self.manifest.io.inputs]
        expected = [t.name for t in self.manifest.io.outputs]
        if sorted(outputs) != sorted(expected) or sorted(inputs) != sorted(expected_in):
            raise ArtefactError(f"{self.path} has inputs {inputs} and outputs {outputs} but its manifest says "
                                f"{expected_in} and {expected}; rebuild it")
        low_batch, high_batch = 1, None
        for name in inputs:
            low, _, high = (tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(name, 0))
            context.set_input_shape(name, high)
            self._allocate(self._inputs, name, numpy_dtype(trt, engine.get_tensor_dtype(name)), high)
            low_batch = max(low_batch, low[0])
            high_batch = high[0] if high_batch is None else min(high_batch, high[0])
        for name in expected:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            self._allocate(self._outputs, name, numpy_dtype(trt, engine.get_tensor_dtype(name)), shape)
        return low_batch, high_batch or 1

    def _allocate(self, into: dict[str, _Binding], name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        if any(d < 0 for d in shape):
            raise ArtefactError(f"cannot size '{name}' in {self.path}: shape {shape} is still dynamic at the "
                                "profile's largest input; rebuild it")
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        if self.zero_copy:                                   # an integrated GPU: one buffer, no copies
            host, device = self._mem.alloc_mapped(nbytes)
            into[name] = _Binding(TensorSpec(name, shape, dtype.name), dtype, device, host, mapped=True)
        else:
            device = self._mem.alloc(nbytes)
            try:
                host = self._mem.alloc_pinned(nbytes)
            except BaseException:
                self._mem.free(device)
                raise
            into[name] = _Binding(TensorSpec(name, shape, dtype.name), dtype, device, host)
        if not self._context.set_tensor_address(name, device):
            raise DrtrtError(f"TensorRT refused the address for '{name}': {self._last_error()}")

    def _batch_hint(self) -> str:
        return f" or rebuild with a larger --max-batch: {self.manifest.rebuild_command}" if self.manifest else ""

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        mem, context, stream = self._mem, self._context, self._stream
        mem.make_current()                     # this thread may not be the one that activated the runner
        for name, value in feeds.items():
            binding, array = self._inputs[name], np.asarray(value)
            staged = binding.host[:array.nbytes].view(binding.dtype).reshape(array.shape)
            np.copyto(staged, array)
            if not binding.mapped:
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
            if not binding.mapped:
                mem.copy_to_host(results[name], binding.device, stream)
        mem.synchronize(stream)
        return {name: array.copy() for name, array in results.items()}   # pinned buffers are reused next call

    def _deactivate(self) -> None:
        """Release TensorRT objects (context, engine, runtime, in that order) while the CUDA
        context is still current, then the buffers, the stream and the binding's context."""
        mem = self._mem
        if mem is not None:
            mem.make_current()
        self._context = None
        self._engine = None
        self._runtime = None
        if mem is not None:
            for binding in [*self._inputs.values(), *self._outputs.values()]:
                if not binding.mapped:
                    mem.free(binding.device)
                mem.free_pinned(binding.host)
            if self._stream is not None:
                mem.destroy_stream(self._stream)
            mem.close()
        self._inputs, self._outputs, self._stream, self._mem = {}, {}, None, None

    def _last_error(self, since: int = 0) -> str:
        errors = self._logger.errors(since) if self._logger is not None else []
        return errors[-1] if errors else "no message from TensorRT"
