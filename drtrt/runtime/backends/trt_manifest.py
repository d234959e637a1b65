"""The engine manifest: ``model.engine.json`` beside every engine ``drtrt build`` writes.

Engines are tied to the TensorRT version and the GPU that built them. The manifest records
both, with what the engine was built from (the ONNX and its metadata, calibration set,
preprocessing) and how (profile, flags, the command); :func:`check_engine_compatible` holds it
against this machine before anything is deserialised, and says how to rebuild. "Manifest" in
drtrt means this file and nothing else.

The ONNX's accuracy check against its reference (``drtrt.gate`` in ``metadata``) travels in the
manifest, so an engine is refused where its ONNX would be; ``drtrt parity`` with the engine as a
candidate writes its own verdict there (:func:`record_engine_gate`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drtrt.config import from_dict, to_dict
from drtrt.errors import ArtefactError, ConfigError
from drtrt.runtime.base import TensorSpec
from drtrt.runtime.backends.cuda import GpuInfo

SCHEMA = "drtrt-engine/1"


@dataclass(frozen=True)
class EngineFile:
    file: str
    sha256: str
    bytes: int = 0


@dataclass(frozen=True)
class EngineIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class EngineManifest:
    """The sidecar ``<engine>.json``, field for field (``to_dict`` is the file's layout).

    gpu: name, compute_capability, total_memory. cuda: driver, runtime, library — ``driver`` is the CUDA
        version the driver supports (``cudaDriverGetVersion``: the system's CUDA, on a Jetson the JetPack's),
        the one TensorRT runs on and the one :func:`check_engine_compatible` judges with ``tensorrt``;
        ``runtime`` is the Python binding's own cudart (cuda-python links it statically, so it follows the
        wheel, not the system) and ``library`` the binding: both recorded for the reader, never judged.
    onnx: file, sha256 (and source when converted or calibrated during the build).
    metadata: the ONNX's ``drtrt.*`` keys (its :class:`~drtrt.model_info.ModelInfo`), its accuracy check
        ``drtrt.gate`` included ("unchecked" when TensorRT changed the precision).
    profile: input → min / opt / max shapes. build: options, flags, timings, the command.
    tf32: whether BuilderFlag.TF32 was set (FP32 layers may round their inputs to TF32 on Ampere and
        later); drtrt clears it, so False — True in a manifest from before it did (the key absent).
    """

    engine: EngineFile
    tensorrt: str
    gpu: dict[str, Any]
    cuda: dict[str, str]
    precision: str
    onnx: dict[str, str]
    metadata: dict[str, str]
    io: EngineIO
    profile: dict[str, dict[str, list[int]]]
    build: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    calibration_sha256: str = ""
    strongly_typed: bool = False
    tf32: bool = True              # manifests without the key: built before drtrt cleared TF32, so it was on
    created: str = ""
    drtrt_version: str = ""
    schema: str = SCHEMA

    @property
    def rebuild_command(self) -> str:
        return self.build.get("command") or "drtrt build --onnx MODEL.onnx --out MODEL.engine"

    def to_dict(self) -> dict[str, Any]:
        data = to_dict(self)
        return {"schema": data.pop("schema"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> EngineManifest:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ArtefactError(f"{source} is not a drtrt engine manifest (schema {SCHEMA}); "
                                "rebuild the engine with `drtrt build`")
        try:
            return from_dict(cls, data)
        except ConfigError as exc:
            raise ArtefactError(f"{source} is damaged ({exc}); rebuild the engine with `drtrt build`") from None


def manifest_path(engine: str | Path) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_engine_manifest(engine: str | Path) -> EngineManifest:
    path = manifest_path(engine)
    if not Path(engine).is_file():
        raise ArtefactError(f"engine file not found: {engine}")
    if not path.is_file():
        raise ArtefactError(f"no manifest {path.name} beside {engine}: drtrt checks every engine against this "
                            f"machine's TensorRT and GPU before loading it; rebuild with `drtrt build --out {engine}`")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"cannot read {path}: {exc}") from None
    return EngineManifest.from_dict(data, str(path))


def record_engine_gate(engine: str | Path, record: str) -> None:
    """Write the accuracy check ``record`` (a ``drtrt.gate`` value, :func:`drtrt.model_info.gate_record`) into
    the metadata of ``engine``'s manifest (atomically: a power cut leaves the old manifest whole)."""
    from drtrt.fileio import atomic_write

    path = manifest_path(engine)
    data = read_engine_manifest(engine).to_dict()
    data["metadata"]["drtrt.gate"] = record
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _same_trt(built: str, installed: str) -> bool:
    """Engines need the TensorRT that built them: compare major.minor.patch ("10.3.0" == "10.3.0.30")."""
    return built.split(".")[:3] == installed.split(".")[:3]


def check_engine_compatible(manifest: EngineManifest, engine: Path, trt_version: str, gpu: GpuInfo) -> None:
    """Raise :class:`ArtefactError` naming both sides when the engine cannot run here; warn on another GPU model."""
    built_cc, built_gpu = str(manifest.gpu.get("compute_capability")), manifest.gpu.get("name", "?")
    if not _same_trt(manifest.tensorrt, trt_version) or built_cc != gpu.compute_capability:
        raise ArtefactError(
            f"{engine.name} was built with TensorRT {manifest.tensorrt} for {built_gpu} (compute capability "
            f"{built_cc}) but this machine has TensorRT {trt_version} and {gpu.name} (compute capability "
            f"{gpu.compute_capability}); engines are tied to both, rebuild it here: {manifest.rebuild_command}")
    built = GpuInfo(str(built_gpu), built_cc, int(manifest.gpu.get("total_memory", 0)), "", "", "",
                    int(manifest.gpu.get("multiprocessors", 0)), bool(manifest.gpu.get("integrated", False)),
                    str(manifest.gpu.get("board", "")))
    if not _same_model(built, gpu):
        warnings.warn(f"{engine.name} was built on {built.model}, running on {gpu.model} (same compute capability "
                      f"{built_cc}); it works but may be slower: rebuild here for best speed", stacklevel=3)
    built_cuda, cuda = str(manifest.cuda.get("driver", "")), gpu.driver_version
    if built_cuda and cuda and built_cuda.split(".")[:2] != cuda.split(".")[:2]:
        warnings.warn(f"{engine.name} was built on CUDA {built_cuda} (the driver's), this machine's driver runs CUDA "
                      f"{cuda}: rebuild it here ({manifest.rebuild_command})", stacklevel=3)

def _same_model(a: GpuInfo, b: GpuInfo) -> bool:
    """Whether two GPUs of one compute capability are the same model: the same name and, on a Jetson
    (where CUDA names every Orin module "Orin"), the same board and SM count, each compared where
    both sides record it (a manifest from before drtrt recorded them, pycuda's SM count)."""
    def same(x: object, y: object) -> bool:
        return not x or not y or x == y

    return a.name == b.name and same(a.board, b.board) and same(a.multiprocessors, b.multiprocessors)
