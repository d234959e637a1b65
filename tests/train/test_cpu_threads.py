"""PyTorch on a shared CPU: OpenMP threads that sleep when idle, and no more threads than usable CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from drtrt import cpu  # noqa: E402
from drtrt.train import distributed  # noqa: E402
from drtrt.train.distributed import DistContext, limit_cpu_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def openmp_settings(**env: str) -> dict[str, str]:
    """The OpenMP settings a fresh ``python -m drtrt.cli train`` process runs with, as libgomp reports
    them when it loads (``OMP_DISPLAY_ENV``); skipped where torch's OpenMP is not libgomp."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", cpu.SPIN_ENV, "GOMP_SPINCOUNT")}
    full = {**base, "PYTHONPATH": str(ROOT), "OMP_DISPLAY_ENV": "VERBOSE", **env}
    proc = subprocess.run([sys.executable, "-m", "drtrt.cli", "train", "--print-config"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if "OPENMP DISPLAY ENVIRONMENT" not in proc.stderr:
        pytest.skip("torch's OpenMP runtime here does not report its settings (not libgomp)")
    found = {}
    for line in proc.stderr.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if sep and key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
            found[key] = value.strip("'")
    return found


def test_a_fresh_training_process_runs_openmp_passive():
    assert openmp_settings() == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}


def test_the_users_wait_policy_wins():
    assert openmp_settings(OMP_WAIT_POLICY="ACTIVE")["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.fixture
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("torch_threads")
def test_threads_are_capped_at_the_usable_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 1)
    torch.set_num_threads(2)
    assert limit_cpu_threads() == 1 == torch.get_num_threads()


@pytest.mark.usefixtures("torch_threads")
def test_torchrun_processes_share_the_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 4)
    torch.set_num_threads(4)
    assert limit_cpu_threads(DistContext(rank=1, world=2, local_rank=1)) == 2


@pytest.mark.usefixtures("torch_threads")
def test_a_lower_count_or_the_users_omp_num_threads_is_kept(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 2)
    torch.set_num_threads(1)                                  # a caller's choice (the slow tests make it)
    assert limit_cpu_threads() == 1
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")                # the user asked for 2: not second-guessed
    torch.set_num_threads(2)
    assert limit_cpu_threads() == 2
