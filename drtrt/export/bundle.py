"""One archive a site without internet carries to the Jetson, and its check before anything is installed.

A bundle is a folder (or the same folder as an uncompressed ``.tar``: wheels are compressed already)::

    manifest.json           schema, what it is for (JetPack, Python), and every file's sha256 and size
    models/                 the ONNX models (FP32, FP16 or INT8 Q/DQ) to build engines from
    golden/                 golden files from ``drtrt parity --save-golden``: the engine's check
    config/                 site configuration, if given
    wheelhouse/             drtrt's own wheel and, for an offline site, every dependency of the
                            extras the service needs (``--service``: station, watch or receive), for
                            aarch64 and the JetPack's Python (cp310 for JetPack 6, cp312 for 7), or
                            with ``--platform host`` for this machine's Python (to try the offline path)
    install.sh              deploy/jetson/install.sh (``--source`` this folder)

:func:`verify_bundle` refuses a bundle with a changed, missing or unexpected file, naming it, so that
a damaged copy or a tampered file is caught before anything runs on the station;
:func:`check_fits` refuses one made for another service, JetPack or machine, before pip sees it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform as platform_module
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from drtrt import __version__
from drtrt.errors import ArtefactError, ConfigError
from drtrt.fileio import atomic_write, sha256_file
from drtrt.runtime.jetpack import BUNDLE_RELEASES, SERVICES, bundle_release, detect, requirements

SCHEMA = "drtrt-bundle/1"
MANIFEST = "manifest.json"
PLATFORMS = ("jetson", "host")
AARCH64 = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64",
           "linux_aarch64")
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BundleSpec:
    """What goes in. ``wheels``: "download" (drtrt's wheel + every dependency for the JetPack's
    aarch64 Python, from the package index: needs internet where the bundle is made), "drtrt"
    (drtrt's own wheel only: the site installs the rest online) or "none". ``allow_unchecked_model``:
    carry a model whose accuracy check failed or never ran (refused otherwise,
    :func:`drtrt.model_info.require_checked`); the manifest records each model's check (``model_gates``).
    ``service``: the program install.sh brings up (its extras, :data:`drtrt.runtime.jetpack.SERVICES`, are
    what the wheelhouse carries); ``platform``: "jetson" (aarch64, the JetPack's Python) or "host" (this
    machine's Python and platform: the offline install tried on a PC, never for a Jetson)."""

    out: Path
    models: tuple[Path, ...]
    golden: Path
    jetpack: str = "6.2"
    config: Path | None = None
    wheels: str = "download"
    allow_unchecked_model: bool = False
    service: str = "station"
    platform: str = "jetson"

    def validate(self) -> None:
        if self.jetpack not in BUNDLE_RELEASES:
            raise ConfigError(f"--jetpack must be one of {', '.join(BUNDLE_RELEASES)}, found {self.jetpack}")
        if self.service not in SERVICES:
            raise ConfigError(f"--service must be one of {', '.join(SERVICES)}, found {self.service}")
        if self.platform not in PLATFORMS:
            raise ConfigError(f"--platform must be jetson or host, found {self.platform}")
        if self.wheels not in ("download", "drtrt", "none"):
            raise ConfigError(f"--wheels must be download, drtrt or none, found {self.wheels}")
        for model in self.models:       # a wrong kind of file is a usage error (2), a missing one a failure (1)
            if model.suffix != ".onnx":
                raise ConfigError(f"--model takes .onnx files, found {model}")
            if not model.is_file():
                raise ArtefactError(f"model not found: {model}")
        if not self.models:
            raise ConfigError("give at least one --model")
        if not (self.golden / "golden.json").is_file():
            raise ArtefactError(f"{self.golden} is not a golden folder (no golden.json): make one with "
                                "`drtrt parity --reference … --save-golden DIR`")
        if self.config is not None and not self.config.is_file():
            raise ArtefactError(f"config file not found: {self.config}")
        if self.out.exists() and (self.out.is_file() or any(self.out.iterdir())):
            raise ConfigError(f"{self.out} exists and is not empty: give a new folder or .tar")


def make_bundle(spec: BundleSpec, log: Callable[[str], None] = lambda message: None) -> Path:
    """Write the bundle (a folder, or a .tar when ``spec.out`` ends in .tar); returns its path."""
    from drtrt.calibration.graph import load_onnx, read_info
    from drtrt.model_info import require_checked

    spec.validate()
    gates = {model.name: require_checked(read_info(load_onnx(model), str(model)), str(model),
                                         spec.allow_unchecked_model, "bundling it").to_dict() for model in spec.models}
    as_tar = spec.out.suffix == ".tar"
    folder = Path(tempfile.mkdtemp(prefix="drtrt-bundle-")) if as_tar else spec.out
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for model in spec.models:
            _copy(model, folder / "models" / model.name)
        for file in sorted(p for p in spec.golden.rglob("*") if p.is_file()):
            _copy(file, folder / "golden" / file.relative_to(spec.golden))
        if spec.config is not None:
            _copy(spec.config, folder / "config" / spec.config.name)
        _copy(ROOT / "deploy" / "jetson" / "install.sh", folder / "install.sh")
        if spec.wheels != "none":
            _wheelhouse(folder / "wheelhouse", spec, log)
        python, pins = target(spec)
        manifest = {"schema": SCHEMA, "drtrt_version": __version__, "platform": _platform_tag(spec),
                    "jetpack": spec.jetpack if spec.platform == "jetson" else None, "python": python,
                    "cuda_python": pins[0] if pins else None, "service": spec.service,
                    "extras": list(SERVICES[spec.service]), "wheels": spec.wheels, "model_gates": gates,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "files": {rel: {"sha256": sha256_file(folder / rel), "bytes": (folder / rel).stat().st_size}
                              for rel in _files(folder)}}
        atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        if as_tar:
            spec.out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(spec.out, "w") as tar:
                for rel in [MANIFEST, *manifest["files"]]:
                    tar.add(folder / rel, arcname=rel, recursive=False)
        log(f"bundle {spec.out}: {len(manifest['files'])} files for {describe(manifest)}")
        return spec.out
    finally:
        if as_tar:
            shutil.rmtree(folder, ignore_errors=True)


def target(spec: BundleSpec) -> tuple[str, list[str]]:
    """(Python "3.10", the pip pins beside drtrt's extras) the wheelhouse is made for."""
    if spec.platform == "jetson":
        python, cuda_python = bundle_release(spec.jetpack)
        return python, [cuda_python]
    pins = [line for line in requirements(detect()) if line.startswith("cuda-python")]
    return f"{sys.version_info.major}.{sys.version_info.minor}", pins


def _platform_tag(spec: BundleSpec) -> str:
    return "jetson" if spec.platform == "jetson" else f"host-{sys.platform}-{platform_module.machine()}"


def describe(manifest: dict) -> str:
    """"`drtrt station` on JetPack 6.2 (Python 3.10)", or "… on host-linux-x86_64 (Python 3.12)"."""
    where = f"JetPack {manifest['jetpack']}" if manifest.get("jetpack") else manifest.get("platform", "?")
    return f"`drtrt {manifest.get('service', 'watch')}` on {where} (Python {manifest.get('python')})"


def check_fits(manifest: dict, service: str, python: str | None = None) -> None:
    """ArtefactError (one line) unless the bundle carries what ``service`` needs, for a Jetson with this
    ``python``. A bundle from before services carried ``drtrt[gpu]`` only: no service's extras."""
    carried, wanted = manifest.get("extras", ["gpu"]), SERVICES[service]
    if not set(wanted) <= set(carried):
        made_for = manifest.get("service")
        what = (f"what `drtrt {made_for}` needs, not `drtrt {service}`" if made_for and made_for != service else
                f"drtrt[{','.join(carried)}], not what `drtrt {service}` needs (drtrt[{','.join(wanted)}])")
        raise ArtefactError(f"this bundle carries {what}: make one with `drtrt bundle --service {service}`")
    if manifest.get("platform", "jetson") != "jetson":
        raise ArtefactError(f"this bundle was made to try the install on {manifest['platform']} (--platform host), "
                            "not for a Jetson: make one with `drtrt bundle --platform jetson --jetpack …`")
    if python is not None and manifest.get("python") != python:
        raise ArtefactError(f"this bundle's wheels are for Python {manifest.get('python')} (JetPack "
                            f"{manifest.get('jetpack')}), this JetPack's is {python}: make one with "
                            f"`drtrt bundle --jetpack` this JetPack")


def verify_bundle(path: Path) -> dict:
    """The bundle's manifest when every file is there, unchanged and expected; else ArtefactError
    naming what is wrong (changed, missing, unexpected), in one line."""
    path = Path(path)
    if not path.exists():
        raise ArtefactError(f"bundle not found: {path}")
    found = dict(_tar_hashes(path) if path.is_file() else _folder_hashes(path))
    if MANIFEST not in found:
        raise ArtefactError(f"{path} is not a drtrt bundle (no {MANIFEST})")
    try:
        manifest = json.loads(found.pop(MANIFEST)[1])
    except ValueError as exc:
        raise ArtefactError(f"{path}: {MANIFEST} is damaged ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ArtefactError(f"{path} is not a drtrt bundle (schema {SCHEMA})")
    expected = manifest.get("files", {})
    problems = [f"{rel} is missing" for rel in expected if rel not in found]
    problems += [f"{rel} changed (sha256 differs)" for rel, entry in expected.items()
                 if rel in found and found[rel][0] != entry.get("sha256")]
    problems += [f"{rel} is not in the manifest" for rel in found if rel not in expected]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ArtefactError(f"bundle {path} fails its check: {'; '.join(problems[:3])}{more}; "
                            "copy it again from where it was made, and install nothing from this copy")
    return manifest


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` but the manifest, as posix paths relative to it."""
    files = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(rel for rel in files if rel != MANIFEST)


def _folder_hashes(folder: Path) -> Iterator[tuple[str, tuple[str, bytes]]]:
    for file in sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()):
        rel = file.relative_to(folder).as_posix()
        if file.is_symlink():                                # a link could point anywhere: never in a bundle
            yield rel, ("symlink", b"")
            continue
        yield rel, (sha256_file(file), file.read_bytes() if rel == MANIFEST else b"")


def _tar_hashes(archive: Path) -> Iterator[tuple[str, tuple[str, bytes]]]:
    """Every member's sha256, read from the archive without extracting anything."""
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():                      # links, devices: never in a bundle
                    yield member.name, ("not a regular file", b"")
                    continue
                digest, data = hashlib.sha256(), b""
                fh = tar.extractfile(member)
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    if member.name == MANIFEST:
                        data += chunk
                yield member.name, (digest.hexdigest(), data)
    except tarfile.TarError as exc:
        raise ArtefactError(f"{archive} is not a readable bundle archive ({exc})") from None


def _wheelhouse(house: Path, spec: BundleSpec, log: Callable[[str], None]) -> None:
    """drtrt's own wheel (built from this checkout), then the service's extras and their dependencies for the
    JetPack's aarch64 Python (or this machine's)."""
    if not (ROOT / "pyproject.toml").is_file():
        raise ConfigError("drtrt bundle builds drtrt's wheel and runs from a drtrt checkout; "
                          "use --wheels none and copy a drtrt wheel into the bundle's wheelhouse/ yourself")
    house.mkdir(parents=True, exist_ok=True)
    log("building drtrt's wheel")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(house), str(ROOT))
    if spec.wheels == "drtrt":
        return
    python, pins = target(spec)
    wheel = next(house.glob("drtrt-*.whl"))
    wanted = f"{wheel}[{','.join(SERVICES[spec.service])}]"
    if spec.platform == "host":
        log(f"downloading what `drtrt {spec.service}` needs for this machine's Python {python}")
        _pip("download", "--only-binary=:all:", "-d", str(house), wanted, *pins)
        return
    log(f"downloading what `drtrt {spec.service}` needs for Python {python} on aarch64 (JetPack {spec.jetpack})")
    platforms = [arg for platform in AARCH64 for arg in ("--platform", platform)]
    _pip("download", "--only-binary=:all:", *platforms, "--python-version", python, "--implementation", "cp",
         "-d", str(house), wanted, *pins)


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ArtefactError(f"pip {args[0]} failed: {last}")
