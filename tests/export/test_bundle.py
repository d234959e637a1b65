"""`drtrt bundle` and `drtrt bundle verify`: a bundle round-trips as a folder and as a .tar, and the
check catches one changed byte, a missing file, an unexpected file and a link, before install.sh
installs anything from it. (The full aarch64 wheelhouse, `--wheels download`, needs the package
index: it is left to a manual run, see deploy/README.md.)"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.errors import ArtefactError, ConfigError
from drtrt.export.bundle import BundleSpec, check_fits, make_bundle, verify_bundle

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def parts(tiny_onnx, tmp_path_factory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("parts")
    golden = where / "golden"
    (golden / "arrays").mkdir(parents=True)
    (golden / "golden.json").write_text('{"images": 2}')
    (golden / "arrays" / "0.npz").write_bytes(b"\x93NUMPY fake")
    config = where / "site.toml"
    config.write_text('camera = "/srv/fundus-camera"\n')
    return {"model": tiny_onnx, "golden": golden, "config": config}


@pytest.fixture(scope="module")
def bundle(parts, tmp_path_factory) -> Path:
    """A bundle with drtrt's own wheel (built from this checkout)."""
    out = tmp_path_factory.mktemp("b") / "station-bundle"
    return make_bundle(BundleSpec(out, (parts["model"],), parts["golden"], "6.2", parts["config"], wheels="drtrt"))


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_bundle_holds_everything_and_verifies(bundle):
    manifest = verify_bundle(bundle)
    files = set(manifest["files"])
    assert {"models/model.onnx", "golden/golden.json", "golden/arrays/0.npz", "config/site.toml", "install.sh"} <= files
    assert any(f.startswith("wheelhouse/drtrt-") and f.endswith(".whl") for f in files)
    assert manifest["jetpack"] == "6.2" and manifest["python"] == "3.10"
    assert manifest["cuda_python"] == "cuda-python==12.6.*"
    assert manifest["platform"] == "jetson" and manifest["service"] == "station"
    assert manifest["extras"] == ["gpu", "convert", "station", "integration"]
    result = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 0 and "files intact" in result.output
    assert "`drtrt station` on JetPack 6.2 (Python 3.10)" in result.output


