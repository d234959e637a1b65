"""Which JetPack this is, and which CUDA wheels fit this device: the one place that decides the pins.

Keyed on the L4T *major* (``/etc/nv_tegra_release``): 36 is JetPack 6 (Python 3.10, CUDA 12),
38 is JetPack 7 (Python 3.12, CUDA 13). A newer minor of a known major is that JetPack ("6.x"),
never refused; the JetPack name is kept where it is known. Off a Jetson the pins follow the
driver's CUDA version (``nvidia-smi``'s banner, else ``cuDriverGetVersion`` from libcuda through
ctypes), so a CUDA 12 driver never gets cuda-python 13 or the CUDA 13 TensorRT wheels.

``python -m drtrt.runtime.jetpack [--release-file F] [--tensorrt]`` prints the pip requirement
lines, one a line; ``deploy/jetson/install.sh`` and ``scripts/hardware-check.sh`` call it, and the
"TensorRT is not installed" hint uses :func:`install_hint`. Standard library only: install.sh runs
it from the checkout or the wheel before anything is installed.

What each service installs is decided here too (:data:`SERVICES`): ``--extras SERVICE`` prints the
extras ``drtrt bundle`` and install.sh install for it, ``--missing SERVICE`` those whose packages are
not installed (exit 1 if any), install.sh's idempotence check. :data:`BUNDLE_RELEASES` names the
JetPacks a bundle can be made for, by their L4T release, so the bundle's Python and cuda-python pin
are the ones install.sh reads on the device.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RELEASE_FILE = Path("/etc/nv_tegra_release")
# the JetPack names known to this drtrt, by L4T (major, minor); a newer minor is "<major JetPack>.x"
JETPACK_NAMES = {(35, 1): "5.0.2", (35, 2): "5.1", (35, 3): "5.1.1", (35, 4): "5.1.2", (35, 5): "5.1.3",
                 (35, 6): "5.1.4", (36, 2): "6.0 DP", (36, 3): "6.0", (36, 4): "6.1/6.2", (36, 5): "6.2.2",
                 (38, 2): "7.0", (38, 4): "7.1"}


@dataclass(frozen=True)
class Series:
    """What every release of one L4T major has in common."""

    jetpack: str        # "6"
    python: str         # the system Python whose TensorRT bindings apt installs
    cuda: str           # the CUDA release the cuda-python pin follows ("12.6", "13")


SERIES = {35: Series("5", "3.8", "11.4"), 36: Series("6", "3.10", "12.6"), 38: Series("7", "3.12", "13")}
OLD_CUDA = {(36, 2): "12.2", (36, 3): "12.2"}   # JetPack 6.0 ships CUDA 12.2: cuda-python 12.6 raises on it
# the JetPacks `drtrt bundle --jetpack` knows, by an L4T (major, minor) of each: Python and pin follow from it
BUNDLE_RELEASES = {"6.0": (36, 3), "6.2": (36, 4), "7": (38, 2)}
# the extras each installed service needs: every one screens on the GPU and builds its engine (FP16 and
# INT8 conversion need onnx: "convert"); the station serves the web app and sends results on
# (integration); the DICOM receiver needs pydicom/pynetdicom (integration)
SERVICES = {"station": ("gpu", "convert", "station", "integration"), "watch": ("gpu", "convert"),
            "receive": ("gpu", "convert", "integration")}


@dataclass(frozen=True)
class L4T:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def series(self) -> Series | None:
        return SERIES.get(self.major)

    @property
    def jetpack(self) -> str:
        """"6.2.2", "6.x" for a newer minor of JetPack 6, "" for an L4T major drtrt does not know."""
        known = JETPACK_NAMES.get((self.major, self.minor))
        return known or (f"{self.series.jetpack}.x" if self.series else "")

    @property
    def cuda(self) -> str:
        return OLD_CUDA.get((self.major, self.minor)) or (self.series.cuda if self.series else "")


def parse_l4t(text: str) -> L4T | None:
    """The release in the first line of ``/etc/nv_tegra_release`` ("# R36 (release), REVISION: 5.0, ...")."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", text)
    return L4T(*(int(g) for g in match.groups())) if match else None


def read_l4t(path: Path = RELEASE_FILE) -> L4T | None:
    try:
        return parse_l4t(path.read_text(errors="replace"))
    except OSError:
        return None


def parse_nvidia_smi(text: str) -> str | None:
    """The driver's CUDA version ("12.8") from ``nvidia-smi``'s banner ("CUDA Version: 12.8")."""
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text)
    return f"{match[1]}.{match[2]}" if match else None


def cuda_from_driver_version(version: int) -> str:
    """``cudaDriverGetVersion``'s integer (12060) as "12.6"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def driver_cuda(nvidia_smi: str = "nvidia-smi", libcuda: str = "libcuda.so.1") -> str | None:
    """The CUDA version the installed driver supports, or None when there is no NVIDIA driver."""
    exe = shutil.which(nvidia_smi)
    if exe:
        try:
            found = parse_nvidia_smi(subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout)
        except (OSError, subprocess.SubprocessError):
            found = None
        if found:
            return found
    try:
        lib = ctypes.CDLL(libcuda)
        version = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return cuda_from_driver_version(version.value)
    except (OSError, AttributeError):
        pass
    return None


@dataclass(frozen=True)
class Device:
    """What the pins are decided from: the L4T release on a Jetson, else the driver's CUDA."""

    l4t: L4T | None
    cuda: str | None            # "12.6"; None: no NVIDIA driver found

    @property
    def cuda_major(self) -> int | None:
        return int(self.cuda.split(".")[0]) if self.cuda else None


