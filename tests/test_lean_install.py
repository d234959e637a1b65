"""`pip install drtrt` (no extras) screens with an ONNX model, and torch is not part of it.

The check builds drtrt's wheel, pip-installs it into a fresh virtual environment, and gives
that environment exactly the distributions drtrt's base requirements resolve to (linked from
this environment, since the test machine is offline), nothing else. torch, onnx and the
other extras are then simply absent, as on a Jetson after `pip install drtrt`.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "torchvision", "onnx", "onnxslim", "scikit-learn", "matplotlib", "tensorrt", "nvidia-modelopt"}


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def test_base_dependencies_exclude_torch():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    assert not base & HEAVY, base & HEAVY
    assert {"torch", "onnx"} <= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}


def _closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions the requirements resolve to (markers evaluated here, extras off)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in found:
            continue
        dist = metadata.distribution(req.name)
        assert not req.specifier or req.specifier.contains(dist.version, prereleases=True), (req, dist.version)
        found[key] = dist
        todo += dist.requires or []
    return found


def _top_level_entries(dist: metadata.Distribution) -> set[Path]:
    root = Path(dist.locate_file(""))
    entries = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    return {root / e for e in entries if (root / e).exists() and e not in ("bin", "__pycache__")}


@pytest.fixture(scope="module")
def lean_env(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("lean")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "drtrt", source / "drtrt", ignore=shutil.ignore_patterns("__pycache__"))
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)  # noqa: E731
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "wheels"),
        str(source))
    wheel = next((work / "wheels").glob("drtrt-*.whl"))
    env = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(env))
    python = env / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel))
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for dist in _closure(requires).values():
        for entry in _top_level_entries(dist):
            if not (site / entry.name).exists():
                (site / entry.name).symlink_to(entry)
    return env


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="venv layout differs on Windows")
def test_fresh_install_has_no_torch(lean_env):
    python = lean_env / "bin" / "python"
    code = ("import importlib.metadata as m, importlib.util as u, json\n"
            "print(json.dumps({'requires': m.requires('drtrt'),\n"
            "                  'present': sorted(d.metadata['Name'].lower() for d in m.distributions()),\n"
            "                  'torch': u.find_spec('torch') is not None, 'onnx': u.find_spec('onnx') is not None}))\n")
    proc = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    base = [r for r in report["requires"] if "extra ==" not in r]
    assert base and not {_name(r) for r in base} & HEAVY
    assert "drtrt" in report["present"] and not set(report["present"]) & HEAVY, report["present"]
    assert not report["torch"] and not report["onnx"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="venv layout differs on Windows")
def test_fresh_install_screens_with_an_onnx_model(lean_env, tiny_onnx, photo_root, tmp_path):
    image = sorted((photo_root / "A. Segmentation" / "1. Original Images").glob("*/*.jpg"))[0]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    start = time.perf_counter()
    proc = subprocess.run([lean_env / "bin" / "drtrt", "screen", image, "--model", tiny_onnx, "--json",
                           "--out", tmp_path / "session", "--patient", "L-1", "--eye", "left"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.splitlines()[0])
    assert row["status"] == "graded" and row["patient"] == "L-1"
    assert next((tmp_path / "session" / "reports").glob("patient-L-1-visit-*.html")).is_file()
    assert seconds < 30, f"start-up to first result took {seconds:.1f} s"
    print(f"lean install: start-up to first result {seconds:.2f} s (tiny model)")
