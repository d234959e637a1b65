"""Record the public API surface of a real TensorRT Python bindings wheel as JSON.

The surface files in ``surface/`` were made with this script from NVIDIA's wheels on PyPI
(``pip download --no-deps tensorrt-cu12-bindings==10.3.0`` and so on). The bindings
(``tensorrt.so``, a pybind11 module) link against libnvinfer, libnvonnxparser and
libnvinfer_plugin, which live in separate multi-gigabyte wheels. To import the bindings on a
machine without TensorRT or a GPU, the script compiles tiny stand-in libraries that export the
dozen C entry points the bindings reference (each returns 0/NULL; nothing calls them during
import or ``dir()``). Only the class, method, property and enum names and pybind11's
signature lines are recorded — nothing is executed.

Usage (needs gcc, g++, unzip semantics via ``zipfile``, and the wheel's Python version):

    python tests/fake_tensorrt/extract_surface.py WHEEL.whl > tests/fake_tensorrt/surface/trt-X.Y.Z.json
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Classes whose methods keep their pybind11 signature lines in the surface files (the rest keep
# member names and kinds only, which keeps each file small enough to review).
DETAILED_CLASSES = ("Builder", "IBuilderConfig", "INetworkDefinition", "OnnxParser", "ParserError",
                    "IOptimizationProfile", "ITimingCache", "IProgressMonitor", "IHostMemory", "Runtime",
                    "ICudaEngine", "IExecutionContext", "Logger", "ILogger", "ITensor", "ILayer", "Dims")

_C_STUBS = {
    "libnvinfer": """
void* createInferBuilder_INTERNAL(void* a, int b){return 0;}
void* createInferRefitter_INTERNAL(void* a, void* b, int c){return 0;}
void* createInferRuntime_INTERNAL(void* a, int b){return 0;}
int getInferLibVersion(void){return 0;}
void* getPluginRegistry(void){return 0;}
void* getBuilderPluginRegistry(int a){return 0;}
""",
    "libnvonnxparser": """
void* createNvOnnxParser_INTERNAL(void* a, void* b, int c){return 0;}
void* createNvOnnxParserRefitter_INTERNAL(void* a, void* b, int c){return 0;}
int getNvOnnxParserVersion(void){return 0;}
""",
    "libnvinfer_plugin": "int initLibNvInferPlugins(void* a, const char* b){return 1;}\n",
}
_CXX_PARSERS_STUB = """
namespace nvuffparser { struct IUffParser; IUffParser* createUffParser(){return 0;}
  enum class FieldType : int {};
  struct FieldMap { FieldMap(const char*, const void*, FieldType, int); };
  FieldMap::FieldMap(const char*, const void*, FieldType, int) {} }
namespace nvcaffeparser1 { struct ICaffeParser; ICaffeParser* createCaffeParser(){return 0;}
  void shutdownProtobufLibrary() {} }
