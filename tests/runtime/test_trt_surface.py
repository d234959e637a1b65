"""drtrt's TensorRT and CUDA code against the real API surfaces (tests/fake_tensorrt/surface/, taken
from NVIDIA's own wheels): static checks that need neither the test double nor TensorRT."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fake_tensorrt
from fake_tensorrt import VERSIONS, load_surface

ROOT = Path(__file__).resolve().parents[2]
TRT_SOURCES = [ROOT / "drtrt/export/trt_build.py", ROOT / "drtrt/export/dla.py", ROOT / "drtrt/export/staleness.py",
               ROOT / "drtrt/runtime/backends/trt_compat.py", ROOT / "drtrt/runtime/backends/trt.py", ROOT / "drtrt/runtime/backends/trt_manifest.py"]


def test_drtrt_uses_only_attributes_real_tensorrt_has():
    """Static net over every ``trt.X`` / ``trt.X.Y`` in drtrt's TensorRT code (calls on objects are
    checked dynamically by the double in the tests above)."""
    surfaces = {v: load_surface(f"trt-{v}") for v in VERSIONS}
    seen = set()
    for source in TRT_SOURCES:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trt":
                seen.add((node.attr, None))
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == "trt"):
                seen.add((node.value.attr, node.attr))
    assert {("IProgressMonitor", None), ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
            ("BuilderFlag", "INT8"), ("MemoryPoolType", "WORKSPACE"), ("TensorIOMode", "INPUT")} <= seen
    for name, member in sorted(seen, key=str):
        if name == "__version__":        # set by the real bindings' __init__.py (the surface skips dunders)
            continue
        holders = [v for v, s in surfaces.items() if name in s["module"] and (member is None or member in
                   s["enums"].get(name, {}) or member in s["classes"].get(name, {}).get("members", {}))]
        assert holders, f"trt.{name}{'.' + member if member else ''} is in no real TensorRT surface"


def test_cuda_mem_uses_only_real_cuda_python_functions():
    used = set(re.findall(r"self\.rt\.(cuda\w+)", (ROOT / "drtrt/runtime/backends/cuda.py").read_text()))
    for surface in (load_surface("cuda-bindings-12.9"), load_surface("cuda-bindings-13.5")):
        names = set(surface["functions"]) | set(surface["enums"])
        assert used and used <= names, used - names
    assert fake_tensorrt.HERE.name == "fake_tensorrt"