@pytest.mark.parametrize("damage, expected", [
    ("byte", "models/model.onnx changed"), ("missing", "golden/golden.json is missing"),
    ("extra", "wheelhouse/evil-1.0-py3-none-any.whl is not in the manifest"), ("link", "config/site.toml changed"),
])
def test_verify_catches_a_changed_missing_or_unexpected_file(bundle, tmp_path, damage, expected):
    copy = copy_of(bundle, tmp_path)
    if damage == "byte":
        data = bytearray((copy / "models" / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 1
        (copy / "models" / "model.onnx").write_bytes(bytes(data))
    elif damage == "missing":
        (copy / "golden" / "golden.json").unlink()
    elif damage == "extra":
        (copy / "wheelhouse" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    else:
        (copy / "config" / "site.toml").unlink()
        (copy / "config" / "site.toml").symlink_to("/etc/hostname")
    with pytest.raises(ArtefactError, match=expected):
        verify_bundle(copy)
    result = runner.invoke(app, ["bundle", "verify", str(copy)])
    assert result.exit_code == 1 and expected in result.output and "install nothing" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_tar_bundle_round_trips_and_is_checked_without_extracting(parts, tmp_path):
    archive = make_bundle(BundleSpec(tmp_path / "bundle.tar", (parts["model"],), parts["golden"], "7", wheels="none"))
    manifest = verify_bundle(archive)
    assert manifest["python"] == "3.12" and "models/model.onnx" in manifest["files"]
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    members["golden/golden.json"] = b'{"images": 3}'                    # tampered in transit
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArtefactError, match="golden/golden.json changed"):
        verify_bundle(bad)
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(ArtefactError, match="not a readable bundle archive"):
        verify_bundle(tmp_path / "junk.tar")


def test_bad_requests_are_one_line(parts, tmp_path):
    with pytest.raises(ArtefactError, match="golden.json"):
        make_bundle(BundleSpec(tmp_path / "x", (parts["model"],), tmp_path, wheels="none"))
    with pytest.raises(ConfigError, match="--jetpack"):
        make_bundle(BundleSpec(tmp_path / "x", (parts["model"],), parts["golden"], "5.1", wheels="none"))
    for option, value in (("--service", "kiosk"), ("--platform", "windows")):
        result = runner.invoke(app, ["bundle", "--model", str(parts["model"]), "--golden", str(parts["golden"]),
                                     "--out", str(tmp_path / "y"), "--wheels", "none", option, value])
        assert result.exit_code == 2 and f"{option} must be" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "y").exists()
    result = runner.invoke(app, ["bundle", "--model", str(parts["model"])])
    assert result.exit_code == 2 and "needs --model, --golden and --out" in result.output
    result = runner.invoke(app, ["bundle", "verify", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "bundle not found" in result.output


def test_install_sh_checks_the_bundle_before_installing_anything(bundle, tmp_path):
    """The check runs from the bundle's own drtrt wheel with the system's Python (no drtrt installed yet)."""
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    copy = copy_of(bundle, tmp_path)
    args = ["bash", str(ROOT / "deploy" / "jetson" / "install.sh"), "--dry-run", "--release-file", str(release),
            "--source", str(copy), "--model", str(copy / "models" / "model.onnx"), "--golden", str(copy / "golden")]
    ok = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "ok: bundle intact" in ok.stdout and "--no-index --find-links" in ok.stdout
    (copy / "install.sh").write_text("#!/bin/sh\necho changed\n")
    bad = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "install.sh changed" in bad.stderr and "pip install" not in bad.stdout


def test_a_bundle_carries_what_its_service_needs_and_no_other(parts, tmp_path):
    """A watch bundle's wheels lack the station's web app and the receiver's DICOM: install.sh refuses it for
    either before pip sees it; a station bundle serves all three; a bundle for another JetPack's Python, or
    one made to try the install on a PC, is refused on a Jetson; a bundle from before services carried
    drtrt[gpu] only, without onnx, which even `drtrt watch` needs now (`drtrt build --fp16`)."""
    watch = verify_bundle(make_bundle(BundleSpec(tmp_path / "w", (parts["model"],), parts["golden"], "6.2",
                                                 wheels="none", service="watch")))
    assert watch["extras"] == ["gpu", "convert"] and watch["service"] == "watch"
    check_fits(watch, "watch", "3.10")
    for service in ("station", "receive"):
        with pytest.raises(ArtefactError) as refused:
            check_fits(watch, service, "3.10")
        assert str(refused.value) == (f"this bundle carries what `drtrt watch` needs, not `drtrt {service}`: "
                                      f"make one with `drtrt bundle --service {service}`")
    station = {**watch, "service": "station", "extras": ["gpu", "convert", "station", "integration"]}
    for service in ("station", "watch", "receive"):
        check_fits(station, service, "3.10")
    with pytest.raises(ArtefactError, match="for Python 3.10 .* this JetPack's is 3.12"):
        check_fits(station, "station", "3.12")
    with pytest.raises(ArtefactError, match="--platform host"):
        check_fits({**station, "platform": "host-linux-x86_64"}, "station", "3.10")
    old = {k: v for k, v in watch.items() if k not in ("service", "extras", "platform")}
    for service in ("watch", "station"):              # no onnx: not even `drtrt build --fp16` for watch
        with pytest.raises(ArtefactError, match=rf"carries drtrt\[gpu\], not what `drtrt {service}` needs"):
            check_fits(old, service, "3.10")


def test_install_sh_refuses_a_watch_bundle_for_the_station(parts, tmp_path):
    made = make_bundle(BundleSpec(tmp_path / "w", (parts["model"],), parts["golden"], "6.2", wheels="drtrt",
                                  service="watch"))
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    args = ["bash", str(ROOT / "deploy" / "jetson" / "install.sh"), "--dry-run", "--release-file", str(release),
            "--source", str(made), "--model", str(made / "models" / "model.onnx"), "--golden", str(made / "golden")]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "this bundle carries what `drtrt watch` needs, not `drtrt station`" in refused.stderr
    assert "pip install" not in refused.stdout
    fits = subprocess.run([*args, "--service", "watch"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    assert fits.returncode == 0, fits.stderr
    assert "ok: bundle intact" in fits.stdout and "drtrt[gpu,convert] cuda-python==12.6.*" in fits.stdout
