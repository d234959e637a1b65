"""drtrt parity: comparison statistics, thresholds, and the gate end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.errors import ConfigError
from drtrt.manifest import ModelInfo
from drtrt.preprocess import PreprocessSpec
from drtrt.verify.compare import AgreementAccumulator, DeltaStats
from drtrt.verify.thresholds import DEFAULT_THRESHOLDS, ParityThresholds, judge, parse_overrides, thresholds_for

runner = CliRunner()


def perturb_onnx(src: Path, dst: Path, scale: float = 0.5, seed: int = 0) -> Path:
    """A deliberately broken candidate: every conv weight times (1 + scale * N(0, 1)); metadata kept."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    weights = {n.input[1] for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if init.name in weights and arr.dtype == np.float32:
            noisy = (arr * (1 + scale * rng.standard_normal(arr.shape))).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def broken_onnx(tiny_onnx, tmp_path_factory) -> Path:
    return perturb_onnx(tiny_onnx, tmp_path_factory.mktemp("broken") / "broken.onnx")


def test_delta_stats_match_numpy():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 5, 40, 40)).astype(np.float32)
    cand = ref + rng.standard_normal(ref.shape).astype(np.float32) * 1e-3
    stats = DeltaStats()
    stats.update(ref[:2], cand[:2])
    stats.update(ref[2:], cand[2:])
    delta = np.abs(cand.astype(np.float64) - ref)
    out = stats.result()
    assert out["max"] == pytest.approx(delta.max())
    assert out["mean"] == pytest.approx(delta.mean())
    assert np.quantile(delta, 0.99) <= out["p99"] <= np.quantile(delta, 0.99) * 1.03   # bin upper edge
    assert out["max_rel"] == pytest.approx(delta.max() / np.abs(ref).max())
    cand[0, 0, 0, 0] = np.nan
    stats.update(ref, cand)
    assert stats.result()["nonfinite"] == 1


def test_agreement_counts_flips_confusion_and_mask_dice():
    grades = np.eye(5, dtype=np.float32)[[0, 2, 3, 4]]           # reference grades 0, 2, 3, 4
    cand_grades = np.eye(5, dtype=np.float32)[[0, 1, 3, 4]]      # image 1: 2 -> 1, a referable flip
    ref_masks = np.zeros((4, 5, 8, 8), np.float32)
    ref_masks[:, 0] = 1
    ref_masks[:, 1, :4] = 2                                     # EX on the top half of every image
    cand_masks = ref_masks.copy()
    cand_masks[3, 1, :2] = 0                                    # image 3 misses half of its EX
    acc = AgreementAccumulator(keep_worst=2)
    acc.update({"grade_logits": grades, "lesion_logits": ref_masks},
               {"grade_logits": cand_grades, "lesion_logits": cand_masks}, ["a", "b", "c", "d"])
    result = acc.result()
    assert result.grade_agreement == 0.75 and result.referable_agreement == 0.75
    assert result.confusion[2][1] == 1 and np.trace(np.array(result.confusion)) == 3
    tp, fp, fn = 4 * 32 - 16, 0, 16
    assert result.lesions["dice_EX"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result.pixel_agreement == pytest.approx(1 - 16 / (4 * 64))
    assert result.lesion_pixels["EX"] == {"reference": 4 * 32, "candidate": 4 * 32 - 16}
    assert [w.name for w in result.worst] == ["b", "d"]         # referable flip first, then the worst mask
    assert result.worst[1].mask_dice == pytest.approx(2 * 16 / (2 * 16 + 16))


def test_flips_carry_the_references_margin_and_the_failed_gate_explains_them():
    # reference: image a decided (probabilities ~0.97 / 0.01), image b a near-tie between grades 3 and 4
    ref = np.array([[5, 0, 0, 0, 0], [0, 0, 0, 2.0, 2.01]], np.float32)
    cand = np.array([[0, 5, 0, 0, 0], [0, 0, 0, 2.01, 2.0]], np.float32)
    acc = AgreementAccumulator()
    acc.update({"grade_logits": ref}, {"grade_logits": cand}, ["a", "b"])
    result = acc.result()
    gaps = {f["image"]: f["reference_top2_gap"] for f in result.grade_flips}
    assert gaps["a"] == pytest.approx(0.96, abs=0.01) and gaps["b"] == pytest.approx(0.0049, abs=1e-3)
    assert result.near_tie_flips == 1 and result.to_dict()["near_tie_flips"] == 1
    check = next(c for c in judge(result, {}, ParityThresholds(grade_agreement=0.97)) if c.name == "grade agreement")
    assert not check.passed
    assert check.note.startswith("2 flip(s) in 2 images; 1 where the reference's top-two grade probabilities")
    assert "with 2 images one flip costs 50.0 points" in check.note and "at least 34 images" in check.note
    decided = AgreementAccumulator()
    decided.update({"grade_logits": ref}, {"grade_logits": ref}, ["a", "b"])
    assert decided.result().grade_flips == [] and all(c.note == "" for c in judge(decided.result(), {}, ParityThresholds()))


def test_missing_output_is_an_error():
    from drtrt.errors import ArtefactError

    acc = AgreementAccumulator()
    with pytest.raises(ArtefactError, match="no output 'lesion_logits'"):
        acc.update({"lesion_logits": np.zeros((1, 5, 4, 4))}, {"grade_logits": np.zeros((1, 5))}, ["x"])


def test_thresholds_per_precision_metadata_and_overrides():
    spec = PreprocessSpec(size=64)
    assert thresholds_for(ModelInfo(spec, precision="int8")).grade_agreement == 0.97
    assert thresholds_for(ModelInfo(spec, precision="fp16")).grade_agreement == 0.99
    assert thresholds_for(ModelInfo(spec)).logit_rel_delta == DEFAULT_THRESHOLDS["fp32"].logit_rel_delta
    embedded = ModelInfo(spec, precision="int8", extra=(("parity_thresholds", '{"lesion_dice": 0.9}'),))
    assert thresholds_for(embedded).lesion_dice == 0.9
    assert thresholds_for(embedded, {"lesion_dice": "0.8"}).lesion_dice == 0.8
    assert thresholds_for(ModelInfo(spec), parse_overrides(["logit_rel_delta=none"])).logit_rel_delta is None
    with pytest.raises(ConfigError, match="fraction"):
        ParityThresholds().override({"grade_agreement": 97})
    with pytest.raises(ConfigError, match="no default parity thresholds"):
        thresholds_for(ModelInfo(spec, precision="bf16"))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["grade_agreement"])


