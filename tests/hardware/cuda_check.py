"""drtrt's CUDA layer on a real GPU with no TensorRT installed (issue 23): what ``scripts/hardware-check.sh`` runs.

    python tests/hardware/cuda_check.py [--device N] [--date YYYY-MM-DD] [--expect-bindings 12.9]
                                        [--trt-version 10.3.0]

Uses whichever cuda-bindings imports first (the machine's, or a wheel unpacked to a folder put first on
PYTHONPATH: hardware-check.sh does that for cuda-bindings 12.9) against the real driver, and prints
one Markdown row per check, ready for docs/hardware-results.md (``| date | device | check | result |
figure |``):

- identity: name, compute capability, SMs, memory, the driver's CUDA, the binding's version;
- pinned round trip: a batch of 4 model inputs, host → device → host on one stream, byte-exact;
- mapped round trip: mapped (zero-copy) host memory written and read through its device address;
- two threads: opened on this thread, made current on a worker thread, used there on this stream;
- missing device: the next ordinal is one line (``BackendUnavailable``), not a traceback;
- the TensorRT double on this device's memory (double_on_gpu.py): staged and zero-copy identical,
  the station's two threads, and a missing ``--device`` through the runner.

No usable CUDA GPU (or no cuda-python): one ``skipped`` row, exit 0. A failed check: a ``FAIL`` row,
exit 1. ``--device N`` beyond the GPUs visible: one line on stderr, exit 1. Little work: a few 12 MiB
copies and a 64-pixel model (hardware-check.sh stops it after 7 minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT / "tests", ROOT):          # fake_tensorrt, and drtrt from this checkout without pip
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402

from drtrt.errors import BackendUnavailable, DrtrtError  # noqa: E402
from drtrt.runtime.backends.cuda import CudaMemory, GpuInfo, load_cuda  # noqa: E402

BATCH_BYTES = 4 * 3 * 512 * 512 * 4          # a batch of 4 float32 model inputs at 512 px


class Skip(Exception):
    """A check that cannot run here (a package missing): a ``skipped`` row with this reason."""


@dataclass
class Gpu:
    """What every check gets: the runtime module, the ordinal, drtrt's memory object on it, its facts."""

    rt: Any
    ordinal: int
    mem: CudaMemory
    info: GpuInfo
    bindings: str                             # "12.9.10 (/path/to/cuda/bindings)"


@dataclass
class Row:
    check: str
    result: str                               # pass | FAIL | skipped
    figure: str

    def markdown(self, date: str, device: str) -> str:
        cells = (date, device, self.check, self.result, self.figure)
        return "| " + " | ".join(" ".join(str(c).replace("|", "/").split()) for c in cells) + " |"


def run_check(name: str, check: Callable[..., str], *args: Any) -> Row:
    """``check`` returns the figure; AssertionError or any other error is a FAIL row (its first line)."""
    try:
        return Row(name, "pass", check(*args))
    except Skip as why:
        return Row(name, "skipped", str(why))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row, the next check still runs
        first = (str(exc).strip().splitlines() or [""])[0]
        return Row(name, "FAIL", f"{type(exc).__name__}: {first}"[:300])


def import_runtime() -> Any:
    errors = []
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise Skip(f"needs cuda-python (pip install 'drtrt[gpu]', or the machine's cuda-bindings): {'; '.join(errors)}")


