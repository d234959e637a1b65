"""The fake GPU behind the test doubles: "device" memory in host RAM, streams that really queue.

Device allocations are ctypes buffers addressed by their real host address, so TensorRT's fake
reads and writes them by ``int`` address exactly as a kernel would. Every access is checked
against the allocation table (an out-of-bounds or freed address fails the test), and work
enqueued on a stream runs only at ``synchronize`` — so a missing synchronise shows up as
stale output, as it would on a GPU.

As in the real CUDA runtime and driver, the current device (``cudaSetDevice``) and the context
stack (pycuda's ``Context.push``) are per thread (:attr:`FakeDevice.thread`): a thread that never
set them works on device 0 (runtime API) or has no current context (driver API). Device memory
and streams remember the device that was current when they were made (:attr:`FakeDevice.owner`).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FakeGpu:
    name: str = "Orin"                    # as CUDA names every Orin module: AGX, NX and Nano alike
    major: int = 8
    minor: int = 7
    total_memory: int = 8 << 30
    driver_version: int = 12060
    runtime_version: int = 12060
    present: bool = True                  # False: the driver reports no usable GPU
    multiprocessors: int = 8              # what tells the modules apart: AGX 16, NX 16 GB 8, Nano 4 GB 4
    integrated: bool = True
    dla_cores: int = 2                    # Orin AGX and NX: 2; Orin Nano: 0
    board: str = "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"   # /proc/device-tree/model
    count: int = 1                        # identical GPUs visible: ordinals 0 .. count - 1


class DeviceFault(AssertionError):
    """An access a real GPU would fault on (freed, out of bounds, host pointer as device pointer)."""


@dataclass
class FakeDevice:
    gpu: FakeGpu = field(default_factory=FakeGpu)
    allocations: dict[int, ctypes.Array] = field(default_factory=dict)
    pinned: dict[int, ctypes.Array] = field(default_factory=dict)
    mapped: set[int] = field(default_factory=set)          # pinned pages the GPU may use in place
    streams: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    owner: dict[int, int] = field(default_factory=dict)    # device allocation or stream -> its device ordinal
    thread: threading.local = field(default_factory=threading.local)   # .device, .contexts: per thread
    peak_allocated: int = 0
    _next_stream: int = 0x5000

    def contexts(self) -> list:
        """This thread's context stack (pycuda ``Context`` objects, each with an ``ordinal``)."""
        if not hasattr(self.thread, "contexts"):
            self.thread.contexts = []
        return self.thread.contexts

    @property
    def current_device(self) -> int:
        """This thread's device: the top context's, else the one ``cudaSetDevice`` chose here (0 by default)."""
        stack = self.contexts()
        return stack[-1].ordinal if stack else getattr(self.thread, "device", 0)

    def alloc(self, nbytes: int) -> int:
        buf = (ctypes.c_uint8 * max(1, nbytes))()
        self.allocations[ctypes.addressof(buf)] = buf
        self.owner[ctypes.addressof(buf)] = self.current_device
        self.peak_allocated = max(self.peak_allocated, sum(len(b) for b in self.allocations.values()))
        return ctypes.addressof(buf)

    def free(self, ptr: int) -> None:
        if ptr not in self.allocations:
            raise DeviceFault(f"free of {ptr:#x}, which is not a live device allocation")
        del self.allocations[ptr]

    def alloc_pinned(self, nbytes: int) -> int:
        buf = (ctypes.c_uint8 * max(1, nbytes))()
        self.pinned[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def free_pinned(self, ptr: int) -> None:
        if ptr not in self.pinned:
            raise DeviceFault(f"free of {ptr:#x}, which is not live pinned memory")
        del self.pinned[ptr]
        self.mapped.discard(ptr)

    def map_pinned(self, ptr: int) -> int:
        """The device address of mapped pinned memory: the same address (unified addressing), and from
        now on the GPU may read and write it in place, as an integrated GPU does."""
        if ptr not in self.pinned:
            raise DeviceFault(f"cudaHostGetDevicePointer of {ptr:#x}, which is not live pinned memory")
        self.mapped.add(ptr)
        return ptr

    def is_device(self, ptr: int, nbytes: int) -> bool:
        regions = [*self.allocations.items(), *((p, self.pinned[p]) for p in self.mapped if p in self.pinned)]
        return any(base <= ptr and ptr + nbytes <= base + len(buf) for base, buf in regions)

    def check_device(self, ptr: int, nbytes: int, what: str) -> None:
        if not self.is_device(ptr, nbytes):
            raise DeviceFault(f"{what}: [{ptr:#x}, +{nbytes}) is not inside a live device allocation")

    def view(self, ptr: int, nbytes: int, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
        """A NumPy view of device memory (checked)."""
        self.check_device(ptr, nbytes, what)
        return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr), dtype=dtype).reshape(shape)

    def read(self, ptr: int, dtype: np.dtype, shape: tuple[int, ...], what: str, stream: int) -> np.ndarray:
        """A copy of the tensor at device address ``ptr`` (checked), as a kernel reads it while ``stream`` runs."""
        return self.view(ptr, int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype, shape, what).copy()

    def write(self, ptr: int, array: np.ndarray, what: str, stream: int) -> None:
        """Store ``array`` at device address ``ptr`` (checked), as a kernel writes it while ``stream`` runs."""
        self.view(ptr, array.nbytes, array.dtype, array.shape, what)[...] = array

    def create_stream(self) -> int:
        self._next_stream += 0x10
        self.streams[self._next_stream] = []
        self.owner[self._next_stream] = self.current_device
        return self._next_stream

    def destroy_stream(self, handle: int) -> None:
        if self.streams.pop(handle, None) is None:
            raise DeviceFault(f"destroy of unknown stream {handle:#x}")

    def enqueue(self, handle: int, work: Callable[[], None]) -> None:
        if handle not in self.streams:
            raise DeviceFault(f"work enqueued on unknown stream {handle:#x}")
        self.streams[handle].append(work)

    def synchronize(self, handle: int) -> None:
        queue = self.streams[handle]
        while queue:
            queue.pop(0)()

    def memcpy(self, dst: int, src: int, count: int, to_device: bool) -> Callable[[], None]:
        """A checked copy, to run later on a stream."""
        device_side, host_side = (dst, src) if to_device else (src, dst)
        self.check_device(device_side, count, "cudaMemcpyAsync device side")
        if self.is_device(host_side, count):
            raise DeviceFault("cudaMemcpyAsync host side points into device memory (wrong copy kind)")
        return lambda: ctypes.memmove(dst, src, count)