def test_judge_fails_on_a_metric_drop_and_explains_undefined_ones():
    acc = AgreementAccumulator()
    logits = np.eye(5, dtype=np.float32)[[1, 2]]
    acc.update({"grade_logits": logits}, {"grade_logits": logits}, ["a", "b"])
    deltas = {"accuracy": {"reference": 0.8, "candidate": 0.7, "drop": 0.1},
              "auc": {"reference": float("nan"), "candidate": float("nan"), "drop": float("nan")}}
    checks = {c.name: c for c in judge(acc.result(), deltas, ParityThresholds())}
    assert checks["grade agreement"].passed and not checks["accuracy drop"].passed
    assert checks["auc drop"].passed and checks["auc drop"].note == "undefined on this set"


def _parity(tmp_path: Path, *args: str):
    report, out = tmp_path / "parity.html", tmp_path / "parity.json"
    result = runner.invoke(app, ["parity", *args, "--report", str(report), "--json", str(out)])
    return result, (json.loads(out.read_text()) if out.exists() else None), report


def test_fp32_onnx_passes_against_its_checkpoint(tiny_run, tiny_onnx, synth_root, tmp_path):
    result, data, report = _parity(tmp_path, "--reference", str(tiny_run / "best.pt"), "--candidate", str(tiny_onnx),
                                   "--data", str(synth_root), "--split", "all")
    assert result.exit_code == 0, result.output
    cand = data["candidates"][0]
    assert data["passed"] and cand["precision"] == "fp32" and data["source"]["n_images"] == 18
    assert cand["agreement"]["grade_agreement"] == 1.0 and cand["agreement"]["referable_agreement"] == 1.0
    assert cand["agreement"]["logits"]["lesion_logits"]["max"] < 1e-4
    assert all(d["drop"] == pytest.approx(0, abs=1e-6) for d in cand["metric_deltas"].values() if d["drop"] is not None)
    assert {"accuracy", "macro_f1", "mean_dice", "referable_sensitivity"} <= set(cand["metric_deltas"])
    assert "PASS" in report.read_text()


def test_perturbed_candidate_fails_with_a_clear_report(tiny_run, tiny_onnx, broken_onnx, synth_root, tmp_path):
    result, data, report = _parity(tmp_path, "--reference", str(tiny_run / "best.pt"), "--candidate", str(tiny_onnx),
                                   "--candidate", str(broken_onnx), "--data", str(synth_root), "--split", "all")
    assert result.exit_code == 2, result.output
    good, bad = data["candidates"]
    assert good["passed"] and not bad["passed"] and not data["passed"]
    failed = {c["name"] for c in bad["checks"] if not c["passed"]}
    assert "max |Δ| lesion_logits / max |ref|" in failed
    assert "FAIL broken.onnx" in " ".join(result.output.split())
    html = report.read_text()
    assert "FAIL" in html and html.count("data:image/jpeg;base64,") >= 3 * 6    # worst cases: input + 2 overlays
    assert "candidate lesions" in html