"""

# Runs inside the child interpreter that imports the real bindings.
_DUMP = r'''
import enum, inspect, json, re, sys
import tensorrt_bindings as trt

def signatures(obj, name):
    doc = getattr(obj, "__doc__", None) or ""
    pattern = re.compile(r"^(?:\d+\.\s*)?" + re.escape(name) + r"\(.*\)(?:\s*->\s*.+)?$")
    return [line.strip() for line in doc.splitlines() if pattern.match(line.strip())]

def member_kind(cls, name):
    raw = None
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            break
    if isinstance(raw, property):
        return {"kind": "property", "writable": raw.fset is not None}
    if isinstance(raw, (staticmethod, classmethod)):
        raw = raw.__func__
    value = getattr(cls, name)
    if isinstance(value, cls) and hasattr(cls, "__members__"):
        return {"kind": "enum_value"}
    if callable(value):
        return {"kind": "method", "signatures": signatures(value, name)}
    return {"kind": type(value).__name__}

DETAILED = set(sys.argv[1].split(","))
out = {"version": trt.__version__, "module": {}, "classes": {}, "enums": {}}
for name in sorted(dir(trt)):
    if name.startswith("_"):
        continue
    value = getattr(trt, name)
    if inspect.isclass(value):
        if hasattr(value, "__members__"):
            out["enums"][name] = {k: int(v) for k, v in sorted(value.__members__.items())}
            out["module"][name] = "enum"
            continue
        out["module"][name] = "class"
        members = {}
        for attr in sorted(dir(value)):
            if attr.startswith("_") and attr != "__init__":
                continue
            kind = member_kind(value, attr)
            if name not in DETAILED:   # keep the names of every class, details of the ones drtrt touches
                kind = kind["kind"]
            members[attr] = kind
        out["classes"][name] = {"bases": [b.__name__ for b in value.__mro__[1:] if b is not object],
                                "members": members}
    elif callable(value):
        out["module"][name] = "function"
    elif inspect.ismodule(value):
        out["module"][name] = "module"
    else:
        out["module"][name] = type(value).__name__
text = json.dumps(out, sort_keys=True)
sys.stdout.write(text.replace(trt.__name__ + ".tensorrt.", "").replace(trt.__name__ + ".", ""))
'''


def build_stubs(major: int, folder: Path) -> None:
    """Compile the stand-in TensorRT libraries for bindings of TensorRT ``major``."""
    for lib, source in _C_STUBS.items():
        src = folder / f"{lib}.c"
        src.write_text(source)
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / f"{lib}.so.{major}"), str(src)], check=True)
    if major == 8:   # 8.x bindings also link the (removed in 10) UFF and Caffe parsers
        src = folder / "libnvparsers.cpp"
        src.write_text(_CXX_PARSERS_STUB)
        subprocess.run(["g++", "-shared", "-fPIC", "-o", str(folder / "libnvparsers.so.8"), str(src)], check=True)


def extract(wheel: Path) -> dict:
    """The JSON-ready surface of the bindings in ``wheel`` (plus where it came from)."""
    match = re.match(r"(?P<pkg>[A-Za-z0-9_]+?)-(?P<ver>\d[^-]*)-", wheel.name)
    if not match:
        raise SystemExit(f"not a wheel file name: {wheel.name}")
    major = int(match["ver"].split(".")[0])
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmpdir / "wheel")
        (tmpdir / "libs").mkdir()
        build_stubs(major, tmpdir / "libs")
        env = dict(os.environ, LD_LIBRARY_PATH=str(tmpdir / "libs"), PYTHONPATH=str(tmpdir / "wheel"))
        dumped = subprocess.run([sys.executable, "-c", _DUMP, ",".join(DETAILED_CLASSES)], env=env, check=True, capture_output=True, text=True)
    surface = json.loads(dumped.stdout)
    surface["source"] = {
        "package": match["pkg"].replace("_", "-"), "wheel": wheel.name,
        "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "method": "real pybind11 bindings imported against stand-in libnvinfer (tests/fake_tensorrt/extract_surface.py)",
    }
    return surface


def dumps(surface: dict) -> str:
    """JSON with one line per enum, per plain class and per detailed member: small, diffable."""
    one = lambda value: json.dumps(value, sort_keys=True)  # noqa: E731
    lines = ["{", f' "version": {one(surface["version"])},', f' "source": {one(surface["source"])},',
             f' "module": {one(surface["module"])},', ' "enums": {']
    lines += [f'  {one(k)}: {one(v)},' for k, v in sorted(surface["enums"].items())]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" },", ' "classes": {']
    for name, cls in sorted(surface["classes"].items()):
        if name in DETAILED_CLASSES:
            lines.append(f'  {one(name)}: {{"bases": {one(cls["bases"])}, "members": {{')
            lines += [f'   {one(k)}: {one(v)},' for k, v in sorted(cls["members"].items())]
            lines[-1] = lines[-1].rstrip(",")
            lines.append("  }},")
        else:
            lines.append(f'  {one(name)}: {one(cls)},')
    lines[-1] = lines[-1].rstrip(",")
    lines += [" }", "}", ""]
    text = "\n".join(lines)
    assert json.loads(text) == surface
    return text


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.stdout.write(dumps(extract(Path(sys.argv[1]))))
