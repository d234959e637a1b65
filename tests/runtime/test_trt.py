"""TensorRT build + runner against the test double (tests/fake_tensorrt), for 8.6, 10.x and 11.x.

No test here touches NVIDIA hardware: the double computes with ONNX Runtime. What makes it a
check of the real API is tests/fake_tensorrt/surface/, the public surface of NVIDIA's own
bindings wheels: the double refuses any attribute the emulated version lacks, and the tests at
the end of this file check the double and drtrt's TensorRT code against those files.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fake_tensorrt import VERSIONS, install, load_surface
from fake_tensorrt.devmem import FakeDevice, FakeGpu
from drtrt.errors import ArtefactError, BackendUnavailable, ConfigError
from drtrt.export.build_config import BuildConfig
from drtrt.export.trt_build import build_engine
from drtrt.runtime.backends.ort import OrtRunner
from drtrt.errors import ShapeError
from drtrt.runtime.backends.trt_manifest import manifest_path
from drtrt.runtime.backends.trt import TrtRunner
from drtrt.task import TaskSpec

INPUT_NAME = TaskSpec().input_name
# Every test here drives the test double's controls (versions, fake GPUs, its records of calls).
pytestmark = pytest.mark.emulation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_qdq_onnx(tiny_onnx, tmp_path_factory) -> Path:
    """The tiny model with Q/DQ nodes (ONNX Runtime's quantize_static), carrying drtrt int8 metadata."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter([{INPUT_NAME: rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.feeds, None)

    out = tmp_path_factory.mktemp("qdq") / "model.int8.onnx"
    quantize_static(str(tiny_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    meta = {p.key: p.value for p in onnx.load(str(tiny_onnx), load_external_data=False).metadata_props}
    meta.update({"drtrt.precision": "int8", "drtrt.calibration_sha256": "c" * 64})
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    return out


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRTRT_CACHE_DIR", str(tmp_path / "cache"))


def _build(onnx: Path, out: Path, **options):
    return build_engine(BuildConfig(onnx=onnx, out=out, **options))


class Recorder:
    """A BuildListener keeping every event."""

    def __init__(self, cancel_at: int | None = None):
        self.events, self.cancel_at = [], cancel_at

    def begin(self, description):
        self.events.append(("begin", description))

    def phase_start(self, name, parent, steps):
        self.events.append(("start", name, parent, steps))

    def step(self, name, step):
        self.events.append(("step", name, step))
        return self.cancel_at is None or len(self.events) < self.cancel_at

    def phase_finish(self, name):
        self.events.append(("finish", name))


# ------------------------------------------------------------------ build + run, per version

@pytest.mark.parametrize("version", [*VERSIONS, "8.5.2"])   # 8.5.2: its trt.nptype fails on NumPy 1.24-1.26
def test_build_then_run_matches_onnx_runtime(version, tiny_onnx, tmp_path, monkeypatch):
    fake = install(monkeypatch, version)
    recorder = Recorder()
    result = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", max_batch=2), listener=recorder)
    manifest = json.loads(manifest_path(result.engine).read_text())
    assert manifest["tensorrt"] == fake.trt.__version__ and manifest["precision"] == "fp32"
    assert manifest["gpu"] == {"name": "Orin", "compute_capability": "8.7", "total_memory": 8 << 30,
                               "multiprocessors": 8, "integrated": True,
                               "board": "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"}
    assert manifest["cuda"] == {"driver": "12.6", "runtime": "12.6", "library": "cuda-python"}
    assert manifest["profile"] == {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [2, 3, 64, 64]}}
    assert [t["name"] for t in manifest["io"]["outputs"]] == ["grade_logits", "lesion_logits"]
    assert manifest["io"]["inputs"] == [{"name": "image", "shape": [-1, 3, 64, 64], "dtype": "float32"}]
    assert manifest["strongly_typed"] is not version.startswith("8")     # 10.x and 11.x: strongly typed
    assert manifest["build"]["builder_flags"] == [] and "--max-batch 2" in manifest["build"]["command"]
    assert manifest["preprocess"]["size"] == 64 and len(manifest["onnx"]["sha256"]) == 64
    assert fake.trt._builds[-1]["pools"] == {"WORKSPACE": 2**30}
    # a new config has TF32 set (as the real one): cleared, so FP32 layers compute FP32 as ONNX Runtime does
    assert manifest["tf32"] is False and "TF32" not in fake.trt._builds[-1]["flags"]
    # the engine is TensorRT's plan byte for byte: no drtrt header in front of it
    assert result.engine.read_bytes().startswith(b"FAKE-TRT-PLAN")
    # IProgressMonitor from 10.x on; 8.x gets no events (the CLI shows a spinner)
    assert result.progress_reported is (not version.startswith("8"))
    assert recorder.events[0] == ("begin", f"building a TensorRT {fake.trt.__version__} engine for Orin")
    assert (len(recorder.events) > 1) is result.progress_reported

    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with OrtRunner(tiny_onnx) as ort_runner, TrtRunner(result.engine) as runner:
        assert runner.output_names == ("grade_logits", "lesion_logits") and runner.max_batch == 2
        assert runner.info == ort_runner.info
        for batch in (x[:1], x, x[1:]):           # dynamic batch within the profile, buffers reused
            expected, got = ort_runner.infer({INPUT_NAME: batch}), runner.infer({INPUT_NAME: batch})
            assert list(got) == ["grade_logits", "lesion_logits"]
            for name in expected:
                assert got[name].dtype == np.float32
                np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)
        with pytest.raises(ShapeError, match=r"batch 3 is outside the engine's optimisation profile \(1…2\)"):
            runner.infer({INPUT_NAME: np.zeros((3, 3, 64, 64), np.float32)})
        with pytest.raises(ShapeError, match="must be float32"):
            runner.infer({INPUT_NAME: x.astype(np.float64)})
        with pytest.raises(ShapeError, match=r"must have shape \[N, 3, 64, 64\], found \[1, 3, 32, 32\]"):
            runner.infer({INPUT_NAME: np.zeros((1, 3, 32, 32), np.float32)})
        with pytest.raises(ShapeError, match="expected inputs"):
            runner.infer({"images": x})
    assert not fake.device.allocations and not fake.device.pinned and not fake.device.streams
    used = {name for _, name in fake.trt._accessed}
    assert {"execute_async_v3", "set_input_shape", "set_tensor_address", "get_tensor_profile_shape",
            "build_serialized_network", "set_memory_pool_limit", "set_timing_cache"} <= used


@pytest.mark.parametrize("version", VERSIONS)
def test_int8_qdq_model_flags_per_version(version, tiny_qdq_onnx, tmp_path, monkeypatch):
    fake = install(monkeypatch, version)
    result = _build(tiny_qdq_onnx, tmp_path / "model.engine", precision="int8")
    manifest = json.loads(manifest_path(result.engine).read_text())
    expected_flags = ["INT8"] if version.startswith("8") else []     # 10+: the Q/DQ nodes are the precision
    assert manifest["build"]["builder_flags"] == expected_flags
    assert fake.trt._builds[-1]["flags"] == sorted(expected_flags)
    assert manifest["precision"] == "int8" and manifest["calibration_sha256"] == "c" * 64
    auto = _build(tiny_qdq_onnx, tmp_path / "auto.engine")      # precision read from the model: Q/DQ → int8
    assert auto.precision == "int8"
    with pytest.raises(ConfigError, match="Q/DQ"):
        _build(tiny_qdq_onnx, tmp_path / "x.engine", precision="fp16")
    with OrtRunner(tiny_qdq_onnx) as ort_runner, TrtRunner(result.engine) as runner:
        x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
        np.testing.assert_allclose(runner.infer({INPUT_NAME: x})["grade_logits"],
                                   ort_runner.infer({INPUT_NAME: x})["grade_logits"], rtol=1e-5, atol=1e-5)


def test_int8_without_qdq_calibrates_first(tiny_onnx, tiny_qdq_onnx, tmp_path, monkeypatch):
    install(monkeypatch, "10.3.0")
    with pytest.raises(ConfigError, match="--calib-data"):
        _build(tiny_onnx, tmp_path / "model.engine", precision="int8")
    calls = []

    def fake_calibrate(onnx, calib_data, out, log):
        calls.append((onnx, calib_data, out))
        return Path(shutil.copy(tiny_qdq_onnx, out.with_name("model.int8.onnx")))

    monkeypatch.setattr("drtrt.export.trt_build.calibrate", fake_calibrate)
    result = _build(tiny_onnx, tmp_path / "model.engine", precision="int8", calib_data=tmp_path)
    assert calls == [(tiny_onnx, tmp_path, tmp_path / "model.engine")]
    manifest = json.loads(manifest_path(result.engine).read_text())
    assert manifest["onnx"]["file"].endswith("model.int8.onnx") and manifest["onnx"]["source"] == str(tiny_onnx)
    assert "--onnx " + str(tmp_path / "model.int8.onnx") in manifest["build"]["command"]


def test_int8_calibrates_with_drtrt_calibration(tiny_onnx, photo_root, tmp_path, monkeypatch):
    pytest.importorskip("drtrt.calibration.quantize", reason="INT8 calibration (drtrt.calibration) not present")
    fake = install(monkeypatch, "8.6.1")
    messages = []
    result = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", precision="int8",
                                      calib_data=photo_root, max_batch=1), log=messages.append)
    manifest = json.loads(manifest_path(result.engine).read_text())
    assert result.onnx == tmp_path / "model.int8.onnx" and manifest["precision"] == "int8"
    assert len(manifest["calibration_sha256"]) == 64
    assert manifest["calibration_sha256"] == manifest["metadata"]["drtrt.calibration_sha256"]
    assert fake.trt._builds[-1]["flags"] == ["INT8"] and any("calibrat" in m for m in messages)


