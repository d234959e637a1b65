"""A test double for ``tritonclient`` (its gRPC and HTTP clients) and the Triton server they talk to,
injected through ``sys.modules``, as fake_tensorrt is for TensorRT: for the tests of ``triton://``
where the real server (the nvidia-pytriton wheel's, see triton_helpers) is not installed.

``install(monkeypatch)`` makes ``import tritonclient.grpc`` / ``tritonclient.http`` /
``tritonclient.utils`` return fresh fakes and returns a :class:`FakeTriton`; its ``serve({"drtrt":
model.onnx})`` starts a :class:`~fake_tritonclient.server.FakeServer` that serves the ONNX model on
ONNX Runtime, described as ``drtrt export-triton`` describes it (outputs are real). Nothing here is
importable as ``tritonclient`` otherwise. tests/runtime/test_tritonclient_double.py holds the double
to the real client: its signatures against the installed package's, its answers against the real
server's where that runs.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fake_tritonclient.server import FakeServer, Registry

HERE = Path(__file__).resolve().parent
MODULES = ("utils", "grpc", "http")          # tritonclient's modules the double stands in for


def _fresh(name: str, file: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class FakeTriton:
    """One install: the fake modules and the servers they reach."""

    registry: Registry
    utils: types.ModuleType
    grpc: types.ModuleType
    http: types.ModuleType

    def serve(self, models: Mapping[str, Path], max_batch: int = 8) -> FakeServer:
        """A server (on made-up 127.0.0.1 ports) serving each ONNX file under its name."""
        return self.registry.serve(models, max_batch)


def install(monkeypatch) -> FakeTriton:
    """Inject the fakes for this test (``monkeypatch`` takes them out again)."""
    registry = Registry()
    package = types.ModuleType("tritonclient")
    package.__path__ = []                              # no other submodule: the real ones stay out
    monkeypatch.setitem(sys.modules, "tritonclient", package)
    modules = {}
    for name in MODULES:                               # utils first: grpc and http import from it
        module = _fresh(f"tritonclient.{name}", f"{name}.py")
        if name != "utils":
            module._registry = registry
        setattr(package, name, module)
        monkeypatch.setitem(sys.modules, f"tritonclient.{name}", module)
        modules[name] = module
    return FakeTriton(registry, **modules)
