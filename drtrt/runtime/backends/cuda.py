"""GPU memory, one stream and device facts for the TensorRT runner, over cuda-python or pycuda.

TensorRT's Python API takes raw device addresses and a stream handle as ``int``; this module
hands those out from whichever CUDA binding is installed, behind one small interface
(:class:`CudaMemory`):

- ``cuda-python`` (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6): what TensorRT's
  own samples use; ``pip install 'drtrt[gpu]'``. Preferred when both are present.
- ``pycuda``: named in the design; on a Jetson it builds from source. The device's *primary*
  context is pushed, which is the context TensorRT's runtime API uses too.

CUDA's current device (runtime API) and current context (driver API) are per *thread*: a runner
opened on one thread and used on another (the station activates on the main thread, infers on
its worker) calls :meth:`CudaMemory.make_current` on the inferring thread first.

Device addresses are ``int``; pinned host buffers are 1-D ``uint8`` NumPy arrays (view them
with ``.view(dtype)``). Copies are asynchronous on the given stream: call
:meth:`CudaMemory.synchronize` before reading a host buffer.
"""

from __future__ import annotations

import abc
import ctypes
import importlib
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from drtrt.errors import BackendUnavailable, ConfigError, CudaError

LIBRARIES = ("cuda-python", "pycuda")
CPU_PATH = "without a GPU, use ONNX Runtime (`--model model.onnx`) and `drtrt calibrate` for INT8"


DEVICE_TREE_MODEL = Path("/proc/device-tree/model")   # a Jetson's board: "NVIDIA Jetson AGX Orin Developer Kit"


def board_model() -> str:
    """The board's model from the device tree ("" off a Jetson): CUDA names every Orin module
    "Orin", so only this, the multiprocessor count and the memory tell an AGX from an NX or a Nano."""
    try:
        return DEVICE_TREE_MODEL.read_bytes().replace(b"\x00", b"").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class GpuInfo:
    """What an engine is tied to. ``compute_capability`` is "major.minor" (Orin: "8.7").
    ``multiprocessors``: SM count (0: the binding cannot say); ``integrated``: the GPU shares the
    CPU's memory (a Jetson); ``board``: the device tree's model ("" off a Jetson)."""

    name: str
    compute_capability: str
    total_memory: int            # bytes
    driver_version: str          # newest CUDA version the driver supports, "12.6"
    runtime_version: str         # CUDA runtime the binding uses ("" when it cannot say)
    library: str                 # "cuda-python" | "pycuda"
    multiprocessors: int = 0
    integrated: bool = False
    board: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def model(self) -> str:
        """The GPU as a person names it: "Orin (Jetson AGX Orin Developer Kit, 16 SMs)", "NVIDIA H100"."""
        details = [d for d in (self.board.removeprefix("NVIDIA ").strip(),
                               f"{self.multiprocessors} SMs" if self.multiprocessors else "") if d]
        return f"{self.name} ({', '.join(details)})" if details else self.name


def _cuda_version(value: int) -> str:
    """CUDA's integer versions (12060) as "12.6"."""
    return f"{value // 1000}.{(value % 1000) // 10}" if value else ""


class CudaMemory(abc.ABC):
    """Device allocations, pinned host buffers and streams on one GPU (``device``)."""

    library: ClassVar[str]

    def __init__(self, device: int = 0) -> None:
        self.device = device

    @abc.abstractmethod
    def gpu_info(self) -> GpuInfo:
        """Name, compute capability and versions of the GPU in use."""

    @abc.abstractmethod
    def alloc(self, nbytes: int) -> int:
        """Allocate ``nbytes`` of device memory; returns its address."""

    @abc.abstractmethod
    def free(self, ptr: int) -> None:
        """Release an address returned by :meth:`alloc`."""

    @abc.abstractmethod
    def alloc_pinned(self, nbytes: int) -> np.ndarray:
        """Page-locked host buffer of ``nbytes`` (1-D ``uint8``), fast for async copies."""

    @abc.abstractmethod
    def free_pinned(self, array: np.ndarray) -> None:
        """Release a buffer returned by :meth:`alloc_pinned` or :meth:`alloc_mapped`."""

    supports_mapped: ClassVar[bool] = False   # zero-copy: only bindings that implement alloc_mapped

    def alloc_mapped(self, nbytes: int) -> tuple[np.ndarray, int]:
        """Host memory the GPU reads and writes in place: (host array, device pointer to bind)."""
        raise NotImplementedError(f"{self.library} has no mapped host memory in drtrt")

    @abc.abstractmethod
    def create_stream(self) -> int:
        """A new CUDA stream; returns its handle as TensorRT wants it (``int``)."""

    @abc.abstractmethod
    def destroy_stream(self, stream: int) -> None:
        """Release a stream from :meth:`create_stream`."""

    @abc.abstractmethod
    def copy_to_device(self, dst: int, src: np.ndarray, stream: int) -> None:
        """Enqueue a copy of the contiguous host array ``src`` to device address ``dst``."""

    @abc.abstractmethod
    def copy_to_host(self, dst: np.ndarray, src: int, stream: int) -> None:
        """Enqueue a copy of ``dst.nbytes`` from device address ``src`` into host array ``dst``."""

    @abc.abstractmethod
    def synchronize(self, stream: int) -> None:
        """Wait until everything enqueued on ``stream`` has finished."""

    def make_current(self) -> None:
        """Make this object's GPU current on the calling thread (CUDA keeps it per thread); cheap, call it
        before work on a thread that may not be the one that opened it."""

    def close(self) -> None:
        """Release what the binding holds for this object (context); allocations are freed by their owners."""