@pytest.mark.parametrize("version, flags", [("8.6.1", ["FP16", "OBEY_PRECISION_CONSTRAINTS"]), ("10.3.0", []),
                                            ("10.13.3", []), ("11.4.0", [])])
def test_fp16_builds_the_converted_onnx_on_every_version(version, flags, tiny_onnx, tmp_path, monkeypatch):
    """--fp16 builds the ONNX converted by drtrt on every version: strongly typed from 10 on; 8.6 has
    no strong typing: the FP16 flag, with the layers the conversion keeps in FP32 pinned there."""
    import onnx

    fake = install(monkeypatch, version)
    converted = []

    def fake_convert(onnx_path, out):   # stands in for drtrt.calibration.fp16.convert_fp16 (tested there)
        proto = onnx.load(str(onnx_path))
        next(p for p in proto.metadata_props if p.key == "drtrt.precision").value = "fp16"
        target = out.with_name("model.fp16.onnx")
        onnx.save(proto, str(target))
        converted.append(target)
        return target

    monkeypatch.setattr("drtrt.export.trt_build.convert_to_fp16", fake_convert)
    result = _build(tiny_onnx, tmp_path / "model.engine", precision="fp16")
    assert result.precision == "fp16" and fake.trt._builds[-1]["flags"] == sorted(flags)
    assert converted == [tmp_path / "model.fp16.onnx"]
    held = json.loads(manifest_path(result.engine).read_text())["build"]["fp32_layers"]
    assert bool(held) is version.startswith("8")     # this stand-in keeps every layer FP32: all pinned
    assert fake.trt._builds[-1]["fp16_layers"] == []


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.4.0"])
def test_fp16_same_numerics_on_every_version(version, tiny_onnx, tmp_path, monkeypatch):
    """The engine computes what ONNX Runtime computes on the FP16 ONNX, whatever TensorRT builds it.
    On 8.6 the double runs every layer TensorRT may put in FP16 in FP16: only the pinned ones stay FP32."""
    pytest.importorskip("onnx", reason="FP16 conversion needs the export extra (onnx)")
    fake = install(monkeypatch, version)
    result = _build(tiny_onnx, tmp_path / "model.engine", precision="fp16", max_batch=1)
    manifest = json.loads(manifest_path(result.engine).read_text())
    assert result.onnx == tmp_path / "model.fp16.onnx" and manifest["metadata"]["drtrt.precision"] == "fp16"
    assert manifest["strongly_typed"] is not version.startswith("8")
    if version.startswith("8"):
        assert "OBEY_PRECISION_CONSTRAINTS" in manifest["build"]["builder_flags"]
        held = set(manifest["build"]["fp32_layers"])
        assert any("Softmax" in name for name in held) and any("Reduce" in name for name in held)
        assert held.isdisjoint(fake.trt._builds[-1]["fp16_layers"])
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with OrtRunner(result.onnx) as fp16, TrtRunner(result.engine) as runner:
        assert runner.info.precision == "fp16"
        got, expected = runner.infer({INPUT_NAME: x}), fp16.infer({INPUT_NAME: x})
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-6)


