"""INT8 Q/DQ models on ONNX Runtime's CPU provider: activations shifted to unsigned at load (issue 26), so
every quantised convolution, concat and max-pool runs on integer kernels, the function unchanged and the
file on disk untouched (still what TensorRT accepts)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from drtrt.fileio import sha256_file  # noqa: E402
from drtrt.runtime.backends.ort import OrtRunner, open_session  # noqa: E402
from drtrt.runtime.backends.ort_u8 import shiftable_zero_points, unsigned_activations  # noqa: E402


@pytest.fixture(scope="module")
def tiny_int8(tiny_onnx, synth_root, tmp_path_factory):
    from drtrt.calibration.quantize import calibrate_int8

    return calibrate_int8(tiny_onnx, tmp_path_factory.mktemp("int8") / "model-int8.onnx", synth_root, images=12,
                          bias_correction=0)


def optimised_nodes(model, tmp_path) -> collections.Counter:
    """Node types of the graph ONNX Runtime runs (level ALL, CPU provider)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def test_cpu_runner_runs_every_quantised_conv_concat_and_pool_on_integer_kernels(tiny_int8, tmp_path):
    path = tiny_int8.path
    written = onnx.load(str(path))
    convs = [n.name for n in written.graph.node if n.op_type == "Conv"]
    float_convs = [c for c in convs if c in tiny_int8.excluded]
    pools = sum(n.op_type == "MaxPool" for n in written.graph.node)
    concats = sum(n.op_type == "Concat" for n in written.graph.node)
    sha = sha256_file(path)
    runner = OrtRunner(path, threads=1)
    with runner:
        assert runner.unsigned
    after = optimised_nodes(unsigned_activations(path), tmp_path)
    assert after["QLinearConv"] == len(convs) - len(float_convs) and after["Conv"] == len(float_convs)
    assert after["NhwcMaxPool"] == pools and after["MaxPool"] == 0
    assert after["QLinearConcat"] == concats and after["Concat"] == 0
    before = optimised_nodes(path, tmp_path)          # as written: ONNX Runtime leaves some of them in FP32
    assert before["MaxPool"] + before["Concat"] > 0 and before["QLinearConv"] < after["QLinearConv"]
    assert sha256_file(path) == sha                   # nothing written back
    from drtrt.calibration.quantize import check_tensorrt_qdq

    assert check_tensorrt_qdq(onnx.load(str(path))) == tiny_int8.qdq_nodes


def test_the_shift_keeps_the_function_exactly(tiny_int8):
    """Without ONNX Runtime's fusions each Q/DQ runs as written: shifted and unshifted models give the
    same bits (q_u8 = q_s8 + 128, both saturating at the same 256 levels)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32) * 2
    written = open_session(tiny_int8.path, threads=1, optimize=False).run(None, {"image": x})
    shifted = open_session(unsigned_activations(tiny_int8.path), threads=1, optimize=False).run(None, {"image": x})
    assert all(np.array_equal(a, b) for a, b in zip(written, shifted))
    with OrtRunner(tiny_int8.path, threads=1) as runner:   # fused: the grade the same, logits within rounding
        fused = runner.infer({"image": x})
    assert np.array_equal(fused["grade_logits"].argmax(1), written[0].argmax(1))


def test_fp32_models_run_as_written(tiny_onnx):
    assert unsigned_activations(tiny_onnx) is None
    with OrtRunner(tiny_onnx, threads=1) as runner:
        assert not runner.unsigned


def test_only_zero_points_of_activation_pairs_are_shifted():
    """A weight's zero point (even a scalar one), a Q read by something other than its DQ (here a graph
    output) and a non-zero zero point are left alone."""
    init = [numpy_helper.from_array(np.array(v, np.int8), k) for k, v in
            (("act_zp", 0), ("out_zp", 0), ("w_zp", 0), ("odd_zp", 3))]
    init += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.ones((2, 2, 1, 1), np.int8), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "act_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "act_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "s", "w_zp"], ["wf"]),
             helper.make_node("Conv", ["xf", "wf"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "s", "out_zp"], ["yq"]),
             helper.make_node("QuantizeLinear", ["y", "s", "odd_zp"], ["zq"]),
             helper.make_node("DequantizeLinear", ["zq", "s", "odd_zp"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("yq", TensorProto.INT8, [1, 2, 4, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 4, 4])], init)
    assert shiftable_zero_points(graph) == {"act_zp"}


def test_without_onnx_the_int8_model_runs_as_written(tiny_int8, monkeypatch):
    """A runtime-only install (no ``onnx``) runs the file as written: the same Q/DQ model, fewer fused
    nodes; never a half-rewritten graph."""
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)
    assert unsigned_activations(tiny_int8.path) is None
    x = np.zeros((1, 3, 64, 64), np.float32)
    with OrtRunner(tiny_int8.path, threads=1) as runner:
        assert not runner.unsigned and np.isfinite(runner.infer({"image": x})["grade_logits"]).all()
