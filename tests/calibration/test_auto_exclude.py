"""--auto-exclude: layer-wise blame finds the layers INT8 breaks, and the search keeps them in FP32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.preprocess import PreprocessSpec
from drtrt.task import TaskSpec

pytestmark = pytest.mark.numeric

runner = CliRunner()
# The tiny 2-epoch model's grade probabilities differ by ~1e-3 between classes, so its task
# metrics reshuffle under any perturbation even where no grade changes: these tests judge the
# search on the model-vs-model checks and let metric drops through.
LOOSE = (("logit_rel_delta", "0.2"), ("metric_drop", "1"))


TARGET_CONV = "/model/shared/block2/block2.0/Conv"


@pytest.fixture(scope="module")
def quantiser(tiny_onnx, synth_root, tmp_path_factory):
    """A stand-in INT8 quantiser (ONNX Runtime QDQ, as SPEC §7 describes) with one harmful layer:
    unless TARGET_CONV is excluded, its weight scale is multiplied by -3 after quantisation."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from drtrt.calibration.graph import read_info, write_info
    from drtrt.data.idrid import read_idrid
    from drtrt.verify.items import items_from_samples

    out = tmp_path_factory.mktemp("quant")
    items = list(items_from_samples(read_idrid(synth_root).select(), PreprocessSpec(size=64), TaskSpec()))
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
        write_info(proto, read_info(proto).derive("int8"))
        onnx.save(proto, str(path))
        return path

    return quantise, items


def test_layerwise_blame_finds_the_harmful_layer(tiny_onnx, quantiser):
    from drtrt.calibration.layerwise import layer_errors, rank_nodes

    quantise, items = quantiser
    model = quantise(())
    blames = rank_nodes(model, layer_errors(tiny_onnx, model, [it.tensor[None] for it in items[:3]]))
    assert blames[0].node == TARGET_CONV and blames[0].blame > 0.9          # output ≈ -3x its FP32 value
    assert all(0 <= b.error <= 1 for b in blames) and blames[1].blame < 0.9


def test_auto_exclude_keeps_the_harmful_layer_out_and_passes(tiny_onnx, quantiser):
    from drtrt.calibration.auto_exclude import auto_exclude, AutoExcludeConfig

    quantise, items = quantiser
    cfg = AutoExcludeConfig(step=1, max_rounds=3, thresholds=LOOSE)
    result = auto_exclude(tiny_onnx, quantise, items, cfg)
    assert result.passed and result.excluded == (TARGET_CONV,), result.to_dict()
    assert result.rounds[0]["passed"] is False and result.rounds[-1]["passed"] is True
    assert "max |Δ| lesion_logits / max |ref|" in " ".join(result.rounds[0]["failing"])


def test_auto_exclude_says_when_it_cannot(tiny_onnx, quantiser):
    from drtrt.calibration.auto_exclude import auto_exclude, AutoExcludeConfig

    quantise, items = quantiser
    always_broken = lambda exclude: quantise((), harmful=True)   # noqa: E731 - ignores what it is told
    cfg = AutoExcludeConfig(step=2, max_rounds=2, thresholds=LOOSE)
    result = auto_exclude(tiny_onnx, always_broken, items, cfg)
    assert not result.passed and len(result.rounds) == 3 and result.excluded == ()
    assert all(r["action"].startswith("set aside") for r in result.rounds[1:])       # trials that did not help
    assert "still fails the gate after 3 quantisation(s)" in result.message


def test_auto_exclude_with_drtrt_calibration_writes_model_and_record(tiny_onnx, synth_root, tmp_path):
    from drtrt.data.idrid import read_idrid
    from drtrt.model_info import ModelInfo as Info
    from drtrt.runtime.backends.ort import OrtRunner
    from drtrt.calibration.auto_exclude import auto_exclude_int8, AutoExcludeConfig

    gate = read_idrid(synth_root).select(split="test")
    out = tmp_path / "model-int8.onnx"
    result = auto_exclude_int8(tiny_onnx, out, synth_root, gate, images=8,
                               cfg=AutoExcludeConfig(max_rounds=1, thresholds=LOOSE))
    assert result.passed and result.model == out and result.rounds[0]["action"] == "first quantisation"
    with OrtRunner(out) as runner:
        assert isinstance(runner.info, Info) and runner.info.precision == "int8"
    record = json.loads(out.with_suffix(".auto-exclude.json").read_text())
    assert record["passed"] and record["excluded"] == []


def test_calibrate_auto_exclude_command(tiny_onnx, synth_root, tmp_path):
    out = tmp_path / "model.int8.onnx"
    args = ["calibrate", "--onnx", str(tiny_onnx), "--out", str(out), "--data", str(synth_root), "--images", "8",
            "--holdout", "4", "--auto-exclude", "--threshold", "metric_drop=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "INT8 passes the gate with 0 node(s)" in result.output and out.is_file()
    record = json.loads(out.with_suffix(".auto-exclude.json").read_text())
    assert record["rounds"][0]["passed"]


def test_a_failed_search_moves_the_model_aside_like_a_failed_gate(tiny_onnx, synth_root, tmp_path):
    """Exit 4 and *.rejected.onnx, whether the exclusions were given or searched."""
    out = tmp_path / "model.int8.onnx"
    args = ["calibrate", "--onnx", str(tiny_onnx), "--out", str(out), "--data", str(synth_root), "--images", "8",
            "--holdout", "4", "--auto-exclude", "--threshold", "logit_rel_delta=0", "--threshold", "metric_drop=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 4, result.output
    assert "still fails the gate" in result.output and "misses the accuracy gate" in result.output
    assert not out.exists() and (tmp_path / "model.int8.rejected.onnx").is_file()