def test_weakly_typed_fp16_without_pinning_drifts(tiny_onnx, tmp_path, monkeypatch, caplog):
    """What drtrt did before on 8.6, and what the double now shows: without pinned layers (or with
    constraints but no OBEY flag, which TensorRT ignores with a warning) the FP16 flag lets softmax and
    the heads store FP16, and the engine no longer matches the FP16 ONNX."""
    pytest.importorskip("onnx", reason="FP16 conversion needs the export extra (onnx)")
    from drtrt.runtime.backends import trt_compat

    fake = install(monkeypatch, "8.6.1")
    pinned = _build(tiny_onnx, tmp_path / "pinned.engine", precision="fp16", max_batch=1)
    with monkeypatch.context() as patch:
        patch.setattr(trt_compat, "hold_fp32", lambda trt, network, tensors: [])
        loose = _build(tiny_onnx, tmp_path / "loose.engine", precision="fp16", max_batch=1)
    assert {"grade_logits", "lesion_logits"} & {n.rsplit("/", 1)[-1] for n in fake.trt._builds[-1]["fp16_layers"]} \
        or len(fake.trt._builds[-1]["fp16_layers"]) > len(fake.trt._builds[-2]["fp16_layers"])
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with OrtRunner(pinned.onnx) as fp16, TrtRunner(loose.engine) as runner:
        got, expected = runner.infer({INPUT_NAME: x}), fp16.infer({INPUT_NAME: x})
        assert any(not np.allclose(got[n], expected[n], rtol=1e-6, atol=1e-6) for n in expected)
        assert all(np.array_equal(got[n].astype(np.float16).astype(np.float32), got[n]) for n in got)  # stored FP16
    original = trt_compat.apply_precision

    def without_obey(trt, config, feats, precision, dla=False):
        flags = original(trt, config, feats, precision, dla)
        config.clear_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        return [f for f in flags if f != "OBEY_PRECISION_CONSTRAINTS"]

    monkeypatch.setattr(trt_compat, "apply_precision", without_obey)
    with caplog.at_level("WARNING", logger="drtrt.tensorrt"):
        _build(tiny_onnx, tmp_path / "ignored.engine", precision="fp16", max_batch=1)
    assert "constraints are ignored" in caplog.text
    assert len(fake.trt._builds[-1]["fp16_layers"]) == len(fake.trt._builds[-2]["fp16_layers"])


def test_timing_cache_reused_per_gpu_and_tensorrt(tiny_onnx, tmp_path, monkeypatch):
    device = FakeDevice(FakeGpu())
    fake = install(monkeypatch, "10.3.0", device=device)
    first = _build(tiny_onnx, tmp_path / "a.engine")
    second = _build(tiny_onnx, tmp_path / "b.engine")
    assert not first.timing_cache_reused and second.timing_cache_reused
    assert second.timing_cache == first.timing_cache
    assert "orin-jetson-orin-nx-engineering-reference-developer-kit-8sms-sm87-trt10.3.0" in first.timing_cache.name
    assert fake.trt._builds[-1]["misses"] == 0 and fake.trt._builds[-1]["hits"] > 0
    fake = install(monkeypatch, "10.13.3", device=device)     # another TensorRT: its own cache
    third = _build(tiny_onnx, tmp_path / "c.engine")
    assert third.timing_cache != first.timing_cache and not third.timing_cache_reused
    install(monkeypatch, "10.3.0", gpu=FakeGpu(name="NVIDIA H100", major=9, minor=0))
    explicit = tmp_path / "my.cache"                           # a named file made for another GPU: not reused
    shutil.copy(first.timing_cache, explicit)
    shutil.copy(first.timing_cache.with_name(first.timing_cache.name + ".json"), tmp_path / "my.cache.json")
    messages = []
    result = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "d.engine", timing_cache=explicit), log=messages.append)
    assert not result.timing_cache_reused and any("made for" in m for m in messages)
    assert json.loads((tmp_path / "my.cache.json").read_text())["compute_capability"] == "9.0"
    from drtrt.export.timing_cache import timing_cache_path
    from drtrt.runtime.backends.cuda import GpuInfo

    gpu = GpuInfo("Orin", "8.7", 0, "12.6", "12.6", "cuda-python", 16, True, "NVIDIA Jetson AGX Orin Developer Kit")
    assert timing_cache_path(tmp_path / "new-folder", gpu, "10.3.0") == \
        tmp_path / "new-folder" / "orin-jetson-agx-orin-developer-kit-16sms-sm87-trt10.3.0.cache"
    nano = GpuInfo("Orin", "8.7", 0, "12.6", "12.6", "cuda-python", 4, True, "NVIDIA Jetson Orin Nano Developer Kit")
    assert timing_cache_path(tmp_path, nano, "10.3.0") != timing_cache_path(tmp_path, gpu, "10.3.0")   # one per module


