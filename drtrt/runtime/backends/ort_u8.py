"""INT8 Q/DQ models on ONNX Runtime's x86 CPU path: signed activations shifted to unsigned at load.

``drtrt calibrate`` writes one INT8 file for TensorRT and ONNX Runtime alike, so its activations are
what TensorRT accepts: signed INT8, zero point 0. On x86, ONNX Runtime's integer kernels (MLAS, VNNI's
``u8 x s8`` dot product) want unsigned activations. Its own S8->U8 pass converts only some Q/DQ pairs;
measured on the full network at 512² (docs/benchmarks.md, issue 26), 6 of the 7 MaxPools, 7 of the 9
Concats and the 8 fanned-out ReLUs then run in FP32 between a DequantizeLinear and a QuantizeLinear, with
layout reorders around them, and 3 convolutions that could be integer run in FP32.

:func:`unsigned_activations` rewrites the model in memory, never on disk: every activation zero point
(a scalar INT8 initializer of 0 shared only by QuantizeLinear/DequantizeLinear pairs) becomes UINT8 128.
That is the same 256 levels shifted by 128 (q_u8 = q_s8 + 128, and (q_u8 - 128) x scale = q_s8 x scale),
so the model computes the same function; weights stay signed INT8 per channel. Then ONNX Runtime fuses
the whole network onto its integer kernels (QLinearConv, QLinearConcat, NhwcMaxPool on uint8).

Needs ``onnx`` (``pip install 'drtrt[convert]'``); without it, or for a model with no such zero point,
it returns None and the file is run as written (correct, slower). No torch.
"""

from __future__ import annotations

from pathlib import Path

QDQ = ("QuantizeLinear", "DequantizeLinear")
INT8 = 3   # onnx.TensorProto.INT8
HEAD_BYTES = 4 << 20
"""How much of a file :func:`unsigned_activations` reads to decide whether to parse it: protobuf writes
fields in number order, so a model's nodes come before its weights; a file with no QuantizeLinear there
(an FP32 model) is not parsed twice."""


def unsigned_activations(path: str | Path) -> bytes | None:
    """The serialised model at ``path`` with its activation zero points shifted to UINT8 128, or None
    when there is nothing to shift (an FP32/FP16 model) or ``onnx`` is not installed or cannot read it."""
    try:
        with open(path, "rb") as f:
            if b"QuantizeLinear" not in f.read(HEAD_BYTES):
                return None
        import onnx
    except (OSError, ImportError):
        return None
    try:
        proto = onnx.load(str(path))
    except Exception:  # noqa: BLE001 - the session that follows reports an unreadable file in one line
        return None
    names = shiftable_zero_points(proto.graph)
    if not names:
        return None
    shift(proto.graph, names)
    try:
        return proto.SerializeToString()
    except ValueError:   # over protobuf's 2 GiB: run the file as written
        return None


def shiftable_zero_points(graph) -> set[str]:
    """Names of the scalar INT8 zero-point initializers equal to 0 that only activation Q/DQ pairs use:
    every QuantizeLinear using one feeds only DequantizeLinears using it (never a graph output), and
    every DequantizeLinear using one reads a QuantizeLinear using it."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    candidates = {name for name, t in inits.items()
                  if t.data_type == INT8 and len(t.dims) == 0 and not numpy_helper.to_array(t).any()}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    ok = set(candidates)
    for node in graph.node:
        used = [name for name in node.input if name in candidates]
        if not used:
            continue
        zp = node.input[2] if node.op_type in QDQ and len(node.input) > 2 else None
        if zp is None or used != [zp]:
            ok -= set(used)       # a zero point read as anything else, or by another op: leave it
        elif node.op_type == "QuantizeLinear":
            readers = consumers.get(node.output[0], [])
            if node.output[0] in outputs or not readers or any(
                    r.op_type != "DequantizeLinear" or len(r.input) < 3 or r.input[2] != zp for r in readers):
                ok.discard(zp)
        else:
            source = producers.get(node.input[0])
            if source is None or source.op_type != "QuantizeLinear" or len(source.input) < 3 or source.input[2] != zp:
                ok.discard(zp)    # a weight, a graph input or another producer: not an activation pair
    return ok


def shift(graph, names: set[str]) -> None:
    """Make each zero point in ``names`` UINT8 128 and drop the now stale INT8 types recorded for the
    tensors their QuantizeLinears produce (ONNX Runtime infers them again)."""
    import numpy as np
    from onnx import numpy_helper

    for i, init in enumerate(graph.initializer):
        if init.name in names:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(np.array(128, np.uint8), init.name))
    shifted = {n.output[0] for n in graph.node
               if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in names}
    keep = [v for v in graph.value_info if v.name not in shifted]
    del graph.value_info[:]
    graph.value_info.extend(keep)
