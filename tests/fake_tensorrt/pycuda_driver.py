"""Test double of ``pycuda.driver`` over :class:`devmem.FakeDevice`.

Names and call shapes follow pycuda 2026.1's ``src/wrapper/wrap_cudadrv.cpp`` (recorded in
surface/pycuda-2026.1.json and checked by tests/test_trt.py).
"""

from __future__ import annotations

import numpy as np

_device = None   # the FakeDevice this module serves; set by fake_tensorrt.install()
_context_stack: list["Context"] = []


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
    def push(self):
        _context_stack.append(self)

    @staticmethod
    def pop():
        _context_stack.pop()

    def detach(self):
        pass


class Device:
    def __init__(self, number):
        if number != 0:
            raise Error(f"invalid device ordinal {number}")

    @staticmethod
    def count():
        return 1

    def name(self):
        return _device.gpu.name

    def compute_capability(self):
        return _device.gpu.major, _device.gpu.minor

    def total_memory(self):
        return _device.gpu.total_memory

    def retain_primary_context(self):
        return Context()


class DeviceAllocation:
    def __init__(self, ptr):
        self._ptr = ptr

    def __int__(self):
        return self._ptr

    def free(self):
        _device.free(self._ptr)


def _require_context():
    if not _context_stack:
        raise Error("no current CUDA context (pycuda needs a pushed context)")


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
        _device.synchronize(self.handle)


def memcpy_htod_async(dest, src, stream=None):
    src = np.ascontiguousarray(src)
    _device.enqueue(stream.handle, _device.memcpy(int(dest), src.ctypes.data, src.nbytes, to_device=True))


def memcpy_dtoh_async(dest, src, stream=None):
    _device.enqueue(stream.handle, _device.memcpy(dest.ctypes.data, int(src), dest.nbytes, to_device=False))
