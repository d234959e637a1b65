"""``drtrt doctor``: what this machine has, and what each drtrt command can do on it.

Probes (none installs or downloads anything, none needs a GPU to answer): Python, OS, Jetson
L4T/JetPack release (``/etc/nv_tegra_release``), GPU + compute capability + CUDA driver and
runtime (through cuda-python or pycuda, else ``nvidia-smi``), TensorRT, the CUDA Python
bindings, ONNX Runtime and its providers, onnx/torch presence (not imported), free disk.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from drtrt import __version__
from drtrt.errors import DrtrtError
from drtrt.runtime.backends.cuda import installed_libraries
from drtrt.runtime.jetpack import describe, parse_l4t

CPU_PATH = "use drtrt calibrate + ONNX Runtime"


@dataclass(frozen=True)
class Finding:
    item: str
    value: str
    ok: bool | None = None           # None: informational


@dataclass(frozen=True)
class Capability:
    command: str
    available: bool
    detail: str


@dataclass(frozen=True)
class DoctorReport:
    findings: tuple[Finding, ...]
    capabilities: tuple[Capability, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"drtrt": __version__, "findings": [asdict(f) for f in self.findings],
                "capabilities": [asdict(c) for c in self.capabilities]}


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):     # a parent package blocked or half-installed
        return False


def jetson_release(path: Path = Path("/etc/nv_tegra_release"), tensorrt_version: str | None = None) -> str | None:
    """"L4T 36.4.3 (JetPack 6.1/6.2, TensorRT 10.3)" from ``/etc/nv_tegra_release`` and TensorRT's own
    ``__version__`` (the JetPack by L4T major: a newer minor is "6.x", never "?"); None off a Jetson."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    l4t = parse_l4t(text)
    if l4t is None:
        return f"unrecognised {path}: {text.strip()[:60]}"
    return describe(l4t, tensorrt_version)


