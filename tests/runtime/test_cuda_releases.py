"""drtrt's CUDA layer against the real cuda-python releases, on this GPU-less machine: 12.6 (what
deploy/ pins for JetPack 6) raises when libcuda.so.1 is missing, 13.x returns an error code.
Each must end in one clear line, never a traceback. The wheels install without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("from drtrt.errors import BackendUnavailable\n"
         "from drtrt.runtime.backends.cuda import load_cuda\n"
         "try:\n    load_cuda('cuda-python')\nexcept BackendUnavailable as exc:\n    print('UNAVAILABLE', exc)\n"
         "else:\n    print('GPU')\n")


@pytest.fixture(scope="module", params=["12.6", "13"])
def cuda_python(request, tmp_path_factory) -> Path:
    """A folder holding the real cuda-python ``release`` wheel, put first on PYTHONPATH."""
    target = tmp_path_factory.mktemp(f"cuda-python-{request.param}")
    spec = f"cuda-python=={request.param}.*"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "--target", str(target), spec], capture_output=True, text=True, timeout=600)
    if proc.returncode:
        pytest.skip(f"cannot install {spec} from the package index here: {proc.stderr.strip().splitlines()[-1:]}")
    return target


def run(cuda_python: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cuda_python), str(ROOT)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_no_driver_is_one_clear_line_with_every_release(cuda_python):
    probe = run(cuda_python, "-c", "import cuda.bindings.runtime as rt; print(rt.__file__)")
    assert probe.stdout.strip().startswith(str(cuda_python)), probe      # the wheel under test, not torch's
    proc = run(cuda_python, "-c", PROBE)
    if proc.stdout.startswith("GPU"):
        pytest.skip("a CUDA GPU is visible here")
    assert proc.returncode == 0 and proc.stdout.startswith("UNAVAILABLE no usable CUDA GPU"), proc.stdout + proc.stderr
    assert "ONNX Runtime" in proc.stdout and "Traceback" not in proc.stderr
    doctor = run(cuda_python, "-m", "drtrt.cli", "doctor")
    assert doctor.returncode == 0 and "internal error" not in doctor.stderr and "Traceback" not in doctor.stderr, (
        doctor.stdout + doctor.stderr)
    assert "GPU" in doctor.stdout