def test_gate_failure_on_agreement_alone(tiny_run, broken_onnx, synth_root, tmp_path):
    """With the elementwise bound switched off, the perturbed model still fails on what it predicts."""
    result, data, _ = _parity(tmp_path, "--reference", str(tiny_run / "best.pt"), "--candidate", str(broken_onnx),
                              "--data", str(synth_root), "--split", "all", "--threshold", "logit_rel_delta=none")
    assert result.exit_code == 2, result.output
    failed = {c["name"] for c in data["candidates"][0]["checks"] if not c["passed"]}
    assert failed & {"grade agreement", "referable agreement", "mean lesion Dice vs reference"}, failed


def test_usage_errors_exit_1(tiny_onnx, synth_root, tmp_path):
    result = runner.invoke(app, ["parity", "--candidate", str(tiny_onnx), "--data", str(synth_root)])
    assert result.exit_code == 1 and "--reference" in result.output
    result = runner.invoke(app, ["parity", "--golden", str(tmp_path), "--reference", str(tiny_onnx),
                                 "--candidate", str(tiny_onnx)])
    assert result.exit_code == 1 and "do not combine" in result.output


def test_preprocessing_mismatch_is_refused(tiny_onnx, synth_root, tmp_path):
    import onnx

    from drtrt.export.onnx_export import set_metadata

    proto = onnx.load(str(tiny_onnx))
    meta = {p.key: p.value for p in proto.metadata_props}
    info = ModelInfo.from_metadata(meta)
    set_metadata(proto, ModelInfo(PreprocessSpec(size=64, margin=0.1), model_config=info.model_config).to_metadata())
    other = tmp_path / "other.onnx"
    onnx.save(proto, str(other))
    result = runner.invoke(app, ["parity", "--reference", str(tiny_onnx), "--candidate", str(other),
                                 "--data", str(synth_root)])
    assert result.exit_code == 1 and "preprocesses differently" in result.output


TARGET_CONV = "/model/shared/block2/block2.0/Conv"


@pytest.fixture(scope="module")
def quantiser(tiny_onnx, synth_root, tmp_path_factory):
    """A stand-in INT8 quantiser (ONNX Runtime QDQ, as SPEC §7 describes) with one harmful layer:
    unless TARGET_CONV is excluded, its weight scale is multiplied by -3 after quantisation."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from drtrt.export.onnx_export import set_metadata
    from drtrt.idrid import read_idrid
    from drtrt.verify.golden import items_from_samples

    out = tmp_path_factory.mktemp("quant")
    items = list(items_from_samples(read_idrid(synth_root).select(), PreprocessSpec(size=64)))
    quant_pre_process(str(tiny_onnx), str(out / "pre.onnx"), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(items[:8])

        def get_next(self):
            item = next(self.it, None)
            return None if item is None else {"image": item.tensor[None]}

    def quantise(exclude: tuple[str, ...], harmful: bool = True) -> Path:
        path = out / f"int8_{len(exclude)}_{harmful}.onnx"
        quantize_static(str(out / "pre.onnx"), str(path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_exclude=list(exclude),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        proto = onnx.load(str(path))
        if harmful and TARGET_CONV not in exclude:
            conv = next(n for n in proto.graph.node if n.name == TARGET_CONV)
            dq = next(n for n in proto.graph.node if n.output[0] == conv.input[1])
            init = next(i for i in proto.graph.initializer if i.name == dq.input[1])
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(-3), init.name))
        set_metadata(proto, {"drtrt.precision": "int8"})
        onnx.save(proto, str(path))
        return path

    return quantise, items


def test_layerwise_blame_finds_the_harmful_layer(tiny_onnx, quantiser):
    from drtrt.verify.layerwise import layer_errors, rank_nodes

    quantise, items = quantiser
    model = quantise(())
    blames = rank_nodes(model, layer_errors(tiny_onnx, model, [it.tensor[None] for it in items[:3]]))
    assert blames[0].node == TARGET_CONV and blames[0].blame > 0.9          # output ≈ -3x its FP32 value
    assert all(0 <= b.error <= 1 for b in blames) and blames[1].blame < 0.9


def test_auto_exclude_keeps_the_harmful_layer_out_and_passes(tiny_onnx, quantiser):
    from drtrt.verify.auto_exclude import AutoExcludeConfig, auto_exclude

    quantise, items = quantiser
    cfg = AutoExcludeConfig(step=1, max_rounds=3, thresholds=(("logit_rel_delta", "0.2"),))
    result = auto_exclude(tiny_onnx, quantise, items, cfg)
    assert result.passed and result.excluded == (TARGET_CONV,), result.to_dict()
    assert result.rounds[0]["passed"] is False and result.rounds[-1]["passed"] is True
    assert "max |Δ| lesion_logits / max |ref|" in " ".join(result.rounds[0]["failing"])


def test_auto_exclude_says_when_it_cannot(tiny_onnx, quantiser):
    from drtrt.verify.auto_exclude import AutoExcludeConfig, auto_exclude

    quantise, items = quantiser
    always_broken = lambda exclude: quantise((), harmful=True)   # noqa: E731 - ignores what it is told
    cfg = AutoExcludeConfig(step=2, max_rounds=2, thresholds=(("logit_rel_delta", "0.2"),))
    result = auto_exclude(tiny_onnx, always_broken, items, cfg)
    assert not result.passed and len(result.rounds) == 3 and result.excluded == ()
    assert all(r["action"].startswith("set aside") for r in result.rounds[1:])       # trials that did not help
    assert "still fails the gate after 3 quantisation(s)" in result.message


@pytest.fixture(scope="module")
def tiny_fp16_int8(tiny_onnx, synth_root, tmp_path_factory):
    """FP16 and INT8 of the tiny model, made by drtrt's own conversion and calibration."""
    from drtrt.calibration.quantize import calibrate_int8
    from drtrt.export.precision import convert_fp16

    out = tmp_path_factory.mktemp("precision")
    fp16 = convert_fp16(tiny_onnx, out / "model-fp16.onnx")
    int8 = calibrate_int8(tiny_onnx, out / "model-int8.onnx", synth_root, images=12).path
    return fp16, int8


