"""What a training run's numbers depend on: every random source seeded from one place, torch's
deterministic algorithms, and the facts about this machine that change the figures anyway.

On one machine and one thread count, a run is bit-identical from run to run (``drtrt train
--seed N`` twice gives the same checkpoint; a test checks it). It is *not* bit-identical across
thread counts (the backward convolutions split their float reductions by thread) nor across
CPUs: oneDNN picks its convolution kernels and their blocking by instruction set and cache sizes,
so an AVX-512 EPYC and an AVX2 one (or ``ONEDNN_MAX_CPU_ISA=AVX2`` on the same machine) train
different weights from the same seed — the first step that differs in the pipeline (synthesis is
byte-identical). docs/reproducibility.md has the measurements. :func:`run_environment` records
those facts beside each run so two runs that differ can be told apart.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from collections.abc import Iterator

import numpy as np
import torch

CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS needs a fixed workspace to give the same sums on every call (CUDA's reproducibility notes)."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device).

    The rest of training draws from generators made from the same seed: the split
    (``random_state=seed``), the batch order and each sample's augmentation
    (:class:`~drtrt.train.data.EpochSampler`, from ``(seed, epoch, position)``) and the data
    loader (``torch.Generator().manual_seed(...)``), so data loader workers add no randomness.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)   # also seeds every CUDA device


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """torch's deterministic algorithms (cuDNN without autotuning) for the block, restored after.

    ``warn_only``: an op with no deterministic implementation (bilinear upsampling's backward on
    CUDA) warns instead of stopping the run. On the CPU this costs nothing measurable; on CUDA it
    gives up cuDNN's autotuned kernels (``TrainConfig.deterministic=False`` for speed there).
    """
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor string elsewhere)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_environment(device: torch.device, threads: int, deterministic: bool) -> dict:
    """What the weights of a run depend on besides its config: written to ``RUN/environment.json``."""
    env = {"torch": torch.__version__, "device": str(device), "threads": threads, "deterministic": deterministic,
           "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "python": platform.python_version()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env
