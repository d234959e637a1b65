"""INT8 by explicit quantisation: Q/DQ nodes from post-training calibration (SPEC §5).

The FP32 model is prepared (shape inference; see :func:`prepare_graph`), activation ranges
are collected over the calibration images with ONNX Runtime's calibrators, streaming a few
images at a time so memory stays bounded at 512², and ``quantize_static`` writes a QDQ model:

* symmetric signed INT8 everywhere (zero point 0), as TensorRT requires;
* weights per output channel (axis 0); biases left in FP32 (TensorRT rejects INT32
  DequantizeLinear; ONNX Runtime quantises them itself when it fuses QLinearConv);
* the first conv, the conv feeding the lesion head, both heads and the softmax kept in FP32 by
  default (:data:`DEFAULT_EXCLUDE`);
* then each quantised conv's FP32 bias corrected for the mean shift quantisation adds
  (:mod:`drtrt.calibration.bias_correction`, on :data:`BIAS_CORRECTION_IMAGES` calibration images).

:func:`check_tensorrt_qdq` verifies those properties on the file
written. The same file runs on ONNX Runtime's CPU provider; ``docs/benchmarks.md`` records
which graph rewrites (:class:`GraphPrep`) make it fast there. Needs ``onnx`` and
``onnxruntime``; no torch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drtrt.calibration.bias_correction import BiasCorrection, correct_biases
from drtrt.calibration.graph import (converted_from, head_nodes, load_onnx, nodes_named, read_info, require_fp32,
                                    write_info)
from drtrt.calibration.source import RECOMMENDED_IMAGES, CalibrationSet, TensorReader, calibration_set
from drtrt.errors import ArtefactError, ConfigError
from drtrt.model_info import ModelInfo
from drtrt.fileio import sha256_file

METHODS = ("minmax", "entropy", "percentile")
EXCLUDE_GROUPS = ("first-conv", "last-conv", "heads", "softmax")
"""Names that ``exclude`` expands on the graph: convs reading the image, the conv feeding each
convolutional head (through its activation), nodes producing the outputs, every Softmax. Anything
else in ``exclude`` is a node name; ``"none"`` is nothing.

``last-conv`` (issue 20): the full-resolution 3x3 conv before the 1x1 lesion head and its ReLU, so
the head reads an unquantised feature map: that map carries the one-to-two-pixel detail
microaneurysms are made of; quantised, it moved the demo model's decided MA pixels by 28 % (lesion
Dice vs FP32 0.948, under the gate) where keeping it in FP32 gave 0.966. The conv is 2 % of the full
network's multiply-adds (84 -> 20 channels at 512²): docs/reproducibility.md."""
DEFAULT_EXCLUDE = EXCLUDE_GROUPS
QUANT_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
MINMAX_CHUNK = 16   # images per collect step for min-max (only per-tensor minima and maxima are kept)
BIAS_CORRECTION_IMAGES = 8
"""Calibration images (spread over the set) the bias correction averages over: the per-channel means it
needs settle within a few images (every pixel of every image is a sample); each image costs about half
a model run per quantised conv."""


@dataclass(frozen=True)
class GraphPrep:
    """Equivalent rewrites of the FP32 graph before quantisation (all on by default).

    unshare_weights: give each Conv/Gemm its own copy of an initializer that several share
        (the exporter's deduplication shares, e.g., all-zero biases): a shared tensor gets one
        set of quantisation parameters, right for at most one of its users.
    relu_as_leaky: Relu -> LeakyRelu(alpha=0), same function. With symmetric activations
        ONNX Runtime cannot fold Relu into QLinearConv and runs it in FP32 between a DQ and a
        Q; LeakyRelu has an INT8 kernel (QLinearLeakyRelu). TensorRT fuses either into the conv.
    split_pools: one MaxPool per consumer where a MaxPool feeds several, so ONNX Runtime's
        QDQ fusion keeps each consumer conv in INT8.
    """

    unshare_weights: bool = True
    relu_as_leaky: bool = True
    split_pools: bool = True

    def names(self) -> list[str]:
        return [k for k, v in vars(self).items() if v]