def bindings_version(rt: Any) -> str:
    version = getattr(sys.modules.get("cuda.bindings"), "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version("cuda-bindings")
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    return f"{version} ({Path(getattr(rt, '__file__', '?')).parent})"


def check_identity(gpu: Gpu) -> str:
    info = gpu.info
    major, minor = (int(v) for v in info.compute_capability.split("."))
    assert info.name and major >= 5 and minor >= 0, info
    assert info.total_memory > 0 and info.multiprocessors > 0 and info.driver_version, info
    smi = shutil.which("nvidia-smi")
    agree = "no nvidia-smi"
    if smi:    # CUDA's ordinals need not be nvidia-smi's indices (CUDA_VISIBLE_DEVICES): look for it among all
        proc = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
        listed = [tuple(cell.strip() for cell in line.rsplit(",", 1)) for line in proc.stdout.splitlines() if "," in line]
        if proc.returncode != 0 or not listed:
            agree = f"nvidia-smi could not say ({(proc.stdout + proc.stderr).strip()[:60]})"
        else:
            assert (info.name, info.compute_capability) in listed, f"nvidia-smi lists {listed}, CUDA says {info}"
            agree = "nvidia-smi agrees"
    return (f"{info.name}, compute {info.compute_capability}, {info.multiprocessors} SMs, "
            f"{info.total_memory / 2**30:.1f} GiB, {'integrated' if info.integrated else 'discrete'}; driver CUDA "
            f"{info.driver_version}; cuda-bindings {gpu.bindings}, its cudart {info.runtime_version}; {agree}")


def _random(nbytes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


def check_pinned(gpu: Gpu) -> str:
    """What TrtRunner does per batch when staging: pinned host, H2D, D2H, synchronize (three times)."""
    mem, nbytes = gpu.mem, BATCH_BYTES
    host_in, host_out = mem.alloc_pinned(nbytes), mem.alloc_pinned(nbytes)
    device, stream = mem.alloc(nbytes), mem.create_stream()
    up = down = 0.0
    try:
        for seed in range(3):
            host_in[:], host_out[:] = _random(nbytes, seed), 0
            start = time.perf_counter()
            mem.copy_to_device(device, host_in, stream)
            mem.synchronize(stream)
            middle = time.perf_counter()
            mem.copy_to_host(host_out, device, stream)
            mem.synchronize(stream)
            up, down = up + middle - start, down + time.perf_counter() - middle
            assert np.array_equal(host_out, host_in), f"round trip {seed + 1} changed bytes"
    finally:
        mem.destroy_stream(stream)
        mem.free(device)
        mem.free_pinned(host_in)
        mem.free_pinned(host_out)
    rate = 3 * nbytes / 1e9
    return f"{nbytes / 2**20:.0f} MiB x3 byte-exact; H2D {rate / up:.1f} GB/s, D2H {rate / down:.1f} GB/s (wall clock)"


def check_mapped(gpu: Gpu) -> str:
    """Zero-copy memory as TrtRunner binds it: the GPU writes it through its device address and the CPU
    sees the bytes in place; the CPU writes it and the GPU reads the new bytes."""
    mem, nbytes = gpu.mem, BATCH_BYTES
    mapped, address = mem.alloc_mapped(nbytes)
    staging, stream = mem.alloc_pinned(nbytes), mem.create_stream()
    try:
        staging[:] = _random(nbytes, 10)
        mem.copy_to_device(address, staging, stream)        # the GPU side writes the mapped pages
        mem.synchronize(stream)
        assert np.array_equal(mapped, staging), "the CPU does not see what was written through the device address"
        mapped[:] = _random(nbytes, 11)
        mem.copy_to_host(staging, address, stream)          # the GPU side reads what the CPU wrote
        mem.synchronize(stream)
        assert np.array_equal(staging, mapped), "the device address does not read what the CPU wrote"
        same = "same as" if address == mapped.ctypes.data else "differs from"
    finally:
        mem.destroy_stream(stream)
        mem.free_pinned(staging)
        mem.free_pinned(mapped)
    return f"{nbytes / 2**20:.0f} MiB both ways byte-exact; device address {same} the host address"


def check_threads(gpu: Gpu) -> str:
    """The station's pattern: opened here, used on a worker thread after ``make_current``."""
    mem, nbytes = gpu.mem, 1 << 20
    host, back, device, stream = mem.alloc_pinned(nbytes), mem.alloc_pinned(nbytes), mem.alloc(nbytes), mem.create_stream()
    seen: dict[str, Any] = {}

    def worker() -> None:
        try:
            seen["before"] = int(gpu.rt.cudaGetDevice()[1])
            mem.make_current()
            seen["after"] = int(gpu.rt.cudaGetDevice()[1])
            host[:], back[:] = _random(nbytes, 20), 0
            mem.copy_to_device(device, host, stream)
            mem.copy_to_host(back, device, stream)
            mem.synchronize(stream)
            seen["exact"] = bool(np.array_equal(back, host))
        except Exception as exc:  # noqa: BLE001 - reported on this thread
            seen["error"] = exc

    try:
        thread = threading.Thread(target=worker, name="drtrt-cuda-check-worker")
        thread.start()
        thread.join()
    finally:
        mem.destroy_stream(stream)
        mem.free(device)
        mem.free_pinned(host)
        mem.free_pinned(back)
    if "error" in seen:
        raise seen["error"]
    assert seen["after"] == gpu.ordinal, f"the worker is on device {seen['after']}, the memory on {gpu.ordinal}"
    assert seen["exact"], "the worker's round trip on this thread's stream changed bytes"
    return (f"worker thread started on device {seen['before']}, on {seen['after']} after make_current; "
            "round trip on the opening thread's stream byte-exact")


def check_missing_device(gpu: Gpu) -> str:
    count = int(gpu.rt.cudaGetDeviceCount()[1])
    try:
        load_cuda("cuda-python", count).close()
    except BackendUnavailable as exc:
        message = str(exc)
    else:
        raise AssertionError(f"device {count} opened although {count} GPU(s) are visible")
    assert "\n" not in message and f"CUDA device {count} requested but {count} GPU(s)" in message, message
    return f"device {count}: one line: {message[:90]}..."


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cuda_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", type=int, default=0, help="GPU ordinal to check (default 0)")
    parser.add_argument("--date", default=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"))
    parser.add_argument("--expect-bindings", default=os.environ.get("DRTRT_EXPECT_BINDINGS", ""),
                        help="fail unless cuda-bindings' version starts so (default $DRTRT_EXPECT_BINDINGS)")
    parser.add_argument("--trt-version", default="10.3.0", help="the TensorRT the double plays (default 10.3.0)")
    return parser.parse_args(argv)


def open_gpu(args: argparse.Namespace) -> Gpu | Row:
    """The device to check, or the one ``skipped`` row; ``BackendUnavailable`` for a missing ``--device``."""
    try:
        rt = import_runtime()
    except Skip as why:
        return Row("CUDA layer", "skipped", str(why))
    bindings = bindings_version(rt)
    try:
        load_cuda("cuda-python", 0).close()                 # is there any usable GPU at all?
    except BackendUnavailable as why:
        return Row(f"CUDA layer (cuda-bindings {bindings.split()[0]})", "skipped", str(why))
    mem = load_cuda("cuda-python", args.device)
    return Gpu(rt, args.device, mem, mem.gpu_info(), bindings)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        gpu = open_gpu(args)
    except DrtrtError as exc:          # --device beyond the GPUs (BackendUnavailable), a device CUDA refuses
        print(f"cuda_check: {exc}", file=sys.stderr)
        return 1
    if isinstance(gpu, Row):
        print(gpu.markdown(args.date, "no GPU"))
        return 0
    from double_on_gpu import double_checks

    label = f"CUDA layer (cuda-bindings {gpu.bindings.split()[0]})"
    rows = []

    def emit(*new: Row) -> None:       # each row as soon as it is known: a hang later still leaves these
        for row in new:
            print(row.markdown(args.date, gpu.info.model), flush=True)
        rows.extend(new)

    if args.expect_bindings:
        emit(run_check(f"{label}: version", _expect, gpu.bindings, args.expect_bindings))
    for name, check in (("identity", check_identity), ("pinned round trip", check_pinned),
                        ("mapped round trip", check_mapped), ("two threads", check_threads),
                        ("missing device", check_missing_device)):
        emit(run_check(f"{label}: {name}", check, gpu))
    emit(*double_checks(gpu, label, args.trt_version, run_check))
    gpu.mem.close()
    return 1 if any(row.result == "FAIL" for row in rows) else 0


def _expect(bindings: str, prefix: str) -> str:
    assert bindings.startswith(prefix), f"cuda-bindings {bindings} imported, {prefix} expected (PYTHONPATH order?)"
    return bindings


if __name__ == "__main__":
    sys.exit(main())
