"""Test doubles for TensorRT, cuda-python and pycuda, injected through ``sys.modules``.

``install(monkeypatch, version=...)`` makes ``import tensorrt`` return a fresh fake emulating
that TensorRT version (8.6.1, 10.3.0, 10.13.3 or 11.4.0: the real surfaces stored in
``surface/``; also 8.5.2 and 11.4.1, on the API of 8.6.1 and 11.4.0) and ``cuda.bindings.runtime`` (or
``pycuda.driver``) a fake over one shared :class:`devmem.FakeDevice`. ``install_on_cuda(monkeypatch, rt)``
fakes TensorRT alone, over a real GPU's memory through the CUDA runtime module ``rt`` (realmem.py).
Nothing here is importable as ``tensorrt`` otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

from fake_tensorrt.devmem import FakeDevice, FakeGpu

HERE = Path(__file__).resolve().parent
VERSIONS = ("8.6.1", "10.3.0", "10.13.3", "11.4.0")


def load_surface(name: str) -> dict:
    return json.loads((HERE / "surface" / f"{name}.json").read_text())


def _fresh(name: str, file: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Installed:
    trt: types.ModuleType | None
    device: FakeDevice
    cuda: types.ModuleType | None


def install(monkeypatch, version: str | None = "10.3.0", cuda: str | None = "cuda-python",
            gpu: FakeGpu | None = None, device: FakeDevice | None = None, cuda_release: str = "13.5") -> Installed:
    """Inject the fakes for this test. ``version=None``: no TensorRT; ``cuda=None``: no CUDA binding.
    ``cuda_release``: the cuda-python release to behave like (12.2 and 12.6 raise without a driver).

    Pass ``device`` to keep one fake GPU across several installs (e.g. build on 10.3, load on 11.4).
    """
    device = device or FakeDevice(gpu or FakeGpu())
    trt = _install_tensorrt(monkeypatch, version, device)
    binding = None
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)     # the real ones (torch brings cuda-bindings) stay out
    if cuda == "cuda-python":
        binding = _fresh("cuda.bindings.runtime", "cuda_runtime.py")
        package, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
        package.__path__, bindings.__path__ = [], []
        package.bindings, bindings.runtime = bindings, binding
        for name, module in (("cuda", package), ("cuda.bindings", bindings), ("cuda.bindings.runtime", binding)):
            monkeypatch.setitem(sys.modules, name, module)
    elif cuda == "pycuda":
        binding = _fresh("pycuda.driver", "pycuda_driver.py")
        package = types.ModuleType("pycuda")
        package.__path__, package.driver = [], binding
        monkeypatch.setitem(sys.modules, "pycuda", package)
        monkeypatch.setitem(sys.modules, "pycuda.driver", binding)
    elif cuda is not None:
        raise ValueError(f"unknown fake CUDA binding {cuda}")
    if binding is not None:
        binding._device = device
    board = Path(tempfile.mkdtemp(prefix="fake-device-tree-")) / "model"
    board.write_bytes(device.gpu.board.encode() + b"\x00" if device.gpu.board else b"")
    import drtrt.runtime.backends.cuda as cuda_mem

    monkeypatch.setattr(cuda_mem, "DEVICE_TREE_MODEL", board if device.gpu.board else board.with_name("absent"))
    if cuda == "cuda-python":
        binding._release = cuda_release
    return Installed(trt, device, binding)


def _install_tensorrt(monkeypatch, version: str | None, device) -> types.ModuleType | None:
    if version is None:
        monkeypatch.setitem(sys.modules, "tensorrt", None)
        return None
    trt = _fresh("tensorrt", "tensorrt.py")
    trt._configure(version, device)
    trt.__class__ = trt._GatedModule
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def install_on_cuda(monkeypatch, rt: types.ModuleType, version: str = "10.3.0", ordinal: int = 0) -> Installed:
    """Only TensorRT is the double; CUDA is ``rt`` — the machine's ``cuda.bindings.runtime`` against the
    real driver (tests/hardware/cuda_check.py), or on CPU the cuda-python double ``install()`` put in
    place. The double's engines then read and write GPU ``ordinal``'s memory (realmem.RealDevice)."""
    from fake_tensorrt.realmem import RealDevice

    device = RealDevice(rt, ordinal)
    return Installed(_install_tensorrt(monkeypatch, version, device), device, rt)
