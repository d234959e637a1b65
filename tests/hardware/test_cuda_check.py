"""tests/hardware/cuda_check.py on CPU: every check runs against the cuda-python double (the real
driver's part is what scripts/hardware-check.sh runs on a GPU), and without a GPU the module is one
``skipped`` row."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cuda_check
from fake_tensorrt import install
from fake_tensorrt.devmem import FakeDevice, FakeGpu

HERE = Path(__file__).resolve().parent
DATE = "2026-12-07"


def _cells(line: str) -> list[str]:
    assert line.startswith("| ") and line.endswith(" |"), line
    return [cell.strip() for cell in line[2:-2].split(" | ")]


def test_without_a_gpu_the_check_is_one_skipped_row():
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver: the check runs for real here")
    proc = subprocess.run([sys.executable, str(HERE / "cuda_check.py"), "--date", DATE], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
    (line,) = proc.stdout.splitlines()
    date, device, check, result, figure = _cells(line)
    assert (date, device, result) == (DATE, "no GPU", "skipped") and check.startswith("CUDA layer"), line
    assert "no usable CUDA GPU" in figure or "needs cuda-python" in figure, figure


@pytest.fixture
def two_gpus(monkeypatch):
    device = FakeDevice(FakeGpu(name="NVIDIA H100 80GB HBM3", major=9, minor=0, integrated=False, board="",
                                multiprocessors=132, total_memory=80 << 30, count=2))
    install(monkeypatch, None, cuda="cuda-python", device=device)
    monkeypatch.setenv("PATH", "/nonexistent")                      # no nvidia-smi to ask
    return device


def test_every_check_passes_on_the_second_gpu_and_leaves_nothing_allocated(two_gpus, capsys):
    assert cuda_check.main(["--device", "1", "--date", DATE]) == 0
    rows = [_cells(line) for line in capsys.readouterr().out.splitlines()]
    assert {row[0] for row in rows} == {DATE} and {row[1] for row in rows} == {"NVIDIA H100 80GB HBM3 (132 SMs)"}
    checks = {row[2].split(": ", 1)[1]: (row[3], row[4]) for row in rows}
    assert list(checks) == ["identity", "pinned round trip", "mapped round trip", "two threads", "missing device",
                            "TensorRT double on device memory: build",
                            "TensorRT double on device memory: staged = zero-copy",
                            "TensorRT double on device memory: two threads",
                            "TensorRT double on device memory: missing device"]
    assert {result for result, _ in checks.values()} == {"pass"}, checks
    assert "compute 9.0, 132 SMs" in checks["identity"][1] and "driver CUDA 12.6" in checks["identity"][1]
    assert "on 1 after make_current" in checks["two threads"][1]
    assert "device 2: one line: CUDA device 2 requested but 2 GPU(s)" in checks["missing device"][1]
    assert "bit-identical staged vs zero-copy" in checks["TensorRT double on device memory: staged = zero-copy"][1]
    assert "on a worker on device 1" in checks["TensorRT double on device memory: two threads"][1]
    assert not two_gpus.allocations and not two_gpus.pinned and not two_gpus.streams


def test_the_double_reads_the_bound_device_memory_not_host_arrays(two_gpus, tmp_path):
    """Through realmem.RealDevice every tensor goes by cudaMemcpyAsync on the runner's stream."""
    import double_on_gpu

    with pytest.MonkeyPatch.context() as patch:
        gpu = cuda_check.open_gpu(cuda_check.parse(["--device", "0"]))
        double = double_on_gpu.DoubleOnGpu(gpu, tmp_path, "10.3.0")
        double.build(patch)
        double.staged_equals_zero_copy()
        gpu.mem.close()
    assert double.device.copies == 2 * 3                    # per run: one input read, two outputs written