class CudaPythonMemory(CudaMemory):
    """:class:`CudaMemory` over cuda-python's runtime API (``cudaMalloc``, ``cudaMemcpyAsync``, ...)."""

    library = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        super().__init__(device)
        self.rt = _import_first("cuda.bindings.runtime", "cuda.cudart")
        try:
            result = self.rt.cudaGetDeviceCount()
        except RuntimeError as exc:   # cuda-python 12.2-12.6 raise here when libcuda.so.1 is absent (12.9+ return
            raise BackendUnavailable(  # cudaErrorInsufficientDriver)
                f"no usable CUDA GPU: the CUDA driver could not be loaded ({exc}); {CPU_PATH}") from None
        count = self._call(result, "cudaGetDeviceCount", unavailable=True)

        if device >= count:
            raise BackendUnavailable(f"CUDA device {device} requested but {count} GPU(s) are visible; {CPU_PATH}")
        self._call(self.rt.cudaSetDevice(device), "cudaSetDevice")
        self._pinned: dict[int, int] = {}      # array data address -> cudaMallocHost pointer
        self._streams: dict[int, Any] = {}     # int handle -> cudaStream_t

    def make_current(self) -> None:
        """``cudaSetDevice`` is per thread: another thread would otherwise work on device 0."""
        self._call(self.rt.cudaSetDevice(self.device), "cudaSetDevice")

    def _call(self, result: tuple, what: str, unavailable: bool = False) -> Any:
        """cuda-python returns ``(cudaError_t, *values)``; raise on an error, else return the values."""
        err, *values = result
        if err != self.rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            _, text = self.rt.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
            if unavailable:
                raise BackendUnavailable(f"no usable CUDA GPU: {what} returned {name} ({text}); {CPU_PATH}")
            raise CudaError(f"{what} failed: {name} ({text})")
        return values[0] if len(values) == 1 else tuple(values) if values else None

    def gpu_info(self) -> GpuInfo:
        prop = self._call(self.rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return GpuInfo(name=name.split("\x00")[0].strip(), compute_capability=f"{prop.major}.{prop.minor}",
                       total_memory=int(prop.totalGlobalMem),
                       driver_version=_cuda_version(self._call(self.rt.cudaDriverGetVersion(), "cudaDriverGetVersion")),
                       runtime_version=_cuda_version(self._call(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
                       library=self.library, multiprocessors=int(prop.multiProcessorCount),
                       integrated=bool(prop.integrated), board=board_model())

    def alloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes)"))

    def free(self, ptr: int) -> None:
        self._call(self.rt.cudaFree(ptr), "cudaFree")

    def alloc_pinned(self, nbytes: int) -> np.ndarray:
        ptr = int(self._call(self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes} bytes)"))
        array = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))
        self._pinned[array.ctypes.data] = ptr
        return array

    supports_mapped = True

    def alloc_mapped(self, nbytes: int) -> tuple[np.ndarray, int]:
        """``cudaHostAlloc(cudaHostAllocMapped)``: on an integrated GPU (a Jetson), where CPU and GPU
        share the DRAM, the GPU works on these pages in place and no copy in or out is needed."""
        flags = int(getattr(self.rt, "cudaHostAllocMapped", 2))
        ptr = int(self._call(self.rt.cudaHostAlloc(nbytes, flags), f"cudaHostAlloc({nbytes} bytes, mapped)"))
        array = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))
        self._pinned[array.ctypes.data] = ptr
        try:
            device = int(self._call(self.rt.cudaHostGetDevicePointer(ptr, 0), "cudaHostGetDevicePointer"))
        except BaseException:
            self.free_pinned(array)
            raise
        return array, device

    def free_pinned(self, array: np.ndarray) -> None:
        self._call(self.rt.cudaFreeHost(self._pinned.pop(array.ctypes.data)), "cudaFreeHost")

    def create_stream(self) -> int:
        stream = self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self._streams[int(stream)] = stream
        return int(stream)

    def destroy_stream(self, stream: int) -> None:
        self._call(self.rt.cudaStreamDestroy(self._streams.pop(stream)), "cudaStreamDestroy")

    def copy_to_device(self, dst: int, src: np.ndarray, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, self._streams[stream]),
                   "cudaMemcpyAsync (host to device)")

    def copy_to_host(self, dst: np.ndarray, src: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, self._streams[stream]),
                   "cudaMemcpyAsync (device to host)")

    def synchronize(self, stream: int) -> None:
        self._call(self.rt.cudaStreamSynchronize(self._streams[stream]), "cudaStreamSynchronize")


