"""FP16 ONNX by mixed-precision conversion (SPEC §5).

TensorRT 11 takes precision from the ONNX file, so precision is baked into it here:
``onnxruntime.transformers.float16.convert_float_to_float16`` with FP32 inputs and outputs
(``keep_io_types``), and the numerically sensitive parts left in FP32: the softmax of the
shallow-fusion module, the channel/spatial reductions of the CBAM attention and the grade
head's global average pool (ReduceMean/ReduceMax), and the two heads (the nodes producing the
graph outputs). onnxconverter-common's converter broke on the Softmax type (SPEC §7), hence
ONNX Runtime's. Needs ``onnx`` and ``onnxruntime``; no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from drtrt.calibration.graph import (converted_from, head_nodes, load_onnx, nodes_named, read_info, require_fp32,
                                    write_info)

DEFAULT_KEEP_FP32_OPS: tuple[str, ...] = ("Softmax", "ReduceMean", "ReduceMax")
"""Op types kept in FP32 on top of ONNX Runtime's own block list (softmax and the attention
and pooling reductions, whose sums of many values overflow or lose precision in FP16)."""


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike,
                 keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                 keep_fp32_nodes: Sequence[str] = (), keep_heads: bool = True) -> Path:
    """Write an FP16 copy of the FP32 drtrt model ``src`` to ``dst`` and return ``dst``.

    Inputs and outputs stay FP32 (Cast nodes at the boundary), so callers feed and read
    float32 as before. Kept in FP32: op types ``keep_fp32_ops`` (plus ONNX Runtime's default
    block list), nodes ``keep_fp32_nodes`` and, with ``keep_heads``, the output heads.
    Metadata: precision "fp16" and ``fp16_kept`` (JSON lists of the FP32 op types and
    nodes); preprocessing, class names and checkpoint hash are copied from ``src``; the accuracy check
    (``gate``) starts "unchecked".

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
    write_info(converted, info.derive("fp16", fp16_kept=kept, **converted_from(src)))
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
