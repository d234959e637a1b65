"""``drtrt doctor``: findings and capabilities with and without TensorRT / a GPU (test doubles)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.runtime.doctor import diagnose, jetson_release, kernel_driver
from fake_tensorrt import install
from fake_tensorrt.devmem import FakeGpu

# The findings with and without TensorRT or a GPU come from the test double's controls.
pytestmark = pytest.mark.emulation


def _by_name(report):
    return {f.item: f for f in report.findings}, {c.command: c for c in report.capabilities}


def test_cpu_only_machine_says_what_is_missing_and_the_cpu_path(monkeypatch, tmp_path):
    install(monkeypatch, version=None, cuda=None)
    findings, can = _by_name(diagnose(disk=tmp_path, tegra_release=tmp_path / "absent"))
    assert findings["TensorRT"].ok is False and "not installed" in findings["TensorRT"].value
    assert findings["GPU"].ok is False and findings["Jetson"].value.startswith("not a Jetson")
    assert findings["ONNX Runtime"].ok and "CPUExecutionProvider" in findings["ONNX Runtime"].value
    assert can["build"].available is False
    assert can["build"].detail == ("no (TensorRT not installed; no NVIDIA GPU; no cuda-python/pycuda) — "
                                   "use drtrt calibrate + ONNX Runtime")
    assert can["screen / evaluate (.onnx)"].available and not can["screen / evaluate (.engine)"].available


def test_gpu_without_tensorrt_names_only_tensorrt(monkeypatch, tmp_path):
    h100 = FakeGpu(name="NVIDIA H100", major=9, minor=0, driver_version=12080, multiprocessors=132, integrated=False,
                   board="")
    install(monkeypatch, version=None, gpu=h100)
    findings, can = _by_name(diagnose(disk=tmp_path))
    assert findings["GPU"].value == "NVIDIA H100 (132 SMs) (compute capability 9.0)"
    assert findings["CUDA driver"].value.startswith("CUDA 12.8")
    assert can["build"].detail == "no (TensorRT not installed) — use drtrt calibrate + ONNX Runtime"


@pytest.mark.parametrize("cuda", ["cuda-python", "pycuda"])
def test_jetson_with_tensorrt_can_build(monkeypatch, tmp_path, cuda):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: x\n")
    install(monkeypatch, "10.3.0", cuda=cuda)
    findings, can = _by_name(diagnose(disk=tmp_path, tegra_release=release))
    assert findings["TensorRT"].value == "10.3.0" and findings["TensorRT"].ok
    sms = ", 8 SMs" if cuda == "cuda-python" else ""               # pycuda's surface here has no attributes
    board = "Jetson Orin NX Engineering Reference Developer Kit"
    assert findings["GPU"].value == f"Orin ({board}{sms}) (compute capability 8.7)"
    assert findings["Jetson"].value == "L4T 36.4.3 (JetPack 6.1/6.2, TensorRT 10.3)"
    assert can["build"].available and can["screen / evaluate (.engine)"].available


@pytest.mark.parametrize("text, tensorrt, expected", [
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref", "8.5.2.2",
     "L4T 35.4.1 (JetPack 5.1.2, TensorRT 8.5)"),
    ("# R36 (release), REVISION: 3.0, GCID: 36191598", "8.6.2.3", "L4T 36.3.0 (JetPack 6.0, TensorRT 8.6)"),
    ("# R36 (release), REVISION: 5.0, GCID: 43688277", "10.3.0", "L4T 36.5.0 (JetPack 6.2.2, TensorRT 10.3)"),
    ("# R38 (release), REVISION: 4.0, GCID: 43000000", "10.13.3", "L4T 38.4.0 (JetPack 7.1, TensorRT 10.13)"),
    # a newer minor of a known major is that JetPack, and TensorRT is whatever the module says
    ("# R36 (release), REVISION: 9.1, GCID: 1", "10.7.0", "L4T 36.9.1 (JetPack 6.x, TensorRT 10.7)"),
    ("# R38 (release), REVISION: 6.0, GCID: 1", "11.4.1", "L4T 38.6.0 (JetPack 7.x, TensorRT 11.4)"),
    ("# R38 (release), REVISION: 6.0, GCID: 1", None, "L4T 38.6.0 (JetPack 7.x)"),
    ("# R40 (release), REVISION: 1.0, GCID: 1", None, "L4T 40.1.0 (a JetPack unknown to this drtrt (L4T R40))"),
    ("garbage", None, "unrecognised"),
])
def test_jetson_release_parsing(tmp_path, text, tensorrt, expected):
    path = tmp_path / "nv_tegra_release"
    path.write_text(text)
    found = jetson_release(path, tensorrt)
    assert found.startswith(expected) and "?" not in found


def test_jetpack_7_1_doctor_reads_tensorrt_from_the_module(monkeypatch, tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R38 (release), REVISION: 4.0, GCID: 43000000, BOARD: generic, EABI: aarch64, DATE: x\n")
    install(monkeypatch, "10.13.3")
    findings, _ = _by_name(diagnose(disk=tmp_path, tegra_release=release))
    assert findings["Jetson"].value == "L4T 38.4.0 (JetPack 7.1, TensorRT 10.13)"


@pytest.mark.parametrize("text, expected", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023", "535.104.05"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build", "570.86.15"),
])
def test_kernel_driver_parsing(tmp_path, text, expected):
    (tmp_path / "version").write_text(text)
    assert kernel_driver(tmp_path / "version") == expected and kernel_driver(tmp_path / "absent") is None


def test_cli_doctor_table_and_json(monkeypatch):
    install(monkeypatch, version=None, cuda=None)
    table = CliRunner().invoke(app, ["doctor"])
    assert table.exit_code == 0, table.output
    assert "what drtrt can do here" in table.output and "TensorRT not installed" in table.output
    as_json = CliRunner().invoke(app, ["doctor", "--json"])
    report = json.loads(as_json.output)
    build = next(c for c in report["capabilities"] if c["command"] == "build")
    assert build["available"] is False and {f["item"] for f in report["findings"]} >= {"Python", "GPU", "free disk"}


def test_jetson_power_mode_and_gpu_clock_are_reported(tmp_path, monkeypatch):
    """nvpmodel's answer and the GPU's devfreq clock, as a Jetson gives them (stand-ins here)."""
    from drtrt.runtime.doctor import jetson_power

    bin_dir, devfreq = tmp_path / "bin", tmp_path / "devfreq"
    bin_dir.mkdir()
    nvpmodel = bin_dir / "nvpmodel"
    nvpmodel.write_text("#!/bin/sh\nprintf 'NV Power Mode: MAXN\\n0\\n'\n")
    nvpmodel.chmod(0o755)
    for name, now, top in (("17000000.ga10b", 918000000, 1300500000), ("15340000.vic", 1, 2)):
        (devfreq / name).mkdir(parents=True)
        (devfreq / name / "cur_freq").write_text(f"{now}\n")
        (devfreq / name / "max_freq").write_text(f"{top}\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert jetson_power(devfreq=devfreq) == "MAXN (mode 0), GPU 918 of 1300 MHz"
    assert jetson_power(nvpmodel="no-such-tool", devfreq=tmp_path / "none") is None
