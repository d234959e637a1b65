"""FP16 ONNX: mixed-precision conversion, its metadata, agreement with FP32, ``drtrt fp16``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from test_calibration import trained_model

from drtrt.calibration.api import convert_fp16_checked
from drtrt.errors import ArtefactError, ConfigError
from drtrt.calibration.fp16 import convert_fp16, DEFAULT_KEEP_FP32_OPS
from drtrt.calibration.graph import head_nodes, read_info

pytestmark = pytest.mark.numeric


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_model(tmp_path_factory)


def _input_types(proto) -> dict[str, dict[str, int]]:
    """node name -> {input name: element type} after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return {n.name: {i: types.get(i) for i in n.input if i} for n in inferred.graph.node}


def test_fp16_keeps_io_heads_softmax_and_reductions_in_fp32(trained, tmp_path):
    fp32 = trained[1]
    out = convert_fp16(fp32, tmp_path / "model.fp16.onnx")
    proto = onnx.load(str(out))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == f32 for v in (*proto.graph.input, *proto.graph.output))
    inputs = _input_types(proto)
    nodes = {n.name: n for n in proto.graph.node}
    heads = set(head_nodes(proto))
    assert {nodes[h].op_type for h in heads} == {"Conv", "Gemm"}
    for name, node in nodes.items():
        if node.op_type in DEFAULT_KEEP_FP32_OPS or name in heads:
            assert set(inputs[name].values()) == {f32}, (name, inputs[name])
    convs = [n for n in nodes.values() if n.op_type == "Conv" and n.name not in heads]
    assert convs and all(inputs[c.name][c.input[1]] == f16 for c in convs)
    info = read_info(proto)
    assert info.precision == "fp16"
    assert info.preprocess == read_info(onnx.load(str(fp32))).preprocess
    kept = json.loads(dict(info.extra)["fp16_kept"])
    assert set(kept["nodes"]) == heads and kept["ops"] == sorted(DEFAULT_KEEP_FP32_OPS)
    assert dict(info.extra)["source_epoch"] == dict(read_info(onnx.load(str(fp32))).extra)["source_epoch"]
    onnx.checker.check_model(proto)


def test_fp16_runs_on_the_cpu_provider_close_to_fp32(trained, tmp_path):
    fp32 = trained[1]
    import onnxruntime as ort

    out = convert_fp16(fp32, tmp_path / "model.fp16.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})  # noqa: E731
    for ref, got in zip(run(fp32), run(out)):
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.abs(got - ref).max() < 0.05 * max(1.0, np.abs(ref).max())


def test_fp16_refuses_bad_inputs(trained, tmp_path):
    fp32 = trained[1]
    half = convert_fp16(fp32, tmp_path / "half.onnx")
    with pytest.raises(ConfigError, match="already fp16"):
        convert_fp16(half, tmp_path / "again.onnx")
    with pytest.raises(ConfigError, match="no node named"):
        convert_fp16(fp32, tmp_path / "x.onnx", keep_fp32_nodes=["/no/such/node"])
    with pytest.raises(ArtefactError, match="not found"):
        convert_fp16(tmp_path / "missing.onnx", tmp_path / "x.onnx")
    bare = onnx.load(str(fp32))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ArtefactError, match="no drtrt metadata"):
        convert_fp16(tmp_path / "bare.onnx", tmp_path / "x.onnx")


def test_fp16_agrees_with_fp32_on_held_out_images(trained, tmp_path):
    root, fp32 = trained
    run = convert_fp16_checked(fp32, tmp_path / "model.fp16.onnx", root, thresholds=(("lesion_dice", "0.98"),),
                               threads=1)
    report, agreement = run.report, run.report.agreement
    assert report.passed and report.thresholds.grade_agreement == 0.99 and report.thresholds.lesion_dice == 0.98
    assert agreement.n_images == 100 and agreement.grade_agreement >= 0.99
    assert agreement.lesions["decided_mean_dice"] >= 0.98 and agreement.lesions["mean_dice"] >= 0.95
    assert sum(not np.isnan(agreement.lesions[f"dice_{c}"]) for c in "EX SE MA HE".split()) >= 3
    assert agreement.logits["grade_logits"]["max"] < 0.1


def test_cli_fp16_reports_agreement_and_rejects_bad_thresholds(trained, tmp_path):
    root, fp32 = trained
    out = tmp_path / "model.fp16.onnx"
    cmd = [sys.executable, "-m", "drtrt.cli", "fp16", "--onnx", str(fp32), "--out", str(out), "--data", str(root)]
    proc = subprocess.run(cmd + ["--holdout", "6"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "FP16 vs FP32: 6 held-out images; grade agreement" in proc.stdout and out.exists()
    bad = subprocess.run(cmd + ["--threshold", "grade_agreement=97"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr                 # a usage error
    assert bad.stderr.strip().splitlines() == [line for line in bad.stderr.strip().splitlines() if "error:" in line]
    assert "must lie in [0, 1]" in bad.stderr
