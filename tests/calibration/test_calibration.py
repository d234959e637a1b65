"""INT8 calibration: image selection, the Q/DQ model, bias correction, the agreement gate, ``drtrt calibrate``.

The accuracy figures need a model whose outputs are not near ties: the conftest model (two
epochs) predicts no lesion at all, so :func:`trained_model` trains a slightly better tiny one
(width 1/16, 64x64, 60 epochs on 58 synthetic images, one torch thread), judged on 100 held-out images.

What is asserted about its INT8 agreement has a margin measured over 10 trainings (seeds 0-4, each
with oneDNN's native AVX-512 kernels and with ``ONEDNN_MAX_CPU_ISA=AVX2``, standing in for the other
CPUs of this machine kind): docs/reproducibility.md. Whether this tiny model passes the gate itself is
*not* asserted: at width 1/16 (4-32 channels) the verdict changes between CPUs (it passed in 8 of
those 10 runs; the others missed on two points of accuracy or macro-F1, or on 4 grade flips in 100). The gate passing is asserted on the demo's model (tests/cli/test_demo.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from drtrt.calibration.api import CalibrateConfig, calibrate
from drtrt.calibration.gate import judge
from drtrt.calibration.quantize import (EXCLUDE_GROUPS, GraphPrep, calibrate_int8, check_tensorrt_qdq, entropy_threshold,
                                        prepare_graph)
from drtrt.calibration.source import idrid_samples
from drtrt.calibration.source import (CalibrationSet, TensorReader, select_folder, select_idrid, split_folder,
                                      stratified_pick)
from drtrt.errors import ArtefactError, ConfigError
from drtrt.calibration.graph import read_info
from drtrt.model_info import ModelInfo
from drtrt.preprocess import PreprocessSpec, preprocess
from drtrt.verify.thresholds import thresholds_for

pytestmark = pytest.mark.numeric


def trained_model(tmp_path_factory) -> tuple[Path, Path]:
    """(synthetic IDRiD root, FP32 ONNX of a tiny model trained enough to find lesions).

    Built once per test session and cached on disk, so test_precision.py reuses it."""
    base = tmp_path_factory.getbasetemp() / "drtrt-trained-tiny"
    root, onnx_path = base / "data", base / "model.onnx"
    if onnx_path.exists():
        return root, onnx_path
    import torch

    from drtrt.train.checkpoint import export_checkpoint
    from drtrt.data.synth import write_synthetic_idrid
    from drtrt.train.losses import LossConfig
    from drtrt.train.model import ModelConfig
    from drtrt.train.train_config import TrainConfig
    from drtrt.train.trainer import train

    # 58 training images (calibration), 172 test images of which the gate judges 100
    write_synthetic_idrid(root, grading=190, segmentation=40, size=128, seed=3, test_fraction=0.75)
    # 60 epochs: at 40 (channels-last training) INT8 turned one held-out image from grade 2 to 3
    # (FP32 probabilities 0.50 / 0.35), and with 24 held-out images one flip misses the 97 % gate
    cfg = TrainConfig(epochs=60, batch_size=4, lr=0.05, device="cpu", val_fraction=0.0, augment=None,
                      model=ModelConfig(width=0.0625, batch_norm=True), preprocess=PreprocessSpec(size=64),
                      loss=LossConfig(beta=0.9999))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # many threads on a shared 2-core machine are 10x slower for these tiny convs
    try:
        train(cfg, root, base / "run", log=lambda msg: None)
    finally:
        torch.set_num_threads(threads)
    export_checkpoint(base / "run" / "best.pt", onnx_path)
    return root, onnx_path


def camera_folder(root: Path, folder: Path, count: int) -> Path:
    """A plain folder of ``count`` training images, as a clinic's camera would leave them."""
    folder.mkdir()
    for i, path in enumerate(select_idrid(root, count=count).images):
        shutil.copy(path, folder / f"photo_{i:02d}.jpg")
    return folder