@dataclass
class CalibrationResult:
    """What :func:`calibrate_int8` wrote: the Q/DQ model, its calibration record and figures."""

    path: Path
    record: Path
    method: str
    images: CalibrationSet
    excluded: tuple[str, ...]
    qdq_nodes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    bias_correction: BiasCorrection | None = None

    def summary(self) -> str:
        return (f"wrote {self.path} (INT8 Q/DQ, {self.qdq_nodes} Q/DQ nodes, {self.method} calibration on "
                f"{len(self.images)} images, set sha256 {self.images.sha256[:12]}, {len(self.excluded)} node(s) "
                f"kept in FP32{self._corrected()}) in {self.seconds:.0f} s; record: {self.record}")

    def _corrected(self) -> str:
        bc = self.bias_correction
        return f", biases of {bc.convs} convs corrected on {bc.images} images" if bc else ", no bias correction"


def prepare_graph(src: Path, dst: Path, prep: GraphPrep = GraphPrep()) -> Path:
    """Shape inference (``quant_pre_process``, symbolic inference skipped: it fails on this
    graph) and the :class:`GraphPrep` rewrites; writes ``dst``."""
    import onnx
    from onnx import helper
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    proto = onnx.load(str(dst))
    graph = proto.graph
    if prep.unshare_weights:
        inits = {i.name: i for i in graph.initializer}
        seen: set[str] = set()
        for node in graph.node:
            if node.op_type in ("Conv", "Gemm"):
                for k, name in enumerate(node.input):
                    if name in inits and name in seen:
                        dup = copy.deepcopy(inits[name])
                        dup.name = node.input[k] = f"{name}.{node.name}"
                        graph.initializer.append(dup)
                    seen.add(name)
    if prep.relu_as_leaky:
        for node in graph.node:
            if node.op_type == "Relu":
                node.op_type = "LeakyRelu"
                node.attribute.append(helper.make_attribute("alpha", 0.0))
    if prep.split_pools:
        _split_pools(graph)
    onnx.save(proto, str(dst))
    return dst


def _split_pools(graph) -> None:
    """A MaxPool read by n nodes becomes n MaxPools, one per reader (see :class:`GraphPrep`)."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ordered = []
    for node in list(graph.node):
        ordered.append(node)
        users = consumers.get(node.output[0], [])
        if node.op_type != "MaxPool" or len(users) < 2 or len(node.output) != 1:
            continue
        for k, user in enumerate(users[1:], 1):
            twin = copy.deepcopy(node)
            twin.name, twin.output[0] = f"{node.name}.split{k}", f"{node.output[0]}.split{k}"
            ordered.append(twin)
            for j, name in enumerate(user.input):
                if name == node.output[0]:
                    user.input[j] = twin.output[0]
    del graph.node[:]
    graph.node.extend(ordered)


def resolve_exclude(proto, exclude: Sequence[str], input_name: str) -> tuple[str, ...]:
    """Node names to keep in FP32: groups (:data:`EXCLUDE_GROUPS`) expanded, names checked.
    ``input_name``: the image input, whose readers are the first convs."""
    names: list[str] = []
    for item in exclude:
        if item == "none":
            continue
        if item == "first-conv":
            names += [n.name for n in proto.graph.node if n.op_type == "Conv" and input_name in n.input]
        elif item == "last-conv":
            names += _convs_feeding_conv_heads(proto)
        elif item == "heads":
            names += head_nodes(proto)
        elif item == "softmax":
            names += [n.name for n in proto.graph.node if n.op_type == "Softmax"]
        else:
            names += nodes_named(proto, [item])
    return tuple(dict.fromkeys(names))


_PASS_THROUGH = ("Relu", "LeakyRelu", "Clip", "BatchNormalization", "Identity")


def _convs_feeding_conv_heads(proto) -> list[str]:
    """For each Conv producing a graph output, the Conv its input comes from and the activations between
    them: with those kept in FP32 the head reads an unquantised feature map."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    found = []
    for head in head_nodes(proto):
        node = next(n for n in proto.graph.node if n.name == head)
        if node.op_type != "Conv":
            continue
        chain, source = [], producers.get(node.input[0])
        while source is not None and source.op_type in _PASS_THROUGH:
            chain.append(source.name)
            source = producers.get(source.input[0])
        if source is not None and source.op_type == "Conv":
            found += [source.name, *chain]
    return found


