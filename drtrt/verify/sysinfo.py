"""Machine facts for benchmarks: peak memory, GPU memory, FP32 GEMM peak, CPU name.

Stdlib + NumPy only at import. Peak RSS is read from ``/proc/self/status`` (VmHWM) and reset
per model through ``/proc/self/clear_refs`` (Linux >= 4.0); elsewhere the process-lifetime
peak from ``resource.getrusage`` is reported and marked as such. psutil is not used: it
would be a new dependency for two numbers the kernel already exposes.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from drtrt.cpu import quiet_openmp, usable_cpus


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter for this process; False when the platform cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (since the last successful reset_peak_rss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)   # bytes on macOS, KiB on Linux


def gpu_memory_used_mb(device: int = 0) -> float | None:
    """Memory in use on GPU ``device`` (whole device, all processes) via NVML; None without a GPU or NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(device)).used / 2**20
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time_best(run, repeats: int) -> tuple[float, float]:
    """(fastest, median) seconds of ``repeats`` calls of ``run`` after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        run()
        times.append(time.perf_counter() - tick)
    return min(times), statistics.median(times)


def _gemm_runners(a: np.ndarray, b: np.ndarray, threads: int | None) -> dict[str, object]:
    """n x n FP32 matrix products by each library present: NumPy's BLAS, PyTorch's (MKL or
    OpenBLAS), ONNX Runtime's MLAS (a one-node MatMul graph; needs ``onnx`` to build it)."""
    runners: dict[str, object] = {"numpy": lambda: a @ b}
    try:
        quiet_openmp()   # in case this is the process's first torch import
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        runners["torch"] = lambda: torch.mm(ta, tb)
    except ImportError:
        pass
    try:
        import onnxruntime  # noqa: F401 - without it, the peak leaves ONNX Runtime out
        from onnx import TensorProto, helper

        from drtrt.runtime.backends.ort import open_session
    except ImportError:
        return runners
    n = a.shape[0]
    spec = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = open_session(model.SerializeToString(), threads=threads)   # drtrt's screening options
    runners["onnxruntime"] = lambda: session.run(None, {"a": a, "b": b})
    return runners


def measure_gemm_peak(threads: int | None = None, n: int = 2048, repeats: int = 10) -> dict:
    """This CPU's FP32 GEMM throughput: the fastest n x n product of every library present.

    BLAS libraries differ a lot on one CPU (on this project's AMD Zen 5, ONNX Runtime's MLAS
    runs a 2048² product ~1.7x faster than NumPy's OpenBLAS), and a "peak" below what the
    models reach would give fractions above 100 %. Each library: ``repeats`` products after a
    warm-up, 2 n^3 FLOP each, on ``threads`` threads (None = each library's default).
    Returns GFLOP/s: ``best`` (the peak), ``by`` (which library), ``median`` (of that
    library) and ``libraries`` (best per library).
    """
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    limiter = None
    if threads:
        from threadpoolctl import threadpool_limits   # scikit-learn's dependency: present with drtrt[train]

        limiter = threadpool_limits(limits=threads)   # NumPy's and PyTorch's BLAS/OpenMP pools
    try:
        results = {name: _time_best(run, repeats) for name, run in _gemm_runners(a, b, threads).items()}
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    flop = 2 * n**3
    by = min(results, key=lambda k: results[k][0])
    return {"best": flop / results[by][0] / 1e9, "by": by, "median": flop / results[by][1] / 1e9,
            "libraries": {k: round(flop / v[0] / 1e9, 1) for k, v in results.items()}, "n": n,
            "threads": threads or usable_cpus()}
