"""FP16 ONNX by mixed-precision conversion (SPEC §5), and the metadata helpers every derived
precision (FP16 here, INT8 in :mod:`drtrt.calibration.quantize`) uses.

TensorRT 11 takes precision from the ONNX file, so precision is baked into it here:
``onnxruntime.transformers.float16.convert_float_to_float16`` with FP32 inputs and outputs
(``keep_io_types``), and the numerically sensitive parts left in FP32: the softmax of the
shallow-fusion module, the channel/spatial reductions of the CBAM attention and the grade
head's global average pool (ReduceMean/ReduceMax), and the two heads (the nodes producing the
graph outputs). onnxconverter-common's converter broke on the Softmax type (SPEC §7), hence
ONNX Runtime's. Needs ``onnx`` and ``onnxruntime``; no torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from drtrt.errors import ArtefactError, ConfigError
from drtrt.manifest import ModelInfo, sha256_file

DEFAULT_KEEP_FP32_OPS: tuple[str, ...] = ("Softmax", "ReduceMean", "ReduceMax")
"""Op types kept in FP32 on top of ONNX Runtime's own block list (softmax and the attention
and pooling reductions, whose sums of many values overflow or lose precision in FP16)."""


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


def derive_info(info: ModelInfo, precision: str, **extra: str) -> ModelInfo:
    """``info`` with a new precision and extra keys added (or replaced); everything else copied."""
    merged = dict(info.extra)
    merged.update(extra)
    return dataclasses.replace(info, precision=precision, extra=tuple(sorted(merged.items())))


def write_info(proto, info: ModelInfo) -> None:
    """Replace drtrt's ``metadata_props`` entries with ``info`` (other tools' entries are kept).

    Same contract as :func:`drtrt.export.onnx_export.set_metadata`, which cannot be imported
    here: that module imports torch, and conversion and calibration must run without it.
    """
    meta = info.to_metadata()
    keep = [p for p in proto.metadata_props if not p.key.startswith("drtrt.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


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


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike,
                 keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                 keep_fp32_nodes: Sequence[str] = (), keep_heads: bool = True) -> Path:
    """Write an FP16 copy of the FP32 drtrt model ``src`` to ``dst`` and return ``dst``.

    Inputs and outputs stay FP32 (Cast nodes at the boundary), so callers feed and read
    float32 as before. Kept in FP32: op types ``keep_fp32_ops`` (plus ONNX Runtime's default
    block list), nodes ``keep_fp32_nodes`` and, with ``keep_heads``, the output heads.
    Metadata: precision "fp16" and ``fp16_kept`` (JSON lists of the FP32 op types and
    nodes); preprocessing, class names and checkpoint hash are copied from ``src``.

    Raises:
        ArtefactError: ``src`` is missing, unreadable or carries no drtrt metadata.
        ConfigError: ``src`` is not FP32, or a node in ``keep_fp32_nodes`` does not exist.
    """
    import json

    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    src, dst = Path(src), Path(dst)
    proto = load_onnx(src)
    info = read_info(proto, str(src))
    require_fp32(info, src)
    nodes = nodes_named(proto, keep_fp32_nodes) + (head_nodes(proto) if keep_heads else [])
    ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=ops,
                                         node_block_list=sorted(set(nodes)))
    drop_round_trip_casts(converted)
    OnnxModel.graph_topological_sort(converted.graph)   # the converter appends its input Casts last
    kept = json.dumps({"ops": sorted(set(keep_fp32_ops)), "nodes": sorted(set(nodes))})
    write_info(converted, derive_info(info, "fp16", fp16_kept=kept, source_sha256=sha256_file(src)))
    onnx.checker.check_model(converted)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(converted, str(dst))
    return dst



def drop_round_trip_casts(proto) -> int:
    """Remove FP32 -> FP16 -> FP32 Cast pairs the converter leaves between FP32 nodes; returns how many.

    ``convert_float_to_float16`` casts every blocked node's output to FP16 and back when the
    consumer is FP32 too (e.g. the lesion head -> softmax, the pooled features -> grade head,
    the heads -> the graph outputs), which would round the logits to FP16 after all.
    """
    import onnx

    graph = proto.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*onnx.shape_inference.infer_shapes(proto).graph.value_info, *graph.input, *graph.output)}
    types.update({i.name: i.data_type for i in graph.initializer})
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    to = lambda n: next((a.i for a in n.attribute if a.name == "to"), None)  # noqa: E731
    dropped = []
    for down in [n for n in graph.node if n.op_type == "Cast" and to(n) == onnx.TensorProto.FLOAT16]:
        source, half = down.input[0], down.output[0]
        ups = consumers.get(half, [])
        if (types.get(source) != onnx.TensorProto.FLOAT or half in outputs or not ups
                or any(u.op_type != "Cast" or to(u) != onnx.TensorProto.FLOAT for u in ups)):
            continue
        for up in ups:
            for user in consumers.get(up.output[0], []):
                user.input[:] = [source if i == up.output[0] else i for i in user.input]
            if up.output[0] in outputs:   # keep the graph output's name: the FP32 producer now writes it
                producer = next(n for n in graph.node if source in n.output)
                producer.output[:] = [up.output[0] if o == source else o for o in producer.output]
                for user in consumers.get(source, []):
                    user.input[:] = [up.output[0] if i == source else i for i in user.input]
                source = up.output[0]
            dropped.append(up)
        dropped.append(down)
    keep = [n for n in graph.node if all(n is not d for d in dropped)]
    del graph.node[:]
    graph.node.extend(keep)
    return len(dropped) // 2