def test_progress_monitor_can_cancel(tiny_onnx, tmp_path, monkeypatch):
    install(monkeypatch, "11.4.0")
    with pytest.raises(ArtefactError, match="cancelled"):
        build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "m.engine"), listener=Recorder(cancel_at=4))
    assert not (tmp_path / "m.engine").exists()


# ------------------------------------------------------------------ manifest checks before loading

@pytest.fixture()
def built(tiny_onnx, tmp_path, monkeypatch):
    device = FakeDevice(FakeGpu())
    install(monkeypatch, "10.3.0", device=device)
    return _build(tiny_onnx, tmp_path / "model.engine", max_batch=1).engine, device


def test_other_tensorrt_version_is_refused_with_rebuild_command(built, monkeypatch):
    engine, device = built
    install(monkeypatch, "11.4.0", device=device)
    with pytest.raises(ArtefactError) as info:
        TrtRunner(engine).activate()
    message = str(info.value)
    assert "TensorRT 10.3.0" in message and "TensorRT 11.4.0.106" in message and "drtrt build --onnx" in message
    assert "\n" not in message
    assert not device.allocations and not device.streams


def test_other_gpu_is_refused_or_warned(built, monkeypatch):
    engine, device = built
    install(monkeypatch, "10.3.0", gpu=FakeGpu(name="NVIDIA H100", major=9, minor=0))
    with pytest.raises(ArtefactError, match=r"compute capability 8\.7.*compute capability 9\.0"):
        TrtRunner(engine).activate()
    agx = FakeGpu(multiprocessors=16, total_memory=32 << 30, board="NVIDIA Jetson AGX Orin Developer Kit")
    install(monkeypatch, "10.3.0", gpu=agx)              # same name "Orin", same compute capability, another module
    with pytest.warns(UserWarning, match=r"built on Orin \(Jetson Orin NX .*8 SMs\), running on Orin \(Jetson AGX "
                                         r"Orin Developer Kit, 16 SMs\)"):
        runner = TrtRunner(engine)
        runner.activate()
    runner.deactivate()
    install(monkeypatch, "10.3.0", gpu=FakeGpu(driver_version=12020))       # the same module, an older CUDA
    with pytest.warns(UserWarning, match=r"built on CUDA 12\.6 \(the driver's\), this machine's driver runs CUDA 12\.2"):
        runner = TrtRunner(engine)
        runner.activate()
    runner.deactivate()



def test_a_second_engine_in_the_process_still_hears_tensorrt(built, monkeypatch):
    """TensorRT keeps the first logger it is given (the double does too): a second runner in the
    same process (parity of two engines, a service reloading) must still report TensorRT's words."""
    engine, device = built
    install(monkeypatch, "10.3.0", device=device)
    first = TrtRunner(engine)
    first.activate()
    try:
        broken = engine.with_name("broken.engine")
        broken.write_bytes(b"not a plan" + engine.read_bytes()[10:])
        shutil.copy(manifest_path(engine), manifest_path(broken))
        with pytest.raises(ArtefactError, match="magic tag does not match"):
            TrtRunner(broken, check_hash=False).activate()
    finally:
        first.deactivate()


def test_integrated_gpu_runs_zero_copy_and_discrete_stages(built, monkeypatch):
    """A Jetson's GPU shares the CPU's DRAM: the runner binds mapped host memory and copies nothing;
    a discrete GPU gets device buffers and pinned staging. Same outputs either way."""
    engine, device = built
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    outputs = {}
    for integrated in (True, False):
        fake_device = FakeDevice(FakeGpu(integrated=integrated))
        install(monkeypatch, "10.3.0", device=fake_device)
        with TrtRunner(engine) as runner:
            assert runner.zero_copy is integrated
            assert bool(fake_device.allocations) is not integrated            # no device buffers when mapped
            assert bool(fake_device.mapped) is integrated
            outputs[integrated] = runner.infer({INPUT_NAME: x})
        assert not fake_device.allocations and not fake_device.pinned and not fake_device.mapped
    for name in outputs[True]:
        np.testing.assert_array_equal(outputs[True][name], outputs[False][name])
    install(monkeypatch, "10.3.0", cuda="pycuda", device=FakeDevice(FakeGpu()))   # pycuda: no mapped memory here
    with TrtRunner(engine) as runner:
        assert not runner.zero_copy
    install(monkeypatch, "10.3.0", device=FakeDevice(FakeGpu()))
    with TrtRunner(engine, zero_copy=False) as runner:                             # forced off
        assert not runner.zero_copy


def test_damaged_or_unmanifested_engine_is_refused(built, monkeypatch):


    engine, device = built
    install(monkeypatch, "10.3.0", device=device)
    data = bytearray(engine.read_bytes())
    data[-1] ^= 0xFF
    engine.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="sha256"):
        TrtRunner(engine).activate()
    manifest_path(engine).unlink()
    with pytest.raises(ArtefactError, match="no manifest model.engine.json"):
        TrtRunner(engine).activate()


