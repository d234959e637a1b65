"""Empirical bias correction of a Q/DQ model: the mean each quantised conv adds, taken back out.

Rounding a conv's weights to INT8 and its input to the calibrated grid is not zero-mean over one
output channel (a channel of the demo model has 8 to 64 inputs per tap: too few for the errors to
cancel), so every quantised conv shifts the mean of its output channels a little, and the shifts
add up through the network. On the demo model they moved every grade-0 image's logits the same way
(grade 0 down by ~1.8, grade 2 up by ~1.2) and turned 3 of 100 held-out grades (docs/reproducibility.md).

The correction (Nagel et al., 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", §4.2, its empirical form): for each quantised Conv in graph order, run the FP32 and the
Q/DQ model on a few calibration images and subtract, per output channel, the difference between the
two output means from the conv's bias. In graph order, each correction sees the layers before it
already corrected. Only bias values change: the graph, the Q/DQ nodes and their scales, and so the
speed, stay as they are, and the bias stays FP32 (``QuantizeBias`` off), which TensorRT and ONNX
Runtime read alike. ONNX Runtime's ``quantize_static`` has no such step, hence this module.

The Q/DQ model is run unfused (``ORT_DISABLE_ALL``: DequantizeLinear → float Conv → QuantizeLinear),
which computes the same quantised values as the fused INT8 kernels up to float rounding; its biases
are fed as inputs, so one session serves every conv, and ONNX Runtime runs only the nodes a fetched
conv output needs. Needs ``onnx`` and ``onnxruntime``; no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drtrt.runtime.backends.ort import open_session


@dataclass(frozen=True)
class BiasCorrection:
    """What :func:`correct_biases` did: convs corrected, images used, the largest correction relative
    to the corrected channel's FP32 output spread, and the time it took."""

    convs: int
    images: int
    largest: float
    seconds: float

    def facts(self) -> dict:
        """What the correction did, without the time it took: kept in the model, whose bytes (and
        sha256, which sessions bind to) must be the same every time the same model is calibrated."""
        return {"convs": self.convs, "images": self.images, "largest_relative_shift": round(self.largest, 4)}

    def to_dict(self) -> dict:
        return {**self.facts(), "seconds": round(self.seconds, 1)}


def quantised_convs(proto) -> list:
    """Conv nodes whose weights come through a DequantizeLinear and whose bias is an initializer."""
    dequantised = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name for i in proto.graph.initializer}
    return [n for n in proto.graph.node
            if n.op_type == "Conv" and n.input[1] in dequantised and len(n.input) > 2 and n.input[2] in inits]


def _session(proto, outputs: Sequence[str], bias_inputs: Sequence[str] = ()):
    """An unoptimised CPU session of ``proto`` with ``outputs`` exposed and ``bias_inputs`` turned from
    initializers into graph inputs (fed at each run)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    for init in [i for i in graph.initializer if i.name in set(bias_inputs)]:
        graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        graph.initializer.remove(init)
    existing = {o.name for o in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs if n not in existing)
    return open_session(model.SerializeToString(), optimize=False)


def _channel_means(session, name: str, feeds: Sequence[dict]) -> np.ndarray:
    """Mean of output ``name`` per channel (axis 1) over every image of ``feeds``."""
    return _all_channel_means(session, [name], feeds)[name]


def _all_channel_means(session, names: Sequence[str], feeds: Sequence[dict]) -> dict[str, np.ndarray]:
    """Mean per channel (axis 1) of every output in ``names`` over every image of ``feeds``, one run per feed."""
    totals: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(names, 0)
    for feed in feeds:
        for name, value in zip(names, session.run(list(names), feed)):
            sums = value.astype(np.float64).sum(axis=tuple(a for a in range(value.ndim) if a != 1))
            totals[name] = sums if name not in totals else totals[name] + sums
            counts[name] += value.size // value.shape[1]
    return {name: totals[name] / counts[name] for name in names}


def correct_biases(fp32: str | Path, quant: str | Path, batches: Sequence[np.ndarray],
                   on_progress: Callable[[int, int], None] | None = None) -> BiasCorrection:
    """Correct the biases of ``quant`` (a Q/DQ model quantised from ``fp32``, same tensor names) in
    place, from the model inputs ``batches`` (each [N, 3, S, S] float32)."""
    import onnx
    from onnx import numpy_helper

    start = time.perf_counter()
    reference, proto = onnx.load(str(fp32)), onnx.load(str(quant))
    produced = {o for n in reference.graph.node for o in n.output}
    convs = [c for c in quantised_convs(proto) if c.output[0] in produced]
    names = [c.output[0] for c in convs]
    input_name = reference.graph.input[0].name
    ref_means = _all_channel_means(_session(reference, names), names, [{input_name: x} for x in batches])
    ref_spread = {name: float(np.abs(mean).max()) or 1.0 for name, mean in ref_means.items()}
    inits = {i.name: i for i in proto.graph.initializer}
    biases = {c.input[2]: numpy_helper.to_array(inits[c.input[2]]).astype(np.float32) for c in convs}
    session = _session(proto, names, list(biases))
    largest = 0.0
    for k, conv in enumerate(convs):
        feeds = [{input_name: x, **biases} for x in batches]
        shift = _channel_means(session, conv.output[0], feeds) - ref_means[conv.output[0]]
        biases[conv.input[2]] = (biases[conv.input[2]] - shift).astype(np.float32)
        largest = max(largest, float(np.abs(shift).max()) / ref_spread[conv.output[0]])
        if on_progress:
            on_progress(k + 1, len(convs))
    for name, value in biases.items():
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    onnx.save(proto, str(quant))
    return BiasCorrection(len(convs), sum(len(x) for x in batches), largest, time.perf_counter() - start)
