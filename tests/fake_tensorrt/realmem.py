"""The TensorRT double's device on a *real* GPU: its memory through cuda-python, not host arrays.

:class:`RealDevice` has what ``tensorrt.py`` asks of :class:`devmem.FakeDevice` — ``gpu`` (what
plans and timing caches are keyed by), ``read``/``write`` of a tensor at a device address,
``enqueue`` of work on a stream, ``current_device``, ``owner`` and ``allocations`` — over the
CUDA runtime module it is given (``cuda.bindings.runtime``). So ``execute_async_v3`` copies its
inputs from the real device addresses drtrt bound (device buffers or mapped host memory), runs
ONNX Runtime, and copies the outputs back to them: every address, stream and copy drtrt's
TensorRT runner makes is checked by the real driver, with no TensorRT installed.

Work is run when it is enqueued, after the stream has drained (the copies drtrt enqueued before
``execute_async_v3`` have landed); its copies go on that stream and are waited for, so the
copies drtrt enqueues after it read the outputs — the order a real engine's kernels keep.
Used by tests/hardware/cuda_check.py; on CPU the tests hand it the cuda-python double.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fake_tensorrt.devmem import FakeGpu


class RealCudaError(RuntimeError):
    """A CUDA call the double made on the real device failed."""


class RealDevice:
    """Device ``ordinal`` of the runtime module ``rt`` (the machine's cuda-python), as the double sees it."""

    def __init__(self, rt: Any, ordinal: int = 0) -> None:
        self.rt, self.ordinal = rt, ordinal
        prop = self._call(rt.cudaGetDeviceProperties(ordinal), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        self.gpu = FakeGpu(name=name.split("\x00")[0].strip(), major=int(prop.major), minor=int(prop.minor),
                           total_memory=int(prop.totalGlobalMem),
                           driver_version=int(self._call(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")),
                           runtime_version=int(self._call(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
                           multiprocessors=int(prop.multiProcessorCount), integrated=bool(prop.integrated),
                           dla_cores=0, board="",
                           count=int(self._call(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")))
        self.allocations: dict[int, Any] = {}   # the double sizes a context against these: none are its own
        self.owner: dict[int, int] = {}         # the driver itself refuses another device's stream
        self.streams: dict[int, Any] = {}       # int handle -> the binding's cudaStream_t, for the copies
        self.copies = 0                         # cudaMemcpyAsync calls the double made (what a check reports)

    def _call(self, result: tuple, what: str) -> Any:
        err, *values = result
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RealCudaError(f"{what} failed on the real device: {getattr(err, 'name', err)}")
        return values[0] if len(values) == 1 else tuple(values) if values else None

    @property
    def current_device(self) -> int:
        return int(self._call(self.rt.cudaGetDevice(), "cudaGetDevice"))

    def _stream(self, handle: int) -> Any:
        if handle not in self.streams:
            self.streams[handle] = self.rt.cudaStream_t(handle)
        return self.streams[handle]

    def enqueue(self, handle: int, work: Callable[[], None]) -> None:
        self._call(self.rt.cudaStreamSynchronize(self._stream(handle)), "cudaStreamSynchronize")
        work()

    def _copy(self, dst: int, src: int, nbytes: int, to_device: bool, stream: int, what: str) -> None:
        kinds = self.rt.cudaMemcpyKind
        kind = kinds.cudaMemcpyHostToDevice if to_device else kinds.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream(stream)), f"{what}: cudaMemcpyAsync")
        self._call(self.rt.cudaStreamSynchronize(self._stream(stream)), f"{what}: cudaStreamSynchronize")
        self.copies += 1

    def read(self, ptr: int, dtype: np.dtype, shape: tuple[int, ...], what: str, stream: int) -> np.ndarray:
        host = np.empty(shape, dtype)
        self._copy(host.ctypes.data, ptr, host.nbytes, False, stream, what)
        return host

    def write(self, ptr: int, array: np.ndarray, what: str, stream: int) -> None:
        host = np.ascontiguousarray(array)
        self._copy(ptr, host.ctypes.data, host.nbytes, True, stream, what)
