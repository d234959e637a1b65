"""Issue 23 item 9: what an engine's manifest judges CUDA by, and a GPU with no room for the engine.

The manifest's ``cuda.runtime`` is the Python binding's own cudart (cuda-python links it statically),
so upgrading the wheel changes it while the system's CUDA stays; ``cuda.driver`` (cudaDriverGetVersion)
is the CUDA TensorRT runs on. A service's ``--if-stale`` start and the runtime judge on the driver.
TensorRT's ``create_execution_context()`` returns None when the GPU cannot hold the context's memory
(an Orin Nano at batch 4): one line, exit 1, naming the cause and the remedy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fake_tensorrt import install
from fake_tensorrt.devmem import FakeDevice, FakeGpu
from drtrt.cli import app
from drtrt.cli.common import ExitCode
from drtrt.errors import CudaError
from drtrt.export.build_config import BuildConfig
from drtrt.export.trt_build import build_engine
from drtrt.runtime.backends.trt import TrtRunner


def _if_stale(monkeypatch, onnx: Path, out: Path, gpu: FakeGpu) -> tuple[str, int]:
    fake = install(monkeypatch, "10.3.0", gpu=gpu)
    result = CliRunner().invoke(app, ["build", "--onnx", str(onnx), "--out", str(out), "--max-batch", "2",
                                      "--if-stale", "--timing-cache", str(out.parent)])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split()), len(fake.trt._builds)


def test_a_cuda_python_upgrade_keeps_the_engine_a_driver_change_rebuilds_it(tiny_onnx, tmp_path, monkeypatch):
    out = tmp_path / "model.engine"
    assert _if_stale(monkeypatch, tiny_onnx, out, FakeGpu())[1] == 1          # JetPack 6: driver and wheel 12.6
    text, builds = _if_stale(monkeypatch, tiny_onnx, out, FakeGpu(runtime_version=12090))   # pip: cuda-python 12.9
    assert builds == 0 and "up to date" in text
    text, builds = _if_stale(monkeypatch, tiny_onnx, out, FakeGpu(driver_version=12080))    # the system's CUDA moved
    assert builds == 1 and "CUDA 12.6" in text and "CUDA 12.8" in text


def test_the_runtime_warns_on_another_driver_cuda_not_on_another_binding(tiny_onnx, tmp_path, monkeypatch):
    device = FakeDevice(FakeGpu())
    install(monkeypatch, "10.3.0", device=device)
    engine = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", max_batch=1)).engine
    install(monkeypatch, "10.3.0", gpu=FakeGpu(runtime_version=13000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runner = TrtRunner(engine)
        runner.activate()
    runner.deactivate()
    install(monkeypatch, "10.3.0", gpu=FakeGpu(driver_version=12020))
    with pytest.warns(UserWarning, match=r"built on CUDA 12\.6 \(the driver's\), this machine's driver runs CUDA "
                                         r"12\.2: rebuild"):
        runner = TrtRunner(engine)
        runner.activate()
    runner.deactivate()


@pytest.fixture
def small_gpu(tiny_onnx, tmp_path, monkeypatch):
    """An engine built for batch 4 on a device that then has no room for its execution context."""
    device = FakeDevice(FakeGpu())
    install(monkeypatch, "10.3.0", device=device)
    engine = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", max_batch=4)).engine
    device.gpu.total_memory = 1024
    install(monkeypatch, "10.3.0", device=device)
    return engine, device


def test_no_room_for_the_execution_context_is_one_clear_error(small_gpu):
    engine, device = small_gpu
    with pytest.raises(CudaError) as info:
        TrtRunner(engine).activate()
    message = str(info.value)
    assert "\n" not in message and "out of memory" in message and "largest batch (4)" in message
    assert "smaller --max-batch" in message and "drtrt build --onnx" in message
    assert not device.allocations and not device.streams


def test_cli_screen_on_a_full_gpu_exits_1_with_one_line(small_gpu, photo_root):
    engine, _ = small_gpu
    image = next((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    result = CliRunner().invoke(app, ["screen", str(image), "--model", str(engine), "--batch-size", "4"])
    assert result.exit_code == ExitCode.FAILED, result.output
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert len(lines) == 1 and "out of memory" in lines[0] and "internal error" not in result.output, result.output
