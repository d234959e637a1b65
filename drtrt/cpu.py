"""How many CPUs this process may really use, and whether drtrt's thread pools may spin-wait.

A screening station shares its CPU (the camera software, a browser, another drtrt), so
drtrt's defaults are the shared-CPU ones: thread pools as large as the CPUs the process may
use (its affinity mask, capped by a container's CPU quota; not the machine's core count), and
threads that sleep when they run out of work instead of spin-waiting for the next parallel
region. A spinning OpenMP or ONNX Runtime thread burns a core another process needs, and a
thread that shares its core with a busy process holds up every parallel region it is part of.

On a machine dedicated to drtrt, ``DRTRT_CPU_SPIN=1`` turns spin-waiting back on (ONNX
Runtime's ``allow_spinning``, and OpenMP's own default wait policy for PyTorch), which saves a
little latency there. ``OMP_WAIT_POLICY`` or ``OMP_NUM_THREADS`` set by the user always win.

Core module: no framework is imported here (the runtime installs without torch).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

SPIN_ENV = "DRTRT_CPU_SPIN"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: str | Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (1.5 = one and a half), or None when unlimited.

    cgroup v2: ``ROOT/cpu.max`` holds ``"QUOTA PERIOD"`` or ``"max PERIOD"``. cgroup v1:
    ``ROOT/cpu/cpu.cfs_quota_us`` (-1 = unlimited) over ``cpu.cfs_period_us`` (also under
    ``cpu,cpuacct/``). Read at the mount's root, which inside a container (cgroup namespace) is
    the container's own group. Unreadable or malformed files count as no quota.
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else _ratio(quota, period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct"):
        try:
            quota = (root / folder / "cpu.cfs_quota_us").read_text().strip()
            period = (root / folder / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
        try:
            return None if int(quota) < 0 else _ratio(quota, period)
        except ValueError:
            return None
    return None


def _ratio(quota: str, period: str) -> float | None:
    quota_us, period_us = int(quota), int(period)
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cpus(cgroup_root: str | Path = CGROUP_ROOT) -> int:
    """The number of CPUs this process may run on: its affinity mask, capped by the cgroup quota, at least 1.

    A fractional quota rounds up (1.5 CPUs → 2 threads), as joblib/loky and the JVM do: the
    second thread still gets the half CPU. Hand-written rather than taken from joblib's
    ``loky.cpu_count`` (which does the same), because joblib is not part of the screening
    install; ``os.process_cpu_count`` (Python 3.13) reads the affinity mask only.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # macOS and Windows have no sched_getaffinity
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def spin_wait() -> bool:
    """Whether thread pools may spin-wait: only when ``DRTRT_CPU_SPIN`` is 1/true/yes (a dedicated machine)."""
    return os.environ.get(SPIN_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def quiet_openmp() -> None:
    """Make OpenMP threads sleep, not spin, when idle: ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it.

    Works only before the OpenMP runtime is loaded (libgomp reads its environment once, when
    ``import torch`` loads it), so the packages that import torch call this first, on import.
    Nothing is set with ``DRTRT_CPU_SPIN=1``: OpenMP keeps its own default there.
    """
    if not spin_wait():
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt() parameters (malloc.h)
KEEP_FREED_BYTES = 256 * 2**20                       # free heap kept for reuse before any is returned
LARGE_BYTES = 32 * 2**20                             # allocations below this come from the heap, not mmap


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory instead of handing it back to the kernel after every large array.

    By default an allocation above 128 KB-32 MB is a fresh ``mmap`` and its ``free`` unmaps it, and the
    heap is trimmed whenever 128 KB lie free at its top: each decoded photo, mask and blur then costs
    page faults on its first touch (about 1,700 a photo in the intake, 3-7 CPU-ms of 40 on a loaded
    2-core VM; ``docs/benchmarks.md``), and the threads of a screening session fault each other's
    freed pages back in. With this, arrays below 32 MB come from the heap and up to 256 MB of it stay
    mapped: the process's resident size stays near its peak instead of falling back between photos.
    Returns whether it applied (glibc only; elsewhere, or when ``DRTRT_MALLOC_DEFAULTS=1``, it does nothing).
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc" or os.environ.get("DRTRT_MALLOC_DEFAULTS", "") in ("1", "true", "yes"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


_opencv_lock = threading.Lock()
_opencv_users: list[int] = []     # OpenCV's thread count before the first user, while any user holds it


def single_threaded_opencv() -> Callable[[], None]:
    """OpenCV's own thread pool off (one thread, the caller's) until the returned function is called.

    For a process that already runs its image work beside a busy pool of its own, as a screening
    session's helper threads run beside ONNX Runtime's intra-op threads: each OpenCV call there would
    otherwise wake a pool as large as the machine, on cores the forward pass needs. Counted: OpenCV's
    count is restored when the last holder releases it; releasing twice is harmless. ``cv2`` is imported
    here, not at the top, so this module stays free of any image library.
    """
    import cv2

    with _opencv_lock:
        if not _opencv_users:
            _opencv_users.append(cv2.getNumThreads())
        _opencv_users.append(0)
        cv2.setNumThreads(1)
    released = threading.Event()

    def release() -> None:
        with _opencv_lock:
            if released.is_set():
                return
            released.set()
            _opencv_users.pop()
            if len(_opencv_users) == 1:
                cv2.setNumThreads(_opencv_users.pop())
    return release