def op_types_to_quantize() -> list[str]:
    """Every op type ONNX Runtime's quantiser knows (its own default), including LeakyRelu."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def ort_method(method: str):
    """ONNX Runtime's CalibrationMethod for one of :data:`METHODS` (how the range cache is labelled)."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def collect_ranges(model: Path, images: CalibrationSet, info: ModelInfo, method: str, cache: Path,
                   on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Activation ranges of ``model`` over ``images``, written as an ONNX Runtime calibration cache.

    Streams: min-max keeps only running minima/maxima (:data:`MINMAX_CHUNK` images per step);
    the histogram methods merge one image's |x| histograms (2048 bins) at a time. Percentile
    is ONNX Runtime's (99.999th percentile of |x|); entropy is :func:`entropy_threshold` on
    those same histograms, because ONNX Runtime's entropy collector re-bins signed histograms
    as ranges grow (measured: 469 s on the 64-pixel test model, 0 % grade agreement).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, create_calibrator, save_tensors_data

    kind = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile
    step = MINMAX_CHUNK if method == "minmax" else 1
    with tempfile.TemporaryDirectory(prefix="drtrt-calib-") as tmp:
        calibrator = create_calibrator(model, op_types_to_quantize(), augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=kind, providers=["CPUExecutionProvider"],
                                       extra_options={"symmetric": True, "num_bins": 2048})
        for start in range(0, len(images), step):
            with contextlib.redirect_stdout(io.StringIO()):   # the histogram calibrators print progress
                calibrator.collect_data(TensorReader(images.images[start:start + step], info))
            if on_progress:
                on_progress(min(start + step, len(images)), len(images))
        if method == "entropy":
            ranges = {}
            for name, (hist, edges, *_) in calibrator.collector.histogram_dict.items():
                t = np.float32(entropy_threshold(hist, edges))
                ranges[name] = TensorData(lowest=-t, highest=t)
            data = TensorsData(CalibrationMethod.Entropy, ranges)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                data = calibrator.compute_data()
        save_tensors_data(data, cache)
    return cache


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, quantized_bins: int = 128, stride: int = 4) -> float:
    """Clipping threshold of a |x| histogram minimising KL(P || Q), TensorRT's entropy calibration.

    For each candidate edge i (from ``quantized_bins``, every ``stride`` bins): P = the first
    i bins with the mass beyond folded into bin i-1; Q = those bins merged into
    ``quantized_bins`` levels and spread back evenly over their non-empty bins. Histograms
    longer than 2048 bins (ranges grew while collecting) are merged down first. The first bin
    is left out: after a ReLU it holds the exact zeros (half the values or more), which every
    threshold represents exactly, and left in it drives the search to clip ~90 % of the range.
    """
    hist = np.array(hist, np.float64)
    edges = np.asarray(edges, np.float64)
    if len(hist) > 2048:
        f = -(-len(hist) // 2048)
        pad = (-len(hist)) % f
        hist = np.pad(hist, (0, pad)).reshape(-1, f).sum(1)
        edges = np.append(edges[:-1:f], edges[-1] + pad * (edges[1] - edges[0]))
    hist[0] = 0.0
    if hist.sum() == 0 or len(hist) <= quantized_bins:
        return float(edges[-1])
    best, best_i = np.inf, len(hist)
    for i in range(quantized_bins, len(hist) + 1, stride):
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()
        group = np.arange(i) * quantized_bins // i
        nonzero = (hist[:i] > 0).astype(np.float64)
        sums = np.bincount(group, weights=hist[:i], minlength=quantized_bins)
        counts = np.bincount(group, weights=nonzero, minlength=quantized_bins)
        q = np.where(nonzero > 0, sums[group] / np.maximum(counts[group], 1), 0.0)
        p = ref / ref.sum()
        q_sum = q.sum()
        if q_sum == 0 or np.any((p > 0) & (q == 0)):
            continue
        q /= q_sum
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i])