def drtrt(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drtrt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return trained_model(tmp_path_factory)


@pytest.fixture(scope="session")
def int8_run(trained, tmp_path_factory):
    """``drtrt calibrate``'s API with the default settings, judged by the default gate (parity's INT8
    thresholds) and not enforced: see the module docstring."""
    root, fp32 = trained
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    return calibrate(CalibrateConfig(onnx=fp32, out=out, data=root, threads=1, gate=False))


# --- image selection ---------------------------------------------------------------------------

def test_stratified_pick_is_proportional_reproducible_and_covers_every_stratum():
    strata = {"0": list(range(60)), "2": list(range(100, 130)), "4": list(range(200, 210))}
    picked = stratified_pick(strata, 20, seed=1)
    assert len(picked) == 20 and len(set(picked)) == 20
    counts = {k: sum(p in v for p in picked) for k, v in strata.items()}
    assert counts == {"0": 12, "2": 6, "4": 2}
    assert stratified_pick(strata, 20, seed=1) == picked
    assert stratified_pick(strata, 20, seed=2) != picked
    tiny = stratified_pick({"a": list(range(97)), "b": [1000], "c": [2000]}, 3, seed=0)
    assert 1000 in tiny and 2000 in tiny and len(tiny) == 3
    assert sorted(stratified_pick(strata, 500, seed=0)) == sorted(sum(strata.values(), []))


def test_select_idrid_uses_only_the_training_split_and_hashes_the_images(synth_root, tmp_path):
    calib = select_idrid(synth_root, count=8, seed=0)
    assert len(calib) == 8
    assert all("Training Set" in str(p) for p in calib.images)
    assert set(calib.grade_counts()) >= {"no grade"}          # segmentation images are a stratum of their own
    assert calib.sha256 == select_idrid(synth_root, count=8, seed=0).sha256
    assert calib.sha256 != select_idrid(synth_root, count=8, seed=5).sha256
    copies = []
    for i, path in enumerate(calib.images[:3]):
        copies.append(tmp_path / f"img{i}.jpg")
        shutil.copy(path, copies[-1])
    same = CalibrationSet(tuple(copies), (None,) * 3, "copies")
    before = same.sha256
    copies[1].write_bytes(copies[1].read_bytes() + b"\0")
    assert CalibrationSet(tuple(copies), (None,) * 3, "copies").sha256 != before
    assert [row["sha256"] for row in same.listing()] == list(same.file_hashes)


def test_folder_split_keeps_held_out_images_out_of_calibration(synth_root, tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    for i, path in enumerate(select_idrid(synth_root, count=100).images):
        shutil.copy(path, folder / f"photo_{i:02d}.jpg")
    (folder / "notes.txt").write_text("not an image")
    calib, held = split_folder(folder, count=100, holdout=3, seed=0)
    assert len(held) == 3 and not set(held) & set(calib.images)
    assert len(calib) + len(held) == 15 and calib.origin.startswith("image folder")
    assert len(select_folder(folder, count=4)) == 4


def test_tensor_reader_feeds_the_runtime_preprocessing(synth_root):
    spec = PreprocessSpec(size=64)
    images = select_idrid(synth_root, count=3).images
    reader = TensorReader(images, ModelInfo(spec), batch_size=2)
    first = reader.get_next()["image"]
    assert first.shape == (2, 3, 64, 64) and first.dtype == np.float32
    np.testing.assert_array_equal(first[1], preprocess(images[1], spec).tensor)
    assert reader.get_next()["image"].shape == (1, 3, 64, 64) and reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["image"], first)


# --- the Q/DQ model ----------------------------------------------------------------------------

def test_graph_rewrites_do_not_change_the_fp32_outputs(trained, tmp_path):
    fp32 = trained[1]
    import onnxruntime as ort

    prepared = prepare_graph(fp32, tmp_path / "prepared.onnx", GraphPrep())
    ops = {n.op_type for n in onnx.load(str(prepared)).graph.node}
    assert "LeakyRelu" in ops and "Relu" not in ops
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})  # noqa: E731
    for a, b in zip(run(fp32), run(prepared)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_int8_model_is_symmetric_per_channel_qdq_with_heads_first_conv_and_softmax_in_fp32(int8_run, trained):
    proto = onnx.load(str(int8_run.path))
    assert check_tensorrt_qdq(proto) == int8_run.calibration.qdq_nodes > 100
    producers = {o: n for n in proto.graph.node for o in n.output}
    excluded = set(int8_run.calibration.excluded)
    kinds = {n.op_type for n in proto.graph.node if n.name in excluded}
    assert kinds == {"Conv", "Gemm", "Softmax", "LeakyRelu"} and len(excluded) == 6   # + the last conv and its ReLU
    source = onnx.load(str(trained[1]))                                # FP32: no Q/DQ between the nodes
    made_by = {o: n for n in source.graph.node for o in n.output}
    seg_head = made_by["lesion_logits"]
    relu = made_by[seg_head.input[0]]
    feeding = made_by[relu.input[0]]                                    # the head <- its ReLU <- the last conv
    assert feeding.op_type == "Conv" and {feeding.name, relu.name} <= excluded
    for node in proto.graph.node:
        if node.name in excluded and node.op_type in ("Conv", "Gemm"):
            weight = producers.get(node.input[1])
            assert weight is None, f"{node.name} weights should stay FP32, found {weight.op_type}"
    int32 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    assert not any(n.op_type == "DequantizeLinear" and n.input[0] in int32 for n in proto.graph.node)  # FP32 biases
    info = read_info(proto)
    meta = dict(info.extra)
    assert info.precision == "int8" and info.preprocess == read_info(onnx.load(str(trained[1]))).preprocess
    assert meta["calibration_sha256"] == int8_run.calibration.images.sha256
    assert int(meta["calibration_images"]) == len(int8_run.calibration.images) == 58
    assert json.loads(meta["calibration_excluded"]) == list(int8_run.calibration.excluded)
    record = json.loads(int8_run.calibration.record.read_text())
    assert record["sha256"] == meta["calibration_sha256"] and len(record["images"]) == 58
    assert all("Training Set" in row["image"] for row in record["images"])
    assert record["gate"]["passed"] == int8_run.report.passed and record["gate"]["enforced"] is False
    assert record["gate"]["report"]["agreement"]["n_images"] == int8_run.report.agreement.n_images == 100
    assert record["gate"]["too_small"] is None          # 100 images: one flip does not decide the verdict
    assert json.loads(meta["int8_bias_correction"]) == {k: v for k, v in record["bias_correction"].items()
                                                         if k != "seconds"}    # no wall time in the model's bytes
    assert record["bias_correction"]["images"] == 8 and record["bias_correction"]["convs"] > 20
    assert any("fewer than 300" in w for w in int8_run.warnings)


def test_int8_agrees_with_fp32_on_held_out_images(int8_run):
    """The gate is parity's (the same checks, the INT8 thresholds `drtrt parity` applies), and the figures
    clear bounds set below the lowest of 10 trainings (docs/reproducibility.md): grade 0.96-1.00,
    referable 0.99-1.00, pixel agreement 0.991-0.997, lesion Dice on decided pixels 0.989-0.999."""
    report = int8_run.report
    agreement = report.agreement
    assert agreement.n_images == 100 and report.precision == "int8"
    assert report.thresholds == thresholds_for(ModelInfo(PreprocessSpec(), precision="int8"))
    assert {c.name for c in report.checks} >= {"grade agreement", "referable agreement",
                                               "mean lesion Dice vs reference", "accuracy drop"}
    assert agreement.grade_agreement >= 0.9 and agreement.referable_agreement >= 0.95
    assert agreement.pixel_agreement >= 0.98 and agreement.lesions["decided_mean_dice"] >= 0.9
    assert sum(not np.isnan(agreement.lesions[f"dice_{c}"]) for c in "EX SE MA HE".split()) >= 3  # really compared
    assert 0 < agreement.logits["lesion_logits"]["max"] < 5


def test_bias_correction_puts_each_quantised_conv_mean_back_on_fp32s(trained, tmp_path):
    """What the correction promises, on the images it used: every corrected conv's output mean per channel
    equals the FP32 model's (before: off by up to a third of the channel's spread); only biases changed."""
    from onnx import numpy_helper

    from drtrt.calibration.bias_correction import _channel_means, _session, quantised_convs

    root, fp32 = trained
    plain = calibrate_int8(fp32, tmp_path / "plain.onnx", root, images=16, bias_correction=0)
    fixed = calibrate_int8(fp32, tmp_path / "fixed.onnx", root, images=16, bias_correction=4)
    assert plain.bias_correction is None and fixed.bias_correction.images == 4
    a, b = onnx.load(str(plain.path)), onnx.load(str(fixed.path))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    biases = {c.input[2] for c in quantised_convs(b)}
    for x, y in zip(a.graph.initializer, b.graph.initializer):
        if x.name not in biases:
            assert x.raw_data == y.raw_data, x.name
    info = read_info(onnx.load(str(fp32)))
    picked = fixed.images.images[::len(fixed.images) // 4][:4]
    feeds = [{"image": TensorReader([p], info).get_next()["image"]} for p in picked]
    names = [c.output[0] for c in quantised_convs(b)]
    ref = _session(onnx.load(str(fp32)), names)
    shifts = {}
    for label, proto in (("plain", a), ("fixed", b)):
        session = _session(proto, names)
        shifts[label] = max(float(np.abs(_channel_means(session, n, feeds) - _channel_means(ref, n, feeds)).max()
                                  / (np.abs(_channel_means(ref, n, feeds)).max() or 1)) for n in names)
    assert shifts["plain"] > 0.01 and shifts["fixed"] < 1e-4, shifts


def test_check_rejects_asymmetric_quantisation(trained, tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    root, fp32 = trained
    reader = CalibrationSet(select_idrid(root, 4).images, (None,) * 4, "t").reader(read_info(onnx.load(str(fp32))))
    quantize_static(str(fp32), str(tmp_path / "asym.onnx"), reader, quant_format=QuantFormat.QDQ)
    with pytest.raises(ArtefactError, match="not what TensorRT accepts"):
        check_tensorrt_qdq(onnx.load(str(tmp_path / "asym.onnx")))


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_write_valid_models(trained, tmp_path, method):
    root, fp32 = trained
    result = calibrate_int8(fp32, tmp_path / "m.onnx", root, method, images=12)
    assert dict(read_info(onnx.load(str(result.path))).extra)["calibration_method"] == method
    report = judge(fp32, result.path, idrid_samples(root, "test", 6), {}, threads=1)
    assert report.agreement.n_images == 6 and report.precision == "int8"


def test_entropy_threshold_clips_long_tails_only():
    rng = np.random.default_rng(0)
    hist, edges = np.histogram(np.abs(rng.standard_normal(1_000_000)), 2048)
    assert 3.0 < entropy_threshold(hist, edges) < edges[-1]
    hist, edges = np.histogram(rng.uniform(0, 1, 1_000_000), 2048)
    assert entropy_threshold(hist, edges) == pytest.approx(edges[-1], rel=0.01)


def test_unknown_exclusions_and_methods_are_refused(trained, tmp_path):
    root, fp32 = trained
    with pytest.raises(ConfigError, match="no node named"):
        calibrate_int8(fp32, tmp_path / "m.onnx", root, exclude=("heads", "/no/such/Conv"))
    with pytest.raises(ConfigError, match="calibration method"):
        CalibrateConfig(onnx=fp32, out=tmp_path / "m.onnx", data=root, method="kl")
    assert set(EXCLUDE_GROUPS) == {"first-conv", "last-conv", "heads", "softmax"}


def test_without_held_out_images_nothing_is_checked_and_it_says_so(trained, tmp_path):
    root, fp32 = trained
    folder = camera_folder(root, tmp_path / "three", 3)       # too few to set any aside
    out = tmp_path / "m.onnx"
    with pytest.raises(ConfigError, match="--auto-exclude needs held-out images"):
        calibrate(CalibrateConfig(onnx=fp32, out=out, images_dir=folder, auto_exclude=True))
    assert not out.exists()
    run = calibrate(CalibrateConfig(onnx=fp32, out=out, images_dir=folder))
    assert run.report is None and out.exists() and "vs FP32" not in run.summary()
    assert any("not checked against FP32" in w for w in run.warnings)


# --- the command -------------------------------------------------------------------------------

def test_cli_gate_failure_is_one_line_exit_4_and_moves_the_model_aside(trained, tmp_path):
    root, fp32 = trained
    out = tmp_path / "m.int8.onnx"
    proc = drtrt("calibrate", "--onnx", fp32, "--data", root, "--out", out, "--images", 12, "--min-dice", 0.9999)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "misses the accuracy gate" in errors[0] and "Dice" in errors[0], proc.stderr
    assert not out.exists() and (tmp_path / "m.int8.rejected.onnx").exists()
    record = json.loads((tmp_path / "m.int8.calibration.json").read_text())
    assert not record["gate"]["passed"] and record["gate"]["report"]["agreement"]["lesions_vs_reference"]["mean_dice"] < 0.9999
    report_only = drtrt("calibrate", "--onnx", fp32, "--data", root, "--out", out, "--images", 12, "--min-dice", 0.9999,
                        "--no-gate")
    assert report_only.returncode == 0 and "FAIL" in report_only.stdout and out.exists()


def test_cli_calibrates_on_a_camera_folder(trained, tmp_path):
    root, fp32 = trained
    folder = camera_folder(root, tmp_path / "camera", 20)
    out = tmp_path / "cam.int8.onnx"
    # 16 images, first conv in INT8; on 4 held-out images the verdict is chance (--no-gate), and it says so
    proc = drtrt("calibrate", "--onnx", fp32, "--images-dir", folder, "--out", out, "--holdout", 4,
                 "--exclude", "heads", "--exclude", "softmax", "--no-gate")

    assert proc.returncode == 0, proc.stderr
    assert "4 held-out images" in proc.stdout and "grade agreement" in proc.stdout
    assert "warning:" in proc.stderr and "fewer than 300" in proc.stderr
    assert "judged only 4 held-out image(s)" in proc.stderr and "at least 100 images" in proc.stderr
    record = json.loads(out.with_suffix(".calibration.json").read_text())
    assert record["origin"].startswith("image folder") and record["count"] == 16 and len(record["excluded"]) == 3
    bad = drtrt("calibrate", "--onnx", fp32, "--images-dir", folder, "--out", out, "--exclude", "/no/such/node")
    assert bad.returncode == 2 and "no node named" in bad.stderr and "Traceback" not in bad.stderr
