"""The offline path a clinic without internet follows, end to end on this machine: `drtrt bundle
--platform host` (the station's extras, for this machine's Python) → `pip install --no-index
--find-links WHEELHOUSE` into a fresh virtual environment (`python -m venv`, no system packages, no
pip configuration) → no torch there → `drtrt build --fp16` on a tiny FP32 ONNX with the TensorRT
double at 8.6.1 and 10.3.0 (issue 23 item 2: onnx without torch) → the service's command, `drtrt
station`, answers HTTP. install.sh itself is driven by tests/deploy/test_install.py (stand-ins for
the system's commands); the aarch64 wheelhouse for a Jetson needs the package index and a Jetson.

Needs the package index (or pip's cache) once per run: skipped with the reason when it cannot be reached."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from processes import track

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
# the double, injected into every Python the lean environment starts (DRTRT_FAKE_TRT=version): what
# tests/fake_tensorrt.install does with pytest's monkeypatch, done with plain assignments
SHIM = '''import os
import sys
if os.environ.get("DRTRT_HIDE_MODULE"):          # as if that package were not installed
    sys.modules[os.environ["DRTRT_HIDE_MODULE"]] = None
if os.environ.get("DRTRT_FAKE_TRT"):
    class _Set:
        def setitem(self, mapping, key, value):
            mapping[key] = value

        def setattr(self, target, name, value):
            setattr(target, name, value)

    from fake_tensorrt import install
    install(_Set(), os.environ["DRTRT_FAKE_TRT"])
'''


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without pip's settings (the machine's own index and wheel folders) or a venv's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def run(*cmd, timeout: int = 300, **options) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **options)


@pytest.fixture(scope="module")
def offline(tiny_onnx, tmp_path_factory) -> dict:
    """The bundle's manifest, the lean environment installed from its wheelhouse alone, and the seconds each took."""
    work = tmp_path_factory.mktemp("offline")
    probe = run(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", work / "probe",
                "typer", timeout=120)
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"the package index cannot be reached from here: {last}")
    golden = work / "golden"
    golden.mkdir()
    (golden / "golden.json").write_text("{}")
    start = time.perf_counter()
    made = CliRunner().invoke(app, ["bundle", "--model", str(tiny_onnx), "--golden", str(golden), "--out",
                                    str(work / "bundle"), "--platform", "host", "--allow-unchecked-model"])
    seconds = {"bundle": time.perf_counter() - start}
    assert made.exit_code == 0, made.output
    manifest = json.loads((work / "bundle" / "manifest.json").read_text())
    env = work / "venv"
    start = time.perf_counter()
    created = run(sys.executable, "-m", "venv", env, env=clean_env())
    assert created.returncode == 0, created.stderr
    # --no-compile: the byte code is written at first import instead (a third of the time on a busy machine)
    installed = run(env / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", "--no-index", "--find-links",
                    work / "bundle" / "wheelhouse", f"drtrt[{','.join(manifest['extras'])}]", *(
                        [manifest["cuda_python"]] if manifest["cuda_python"] else []), env=clean_env(), timeout=600)
    seconds["install"] = time.perf_counter() - start
    assert installed.returncode == 0, installed.stderr
    house = list((work / "bundle" / "wheelhouse").iterdir())
    print(f"offline install: bundle {len(house)} wheels, {sum(p.stat().st_size for p in house) / 1e6:.0f} MB in "
          f"{seconds['bundle']:.0f} s; venv + pip install --no-index {seconds['install']:.0f} s")
    (work / "site").mkdir()
    (work / "site" / "sitecustomize.py").write_text(SHIM)
    return {"manifest": manifest, "env": env, "site": work / "site"}


