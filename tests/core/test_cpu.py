"""The CPUs a process may use (affinity mask, cgroup quota) and the no-spin default for thread pools."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import drtrt
from drtrt import cpu
from drtrt.cpu import cgroup_cpu_quota, quiet_openmp, spin_wait, usable_cpus


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake cgroup mount: ``{"cpu.max": "..."}`` (v2) or ``{"cpu/cpu.cfs_quota_us": "..."}`` (v1)."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "max 100000"}, None),                                       # v2, unlimited
    ({"cpu.max": "150000 100000"}, 1.5),                                     # v2, 1.5 CPUs
    ({"cpu.max": "50000 100000"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),   # v1, unlimited
    ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 2.0),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "300000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 3.0),
    ({"cpu.max": "garbage"}, None),                                          # malformed: no quota
    ({"cpu/cpu.cfs_quota_us": "x", "cpu/cpu.cfs_period_us": "100000"}, None),
    ({"cpu.max": "100000 0"}, None),
    ({}, None),                                                              # no cgroup files at all
])
def test_cgroup_quota_from_v1_and_v2_files(tmp_path, files, quota):
    assert cgroup_cpu_quota(cgroup(tmp_path, files)) == quota


def test_v2_file_wins_over_v1(tmp_path):
    root = cgroup(tmp_path, {"cpu.max": "100000 100000", "cpu/cpu.cfs_quota_us": "400000",
                             "cpu/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_quota(root) == 1.0


@pytest.mark.parametrize("affinity, files, expected", [
    (8, {}, 8),                                                   # no quota: the affinity mask
    (8, {"cpu.max": "200000 100000"}, 2),                         # the quota caps it
    (8, {"cpu.max": "150000 100000"}, 2),                         # a fractional quota rounds up
    (8, {"cpu.max": "10000 100000"}, 1),                          # never below one
    (2, {"cpu.max": "800000 100000"}, 2),                         # nor above the mask
    (3, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 3),
])
def test_usable_cpus_is_the_affinity_mask_capped_by_the_quota(tmp_path, monkeypatch, affinity, files, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    assert usable_cpus(cgroup(tmp_path, files)) == expected


def test_usable_cpus_without_sched_getaffinity(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)               # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus(tmp_path) == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpus(tmp_path) == 1


def test_usable_cpus_here_is_within_the_affinity_mask():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value, spins", [(None, False), ("", False), ("0", False), ("no", False),
                                          ("1", True), ("true", True), ("YES", True), (" on ", True)])
def test_spinning_only_when_asked_for(monkeypatch, value, spins):
    if value is None:
        monkeypatch.delenv(cpu.SPIN_ENV, raising=False)
    else:
        monkeypatch.setenv(cpu.SPIN_ENV, value)
    assert spin_wait() is spins


def test_quiet_openmp_sets_passive_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(cpu.SPIN_ENV, raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    quiet_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    quiet_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv(cpu.SPIN_ENV, "1")                   # a dedicated machine: OpenMP's own default
    quiet_openmp()
    assert "OMP_WAIT_POLICY" not in os.environ


def _imports_torch_at_top(source: str) -> bool:
    tree = ast.parse(source)
    for node in tree.body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(n == "torch" or n.startswith("torch.") for n in names):
            return True
    return False


def _calls_quiet_openmp(source: str) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == "quiet_openmp"
               for n in ast.walk(ast.parse(source)))


def test_every_module_importing_torch_sits_in_a_package_that_quiets_openmp_first():
    """OMP_WAIT_POLICY is read once, when torch loads OpenMP: every drtrt module that imports torch
    on import must be inside a package whose ``__init__`` calls :func:`quiet_openmp` (which runs first)."""
    package = Path(drtrt.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if _imports_torch_at_top(path.read_text()):
            init = path.parent / "__init__.py"
            if path.parent == package or not _calls_quiet_openmp(init.read_text()):
                offenders.append(str(path.relative_to(package)))
    assert offenders == []
    assert _imports_torch_at_top("import numpy\nimport torch.nn as nn\n")
    assert not _imports_torch_at_top("def f():\n    import torch\n")


FAULTS = """
import resource, sys
import numpy as np
from drtrt.cpu import keep_freed_memory
if len(sys.argv) > 1:                    # a model: the Predictor sets it
    from drtrt.runtime.predictor import Predictor
    Predictor(sys.argv[1]).close()
    applied = True
else:
    applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):                       # glibc has raised its thresholds to these sizes by now
    a, b = np.ones(5 * 2**20, np.float32), np.ones(5 * 2**20, np.float32)
    del a, b
before = faults()
for _ in range(5):                       # two 20 MB arrays freed together: 40 MB free at the heap's top
    a, b = np.ones(5 * 2**20, np.float32), np.ones(5 * 2**20, np.float32)
    del a, b
print(applied, (faults() - before) / 5)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("defaults", [False, True])
def test_freed_memory_is_reused_without_page_faults(defaults):
    """Two 20 MB arrays made and freed over and over: glibc's default gives the 40 MB back and faults it
    in again every time (about 1,500 faults a round here: numpy asks for huge pages); after
    keep_freed_memory() the heap keeps it."""
    import subprocess
    import sys

    env = {**os.environ, "DRTRT_MALLOC_DEFAULTS": "1" if defaults else "0"}
    applied, faults = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True,
                                     check=True).stdout.split()
    assert applied == str(not defaults)
    if defaults:
        assert float(faults) > 500
    else:
        assert float(faults) < 100


def test_opencv_runs_single_threaded_while_held_and_is_restored_after_the_last_holder():
    import cv2

    from drtrt.cpu import single_threaded_opencv

    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        first = single_threaded_opencv()
        second = single_threaded_opencv()
        assert cv2.getNumThreads() == 1
        first()
        first()                                   # twice: counted once
        assert cv2.getNumThreads() == 1           # the second holder still runs
        second()
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_predictor_keeps_freed_memory_for_the_next_photo(tiny_onnx):
    import subprocess
    import sys

    env = {**os.environ, "DRTRT_MALLOC_DEFAULTS": "0"}
    _, faults = subprocess.run([sys.executable, "-c", FAULTS, str(tiny_onnx)], env=env, capture_output=True,
                               text=True, check=True).stdout.split()
    assert float(faults) < 100