def detect(release_file: Path = RELEASE_FILE, nvidia_smi: str = "nvidia-smi", libcuda: str = "libcuda.so.1") -> Device:
    l4t = read_l4t(release_file)
    if l4t is not None and l4t.series is not None:
        return Device(l4t, l4t.cuda)
    return Device(l4t, driver_cuda(nvidia_smi, libcuda))


def requirements(device: Device, tensorrt: bool = False) -> list[str]:
    """The pip requirement lines for ``drtrt[gpu]`` on ``device`` (and TensorRT's wheel when asked).

    Jetson: cuda-python pinned to the JetPack's CUDA (``==12.6.*``, ``==13.*``); TensorRT is never a
    pip line there (it comes with JetPack). Elsewhere: cuda-python of the driver's CUDA major, no
    newer than the driver's minor, and ``tensorrt-cu12``/``tensorrt-cu13``. No driver: no lines.
    """
    if device.l4t is not None and device.l4t.series is not None:
        return [f"cuda-python=={device.l4t.cuda}.*"]
    if device.cuda is None:
        return []
    major, minor = (int(p) for p in device.cuda.split(".")[:2])
    lines = [f"cuda-python>={major}.0,<{major}.{minor + 1}"]
    if tensorrt:
        lines.append(f"tensorrt-cu{major}")
    return lines


def bundle_release(jetpack: str) -> tuple[str, str]:
    """(Python, cuda-python pin) of the JetPack a bundle is made for ("6.2" → ("3.10", "cuda-python==12.6.*"))."""
    l4t = L4T(*BUNDLE_RELEASES[jetpack], 0)
    return l4t.series.python, requirements(Device(l4t, l4t.cuda))[0]


def extras(service: str) -> tuple[str, ...]:
    """The drtrt extras ``service`` needs; ValueError naming the services for an unknown one."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")
    return SERVICES[service]


_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([\w.-]+)["']""")


def missing_extras(service: str, distribution: str = "drtrt") -> list[str]:
    """The extras of ``service`` with a package that is not installed (from drtrt's own metadata):
    every extra when drtrt itself is not installed."""
    wanted = extras(service)
    try:
        requires = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return list(wanted)
    missing = []
    for extra in wanted:
        for requirement in requires:
            name, _, marker = requirement.partition(";")
            found = _EXTRA_MARKER.search(marker)
            if not found or found[1] != extra:
                continue
            package = re.match(r"[A-Za-z0-9._-]+", name.strip())[0]
            try:
                importlib.metadata.distribution(package)
            except importlib.metadata.PackageNotFoundError:
                missing.append(extra)
                break
    return missing


def install_hint(device: Device | None = None) -> str:
    """How to get TensorRT here, with the pins of this device (the "TensorRT is not installed" hint)."""
    device = device or detect()
    if device.l4t is not None and device.l4t.series is not None:
        return (f"on this Jetson (L4T {device.l4t}) TensorRT comes with JetPack: apt install python3-libnvinfer, "
                f"and pip install {' '.join(repr(r) for r in requirements(device))}")
    lines = requirements(device, tensorrt=True)
    if lines:
        return f"on this machine (driver CUDA {device.cuda}): pip install {' '.join(repr(r) for r in lines)}"
    return ("on a Jetson TensorRT comes with JetPack (apt install python3-libnvinfer); on x86-64 with an NVIDIA GPU, "
            "pip install the TensorRT wheel of the driver's CUDA ('tensorrt-cu12' or 'tensorrt-cu13')")


def describe(l4t: L4T, tensorrt_version: str | None = None) -> str:
    """"L4T 38.4.0 (JetPack 7.1, TensorRT 10.13)": the JetPack by name and TensorRT as the module says."""
    parts = [f"JetPack {l4t.jetpack}" if l4t.jetpack else f"a JetPack unknown to this drtrt (L4T R{l4t.major})"]
    if tensorrt_version:
        parts.append(f"TensorRT {'.'.join(tensorrt_version.split('.')[:2])}")
    return f"L4T {l4t} ({', '.join(parts)})"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m drtrt.runtime.jetpack",
                                     description="print the pip requirement lines that fit this device")
    parser.add_argument("--release-file", type=Path, default=RELEASE_FILE)
    parser.add_argument("--tensorrt", action="store_true", help="also TensorRT's wheel (not on a Jetson)")
    parser.add_argument("--describe", action="store_true",
                        help="print 'L4T-release JetPack-name' (install.sh's banner) instead")
    parser.add_argument("--extras", choices=SERVICES, metavar="SERVICE",
                        help="print the extras SERVICE needs, comma-separated, instead")
    parser.add_argument("--missing", choices=SERVICES, metavar="SERVICE",
                        help="print the extras of SERVICE not installed here, comma-separated; exit 1 if any")
    args = parser.parse_args(argv)
    if args.extras:
        print(",".join(extras(args.extras)))
        return 0
    if args.missing:
        missing = missing_extras(args.missing)
        print(",".join(missing))
        return 1 if missing else 0
    device = detect(args.release_file)
    if args.describe:
        if device.l4t is None:
            print(f"cannot read the L4T release from {args.release_file}", file=sys.stderr)
            return 2
        print(device.l4t, device.l4t.jetpack or f"unknown-R{device.l4t.major}")
        return 0
    for line in requirements(device, tensorrt=args.tensorrt):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
