"""The pins for this device (drtrt.runtime.jetpack) on fake L4T releases, fake ``nvidia-smi`` output and
fake driver versions: a CUDA 12 device never gets cuda-python 13 or the CUDA 13 TensorRT wheels; the
module's command line (what install.sh and hardware-check.sh run) and the "TensorRT is not installed"
hint give the same pins; hardware-check.sh installs drtrt[gpu] with them. What each service installs
(its extras: never torch) and what of it is missing here, as install.sh asks."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from drtrt.runtime.jetpack import SERVICES, Device, bundle_release, cuda_from_driver_version, detect, extras, \
    install_hint, missing_extras, parse_l4t, parse_nvidia_smi, requirements

ROOT = Path(__file__).resolve().parents[2]
RELEASES = {
    "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic": ["cuda-python==12.2.*"],
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic": ["cuda-python==12.6.*"],
    "# R36 (release), REVISION: 5.0, GCID: 43688277, BOARD: generic": ["cuda-python==12.6.*"],
    "# R36 (release), REVISION: 8.0, GCID: 1, BOARD: generic": ["cuda-python==12.6.*"],   # a future 6.x
    "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic": ["cuda-python==13.*"],
    "# R38 (release), REVISION: 4.0, GCID: 43000000, BOARD: generic": ["cuda-python==13.*"],
}
SMI_12_6 = """Mon Dec  7 05:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 560.35.03              Driver Version: 560.35.03      CUDA Version: 12.6     |
|-----------------------------------------+------------------------+----------------------+
"""
SMI_13_0 = SMI_12_6.replace("560.35.03", "580.65.06").replace("CUDA Version: 12.6", "CUDA Version: 13.0")


@pytest.mark.parametrize("line, pins", RELEASES.items())
def test_jetson_pins_follow_the_l4t_release(tmp_path, line, pins):
    (tmp_path / "nv_tegra_release").write_text(line + "\n")
    device = detect(tmp_path / "nv_tegra_release", nvidia_smi=str(tmp_path / "none"), libcuda="absent.so")
    assert requirements(device) == pins
    assert requirements(device, tensorrt=True) == pins          # TensorRT comes with JetPack, never from pip


@pytest.mark.parametrize("text, cuda", [(SMI_12_6, "12.6"), (SMI_13_0, "13.0"), ("No devices were found", None)])
def test_nvidia_smi_banner(text, cuda):
    assert parse_nvidia_smi(text) == cuda


@pytest.mark.parametrize("version, cuda, pins", [
    (12020, "12.2", ["cuda-python>=12.0,<12.3", "tensorrt-cu12"]),
    (12060, "12.6", ["cuda-python>=12.0,<12.7", "tensorrt-cu12"]),
    (12080, "12.8", ["cuda-python>=12.0,<12.9", "tensorrt-cu12"]),
    (13000, "13.0", ["cuda-python>=13.0,<13.1", "tensorrt-cu13"]),
])
def test_driver_versions_get_their_cuda_major(version, cuda, pins):
    assert cuda_from_driver_version(version) == cuda
    device = Device(None, cuda)
    assert requirements(device, tensorrt=True) == pins
    assert requirements(device) == pins[:1]
    hint = install_hint(device)
    assert all(f"'{p}'" in hint for p in pins) and f"CUDA {cuda}" in hint
    assert ("13" in hint) == (device.cuda_major == 13)            # a CUDA 12 driver is never offered CUDA 13


def test_no_driver_no_pins_and_the_generic_hint():
    device = Device(None, None)
    assert requirements(device, tensorrt=True) == []
    assert "'tensorrt-cu12' or 'tensorrt-cu13'" in install_hint(device)
    assert "pip install tensorrt" not in install_hint(device)


def test_unknown_l4t_major_falls_back_to_the_driver(tmp_path):
    assert parse_l4t("# R40 (release), REVISION: 1.0").series is None and parse_l4t("no release") is None
    (tmp_path / "nv_tegra_release").write_text("# R40 (release), REVISION: 1.0, GCID: 1\n")
    fake_nvidia_smi(tmp_path, SMI_13_0)
    device = detect(tmp_path / "nv_tegra_release", nvidia_smi=str(tmp_path / "nvidia-smi"), libcuda="absent.so")
    assert device.cuda == "13.0" and requirements(device) == ["cuda-python>=13.0,<13.1"]


def fake_nvidia_smi(folder: Path, text: str) -> dict[str, str]:
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/usr/bin/env bash\ncat <<'EOF'\n{text}EOF\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("smi, lines", [(SMI_12_6, "cuda-python>=12.0,<12.7\ntensorrt-cu12\n"),
                                        (SMI_13_0, "cuda-python>=13.0,<13.1\ntensorrt-cu13\n")])
def test_command_line_reads_nvidia_smi(tmp_path, smi, lines):
    env = fake_nvidia_smi(tmp_path, smi)
    proc = subprocess.run([sys.executable, "-m", "drtrt.runtime.jetpack", "--release-file", str(tmp_path / "absent"),
                           "--tensorrt"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout == lines, proc.stderr


def test_hardware_check_installs_gpu_extra_with_the_device_pins(tmp_path):
    """hardware-check.sh on a CUDA 12.6 box: pip gets drtrt[gpu,...] and cuda-python of CUDA 12, not 13."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("hardware-check.sh", "env.sh"):
        shutil.copy(ROOT / "scripts" / name, root / "scripts" / name)
    shutil.copytree(ROOT / "drtrt", root / "drtrt", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text("")
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    calls = tmp_path / "calls"
    for name, body in {"python": f'echo "$*" >> "{calls}"', "drtrt": "exit 7"}.items():   # stop after install
        (venv_bin / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (venv_bin / name).chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = fake_nvidia_smi(bin_dir, SMI_12_6)
    env.pop("PYTHONPATH")
    proc = subprocess.run(["bash", str(root / "scripts" / "hardware-check.sh"), "--no-record", "--onnx", "m.onnx",
                           "--golden", "g", "--release-file", str(tmp_path / "absent"), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    install = [c for c in calls.read_text().splitlines() if "install --quiet -e" in c]
    assert install == [f"-m pip install --quiet -e {root}[gpu,convert,test] cuda-python>=12.0,<12.7"], calls.read_text()


def test_tensorrt_missing_hint_names_the_wheel_of_this_driver(monkeypatch, tmp_path):
    """The one-line error when TensorRT is missing, on a CUDA 12.6 box: tensorrt-cu12, not a bare `tensorrt`."""
    from drtrt.errors import BackendUnavailable
    from drtrt.runtime.backends.trt_compat import import_tensorrt
    from fake_tensorrt import install

    if Path("/etc/nv_tegra_release").exists():
        pytest.skip("on a Jetson the hint follows its L4T release, tested above")
    install(monkeypatch, version=None)
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, SMI_12_6)["PATH"])
    with pytest.raises(BackendUnavailable) as error:
        import_tensorrt()
    message = str(error.value)
    assert "pip install 'cuda-python>=12.0,<12.7' 'tensorrt-cu12'" in message and "cu13" not in message
    assert "\n" not in message and "pip install tensorrt" not in message


@pytest.mark.parametrize("jetpack, expected", [("6.0", ("3.10", "cuda-python==12.2.*")),
                                               ("6.2", ("3.10", "cuda-python==12.6.*")),
                                               ("7", ("3.12", "cuda-python==13.*"))])
def test_a_bundle_for_a_jetpack_gets_the_python_and_pin_the_device_reads(jetpack, expected):
    assert bundle_release(jetpack) == expected


def test_each_service_needs_the_gpu_and_onnx_and_no_torch():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras("station") == ("gpu", "convert", "station", "integration")
    assert extras("watch") == ("gpu", "convert") and extras("receive") == ("gpu", "convert", "integration")
    for service in SERVICES:
        packages = {re.match(r"[\w.-]+", r)[0].lower() for extra in extras(service) for r in optional[extra]}
        assert "onnx" in packages and not packages & {"torch", "torchvision", "onnxslim"}, (service, packages)
    with pytest.raises(ValueError, match="unknown service 'kiosk': one of station, watch, receive"):
        extras("kiosk")


def test_missing_extras_reads_what_is_installed(tmp_path, monkeypatch):
    """From the distribution's own metadata: an extra is missing when one of its packages is not installed."""
    info = tmp_path / "fakedrtrt-1.0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakedrtrt\nVersion: 1.0\n"
        'Requires-Dist: numpy\nRequires-Dist: numpy>=1; extra == "gpu"\nRequires-Dist: onnx>=1.15; extra == "convert"\n'
        'Requires-Dist: starlette; extra == "station"\nRequires-Dist: no-such-package-anywhere; extra == "station"\n'
        'Requires-Dist: pydicom>=3; extra == "integration"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert missing_extras("watch", "fakedrtrt") == []
    assert missing_extras("receive", "fakedrtrt") == []
    assert missing_extras("station", "fakedrtrt") == ["station"]
    assert missing_extras("watch", "not-installed-at-all") == ["gpu", "convert"]


def test_command_line_prints_the_extras_and_what_is_missing(capsys):
    from drtrt.runtime.jetpack import main

    assert main(["--extras", "receive"]) == 0 and capsys.readouterr().out == "gpu,convert,integration\n"
    code = main(["--missing", "station"])
    printed = capsys.readouterr().out.strip()
    assert code == (1 if printed else 0)
    assert printed.split(",") == missing_extras("station") if printed else missing_extras("station") == []


def test_a_missing_onnx_points_at_the_small_convert_extra_not_torch():
    from drtrt.cli.common import missing_extra_message

    assert missing_extra_message("onnx").endswith("pip install 'drtrt[convert]'")