def kernel_driver(path: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The NVIDIA kernel module version ("570.86.15") on desktop/server GPUs; None elsewhere (Jetson: nvgpu)."""
    try:
        match = re.search(r"Kernel Module(?: for \S+)?\s+([\d.]+)", path.read_text(errors="replace"))
    except OSError:
        return None
    return match[1] if match else None


def _gpu() -> tuple[dict[str, str] | None, str]:
    """GPU facts through a CUDA binding, else nvidia-smi; (None, why) when there is none."""
    from drtrt.runtime.backends.cuda import load_cuda

    try:
        mem = load_cuda()
        try:
            info = mem.gpu_info()
        finally:
            mem.close()
        return {"name": info.model, "cc": info.compute_capability, "driver": info.driver_version,
                "runtime": info.runtime_version}, ""
    except DrtrtError as exc:
        reason = str(exc).split(";")[0]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out and out[0].count(",") == 2:
            name, cc, driver = (p.strip() for p in out[0].split(","))
            return {"name": name, "cc": cc, "driver": f"{driver} (kernel driver)", "runtime": ""}, reason
    return None, reason


def _tensorrt() -> tuple[str | None, str]:
    from drtrt.runtime.backends.trt_compat import import_tensorrt

    try:
        return str(import_tensorrt().__version__), ""
    except DrtrtError as exc:
        return None, str(exc).split(";")[0]


def jetson_power(nvpmodel: str = "nvpmodel", devfreq: Path = Path("/sys/class/devfreq")) -> str | None:
    """"MAXN (mode 0), GPU 1300 of 1300 MHz": the power mode (``nvpmodel -q``) and the GPU's clock
    now and at most (devfreq); None off a Jetson. Latency on a Jetson depends on both: quote them."""
    parts = []
    exe = shutil.which(nvpmodel)
    if exe:
        try:
            out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        mode = re.search(r"NV Power Mode:\s*(\S+)", out)
        number = re.search(r"^\s*(\d+)\s*$", out, re.MULTILINE)
        if mode:
            parts.append(f"{mode[1]}" + (f" (mode {number[1]})" if number else ""))
    for gpu in sorted(devfreq.glob("*")):
        if not re.search(r"gpu|ga10b|gv11b|gp10b", gpu.name):
            continue
        try:
            now, top = (int((gpu / f).read_text().split()[0]) for f in ("cur_freq", "max_freq"))
        except (OSError, ValueError, IndexError):
            continue
        parts.append(f"GPU {now / 1e6:.0f} of {top / 1e6:.0f} MHz")
        break
    return ", ".join(parts) or None


def diagnose(disk: Path = Path("."), tegra_release: Path = Path("/etc/nv_tegra_release")) -> DoctorReport:
    """Probe this machine (see the module docstring); ``disk`` is where free space is measured."""
    py_ok = sys.version_info >= (3, 10)
    gpu, gpu_why = _gpu()
    trt, trt_why = _tensorrt()
    dists = {"cuda-python": ("cuda-bindings", "cuda-python"), "pycuda": ("pycuda",)}
    cuda_libs = [f"{lib} {_version(*dists[lib]) or ''}".strip() for lib in installed_libraries()]
    try:
        ort = importlib.import_module("onnxruntime")
        ort_text, ort_ok = f"{ort.__version__} ({', '.join(ort.get_available_providers())})", True
    except ImportError:
        ort_text, ort_ok = "not installed (pip install drtrt)", False
    onnx_v, torch_v = _version("onnx") if _present("onnx") else None, _version("torch") if _present("torch") else None
    jetson, kernel = jetson_release(tegra_release, trt), kernel_driver()
    free = shutil.disk_usage(disk).free / 2**30
    findings = (
        Finding("drtrt", __version__),
        Finding("Python", platform.python_version(), py_ok),
        Finding("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        Finding("Jetson", jetson or "not a Jetson (no /etc/nv_tegra_release)"),
        *([Finding("power mode", jetson_power() or "unknown (nvpmodel not found): latency depends on it")]
          if jetson else []),
        Finding("GPU", f"{gpu['name']} (compute capability {gpu['cc']})" if gpu else f"none: {gpu_why}", bool(gpu)),
        Finding("CUDA driver", ", ".join(filter(None, [gpu and gpu["driver"] and f"CUDA {gpu['driver']}",
                                                      kernel and f"kernel module {kernel}"])) or "unknown",
                bool(gpu and gpu["driver"])),
        Finding("CUDA runtime", gpu["runtime"] if gpu and gpu["runtime"] else "unknown"),
        Finding("TensorRT", trt or trt_why, bool(trt)),
        Finding("CUDA Python bindings", ", ".join(cuda_libs) or "none (pip install 'drtrt[gpu]')", bool(cuda_libs)),
        Finding("ONNX Runtime", ort_text, ort_ok),
        Finding("onnx", onnx_v or "not installed (pip install 'drtrt[convert]': FP16/INT8 conversion, no torch)",
                bool(onnx_v)),
        Finding("torch", torch_v or "not installed (only training and export need it)"),
        Finding("free disk", f"{free:.1f} GiB at {Path(disk).resolve()}", free >= 2),
    )
    return DoctorReport(findings, capabilities(gpu is not None, trt is not None, bool(cuda_libs), ort_ok,
                                               onnx_v is not None, torch_v is not None))


def capabilities(gpu: bool, trt: bool, cuda_lib: bool, ort: bool, onnx: bool, torch: bool) -> tuple[Capability, ...]:
    """What each command can do given what is present (the reasons name the first thing missing)."""
    def trt_needs() -> str:
        missing = [what for what, ok in (("TensorRT not installed", trt), ("no NVIDIA GPU", gpu),
                                         ("no cuda-python/pycuda", cuda_lib)) if not ok]
        return f"no ({'; '.join(missing)}) — {CPU_PATH}" if missing else "TensorRT on the GPU"

    calibrate = ort and onnx and _present("drtrt.calibration.quantize")
    can_trt = gpu and trt and cuda_lib
    return (
        Capability("screen / evaluate (.onnx)", ort, "ONNX Runtime" if ort else "no (onnxruntime missing)"),
        Capability("screen / evaluate (.engine)", can_trt, trt_needs()),
        Capability("build", can_trt, trt_needs()),
        Capability("calibrate", calibrate, "INT8 Q/DQ on the CPU" if calibrate else
                   "no (needs onnx + onnxruntime: pip install 'drtrt[convert]')"),
        Capability("export", onnx and torch, "checkpoint → ONNX" if onnx and torch else "no (pip install 'drtrt[export]')"),
        Capability("train", torch, "PyTorch" if torch else "no (pip install 'drtrt[train]')"),
    )
