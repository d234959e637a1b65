"""Layer-wise comparison of a quantised (Q/DQ) ONNX model against its FP32 source.

Post-training quantisation (ONNX Runtime's ``quantize_static``, ModelOpt) keeps the names
of the original nodes and of their output tensors and inserts QuantizeLinear /
DequantizeLinear pairs between them. Every tensor a compute node produces in both graphs
is exposed as an extra output, both models run on the same inputs, and each tensor gets a
bounded relative L2 error ``||q - f|| / (||q|| + ||f||)`` (mean over inputs; see
:func:`relative_error`).

A node's *blame* is the error of its output minus the largest error among the tensors
feeding it (seen through the Q/DQ nodes): how much divergence this node adds rather than
inherits. Excluding the most-blamed nodes from quantisation is the fix-up
``drtrt calibrate --auto-exclude`` performs. Needs ``onnx`` and ``onnxruntime``; no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drtrt.errors import BackendUnavailable
from drtrt.runtime.backends.ort import open_session

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class NodeBlame:
    """One node of the quantised graph: its output's error and the part it adds itself."""

    node: str           # node name (what quantize_static's nodes_to_exclude takes)
    op_type: str
    output: str
    error: float        # relative error of the node's output against FP32, in [0, 1]
    blame: float        # error - max(error of its inputs)

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "output": self.output, "error": self.error,
                "blame": self.blame}


def _onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("layer-wise comparison needs onnx and onnxruntime; "
                                 "pip install 'drtrt[convert]'") from None
    return onnx, onnxruntime


def shared_tensors(fp32, quant) -> list[str]:
    """Output tensors of compute (non-Q/DQ) nodes present in both graphs, in the quantised graph's order."""
    produced = {o for n in fp32.graph.node for o in n.output}
    return [o for n in quant.graph.node if n.op_type not in QDQ_OPS for o in n.output if o in produced]


def _run_with_outputs(proto, names: Sequence[str], inputs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Run ``proto`` with ``names`` exposed as outputs; one dict per input batch (non-float outputs dropped)."""
    onnx, _ = _onnx()
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in existing)
    # No graph fusion: a fused node would not produce the tensors asked for under their names.
    session = open_session(model.SerializeToString(), optimize=False)
    out_names = [o.name for o in session.get_outputs()]
    (image,) = session.get_inputs()   # drtrt models take one input, the image
    results = []
    for x in inputs:
        values = session.run(out_names, {image.name: x})

        results.append({k: v for k, v in zip(out_names, values) if k in names and v.dtype.kind == "f"})
    return results


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """||c - r|| / (||c|| + ||r||), in [0, 1]: 0 identical, ~|Δ|/(2|r|) when close, 1 when unrelated.

    Plain ||c - r|| / ||r|| explodes on tensors that are almost zero in FP32 (a dead ReLU, a
    channel-attention MLP at small width) and would blame them for everything.
    """
    r, c = reference.astype(np.float64).ravel(), candidate.astype(np.float64).ravel()
    denominator = float(np.linalg.norm(r) + np.linalg.norm(c))
    return float(np.linalg.norm(c - r)) / denominator if denominator else 0.0


def layer_errors(fp32_path: str | Path, quant_path: str | Path, inputs: Sequence[np.ndarray]) -> dict[str, float]:
    """Relative L2 error per shared tensor, averaged over ``inputs`` (each [N, 3, S, S] float32)."""
    onnx, _ = _onnx()
    fp32, quant = onnx.load(str(fp32_path)), onnx.load(str(quant_path))
    names = shared_tensors(fp32, quant)
    ref = _run_with_outputs(fp32, names, inputs)
    got = _run_with_outputs(quant, names, inputs)
    errors: dict[str, float] = {}
    for name in names:
        values = []
        for r, g in zip(ref, got):
            if name in r and name in g and r[name].shape == g[name].shape:
                values.append(relative_error(r[name], g[name]))
        if values:
            errors[name] = float(np.mean(values))
    return errors


def rank_nodes(quant_path: str | Path, errors: dict[str, float]) -> list[NodeBlame]:
    """Quantised compute nodes (some input comes from a DequantizeLinear) sorted by blame, largest first."""
    onnx, _ = _onnx()
    quant = onnx.load(str(quant_path))
    producer = {o: n for n in quant.graph.node for o in n.output}

    def upstream(tensor: str) -> list[str]:
        """Shared tensors feeding ``tensor`` through any chain of Q/DQ nodes."""
        node = producer.get(tensor)
        if node is None or node.op_type not in QDQ_OPS:
            return [tensor] if tensor in errors else []
        return upstream(node.input[0])

    ranked = []
    for node in quant.graph.node:
        dequantised = any(i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input)
        if node.op_type in QDQ_OPS or not dequantised:   # already in FP32: excluding it changes nothing
            continue
        for out in node.output:
            if out in errors:
                inherited = max((errors[t] for i in node.input for t in upstream(i)), default=0.0)
                ranked.append(NodeBlame(node.name, node.op_type, out, errors[out], errors[out] - inherited))
    return sorted(ranked, key=lambda b: b.blame, reverse=True)