def lean(offline, *args, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """``drtrt ARGS`` in the lean environment, with the TensorRT double when DRTRT_FAKE_TRT is given."""
    path = f"{offline['site']}{os.pathsep}{TESTS}"
    return run(offline["env"] / "bin" / "drtrt", *args, timeout=timeout, env=clean_env(PYTHONPATH=path, **env))


@pytest.mark.slow
def test_the_bundle_carries_the_station_and_installs_it_offline_without_torch(offline):
    manifest = offline["manifest"]
    assert manifest["service"] == "station" and manifest["platform"].startswith("host-")
    assert manifest["extras"] == ["gpu", "convert", "station", "integration"] and manifest["jetpack"] is None
    python = offline["env"] / "bin" / "python"
    code = ("import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
            "('torch', 'onnx', 'starlette', 'uvicorn', 'jinja2', 'babel', 'pydicom', 'pynetdicom', 'cuda')}))")
    found = json.loads(run(python, "-I", "-c", code, env=clean_env()).stdout)
    assert found.pop("torch") is False and all(found.values()), found
    missing = run(python, "-m", "drtrt.runtime.jetpack", "--missing", "station", env=clean_env())
    assert missing.returncode == 0 and missing.stdout.strip() == "", missing.stdout + missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_build_fp16_works_on_the_lean_install(offline, tiny_onnx, version, tmp_path):
    engine = tmp_path / "model.engine"
    built = lean(offline, "build", "--onnx", tiny_onnx, "--out", engine, "--fp16", "--max-batch", "1",
                 DRTRT_FAKE_TRT=version, DRTRT_CACHE_DIR=str(tmp_path / "cache"))
    assert built.returncode == 0, built.stdout + built.stderr
    record = json.loads(engine.with_name("model.engine.json").read_text())
    assert engine.stat().st_size > 0 and record["precision"] == "fp16", record
    assert record["tensorrt"].startswith(version.rsplit(".", 1)[0]), record["tensorrt"]


@pytest.mark.slow
def test_without_onnx_build_fp16_names_the_small_convert_extra(offline, tiny_onnx, tmp_path):
    """What a `drtrt[gpu]`-only install said (issue 23 item 2), now pointing at the extra without torch."""
    built = lean(offline, "build", "--onnx", tiny_onnx, "--out", tmp_path / "m.engine", "--fp16",
                 DRTRT_FAKE_TRT="10.3.0", DRTRT_HIDE_MODULE="onnx", DRTRT_CACHE_DIR=str(tmp_path / "cache"))
    errors = [line for line in built.stderr.splitlines() if line.startswith("error:")]     # after the progress bar
    assert built.returncode == 1 and len(errors) == 1 and "Traceback" not in built.stderr, built.stderr
    assert "needs 'onnx'" in built.stderr and "pip install 'drtrt[convert]'" in built.stderr, built.stderr
    assert not (tmp_path / "m.engine").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_station_command_the_unit_runs_answers_from_the_lean_install(offline, tiny_onnx, tmp_path):
    """The unit's ExecStart (install.sh), on an engine built there, the PIN from the environment as systemd's
    EnvironmentFile gives it."""
    port, log = free_port(), tmp_path / "station.log"
    camera, engine = tmp_path / "camera", tmp_path / "model.engine"
    camera.mkdir()
    fake = {"DRTRT_FAKE_TRT": "10.3.0", "DRTRT_CACHE_DIR": str(tmp_path / "cache")}
    built = lean(offline, "build", "--onnx", tiny_onnx, "--out", engine, "--if-stale", **fake)
    assert built.returncode == 0, built.stdout + built.stderr
    command = [offline["env"] / "bin" / "drtrt", "station", "--model", engine, "--data-dir", tmp_path / "station",
               "--camera-dir", camera, "--host", "127.0.0.1", "--port", str(port), "--allow-unchecked-model"]
    env = clean_env(DRTRT_STATION_PIN="2468", PYTHONPATH=f"{offline['site']}{os.pathsep}{TESTS}", **fake)
    with log.open("w") as out:
        proc = subprocess.Popen([str(c) for c in command], stdout=out, stderr=subprocess.STDOUT, env=env)
    track(proc)
    deadline, answer = time.monotonic() + 90, None
    while time.monotonic() < deadline and proc.poll() is None and answer is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                answer = (response.status, json.loads(response.read()))
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    proc.wait(timeout=30)
    assert answer is not None, log.read_text()[-2000:]
    assert answer[0] == 200 and answer[1]["ok"] is True, answer
    assert "station serving" in log.read_text() and "model model.engine" in log.read_text(), log.read_text()
