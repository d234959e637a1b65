"""DistributedDataParallel plumbing for runs started by ``torchrun`` (one process per GPU or CPU slot).

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them a run is a single
process and nothing here does anything. Backend: NCCL on CUDA, gloo on the CPU (what the test
suite uses: 2 processes on one machine). Only rank 0 logs and writes files.

:func:`limit_cpu_threads` sizes PyTorch's CPU thread pool for this process: its share of the
CPUs the process may use (a container's quota included), never more than it has already.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from drtrt.cpu import usable_cpus


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun describes in the environment (or return a 1-process context)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank)


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Each process of a multi-GPU run takes the GPU of its local rank."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def limit_cpu_threads(ctx: DistContext = DistContext()) -> int:
    """Cap PyTorch's intra-op threads at this process's share of the usable CPUs; returns the count in force.

    PyTorch starts with one thread per CPU of the affinity mask, which ignores a container's CPU
    quota and the other processes torchrun started on this machine (``LOCAL_WORLD_SIZE``); on a
    CPU shared that way, threads beyond the share only wait for each other. A lower count
    already set (``torch.set_num_threads``) is kept, and so is ``OMP_NUM_THREADS`` when the
    user gave it (torchrun sets it to 1 for several processes).
    """
    if "OMP_NUM_THREADS" not in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world if ctx.enabled else 1))
        share = max(1, usable_cpus() // max(1, local))
        if torch.get_num_threads() > share:
            torch.set_num_threads(share)
    return torch.get_num_threads()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
