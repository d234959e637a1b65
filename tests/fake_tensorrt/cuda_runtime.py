"""Test double of cuda-python's ``cuda.bindings.runtime`` over :class:`devmem.FakeDevice`.

Same function names, argument order and ``(cudaError_t, *values)`` return tuples as the real
module (checked against surface/cuda-bindings-*.json by tests/test_trt.py). ``cudaSetDevice`` is
per thread, as in the real runtime: another thread starts on device 0.
"""

from __future__ import annotations

import enum

_device = None   # the FakeDevice this module serves; set by fake_tensorrt.install()
_release = "13.5"   # the cuda-python release emulated (install(cuda_release=...))
RAISING_RELEASES = ("12.2", "12.6")   # without libcuda.so.1 these raise instead of returning an error


class cudaError_t(enum.IntEnum):  # noqa: N801 - real name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801 - real name
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:  # noqa: N801 - real name
    def __init__(self, handle: int = 0) -> None:
        self._handle = handle

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:  # noqa: N802 - real name
        return self._handle


class cudaDeviceProp:  # noqa: N801 - real name
    def __init__(self) -> None:
        gpu = _device.gpu
        self.name = gpu.name.encode() + b"\x00" * (256 - len(gpu.name))
        self.major, self.minor, self.totalGlobalMem = gpu.major, gpu.minor, gpu.total_memory
        self.multiProcessorCount, self.integrated = gpu.multiprocessors, int(gpu.integrated)


_OK = cudaError_t.cudaSuccess


def _gpu_error():
    return None if _device.gpu.present else cudaError_t.cudaErrorInsufficientDriver


def cudaGetDeviceCount():  # noqa: N802
    if _gpu_error() and _release in RAISING_RELEASES:     # as the real 12.2 and 12.6 wheels do (checked in
        raise RuntimeError("Failed to dlopen libcuda.so.1")   # tests/runtime/test_cuda_releases.py)
    return (_gpu_error(), None) if _gpu_error() else (_OK, _device.gpu.count)


def cudaSetDevice(device):  # noqa: N802
    if not 0 <= device < _device.gpu.count:
        return (cudaError_t.cudaErrorInvalidDevice,)
    _device.thread.device = device      # this thread only
    return (_OK,)


def cudaGetDevice():  # noqa: N802
    return _OK, _device.current_device


def cudaGetDeviceProperties(device):  # noqa: N802
    return (_OK, cudaDeviceProp()) if 0 <= device < _device.gpu.count else (cudaError_t.cudaErrorInvalidDevice, None)


def cudaDriverGetVersion():  # noqa: N802
    return _OK, _device.gpu.driver_version


def cudaRuntimeGetVersion():  # noqa: N802
    return _OK, _device.gpu.runtime_version


def cudaGetErrorString(error):  # noqa: N802
    return _OK, {35: b"CUDA driver version is insufficient for CUDA runtime version"}.get(int(error), b"fake error")


def cudaMalloc(size):  # noqa: N802
    return _OK, _device.alloc(size)


def cudaFree(devPtr):  # noqa: N802, N803
    _device.free(int(devPtr))
    return (_OK,)


def cudaMallocHost(size):  # noqa: N802
    return _OK, _device.alloc_pinned(size)


cudaHostAllocMapped = 2   # noqa: N816 - the real module constant


def cudaHostAlloc(size, flags):  # noqa: N802
    return _OK, _device.alloc_pinned(size)


def cudaHostGetDevicePointer(pHost, flags):  # noqa: N802, N803
    return _OK, _device.map_pinned(int(pHost))


def cudaFreeHost(ptr):  # noqa: N802
    _device.free_pinned(int(ptr))
    return (_OK,)


def cudaStreamCreate():  # noqa: N802
    return _OK, cudaStream_t(_device.create_stream())


def cudaStreamDestroy(stream):  # noqa: N802
    _device.destroy_stream(int(stream))
    return (_OK,)


def cudaStreamSynchronize(stream):  # noqa: N802
    _device.synchronize(int(stream))
    return (_OK,)


def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
    if kind not in (cudaMemcpyKind.cudaMemcpyHostToDevice, cudaMemcpyKind.cudaMemcpyDeviceToHost):
        return (cudaError_t.cudaErrorInvalidValue,)
    _device.enqueue(int(stream), _device.memcpy(int(dst), int(src), count, kind == cudaMemcpyKind.cudaMemcpyHostToDevice))
    return (_OK,)