def calibrate_int8(onnx_in: str | os.PathLike, out: str | os.PathLike,
                   source: CalibrationSet | str | os.PathLike, method: str = "minmax",
                   exclude: Sequence[str] = DEFAULT_EXCLUDE, *, images: int = RECOMMENDED_IMAGES, seed: int = 0,
                   prep: GraphPrep = GraphPrep(), bias_correction: int = BIAS_CORRECTION_IMAGES,
                   on_progress: Callable[[int, int], None] | None = None,
                   on_correction: Callable[[int, int], None] | None = None) -> CalibrationResult:
    """Calibrate the FP32 drtrt model ``onnx_in`` and write the INT8 Q/DQ model ``out``.

    source: a :class:`CalibrationSet`, an IDRiD-layout folder (training split, ``images``
    images stratified by grade) or a folder of images (up to ``images`` of them).
    exclude: node names and/or groups (:data:`EXCLUDE_GROUPS`) kept in FP32.
    bias_correction: calibration images for :func:`~drtrt.calibration.bias_correction.correct_biases`
        (0 = no correction); ``on_correction(done, total)`` after each conv corrected.
    Beside ``out`` goes ``<stem>.calibration.json``: images (with sha256), method,
    exclusions, options. Metadata: precision "int8", calibration_method, calibration_images,
    calibration_sha256, calibration_excluded (JSON list), int8_graph_prep, int8_bias_correction
    (JSON), source_sha256, gate "unchecked" (until :func:`drtrt.calibration.gate.record`).

    Raises:
        ConfigError: unknown method, unknown node name, or ``onnx_in`` not FP32.
        ArtefactError / DataError / ImageError: unreadable model, data or image.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
    start = time.perf_counter()
    onnx_in, out = Path(onnx_in), Path(out)
    info = read_info(load_onnx(onnx_in), str(onnx_in))
    require_fp32(info, onnx_in)
    calib = calibration_set(source, images, seed)
    warns = []
    if len(calib) < RECOMMENDED_IMAGES:
        warns.append(f"calibrating on {len(calib)} images (fewer than {RECOMMENDED_IMAGES}): activation ranges "
                     "may not cover what the clinic's camera produces; check the agreement figures")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="drtrt-int8-") as tmp:
        prepared = prepare_graph(onnx_in, Path(tmp) / "prepared.onnx", prep)
        excluded = resolve_exclude(onnx.load(str(prepared), load_external_data=False), exclude,
                                   info.task.input_name)
        cache = collect_ranges(prepared, calib, info, method, Path(tmp) / "ranges.json", on_progress)
        quantize_static(str(prepared), str(out), None, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=op_types_to_quantize(), nodes_to_exclude=list(excluded),
                        calibrate_method=ort_method(method), extra_options=dict(QUANT_OPTIONS),
                        calibration_cache_path=str(cache))
        corrected = None
        if bias_correction > 0:
            picked = calib.images[::max(1, len(calib) // bias_correction)][:bias_correction]
            batches = [TensorReader([path], info).get_next()[info.task.input_name] for path in picked]
            corrected = correct_biases(prepared, out, batches, on_correction)
    proto = onnx.load(str(out))
    qdq = check_tensorrt_qdq(proto)
    write_info(proto, info.derive("int8", calibration_method=method, calibration_images=str(len(calib)),
                                  calibration_sha256=calib.sha256, calibration_excluded=json.dumps(list(excluded)),
                                  int8_graph_prep=json.dumps(prep.names()),
                                  int8_bias_correction=json.dumps(corrected.facts() if corrected else None),
                                  **converted_from(onnx_in)))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    record = out.with_suffix(".calibration.json")
    record.write_text(json.dumps({
        "model": out.name, "source_model": str(onnx_in), "source_sha256": sha256_file(onnx_in),
        "method": method, "origin": calib.origin, "count": len(calib), "sha256": calib.sha256,
        "strata": calib.grade_counts(), "excluded": list(excluded), "options": QUANT_OPTIONS,
        "graph_prep": prep.names(), "bias_correction": corrected.to_dict() if corrected else None,
        "images": calib.listing(),
    }, indent=2))
    return CalibrationResult(out, record, method, calib, excluded, qdq, time.perf_counter() - start, warns, corrected)


def check_tensorrt_qdq(proto) -> int:
    """Count of Q/DQ nodes; ArtefactError unless every one is what TensorRT accepts.

    Rules: INT8 data with zero point 0 (symmetric); activation scales per tensor; weight
    (initializer) scales per output channel, axis 0.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    problems, count = [], 0
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        count += 1
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is None or zp.data_type != 3 or numpy_helper.to_array(zp).any():   # 3 = INT8
            problems.append(f"{node.name}: zero point must be an INT8 initializer of zeros")
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        weight = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if weight is not None and len(weight.dims) > 1:
            if scale is None or scale.ndim != 1 or scale.size != weight.dims[0] or axis != 0:
                problems.append(f"{node.name}: weights must be quantised per output channel (axis 0)")
        elif scale is None or scale.ndim != 0:
            problems.append(f"{node.name}: activation scale must be one constant per tensor")
    if problems:
        raise ArtefactError(f"the Q/DQ model is not what TensorRT accepts: {'; '.join(problems[:3])}"
                            f"{f' (+{len(problems) - 3} more)' if len(problems) > 3 else ''}")
    return count
