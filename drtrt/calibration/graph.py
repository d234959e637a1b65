"""ONNX graph helpers every precision step shares: reading a drtrt model and its metadata,
writing metadata back, and naming the nodes a precision step keeps in FP32. Needs ``onnx``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from drtrt.errors import ArtefactError, ConfigError
from drtrt.fileio import sha256_file
from drtrt.model_info import GATE_KEY, ModelInfo, gate_record


def load_onnx(path: str | os.PathLike):
    """``onnx.load`` with a one-line ArtefactError for a missing or unreadable file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ArtefactError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, OSError, ... for bad files
        raise ArtefactError(f"cannot read {path} as an ONNX model ({type(exc).__name__}); "
                            "give the .onnx file written by `drtrt export`") from None


def read_info(proto, source: str = "model") -> ModelInfo:
    """The drtrt metadata of an ONNX ModelProto (ArtefactError when it has none)."""
    return ModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props}, source=source)


def write_info(proto, info: ModelInfo) -> None:
    """Replace drtrt's ``metadata_props`` entries with ``info`` (other tools' entries are kept).

    Export writes its metadata with this function too."""
    meta = info.to_metadata()
    keep = [p for p in proto.metadata_props if not p.key.startswith("drtrt.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def converted_from(src: Path) -> dict[str, str]:
    """The metadata a model converted from the FP32 model ``src`` starts with: ``source_sha256``, and
    its accuracy check "unchecked" until its gate runs (:func:`drtrt.calibration.gate.record`)."""
    sha = sha256_file(src)
    return {"source_sha256": sha, GATE_KEY: gate_record("unchecked", "fp32", sha, "not checked against FP32")}


def require_fp32(info: ModelInfo, path: Path) -> None:
    if info.precision != "fp32":
        raise ConfigError(f"{path} is already {info.precision}; convert the FP32 model from `drtrt export` instead")


def head_nodes(proto) -> list[str]:
    """Names of the nodes that produce the graph outputs (the grade and lesion heads)."""
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if outputs & set(n.output)]


def nodes_named(proto, names: Iterable[str]) -> list[str]:
    """``names`` checked against the graph; ConfigError listing the unknown ones."""
    names = list(names)
    known = {n.name for n in proto.graph.node}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"no node named {', '.join(map(repr, unknown[:3]))} in the model; "
                          "list node names with Netron or `python -c \"import onnx; "
                          "print([n.name for n in onnx.load('model.onnx').graph.node])\"`")
    return names
