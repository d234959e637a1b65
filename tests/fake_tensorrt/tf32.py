"""TF32 in the TensorRT double: what BuilderFlag.TF32 (set in every new IBuilderConfig, 8.6–11.x)
lets the builder do on Ampere and later (compute capability 8.0+: every Orin, A100, H100) — run an
FP32 convolution or matrix multiply on tensor cores, its inputs rounded to TF32 (FP32's 8-bit
exponent, 10 of its 23 mantissa bits). The double takes the worst case TensorRT is allowed: every
such layer, its float inputs (activations and weights) rounded to nearest; accumulation stays FP32.
Layers that run in FP16, and INT8 layers (inputs from DequantizeLinear), are left as they are.
"""

from __future__ import annotations

import numpy as np

TF32_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_SPLIT = float(2 ** 13 + 1)      # Veltkamp's splitter: 24-bit significand → its top 11 bits (10 stored)


def round_tf32(array: np.ndarray) -> np.ndarray:
    """FP32 values rounded to TF32 (nearest), still stored as FP32."""
    array = np.ascontiguousarray(array, np.float32)
    bits = array.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(array), rounded, array).astype(np.float32)


def node_key(node) -> str:
    """A node's name as the double's parser names its layer."""
    return node.name or f"node_of_{node.output[0]}"


def tf32_layers(layers, float32, gpu_major: int, flags: set, fp16_layers) -> list:
    """The layers a build with these flags may run in TF32 on this GPU."""
    if "TF32" not in flags or gpu_major < 8:
        return []
    in_fp16 = {id(layer) for layer in fp16_layers}
    return [layer for layer in layers if layer._op in TF32_OPS and id(layer) not in in_fp16
            and any(t._dtype == float32 for t in layer._inputs)
            and not any(p._op == "DequantizeLinear" for p in layers for t in layer._inputs
                        if t._name in {o._name for o in p._outputs})]


def apply_tf32(onnx_bytes: bytes, keys: dict[str, set[str]]) -> bytes:
    """The plan's ONNX with the float32 inputs (``keys``: node → those inputs) of those nodes rounded to TF32: weights
    in place (a copy per node), activations through a Veltkamp split (c = 8193·x; x' = c - (c - x))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(onnx_bytes)
    graph = proto.graph
    weights = {init.name: init for init in graph.initializer}
    splitter = helper.make_tensor("fake_trt_tf32_split", TensorProto.FLOAT, [], [_SPLIT])
    graph.initializer.append(splitter)
    nodes = []
    for node in graph.node:
        if node_key(node) in keys:
            inputs = []
            for i, name in enumerate(node.input):
                rounded = f"{name}__tf32_{node_key(node)}_{i}"
                if name not in keys[node_key(node)]:
                    rounded = name
                elif name in weights and weights[name].data_type == TensorProto.FLOAT:
                    values = round_tf32(numpy_helper.to_array(weights[name]))
                    graph.initializer.append(numpy_helper.from_array(values, rounded))
                elif name not in weights:
                    scaled, low = f"{rounded}__c", f"{rounded}__d"
                    nodes += [helper.make_node("Mul", [name, splitter.name], [scaled], name=f"fake_trt_tf32_c_{rounded}"),
                              helper.make_node("Sub", [scaled, name], [low], name=f"fake_trt_tf32_d_{rounded}"),
                              helper.make_node("Sub", [scaled, low], [rounded], name=f"fake_trt_tf32_{rounded}")]
                else:
                    rounded = name
                inputs.append(rounded)
            node.input[:] = inputs
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto.SerializeToString()
