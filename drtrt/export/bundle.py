"""One archive a site without internet carries to the Jetson, and its check before anything is installed.

A bundle is a folder (or the same folder as an uncompressed ``.tar``: wheels are compressed already)::

    manifest.json           schema, what it is for (JetPack, Python), and every file's sha256 and size
    models/                 the ONNX models (FP32, FP16 or INT8 Q/DQ) to build engines from
    golden/                 golden files from ``drtrt parity --save-golden``: the engine's check
    config/                 site configuration, if given
    wheelhouse/             drtrt's own wheel and, for an offline site, every dependency for
                            aarch64 and the JetPack's Python (cp310 for JetPack 6, cp312 for 7)
    install.sh              deploy/jetson/install.sh (``--source`` this folder)

:func:`verify_bundle` refuses a bundle with a changed, missing or unexpected file, naming it, so that
a damaged copy or a tampered file is caught before anything runs on the station.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
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

SCHEMA = "drtrt-bundle/1"
MANIFEST = "manifest.json"
# JetPack → (its Python, the cuda-python release matching its CUDA)
JETPACKS = {"6.0": ("3.10", "cuda-python==12.2.*"), "6.2": ("3.10", "cuda-python==12.6.*"),
            "7": ("3.12", "cuda-python==13.*")}
AARCH64 = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64",
           "linux_aarch64")
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BundleSpec:
    """What goes in. ``wheels``: "download" (drtrt's wheel + every dependency for the JetPack's
    aarch64 Python, from the package index: needs internet where the bundle is made), "drtrt"
    (drtrt's own wheel only: the site installs the rest online) or "none". ``allow_unchecked_model``:
    carry a model whose accuracy check failed or never ran (refused otherwise,
    :func:`drtrt.model_info.require_checked`); the manifest records each model's check (``model_gates``)."""

    out: Path
    models: tuple[Path, ...]
    golden: Path
    jetpack: str = "6.2"
    config: Path | None = None
    wheels: str = "download"
    allow_unchecked_model: bool = False

    def validate(self) -> None:
        if self.jetpack not in JETPACKS:
            raise ConfigError(f"--jetpack must be one of {', '.join(JETPACKS)}, found {self.jetpack}")
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
        python, cuda_python = JETPACKS[spec.jetpack]
        manifest = {"schema": SCHEMA, "drtrt_version": __version__, "jetpack": spec.jetpack, "python": python,
                    "cuda_python": cuda_python, "wheels": spec.wheels, "model_gates": gates,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "files": {rel: {"sha256": sha256_file(folder / rel), "bytes": (folder / rel).stat().st_size}
                              for rel in _files(folder)}}
        atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        if as_tar:
            spec.out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(spec.out, "w") as tar:
                for rel in [MANIFEST, *manifest["files"]]:
                    tar.add(folder / rel, arcname=rel, recursive=False)
        log(f"bundle {spec.out}: {len(manifest['files'])} files for JetPack {spec.jetpack} (Python {python})")
        return spec.out
    finally:
        if as_tar:
            shutil.rmtree(folder, ignore_errors=True)


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
    """drtrt's own wheel (built from this checkout), then its dependencies for the JetPack's aarch64 Python."""
    if not (ROOT / "pyproject.toml").is_file():
        raise ConfigError("drtrt bundle builds drtrt's wheel and runs from a drtrt checkout; "
                          "use --wheels none and copy a drtrt wheel into the bundle's wheelhouse/ yourself")
    house.mkdir(parents=True, exist_ok=True)
    log("building drtrt's wheel")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(house), str(ROOT))
    if spec.wheels == "drtrt":
        return
    python, cuda_python = JETPACKS[spec.jetpack]
    wheel = next(house.glob("drtrt-*.whl"))
    log(f"downloading the dependencies for Python {python} on aarch64 (JetPack {spec.jetpack})")
    platforms = [arg for platform in AARCH64 for arg in ("--platform", platform)]
    _pip("download", "--only-binary=:all:", *platforms, "--python-version", python, "--implementation", "cp",
         "-d", str(house), f"{wheel}[gpu]", cuda_python)


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ArtefactError(f"pip {args[0]} failed: {last}")
