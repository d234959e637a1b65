"""DLA builds and loads against the TensorRT double (tests/fake_tensorrt/dla.py): where the layers run,
in which precision, and on which DLA core. TensorRT 11.4.1 (JetPack 7.2.2, AGX Orin) is strongly
typed: the ONNX's own types are the precision, and DLA takes no FP32 layer. Untested on hardware."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fake_tensorrt import install
from fake_tensorrt.devmem import FakeDevice, FakeGpu
from drtrt.cli import app
from drtrt.cli.common import ExitCode
from drtrt.errors import ArtefactError
from drtrt.export.build_config import BuildConfig
from drtrt.export.dla import dla_placement, placement_summary
from drtrt.export.staleness import stale_reason
from drtrt.export.trt_build import build_engine
from drtrt.runtime.backends import trt_compat as compat
from drtrt.runtime.backends.ort import OrtRunner
from drtrt.runtime.backends.trt import TrtRunner
from drtrt.runtime.backends.trt_manifest import manifest_path
from drtrt.task import TaskSpec

pytestmark = pytest.mark.emulation
INPUT_NAME = TaskSpec().input_name
AGX_ORIN = {"multiprocessors": 16, "board": "NVIDIA Jetson AGX Orin Developer Kit"}


def _build(onnx: Path, out: Path, **options):
    return build_engine(BuildConfig(onnx=onnx, out=out, **options))


def _float_output_types(onnx_path: Path) -> dict[str, set[int]]:
    """Node (layer) name → the element types of its float outputs, from ONNX shape inference."""
    import onnx

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    graph = proto.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    return {node.name or f"node_of_{node.output[0]}": {types[o] for o in node.output if types.get(o) in floats}
            for node in graph.node}


def test_dla_on_11_4_1_builds_the_fp16_onnx_and_records_where_layers_run(tiny_onnx, tmp_path, monkeypatch):
    """The FP32 ONNX built strongly typed would put no layer on DLA (all on the GPU with --gpu-fallback,
    yet its manifest said DLA fp16): drtrt builds the FP16 ONNX, every layer on DLA stores FP16, the
    layers the conversion keeps in FP32 (the heads) run on the GPU, and the manifest says which."""
    import onnx

    fake = install(monkeypatch, "11.4.1", gpu=FakeGpu(**AGX_ORIN))
    with pytest.raises(ArtefactError, match="FP32, and DLA runs FP16 or INT8 only.*cannot run on DLA and GPU fallback"):
        _build(tiny_onnx, tmp_path / "strict.engine", precision="fp16", max_batch=2, dla_core=1)
    result = _build(tiny_onnx, tmp_path / "dla.engine", precision="fp16", max_batch=2, dla_core=1, gpu_fallback=True)
    manifest = json.loads(manifest_path(result.engine).read_text())
    build, placement = fake.trt._builds[-1], manifest["build"]["placement"]
    assert build["device_type"] == "DLA" and build["dla_core"] == 1 and build["strongly_typed"]
    assert manifest["strongly_typed"] and manifest["precision"] == "fp16" and manifest["tensorrt"] == "11.4.1"
    built_from = Path(manifest["onnx"]["file"])
    assert built_from.name == "dla.fp16.onnx" and manifest["onnx"]["source"] == str(tiny_onnx)
    assert build["dla_layers"] and build["gpu_layers"]
    assert placement == {"device": "dla+gpu", "dla_core": 1, "dla_layers": len(build["dla_layers"]),
                         "gpu_layers": build["gpu_layers"], "checked_with": "IBuilderConfig.can_run_on_DLA"}
    types = _float_output_types(built_from)
    assert all(types[name] <= {onnx.TensorProto.FLOAT16} for name in build["dla_layers"])
    assert any(onnx.TensorProto.FLOAT in types[name] for name in build["gpu_layers"])
    assert f"{len(build['dla_layers'])} layers on DLA core 1" in result.summary()
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with TrtRunner(result.engine) as runner, OrtRunner(built_from) as reference:
        got, expected = runner.infer({INPUT_NAME: x}), reference.infer({INPUT_NAME: x})
    for name in expected:                              # the engine runs the FP16 ONNX's own types
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
    assert fake.trt._loads[-1] == {"built_for_dla_core": 1, "dla_core": 1}


def test_an_fp32_network_strongly_typed_has_no_layer_for_dla(tiny_onnx, monkeypatch):
    """What 11.4.1 makes of the FP32 ONNX with GPU fallback: an all-GPU FP32 engine. The placement
    drtrt records says so (never a DLA engine)."""
    fake = install(monkeypatch, "11.4.1", gpu=FakeGpu(**AGX_ORIN))
    trt = fake.trt
    feats = compat.features(trt)
    builder = trt.Builder(compat.make_logger(trt))
    network = builder.create_network(compat.network_flags(trt, feats))
    assert trt.OnnxParser(network, compat.make_logger(trt)).parse_from_file(str(tiny_onnx))
    config = builder.create_builder_config()
    config.default_device_type, config.DLA_core = trt.DeviceType.DLA, 0
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    placement = dla_placement(trt, network, config, 0)
    assert placement["device"] == "gpu" and placement["dla_core"] is None and placement["dla_layers"] == 0
    assert len(placement["gpu_layers"]) == network.num_layers
    assert placement_summary(placement) == f"no layer can run on DLA: all {network.num_layers} run on the GPU"


@pytest.mark.parametrize("version", ["10.3.0", "11.4.1"])
def test_the_runner_loads_a_dla_engine_on_the_core_it_was_built_for(version, tiny_onnx, tmp_path, monkeypatch):
    """TensorRT runs a DLA engine on the runtime's DLA core, core 0 when none is set (whatever core the
    build named): the runner sets the manifest's core before deserialising. Where the device has no
    DLA (an Orin Nano: same compute capability) the engine is refused in one line."""
    device = FakeDevice(FakeGpu(**AGX_ORIN))
    fake = install(monkeypatch, version, device=device)
    result = _build(tiny_onnx, tmp_path / "dla.engine", precision="fp16", max_batch=1, dla_core=1, gpu_fallback=True)
    trt = fake.trt
    assert trt.Runtime(compat.make_logger(trt)).deserialize_cuda_engine(result.engine.read_bytes()) is not None
    assert trt._loads[-1] == {"built_for_dla_core": 1, "dla_core": 0}          # what an unset core does
    x = np.zeros((1, 3, 64, 64), np.float32)
    with TrtRunner(result.engine) as runner:
        runner.infer({INPUT_NAME: x})
    assert trt._loads[-1] == {"built_for_dla_core": 1, "dla_core": 1}
    install(monkeypatch, version, gpu=FakeGpu(dla_cores=0, multiprocessors=4, board="NVIDIA Jetson Orin Nano"))
    with warnings.catch_warnings(), pytest.raises(ArtefactError, match="built for DLA core 1 but this device has 0"):
        warnings.simplefilter("ignore")                # "built on another Orin module" comes first
        TrtRunner(result.engine).activate()


def test_a_dla_engine_from_before_the_placement_record_is_rebuilt(tiny_onnx, tmp_path, monkeypatch):
    """A service's `drtrt build --if-stale` rebuilds a DLA engine whose manifest does not say where its
    layers run (on 11.4.1 it was the FP32 ONNX, all on the GPU)."""
    install(monkeypatch, "11.4.1", gpu=FakeGpu(**AGX_ORIN))
    cfg = BuildConfig(onnx=tiny_onnx, out=tmp_path / "dla.engine", precision="fp16", max_batch=1, dla_core=0,
                      gpu_fallback=True)
    build_engine(cfg)
    assert stale_reason(cfg) is None
    path = manifest_path(cfg.out)
    data = json.loads(path.read_text())
    del data["build"]["placement"]
    path.write_text(json.dumps(data))
    assert "before drtrt recorded which layers run on DLA" in stale_reason(cfg)


def test_cli_builds_for_dla_on_11_4_1_and_an_orin_nano_refuses_the_engine_in_one_line(tiny_onnx, photo_root, tmp_path,
                                                                                       monkeypatch):
    engine = tmp_path / "dla.engine"
    install(monkeypatch, "11.4.1", gpu=FakeGpu(**AGX_ORIN))
    result = CliRunner().invoke(app, ["build", "--onnx", str(tiny_onnx), "--out", str(engine), "--fp16",
                                      "--max-batch", "1", "--dla-core", "1", "--gpu-fallback"])
    assert result.exit_code == 0, result.output
    assert "converting model.onnx to FP16 first" in result.output and "layers on DLA core 1" in result.output
    install(monkeypatch, "11.4.1", gpu=FakeGpu(dla_cores=0, multiprocessors=4, board="NVIDIA Jetson Orin Nano"))
    image = next((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # "built on another Orin module"
        result = CliRunner().invoke(app, ["screen", str(image), "--model", str(engine)])
    assert result.exit_code == ExitCode.FAILED, result.output
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert len(lines) == 1 and "built for DLA core 1 but this device has 0 DLA core" in lines[0], result.output
