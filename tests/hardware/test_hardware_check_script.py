"""scripts/hardware-check.sh --no-install on this CPU machine: the machine's Python and packages, no pip
and no network (stand-ins on PATH record any call), the CUDA layer as rows, a given cuda-bindings wheel
imported first, and one-line refusals of bad options before anything runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "hardware-check.sh"
NETWORK = ("pip", "pip3", "curl", "wget", "apt", "apt-get", "uv")

FAKE_RUNTIME = '''import enum
class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorNoDevice = 100
def cudaGetDeviceCount():
    return cudaError_t.cudaErrorNoDevice, 0
def cudaGetErrorString(error):
    return cudaError_t.cudaSuccess, b"the 12.9 wheel's stand-in sees no GPU"
'''


def _run(tmp_path: Path, *args: str, cuda_check: str = "") -> tuple[subprocess.CompletedProcess, str]:
    """The script with stand-ins for every installer and downloader, and $PYTHON a wrapper that logs its
    arguments (``-m pip`` would show) before running this test's Python (or, for cuda_check.py, the bash
    ``cuda_check`` when given); returns (process, the calls)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    for name in NETWORK:
        (bin_dir / name).write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{calls}"\nexit 1\n')
    stand_in = f'case "$*" in *cuda_check.py*) {cuda_check};; esac\n' if cuda_check else ""
    (bin_dir / "python-logged").write_text(f'#!/usr/bin/env bash\nargs="$*"\necho "python ${{args//$\'\\n\'/ }}" >> "{calls}"\n'
                                           f'{stand_in}exec "{sys.executable}" "$@"\n')
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DRTRT_CUDA_BINDINGS_WHEEL", "PYTHONPATH")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(bin_dir / "python-logged"), OMP_NUM_THREADS="1",
               DRTRT_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)
    return proc, calls.read_text() if calls.exists() else ""


def _rows(stdout: str) -> dict[str, tuple[str, str]]:
    rows = [[c.strip() for c in line[2:-2].split(" | ")] for line in stdout.splitlines() if line.startswith("| ")]
    return {row[2]: (row[3], row[4]) for row in rows}


def _fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("cuda/bindings/__init__.py", '__version__ = "12.9.99"\n')
        wheel.writestr("cuda/bindings/runtime.py", FAKE_RUNTIME)
    return path


@pytest.fixture(scope="module")
def no_gpu():
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver: the rows would be the real GPU's")


def test_no_install_uses_the_machines_python_and_calls_no_installer(no_gpu, tmp_path):
    proc, calls = _run(tmp_path, "--no-install", "--no-record", "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"--no-install: {sys.executable}" in proc.stdout and "nothing installed, no network" in proc.stdout
    logged = calls.splitlines()
    assert logged and all(line.startswith("python ") for line in logged), calls       # no pip, curl, apt...
    assert not any("-m pip" in line or " install" in line for line in logged), calls
    rows = _rows(proc.stdout)
    layer = [check for check in rows if check.startswith("CUDA layer (cuda-bindings")]
    assert len(layer) == 2, rows                                   # the machine's, and the 12.9 wheel's row
    machine = rows[next(c for c in layer if "12.9" not in c)]
    assert machine[0] == "skipped" and "no usable CUDA GPU" in machine[1]
    assert rows["CUDA layer (cuda-bindings 12.9)"] == (
        "skipped", "no wheel: --no-install downloads nothing; give --bindings-wheel FILE or DRTRT_CUDA_BINDINGS_WHEEL")
    assert rows["TensorRT"][0] == "absent"
    assert "pins for this device" not in proc.stdout               # env.sh is never sourced, no pins asked for


def test_a_given_bindings_wheel_is_imported_before_the_machines(no_gpu, tmp_path):
    wheel = _fake_wheel(tmp_path / "cuda_bindings-12.9.99-py3-none-any.whl")
    proc, calls = _run(tmp_path, "--no-install", "--no-record", "--work", str(tmp_path / "work"),
                       "--bindings-wheel", str(wheel))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result, figure = _rows(proc.stdout)["CUDA layer (cuda-bindings 12.9.99)"]
    assert result == "skipped" and "the 12.9 wheel's stand-in sees no GPU" in figure, figure
    assert not any("pip" in line for line in calls.splitlines()), calls
    assert (tmp_path / "work" / "cuda-bindings-12.9" / "cuda" / "bindings" / "runtime.py").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--device", "one"], "--device takes a GPU number (0, 1, ...), not 'one'"),
    (["--bindings-wheel", "/nonexistent/cuda_bindings.whl"], "cuda-bindings wheel not found: /nonexistent/cuda_bindings.whl"),
    (["--no-such-option"], "usage: "),
    (["--onnx", "m.onnx"], "give --onnx and --golden together"),
])
def test_bad_options_are_one_line_exit_2_before_anything_runs(tmp_path, args, message):
    proc, calls = _run(tmp_path, "--no-install", "--no-record", *args)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert proc.stdout == "" and calls == ""


@pytest.mark.parametrize(("body", "extra"), [
    ('echo "| d | GPU | CUDA layer: identity | pass | f |"; echo "Segmentation fault" >&2; exit 139', "FAIL (exit 139)"),
    ('echo "| d | GPU | CUDA layer: identity | pass | f |"; exit 124', "FAIL (exit 124)"),
    ('echo "| d | GPU | CUDA layer: pinned round trip | FAIL | bytes |"; exit 1', None),
    ('echo "| d | GPU | CUDA layer: identity | pass | f |"; exit 0', None),
])
def test_a_cuda_check_that_stops_part_way_adds_a_fail_row(no_gpu, tmp_path, body, extra):
    """Rows a crash or a timeout left behind are kept, and one FAIL row says the run did not finish; a
    run whose FAIL rows explain its exit status, or that passed, adds none."""
    proc, _ = _run(tmp_path, "--no-install", "--no-record", "--work", str(tmp_path / "work"), cuda_check=body)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if " | CUDA layer" in line and "12.9" not in line]
    assert rows[0].startswith("| d | GPU | CUDA layer: "), rows
    added = [line for line in rows[1:] if "| CUDA layer | FAIL" in line]
    assert [extra in line for line in added] == ([True] if extra else []), rows