def test_a_device_beyond_the_gpus_is_one_line_and_exit_1(monkeypatch, capsys):
    install(monkeypatch, None, cuda="cuda-python", device=FakeDevice(FakeGpu(count=1)))
    assert cuda_check.main(["--device", "7"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "CUDA device 7 requested but 1 GPU(s) are visible" in err


def test_bytes_lost_in_a_copy_are_fail_rows_and_exit_1(two_gpus, monkeypatch, capsys):
    rt = sys.modules["cuda.bindings.runtime"]
    real = rt.cudaMemcpyAsync
    monkeypatch.setattr(rt, "cudaMemcpyAsync", lambda dst, src, count, kind, stream: real(dst, src, count - 1, kind, stream))
    assert cuda_check.main(["--date", DATE]) == 1
    rows = {_cells(line)[2].split(": ", 1)[1]: _cells(line)[3:] for line in capsys.readouterr().out.splitlines()}
    assert rows["pinned round trip"] == ["FAIL", "AssertionError: round trip 1 changed bytes"]
    assert rows["mapped round trip"][0] == "FAIL" and rows["two threads"][0] == "FAIL"
    assert rows["identity"][0] == "pass"


def test_another_bindings_version_than_expected_fails_its_row(two_gpus, capsys):
    assert cuda_check.main(["--date", DATE, "--expect-bindings", "0.1"]) == 1
    first = _cells(capsys.readouterr().out.splitlines()[0])
    assert first[2].endswith(": version") and first[3] == "FAIL" and "0.1 expected" in first[4]


def test_zero_copy_bench_rows_on_the_double(monkeypatch, tmp_path, capsys):
    """The row that decides zero-copy on a Jetson, here on the TensorRT double over its fake Orin."""
    import double_on_gpu
    import zero_copy_bench
    from drtrt.export.build_config import BuildConfig
    from drtrt.export.trt_build import build_engine

    monkeypatch.setenv("DRTRT_CACHE_DIR", str(tmp_path / "cache"))
    device = FakeDevice(FakeGpu())
    install(monkeypatch, "10.3.0", device=device)
    onnx = double_on_gpu.tiny_onnx(tmp_path / "model.onnx")
    engine = build_engine(BuildConfig(onnx=onnx, out=tmp_path / "model.engine", max_batch=4)).engine
    assert zero_copy_bench.main(["--engine", str(engine), "--batch", "1,4", "--runs", "3", "--date", DATE]) == 0
    rows = [_cells(line) for line in capsys.readouterr().out.splitlines()]
    assert [row[2] for row in rows] == ["zero-copy vs staged, batch 1, model.engine",
                                        "zero-copy vs staged, batch 4, model.engine"]
    assert all(row[0] == DATE and row[1].startswith("Orin (") and row[3] == "pass" for row in rows), rows
    assert all("outputs identical" in row[4] and "zero-copy median" in row[4] for row in rows), rows
    assert not device.allocations and not device.pinned


def test_zero_copy_bench_fails_when_the_gpu_writes_do_not_reach_mapped_memory(monkeypatch, tmp_path, capsys):
    """The hazard zero-copy carries: what the GPU wrote to mapped pages not seen by the CPU (stale
    outputs). The double drops its writes to mapped memory: a FAIL row, exit 1."""
    import double_on_gpu
    import zero_copy_bench
    from drtrt.export.build_config import BuildConfig
    from drtrt.export.trt_build import build_engine

    monkeypatch.setenv("DRTRT_CACHE_DIR", str(tmp_path / "cache"))
    device = FakeDevice(FakeGpu())
    install(monkeypatch, "10.3.0", device=device)
    engine = build_engine(BuildConfig(onnx=double_on_gpu.tiny_onnx(tmp_path / "model.onnx"),
                                      out=tmp_path / "model.engine", max_batch=1)).engine
    write = device.write
    monkeypatch.setattr(device, "write", lambda ptr, array, what, stream:
                        None if ptr in device.mapped else write(ptr, array, what, stream))
    assert zero_copy_bench.main(["--engine", str(engine), "--batch", "1", "--runs", "1", "--date", DATE]) == 1
    (row,) = [_cells(line) for line in capsys.readouterr().out.splitlines()]
    assert row[3] == "FAIL" and "outputs DIFFER" in row[4]


@pytest.mark.parametrize(("smi", "result", "figure"), [
    ('echo "NVIDIA A10, 8.6"; echo "NVIDIA H100 80GB HBM3, 9.0"', "pass", "nvidia-smi agrees"),
    ('echo "NVIDIA H100 80GB HBM3, 8.0"', "FAIL", "nvidia-smi lists"),
    ('echo "Field \\"compute_cap\\" is not a valid field to query."; exit 2', "pass", "nvidia-smi could not say"),
])
def test_identity_is_checked_against_nvidia_smi(two_gpus, tmp_path, monkeypatch, smi, result, figure):
    (tmp_path / "nvidia-smi").write_text(f"#!/usr/bin/env bash\n{smi}\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    gpu = cuda_check.open_gpu(cuda_check.parse(["--device", "1"]))
    row = cuda_check.run_check("identity", cuda_check.check_identity, gpu)
    gpu.mem.close()
    assert row.result == result and figure in row.figure, row