def test_predictor_picks_trt_for_engine_and_plan(built, photo_root, tiny_onnx, monkeypatch):
    from drtrt.runtime.predictor import Predictor
    from drtrt.runtime.registry import load_runner

    engine, device = built
    install(monkeypatch, "10.3.0", cuda="pycuda", device=device)   # the pycuda path, same fake GPU
    plan = engine.with_suffix(".plan")
    shutil.copy(engine, plan)
    shutil.copy(manifest_path(engine), manifest_path(plan))
    runner = load_runner(plan)
    assert isinstance(runner, TrtRunner) and runner.gpu.library == "pycuda"
    runner.deactivate()
    image = next((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    with Predictor(engine) as on_trt, Predictor(tiny_onnx) as on_ort:
        a, b = on_trt.screen(image), on_ort.screen(image)
    assert a.status == b.status == "graded"
    assert a.grade == b.grade and np.allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert not device.allocations


def test_an_engines_validation_record_names_the_onnx_it_was_built_from(built, photo_root, tiny_onnx, tmp_path,
                                                                       monkeypatch, caplog):
    """Engines are rebuilt on every device, so a study validates the ONNX: a record beside the engine counts
    when it names the ONNX the manifest records, and not when it names the engine file itself."""
    import logging

    from study_helpers import programme_keys, signed_record

    from drtrt.clinic.session import SessionConfig, screen_images
    from drtrt.clinic.store import SessionStore
    from drtrt.fileio import sha256_file
    from drtrt.validation_record import beside, validation_of

    engine, device = built
    install(monkeypatch, "10.3.0", device=device)
    image = next((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    private, public = programme_keys()
    keyed = SessionConfig(validation_key=str(public))            # the station's configured public key
    for name, sha in (("onnx", sha256_file(tiny_onnx)), ("engine", sha256_file(engine))):
        beside(engine).write_text(signed_record(sha, private).to_json())
        with caplog.at_level(logging.WARNING, logger="drtrt.validation"):
            screen_images([image], engine, tmp_path / name, cfg=keyed)
        with SessionStore(tmp_path / name / "session.db") as store:
            kept = validation_of(store.meta())
        assert (kept is not None) == (name == "onnx"), name
    assert any(f"this model is {sha256_file(tiny_onnx)[:12]}" in r.getMessage() for r in caplog.records)
    assert not device.allocations


# ------------------------------------------------------------------ without TensorRT or a GPU

@pytest.mark.parametrize("setup, expected", [
    (dict(version=None), r"TensorRT is not installed.*drtrt calibrate.*ONNX Runtime"),
    (dict(gpu=FakeGpu(present=False)), r"no usable CUDA GPU.*cudaErrorInsufficientDriver.*ONNX Runtime"),
    (dict(gpu=FakeGpu(present=False), cuda_release="12.6"),         # the release deploy/ pins raises instead
     r"no usable CUDA GPU: the CUDA driver could not be loaded \(Failed to dlopen libcuda.so.1\).*ONNX Runtime"),
    (dict(cuda=None), r"cuda-python or pycuda.*drtrt\[gpu\]"),
])
def test_clear_error_without_tensorrt_or_gpu(setup, expected, built, tiny_onnx, tmp_path, monkeypatch):
    engine, _ = built
    install(monkeypatch, **{"version": "10.3.0", **setup})
    with pytest.raises(BackendUnavailable, match=expected):
        _build(tiny_onnx, tmp_path / "new.engine")
    with pytest.raises(BackendUnavailable, match=expected):
        TrtRunner(engine).activate()
    assert not (tmp_path / "new.engine").exists()


def test_too_old_tensorrt_is_refused(monkeypatch):
    from drtrt.runtime.backends.trt_compat import import_tensorrt

    fake = install(monkeypatch, "8.6.1")
    monkeypatch.setattr(fake.trt, "__version__", "8.4.3")
    with pytest.raises(BackendUnavailable, match="8.4.3 is too old"):
        import_tensorrt()


def test_cli_build_without_tensorrt_is_one_line(tiny_onnx, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from drtrt.cli import app

    install(monkeypatch, version=None)
    result = CliRunner().invoke(app, ["build", "--onnx", str(tiny_onnx), "--out", str(tmp_path / "m.engine")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0] and "drtrt calibrate" in lines[0]


def test_cli_build_and_screen_with_the_double(tiny_onnx, photo_root, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from drtrt.cli import app

    install(monkeypatch, "10.13.3")
    out = tmp_path / "model.engine"
    result = CliRunner().invoke(app, ["build", "--onnx", str(tiny_onnx), "--out", str(out), "--max-batch", "2",
                                      "--workspace", "0.5", "--timing-cache", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "model.engine" in result.output and out.exists() and manifest_path(out).exists()
    assert json.loads(manifest_path(out).read_text())["build"]["workspace_gib"] == 0.5
    assert list(tmp_path.glob("orin-jetson-orin-nx-engineering-reference-developer-kit-8sms-sm87-trt10.13.3.9.cache"))
    image = next((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    rows = [json.loads(line) for line in CliRunner().invoke(
        app, ["screen", str(image), "--model", str(out), "--json", "--batch-size", "2"]).output.splitlines()
        if line.startswith("{")]
    assert len(rows) == 1 and rows[0]["status"] == "graded" and rows[0]["grade"] in range(5)


def test_an_engine_carries_its_onnxs_failed_check_and_screening_refuses_it(tiny_onnx, photo_root, tmp_path,
                                                                          monkeypatch):
    """The ONNX's accuracy check (drtrt.gate) goes into the engine's manifest: screening with the engine of
    a model that failed its gate is refused as the ONNX is, and runs with --allow-unchecked-model."""
    from typer.testing import CliRunner

    from drtrt.calibration.api import convert_fp16_checked
    from drtrt.cli import app

    failed = convert_fp16_checked(tiny_onnx, tmp_path / "model.fp16.onnx", photo_root, holdout=4,
                                  thresholds=(("logit_rel_delta", "0"),), enforce=False)   # any change fails
    assert not failed.report.passed
    install(monkeypatch, "10.13.3")
    result = _build(failed.path, tmp_path / "model.engine", max_batch=1)
    assert json.loads(json.loads(manifest_path(result.engine).read_text())["metadata"]["drtrt.gate"])["status"] \
        == "failed"
    image = next((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    refused = CliRunner().invoke(app, ["screen", str(image), "--model", str(result.engine), "--json"])
    assert refused.exit_code == 4 and "FAILED its accuracy check" in refused.output, refused.output
    allowed = CliRunner().invoke(app, ["screen", str(image), "--model", str(result.engine), "--json",
                                       "--allow-unchecked-model"])
    rows = [json.loads(line) for line in allowed.output.splitlines() if line.startswith("{")]
    assert allowed.exit_code == 0 and rows[0]["status"] == "graded", allowed.output


def test_parity_records_its_check_of_an_engine_tensorrt_made_in_another_precision(tiny_onnx, photo_root, tmp_path,
                                                                                  monkeypatch):
    """`drtrt build --fp16` of the FP32 ONNX converts it without a check: the engine is "unchecked" and
    screening refuses it; `drtrt parity --golden` against the FP32 reference is its check (the station's
    ExecStartPre runs it before every start) and writes its verdict into the engine's manifest."""
    from typer.testing import CliRunner

    from drtrt.cli import app

    install(monkeypatch, "10.13.3")
    engine = _build(tiny_onnx, tmp_path / "model.engine", precision="fp16", max_batch=2).engine
    image = next((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    refused = CliRunner().invoke(app, ["screen", str(image), "--model", str(engine)])
    assert refused.exit_code == 4 and "was not checked against its FP32 reference" in refused.output, refused.output
    golden = tmp_path / "golden"
    saved = CliRunner().invoke(app, ["parity", "--reference", str(tiny_onnx), "--data", str(photo_root), "--split",
                                     "test", "--save-golden", str(golden)])
    assert saved.exit_code == 0, saved.output
    checked = CliRunner().invoke(app, ["parity", "--golden", str(golden), "--candidate", str(engine)])
    assert checked.exit_code == 0, checked.output
    gate = json.loads(json.loads(manifest_path(engine).read_text())["metadata"]["drtrt.gate"])
    assert gate["status"] == "passed" and gate["against"] == "fp32" and "drtrt parity" in gate["checks"]
    screened = CliRunner().invoke(app, ["screen", str(image), "--model", str(engine)])
    assert screened.exit_code in (0, 3) and "error:" not in screened.output, screened.output


def test_build_if_stale_rebuilds_only_what_changed(tiny_onnx, tmp_path, monkeypatch):
    """What the station's service runs at every start: nothing when the engine is current; a
    rebuild after a JetPack update (another TensorRT), another ONNX or another module."""
    from typer.testing import CliRunner

    from drtrt.cli import app

    device = FakeDevice(FakeGpu())
    out = tmp_path / "model.engine"
    args = ["build", "--onnx", str(tiny_onnx), "--out", str(out), "--max-batch", "2", "--if-stale",
            "--timing-cache", str(tmp_path)]

    def build(version: str = "10.3.0", onnx: Path = tiny_onnx, gpu: FakeGpu | None = None) -> tuple[str, int]:
        fake = install(monkeypatch, version, device=None if gpu else device, gpu=gpu)
        result = CliRunner().invoke(app, [a if a != str(tiny_onnx) else str(onnx) for a in args])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split()), len(fake.trt._builds)

    text, builds = build()
    assert builds == 1 and "model.engine does not exist yet" in text
    text, builds = build()
    assert "up to date" in text and builds == 0
    text, builds = build("10.13.3")                                       # JetPack updated TensorRT
    assert builds == 1 and "TensorRT 10.3.0" in text and "TensorRT 10.13.3" in text
    assert build("10.13.3")[1] == 0
    import onnx

    model = onnx.load(str(tiny_onnx))
    model.doc_string = "retrained"                                       # not the ONNX it was built from
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    text, builds = build("10.13.3", onnx=other)
    assert builds == 1 and "other.onnx is not the ONNX" in text
    agx = FakeGpu(multiprocessors=16, total_memory=32 << 30, board="NVIDIA Jetson AGX Orin Developer Kit")
    text, builds = build("10.13.3", onnx=other, gpu=agx)                  # the card moved to another module
    assert builds == 1 and "AGX" in text
    path = manifest_path(out)                                             # built before drtrt cleared TF32
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "tf32"}
    path.write_text(json.dumps(old))
    text, builds = build("10.13.3", onnx=other, gpu=agx)
    assert builds == 1 and "built with TF32 on" in text
    assert json.loads(path.read_text())["tf32"] is False and build("10.13.3", onnx=other, gpu=agx)[1] == 0


@pytest.mark.parametrize("gpu, rounds", [(FakeGpu(), True), (FakeGpu(name="Xavier", major=7, minor=2), False)])
def test_the_double_runs_fp32_convolutions_in_tf32_while_the_flag_is_set(gpu, rounds, tiny_onnx, monkeypatch):
    """The double does what TF32 lets the real builder do: on compute capability 8.0+ (Orin) its FP32
    convolutions and matrix multiplies round their inputs to TF32, so the plan no longer computes what
    ONNX Runtime computes; cleared, or on a pre-Ampere GPU (Xavier), it does."""
    fake = install(monkeypatch, "10.3.0", gpu=gpu)
    trt, logger = fake.trt, fake.trt.Logger()
    builder = trt.Builder(logger)
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with OrtRunner(tiny_onnx) as ort_runner:
        expected = ort_runner.infer({INPUT_NAME: x})
    for tf32 in (True, False):
        network = builder.create_network(0)
        assert trt.OnnxParser(network, logger).parse_from_file(str(tiny_onnx))
        config = builder.create_builder_config()
        if not tf32:
            config.clear_flag(trt.BuilderFlag.TF32)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 64, 64))
        config.add_optimization_profile(profile)
        engine = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))
        got = dict(zip([o.name for o in engine._session.get_outputs()], engine._session.run(None, {INPUT_NAME: x})))
        drift = max(float(np.abs(got[name] - expected[name]).max()) for name in expected)
        in_tf32 = fake.trt._builds[-1]["tf32_layers"]
        if tf32 and rounds:
            assert in_tf32 and drift > 1e-6, (in_tf32, drift)
        else:
            assert in_tf32 == [] and drift < 1e-6, (in_tf32, drift)


def test_a_new_builder_config_has_tf32_set_as_in_every_real_release(monkeypatch):
    """The double starts each IBuilderConfig as TensorRT 8.6-11.x does, with BuilderFlag.TF32 set,
    and get_flag / set_flag / clear_flag work on it (names checked against the real surfaces)."""
    for version in VERSIONS:
        fake = install(monkeypatch, version)
        trt = fake.trt
        assert "TF32" in load_surface(f"trt-{version}")["enums"]["BuilderFlag"]
        config = trt.Builder(trt.Logger()).create_builder_config()
        assert config.get_flag(trt.BuilderFlag.TF32) is True
        config.clear_flag(trt.BuilderFlag.TF32)
        assert config.get_flag(trt.BuilderFlag.TF32) is False
        config.set_flag(trt.BuilderFlag.TF32)
        assert config.get_flag(trt.BuilderFlag.TF32) is True


# ------------------------------------------------------------------ the double against the real surfaces


def _fake_classes(version: str, monkeypatch) -> dict[str, type]:
    fake = install(monkeypatch, version).trt
    return {n: v for n, v in vars(fake).items() if isinstance(v, type) and v.__module__ == "tensorrt"
            and not n.startswith("_") and not issubclass(v, int)}


def _params(signature: str) -> list[tuple[str, bool]]:
    """(name, has_default) of a pybind11 signature line, without self."""
    inner = signature[signature.index("(") + 1:signature.rindex(")")]
    parts, depth, current = [], 0, ""
    for char in inner:
        depth += char in "[(<" and 1 or char in "])>" and -1 or 0
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [(p.split(":")[0].split("=")[0].strip(), "=" in p) for p in parts if p.strip() and
            p.split(":")[0].strip() not in ("self", "*args", "**kwargs")]


@pytest.mark.parametrize("version", VERSIONS)
def test_double_has_only_real_names_kinds_and_signatures(version, monkeypatch):
    surface = load_surface(f"trt-{version}")
    for name, cls in _fake_classes(version, monkeypatch).items():
        real = surface["classes"].get(name)
        assert real is not None, f"{name} is not a class of TensorRT {version}"
        for member, value in vars(cls).items():
            if member.startswith("_") and member != "__init__":
                continue
            if member not in real["members"]:
                others = [v for v in VERSIONS if member in load_surface(f"trt-{v}")["classes"].get(name, {}).get("members", {})]
                assert others, f"{name}.{member} exists in no real TensorRT"
                continue                                     # gated away in this version
            kind = real["members"][member]["kind"]
            if isinstance(value, property):
                assert kind == "property", f"{name}.{member}: real TensorRT {version} has a {kind}"
            elif callable(value) and kind == "method" and real["members"][member]["signatures"]:
                fake_params = [p for p in inspect.signature(value).parameters if p != "self"]
                overloads = [_params(s) for s in real["members"][member]["signatures"] if "(self" in s]
                assert any(set(fake_params) <= {n for n, _ in o} and {n for n, d in o if not d} <= set(fake_params)
                           for o in overloads), f"{name}.{member}{fake_params} vs {overloads}"
            elif callable(value):
                assert kind in ("method", "Severity"), f"{name}.{member}: real TensorRT {version} has a {kind}"


def test_double_emulates_version_differences(monkeypatch):
    old, mid, new = (install(monkeypatch, v).trt for v in ("8.6.1", "10.3.0", "11.4.0"))
    assert not hasattr(old, "IProgressMonitor") and hasattr(mid, "IProgressMonitor")
    assert hasattr(mid.BuilderFlag, "FP16") and not hasattr(new.BuilderFlag, "FP16")
    assert hasattr(mid.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(new.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    # the real enum values: EXPLICIT_BATCH's removal renumbered STRONGLY_TYPED
    assert int(mid.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(new.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    with pytest.raises(AttributeError, match="TensorRT 11"):
        new.Builder.platform_has_fast_fp16


def test_cuda_doubles_match_real_cuda_python_and_pycuda():
    from fake_tensorrt import cuda_runtime, pycuda_driver

    for surface in (load_surface("cuda-bindings-12.9"), load_surface("cuda-bindings-13.5")):
        for name, func in vars(cuda_runtime).items():
            if name.startswith("cuda") and inspect.isfunction(func):
                real = surface["functions"][name]
                real_params = [re.split(r"[\s:]+", p.strip())[-1] if ":" not in p else p.split(":")[0].strip()
                               for p in real[real.index("(") + 1:real.rindex(")")].split(",") if p.strip()]
                assert list(inspect.signature(func).parameters) == real_params, (name, real)
        assert {"cudaSuccess", "cudaErrorInsufficientDriver"} <= set(surface["enums"]["cudaError_t"])
        assert {"cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"} <= set(surface["enums"]["cudaMemcpyKind"])
        assert {"name", "major", "minor", "totalGlobalMem"} <= set(surface["classes"]["cudaDeviceProp"])
    pycuda = load_surface("pycuda-2026.1")
    public = {n for n, v in vars(pycuda_driver).items() if not n.startswith("_") and callable(v)}
    assert public - {"Error"} <= set(pycuda["functions"]) | set(pycuda["classes"])
    for cls, members in pycuda["classes"].items():
        defined = {m for m in vars(getattr(pycuda_driver, cls)) if not m.startswith("_") or m in ("__init__", "__int__")}
        assert defined <= set(members) | {"__init__"}, (cls, defined - set(members))


def test_real_cuda_python_without_a_gpu_is_one_clear_error():
    """The real cuda-python (torch brings cuda-bindings) on this GPU-less machine, no double."""
    from drtrt.runtime.backends.cuda import CudaPythonMemory, load_cuda

    rt = pytest.importorskip("cuda.bindings.runtime")
    err, count = rt.cudaGetDeviceCount()
    if err == rt.cudaError_t.cudaSuccess and count:
        pytest.skip("a CUDA GPU is visible here")
    with pytest.raises(BackendUnavailable, match=r"no usable CUDA GPU: cudaGetDeviceCount returned cudaError\w+ .*ONNX"):
        CudaPythonMemory()
    with pytest.raises(BackendUnavailable, match="no usable CUDA GPU"):
        load_cuda("cuda-python")


def test_dla_build_is_static_batch_fp16_and_falls_back_when_asked(tiny_onnx, tmp_path, monkeypatch):
    """--dla-core: the engine takes one batch (max_batch), smaller batches are padded by the loop;
    DLA cannot run every layer (the U-Net's resize), so it needs --gpu-fallback; a device without DLA
    (Orin Nano) and FP32 are refused. Untested on hardware: the double checks what TensorRT checks."""
    from drtrt.runtime.inference import BatchedInference

    device = FakeDevice(FakeGpu())
    fake = install(monkeypatch, "8.6.1", device=device)
    with pytest.raises(ArtefactError, match="cannot run on DLA and GPU fallback is not enabled"):
        _build(tiny_onnx, tmp_path / "a.engine", precision="fp16", max_batch=2, dla_core=1)
    result = _build(tiny_onnx, tmp_path / "dla.engine", precision="fp16", max_batch=2, dla_core=1, gpu_fallback=True)
    manifest = json.loads(manifest_path(result.engine).read_text())
    assert fake.trt._builds[-1]["device_type"] == "DLA" and fake.trt._builds[-1]["dla_core"] == 1
    assert manifest["profile"]["image"] == {"min": [2, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [2, 3, 64, 64]}
    assert manifest["build"]["dla_core"] == 1 and "--dla-core 1 --gpu-fallback" in manifest["build"]["command"]
    # TensorRT made FP16 of the FP32 ONNX, never compared with it: the engine counts as unchecked
    assert json.loads(manifest["metadata"]["drtrt.gate"])["status"] == "unchecked"
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with TrtRunner(result.engine) as runner, OrtRunner(tiny_onnx) as reference:
        assert (runner.min_batch, runner.max_batch) == (2, 2)
        one = BatchedInference(runner, batch_size=2, tensor=lambda item: item).run([x[0]])        # padded to 2
        got = one.outputs[0]["grade_logits"]       # DLA has no FP32: every layer stores FP16
        np.testing.assert_allclose(got, reference.infer({INPUT_NAME: x})["grade_logits"], rtol=2e-2, atol=2e-4)
        assert np.array_equal(got.astype(np.float16).astype(np.float32), got)
        assert one.outputs[0]["grade_logits"].shape[0] == 1
    with pytest.raises(ConfigError, match="FP16 or INT8"):
        _build(tiny_onnx, tmp_path / "b.engine", max_batch=2, dla_core=0, gpu_fallback=True)
    install(monkeypatch, "8.6.1", gpu=FakeGpu(dla_cores=0, multiprocessors=4, board="NVIDIA Jetson Orin Nano"))
    with pytest.raises(ConfigError, match="has 0 DLA core"):
        _build(tiny_onnx, tmp_path / "c.engine", precision="fp16", dla_core=0)


def test_dla_per_tensorrt_version(tiny_onnx, tmp_path, monkeypatch):
    """10.3 (JetPack 6.1/6.2) builds DLA weakly typed with the FP16 flag, as trtexec --useDLACore
    does; 10.13 (JetPack 7, where Thor has no DLA) and 11.0-11.4.0 are refused with the reason."""
    fake = install(monkeypatch, "10.3.0")
    result = _build(tiny_onnx, tmp_path / "dla.engine", precision="fp16", max_batch=1, dla_core=0, gpu_fallback=True)
    manifest = json.loads(manifest_path(result.engine).read_text())
    assert manifest["strongly_typed"] is False and fake.trt._builds[-1]["flags"] == ["FP16", "GPU_FALLBACK"]
    for version in ("10.13.3", "11.4.0"):
        install(monkeypatch, version)
        with pytest.raises(ConfigError, match="cannot build for DLA"):
            _build(tiny_onnx, tmp_path / "x.engine", precision="fp16", dla_core=0, gpu_fallback=True)


def test_parser_refuses_ops_tensorrt_cannot_import(tiny_onnx, tmp_path, monkeypatch):
    """ONNX Runtime's QOperator quantization (QLinearConv) and contrib ops run on the CPU but have no
    TensorRT importer: the build says which op, in one line (drtrt calibrate writes Q/DQ instead)."""
    import onnx
    from onnx import helper

    install(monkeypatch, "10.3.0")
    model = onnx.load(str(tiny_onnx))
    for op, domain in (("QLinearConv", ""), ("FusedConv", "com.microsoft")):
        bad = onnx.ModelProto()
        bad.CopyFrom(model)
        bad.graph.node.insert(0, helper.make_node(op, ["image"], ["unused"], domain=domain))
        path = tmp_path / f"{op}.onnx"
        onnx.save(bad, str(path))
        with pytest.raises(ArtefactError, match=f"No importer registered for op: {op}") as info:
            _build(path, tmp_path / f"{op}.engine")
        assert "\n" not in str(info.value)