def test_fp16_and_int8_pass_against_the_checkpoint(tiny_run, tiny_onnx, tiny_fp16_int8, synth_root, tmp_path):
    """FP32 and FP16 with every default threshold. INT8 with the default agreement and Dice
    thresholds but a looser metric drop: this 2-epoch model's grade probabilities differ by ~1e-3
    between classes, so the grade ranking (ROC-AUC) reshuffles under any INT8 perturbation even
    where no grade changes (the demo model's figures are in docs/benchmarks.md)."""
    fp16, int8 = tiny_fp16_int8
    common = ("--reference", str(tiny_run / "best.pt"), "--data", str(synth_root), "--split", "all")
    result, data, _ = _parity(tmp_path, *common, "--candidate", str(tiny_onnx), "--candidate", str(fp16))
    assert result.exit_code == 0, result.output
    assert [c["precision"] for c in data["candidates"]] == ["fp32", "fp16"] and data["passed"]
    assert data["candidates"][1]["agreement"]["logits"]["lesion_logits"]["max"] > 0     # really a different model
    result, data, _ = _parity(tmp_path, *common, "--candidate", str(int8), "--threshold", "metric_drop=0.2")
    assert result.exit_code == 0, result.output
    cand = data["candidates"][0]
    assert cand["precision"] == "int8" and cand["passed"]
    assert cand["thresholds"]["grade_agreement"] == 0.97 and cand["thresholds"]["logit_rel_delta"] is None
    assert cand["thresholds"]["lesion_dice"] == 0.95 and cand["agreement"]["grade_agreement"] >= 0.97


def test_auto_exclude_with_drtrt_calibration_writes_model_and_record(tiny_onnx, synth_root, tmp_path):
    from drtrt.idrid import read_idrid
    from drtrt.manifest import ModelInfo as Info
    from drtrt.runtime.ort import OrtRunner
    from drtrt.verify.auto_exclude import AutoExcludeConfig, auto_exclude_int8

    gate = read_idrid(synth_root).select(split="test")
    out = tmp_path / "model-int8.onnx"
    result = auto_exclude_int8(tiny_onnx, out, synth_root, gate, images=8, cfg=AutoExcludeConfig(max_rounds=1))
    assert result.passed and result.model == out and result.rounds[0]["action"] == "first quantisation"
    with OrtRunner(out) as runner:
        assert isinstance(runner.info, Info) and runner.info.precision == "int8"
    record = json.loads(out.with_suffix(".auto-exclude.json").read_text())
    assert record["passed"] and record["excluded"] == []


def test_calibrate_auto_exclude_command(tiny_onnx, synth_root, tmp_path):
    out = tmp_path / "model.int8.onnx"
    args = ["calibrate", "--onnx", str(tiny_onnx), "--out", str(out), "--data", str(synth_root), "--images", "8",
            "--holdout", "4", "--auto-exclude"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "INT8 passes the gate with 0 node(s)" in result.output and out.is_file()
    record = json.loads(out.with_suffix(".auto-exclude.json").read_text())
    assert record["rounds"][0]["passed"]
