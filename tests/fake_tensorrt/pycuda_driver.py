"""Test double of ``pycuda.driver`` over :class:`devmem.FakeDevice`.

Names and call shapes follow pycuda 2026.1's ``src/wrapper/wrap_cudadrv.cpp`` (recorded in
surface/pycuda-2026.1.json and checked by tests/test_trt.py). The context stack is per thread, as in
the CUDA driver: a context pushed on one thread is not current on another.
"""

from __future__ import annotations

import numpy as np

_device = None   # the FakeDevice this module serves; set by fake_tensorrt.install()


class Error(Exception):
    pass


def init(flags=0):
    if not _device.gpu.present:
        raise Error("cuInit failed: no CUDA-capable device is detected")


def get_driver_version():
    return _device.gpu.driver_version


def get_version():
    return (_device.gpu.runtime_version // 1000, (_device.gpu.runtime_version % 1000) // 10, 0)


class Context:
    def __init__(self, ordinal=0):
        self.ordinal = ordinal

    def push(self):
        _device.contexts().append(self)

    @staticmethod
    def pop():
        stack = _device.contexts()
        if not stack:
            raise Error("cuCtxPopCurrent failed: invalid device context")
        stack.pop()

    def detach(self):
        pass


class Device:
    def __init__(self, number):
        if not 0 <= number < _device.gpu.count:
            raise Error(f"invalid device ordinal {number}")
        self.ordinal = number

    @staticmethod
    def count():
        return _device.gpu.count

    def name(self):
        return _device.gpu.name

    def compute_capability(self):
        return _device.gpu.major, _device.gpu.minor

    def total_memory(self):
        return _device.gpu.total_memory

    def retain_primary_context(self):
        return Context(self.ordinal)


class DeviceAllocation:
    def __init__(self, ptr):
        self._ptr = ptr

    def __int__(self):
        return self._ptr

    def free(self):
        _device.free(self._ptr)


def _require_context():
    if not _device.contexts():
        raise Error("cuMemcpyHtoDAsync failed: invalid device context (no current CUDA context on this thread)")


def mem_alloc(bytesize):
    _require_context()
    return DeviceAllocation(_device.alloc(bytesize))


def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
    _require_context()
    return np.empty(shape, dtype, order=order)


class Stream:
    def __init__(self, flags=0):
        _require_context()
        self.handle = _device.create_stream()

    def synchronize(self):
        _require_context()
        _device.synchronize(self.handle)


def memcpy_htod_async(dest, src, stream=None):
    _require_context()
    src = np.ascontiguousarray(src)
    _device.enqueue(stream.handle, _device.memcpy(int(dest), src.ctypes.data, src.nbytes, to_device=True))


def memcpy_dtoh_async(dest, src, stream=None):
    _require_context()
    _device.enqueue(stream.handle, _device.memcpy(dest.ctypes.data, int(src), dest.nbytes, to_device=False))