class PyCudaMemory(CudaMemory):
    """:class:`CudaMemory` over pycuda, in the device's primary context (shared with TensorRT)."""

    library = "pycuda"

    def __init__(self, device: int = 0) -> None:
        super().__init__(device)
        self.cuda = _import_first("pycuda.driver")
        try:
            self.cuda.init()
            count = self.cuda.Device.count()
        except self.cuda.Error as exc:
            raise BackendUnavailable(f"no usable CUDA GPU: pycuda could not initialise CUDA ({exc}); {CPU_PATH}") from None
        if device >= count:
            raise BackendUnavailable(f"CUDA device {device} requested but {count} GPU(s) are visible; {CPU_PATH}")
        self.dev = self.cuda.Device(device)
        self.context = self.dev.retain_primary_context()
        self.context.push()
        self._pushed = threading.local()      # .done: this object's context is pushed on that thread
        self._pushed.done = True
        self._allocations: dict[int, Any] = {}
        self._pinned: dict[int, np.ndarray] = {}
        self._streams: dict[int, Any] = {}

    def gpu_info(self) -> GpuInfo:
        major, minor = self.dev.compute_capability()
        return GpuInfo(name=self.dev.name(), compute_capability=f"{major}.{minor}",
                       total_memory=int(self.dev.total_memory()),
                       driver_version=_cuda_version(self.cuda.get_driver_version()),
                       runtime_version=".".join(str(v) for v in self.cuda.get_version()[:2]),
                       library=self.library, board=board_model())

    def alloc(self, nbytes: int) -> int:
        try:
            allocation = self.cuda.mem_alloc(nbytes)
        except self.cuda.Error as exc:
            raise CudaError(f"mem_alloc({nbytes} bytes) failed: {exc}") from None
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def alloc_pinned(self, nbytes: int) -> np.ndarray:
        array = self.cuda.pagelocked_empty(nbytes, np.uint8)
        self._pinned[array.ctypes.data] = array
        return array

    def free_pinned(self, array: np.ndarray) -> None:
        self._pinned.pop(array.ctypes.data)   # pycuda frees page-locked memory with its last reference

    def create_stream(self) -> int:
        stream = self.cuda.Stream()
        self._streams[int(stream.handle)] = stream
        return int(stream.handle)

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream)

    def copy_to_device(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.cuda.memcpy_htod_async(dst, src, self._streams[stream])

    def copy_to_host(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self._streams[stream])

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def make_current(self) -> None:
        """A context pushed on one thread is not current on another: push it once on each new thread."""
        if self.context is not None and not getattr(self._pushed, "done", False):
            self.context.push()
            self._pushed.done = True

    def close(self) -> None:
        if self.context is not None:
            if getattr(self._pushed, "done", False):      # pop only where this thread pushed it
                self.context.pop()
            self.context.detach()
            self.context = None


_IMPLEMENTATIONS: dict[str, type[CudaMemory]] = {"cuda-python": CudaPythonMemory, "pycuda": PyCudaMemory}


def _import_first(*names: str) -> Any:
    """The first of ``names`` that imports; ModuleNotFoundError (for the first) when none does."""
    first: ModuleNotFoundError | None = None
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            first = first or exc
    raise first  # type: ignore[misc]


def installed_libraries() -> list[str]:
    """The CUDA bindings that import here, in order of preference (no GPU is touched)."""
    found = []
    for library, modules in (("cuda-python", ("cuda.bindings.runtime", "cuda.cudart")), ("pycuda", ("pycuda.driver",))):
        try:
            _import_first(*modules)
        except ImportError:
            continue
        found.append(library)
    return found


def load_cuda(library: str = "auto", device: int = 0) -> CudaMemory:
    """Open GPU ``device`` with ``library`` ("auto": cuda-python, else pycuda).

    Raises :class:`BackendUnavailable` when no binding is installed or no GPU is usable. An
    explicitly named library is used or refused, never silently swapped for the other.
    """
    if library not in ("auto", *LIBRARIES):
        raise ConfigError(f"unknown CUDA library '{library}'; expected auto, {', '.join(LIBRARIES)}")
    candidates = installed_libraries() if library == "auto" else [library]
    if not candidates:
        raise BackendUnavailable("GPU memory needs cuda-python or pycuda and neither is installed; "
                                 f"pip install 'drtrt[gpu]' (cuda-python); {CPU_PATH}")
    try:
        return _IMPLEMENTATIONS[candidates[0]](device)
    except ImportError:
        raise BackendUnavailable(f"{candidates[0]} was asked for but is not installed; "
                                 f"installed: {', '.join(installed_libraries()) or 'none'}") from None
