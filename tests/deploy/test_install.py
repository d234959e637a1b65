"""deploy/jetson/install.sh against fake L4T release files: the exact steps for JetPack 6.0, 6.2 and
7, a clear refusal with the options on 5.1, nothing changed by a dry run, nothing changed by a
second real run (under --root, with the system's commands replaced by recording stand-ins), the
program each service runs (station, watch, receive) with the extras it needs, the station's PIN
kept root-only, one unit at a time, and shellcheck-clean. A real Jetson run is still to be done
(deploy/README.md)."""

from __future__ import annotations

import os
import pty
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from drtrt.signing import generate

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "jetson" / "install.sh"
RELEASES = {  # first lines of /etc/nv_tegra_release on each JetPack
    "5.1.3": "# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64, DATE: Tue Feb 20 2024",
    "6.0": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 2024",
    "6.2": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025",
    "6.2.2": "# R36 (release), REVISION: 5.0, GCID: 43688277, BOARD: generic, EABI: aarch64, DATE: Fri Jan 16 2026",
    "6.x": "# R36 (release), REVISION: 7.1, GCID: 99999999, BOARD: generic, EABI: aarch64, DATE: a future 6.x",
    "7.0": "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, DATE: Fri Aug 22 2025",
    "7.1": "# R38 (release), REVISION: 4.0, GCID: 43000000, BOARD: generic, EABI: aarch64, DATE: 2026",
    "7.x": "# R38 (release), REVISION: 9.0, GCID: 99999999, BOARD: generic, EABI: aarch64, DATE: a future 7.x",
}
# JetPack name, Python, cuda-python pin (from drtrt.runtime.jetpack): keyed on the L4T major, never refused
# for a newer minor of JetPack 6 or 7; TensorRT's version is read from the module, not from a table
EXPECTED = {"6.0": ("JetPack 6.0", "3.10", "cuda-python==12.2.*"),
            "6.2": ("JetPack 6.1/6.2", "3.10", "cuda-python==12.6.*"),
            "6.2.2": ("JetPack 6.2.2", "3.10", "cuda-python==12.6.*"),
            "6.x": ("JetPack 6.x", "3.10", "cuda-python==12.6.*"),
            "7.0": ("JetPack 7.0", "3.12", "cuda-python==13.*"),
            "7.1": ("JetPack 7.1", "3.12", "cuda-python==13.*"),
            "7.x": ("JetPack 7.x", "3.12", "cuda-python==13.*")}


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    model, golden = tmp_path / "model.onnx", tmp_path / "golden"
    model.write_bytes(b"onnx bytes")
    golden.mkdir()
    (golden / "golden.json").write_text("{}")
    releases = {}
    for name, line in RELEASES.items():
        releases[name] = tmp_path / f"nv_tegra_release-{name}"
        releases[name].write_text(line + "\n")
    return {"model": model, "golden": golden, **releases}


def install(inputs, release: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """install.sh with no terminal (stdin /dev/null: the station's PIN is never asked for here)."""
    return subprocess.run(["bash", str(SCRIPT), "--model", str(inputs["model"]), "--golden", str(inputs["golden"]),
                           "--release-file", str(inputs[release]), "--user", "drtrt-test-nobody", *extra],
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("jetpack", sorted(EXPECTED))
def test_dry_run_prints_every_step_for_each_jetpack(inputs, jetpack, tmp_path):
    proc = install(inputs, jetpack, "--dry-run", "--root", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    name, python, cuda_python = EXPECTED[jetpack]
    out = proc.stdout
    assert out.splitlines()[0].startswith(f"L4T 3") and f": {name} (Python {python}, {cuda_python};" in out
    assert "?" not in out.splitlines()[0]
    steps = [line for line in out.splitlines() if line.startswith("+ ")]
    expected = [f"python{python} -c 'import tensorrt'",
                "useradd --system", "--groups video,render drtrt-test-nobody",
                f"python{python} -m venv --system-site-packages",
                f"pip install --quiet {ROOT}[gpu,convert,station,integration] {cuda_python}",
                "drtrt build --onnx", "--if-stale", "drtrt parity --golden",
                "systemctl enable --now drtrt-station.service"]
    for fragment in expected:
        assert any(fragment in s for s in steps), (fragment, steps)
    unit = out[out.index("[Unit]"):out.index("WantedBy=multi-user.target")]
    assert "User=drtrt-test-nobody" in unit and "Restart=on-failure" in unit and "StandardOutput=journal" in unit
    assert "ExecStartPre=/opt/drtrt/venv/bin/drtrt build" in unit and "--if-stale" in unit
    assert ("ExecStart=/opt/drtrt/venv/bin/drtrt station --model /var/lib/drtrt/models/model.engine "
            "--data-dir /var/lib/drtrt/sessions/station --camera-dir /srv/fundus-camera "
            "--host 127.0.0.1 --port 8080") in unit
    assert not (tmp_path / "root").exists()                              # a dry run changes nothing


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit's sections → key → values (a key may repeat, as ExecStartPre does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith("#") and current is not None:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def test_the_service_stops_retrying_a_start_that_always_fails_and_waits_for_its_folders(inputs, tmp_path):
    """A failed parity check fails on every start: Restart=on-failure alone retries it every 10 s for
    ever. The start limit (in [Unit], where systemd reads it) stops it after a few tries, however long
    each try takes (up to TimeoutStartSec); the service starts only once the camera's folder and the
    data folders (models, sessions, cache) are mounted."""
    camera, data = "/mnt/usb/fundus camera", "/srv/drtrt-data"
    refused = install(inputs, "6.2", "--dry-run", "--camera", camera)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1 and "spaces" in refused.stderr
    proc = install(inputs, "6.2", "--dry-run", "--root", str(tmp_path / "root"), "--camera", "/mnt/usb/camera",
                   "--data", data)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout[proc.stdout.index("[Unit]"):proc.stdout.index("WantedBy=multi-user.target") + 26]
    unit = unit_sections(text)
    service, start = unit["Service"], unit["Unit"]
    assert service["Restart"] == ["on-failure"] and "StartLimitBurst" not in service
    assert "StartLimitIntervalSec" not in service
    burst, interval = int(start["StartLimitBurst"][0]), int(start["StartLimitIntervalSec"][0])
    slowest_try = int(service["TimeoutStartSec"][0]) + int(service["RestartSec"][0])
    assert 1 < burst <= 10 and interval >= burst * slowest_try
    mounts = start["RequiresMountsFor"][0].split()
    assert mounts[0] == "/mnt/usb/camera" and {f"{data}/sessions", f"{data}/models"} <= set(mounts)
    assert all(m.startswith("/") and str(tmp_path) not in m for m in mounts)
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:                    # systemd's own parser: no unknown key, no misplaced setting
        path = tmp_path / "drtrt-station.service"
        path.write_text(text + "\n")
        check = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
        problems = [line for line in check.stderr.splitlines() if "is not executable" not in line and line.strip()]
        assert problems == [], check.stderr


def test_jetpack_5_is_refused_with_the_options(inputs):
    proc = install(inputs, "5.1.3", "--dry-run")
    assert proc.returncode == 2 and "L4T 35.5.0 is JetPack 5.1" in proc.stderr
    assert "Python 3.8 only" in proc.stderr and "upgrade the Jetson to JetPack 6" in proc.stderr
    assert "drtrt screen --model model.onnx" in proc.stderr and "TensorRT OSS" in proc.stderr


def test_unknown_release_and_bad_options_are_one_line(inputs, tmp_path):
    odd = tmp_path / "odd"
    odd.write_text("# R32 (release), REVISION: 7.1\n")
    inputs["odd"] = odd
    for proc in (install(inputs, "odd", "--dry-run"), install(inputs, "6.2", "--precision", "int4", "--dry-run")):
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    missing = subprocess.run(["bash", str(SCRIPT), "--release-file", str(inputs["6.2"])], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "--model ONNX is required" in missing.stderr


STAND_INS = {   # the system's commands, recording each call in $CALLS and keeping users in $USERS
    "id": 'case "$1" in -u) grep -qx "$2" "$USERS" ;; -nG) echo "$2 video render" ;; esac',
    "useradd": 'echo "useradd $*" >> "$CALLS"; echo "${@: -1}" >> "$USERS"',
    "usermod": 'echo "usermod $*" >> "$CALLS"',
    "runuser": 'echo "runuser $*" >> "$CALLS"',
    "chown": 'echo "chown $*" >> "$CALLS"',
    "systemctl": 'echo "systemctl $*" >> "$CALLS"',
    "install": ('echo "install $*" >> "$CALLS"; args=(); while [ $# -gt 0 ]; do case "$1" in -o|-g|-m) shift 2 ;; '
                '*) args+=("$1"); shift ;; esac; done; exec /usr/bin/install "${args[@]}"'),
    "python3.10": ('if [ "$1" = -m ] && [ "$2" = venv ]; then echo "venv $*" >> "$CALLS"; d="${@: -1}"; '
                   'mkdir -p "$d/bin"; cp "$STANDINS/venv-python" "$d/bin/python"; '
                   'cp "$STANDINS/venv-pip" "$d/bin/pip"; exit 0; fi; exit 0'),
    "venv-python": ('d="$(dirname "$0")"; [ -f "$d/installed" ] || exit 1; '
                    'case "$*" in *version*) cat "$d/installed" ;; esac; exit 0'),
    "venv-pip": 'echo "pip $*" >> "$CALLS"; echo 0.1.0 > "$(dirname "$0")/installed"',
}


def stand_in_env(tmp_path: Path, bodies: dict[str, str]) -> tuple[dict[str, str], Path]:
    """The system commands as stand-ins (``bodies``: name → bash) first on PATH, and the log they write: (env, log)."""
    standins = tmp_path / "bin"
    standins.mkdir()
    for name, body in bodies.items():
        path = standins / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    calls, users = tmp_path / "calls.log", tmp_path / "users"
    users.write_text("")
    return {**os.environ, "PATH": f"{standins}:{os.environ['PATH']}", "CALLS": str(calls), "USERS": str(users),
            "STANDINS": str(standins)}, calls


def test_a_second_run_changes_nothing(inputs, tmp_path):
    root = tmp_path / "root"
    env, calls = stand_in_env(tmp_path, STAND_INS)
    pin = tmp_path / "pin"
    pin.write_text("2468\n")
    first = install(inputs, "6.2", "--root", str(root), "--source", str(ROOT), "--pin-file", str(pin), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed: created drtrt-test-nobody" in first.stdout and "done: 0 change(s)" not in first.stdout
    unit = root / "etc" / "systemd" / "system" / "drtrt-station.service"
    assert unit.is_file() and (root / "var/lib/drtrt/models/model.onnx").read_bytes() == b"onnx bytes"
    assert (root / "var/lib/drtrt/models/golden/golden.json").is_file()
    done = calls.read_text()
    assert "pip install" in done and "runuser -u drtrt-test-nobody" in done and "--if-stale" in done
    calls.write_text("")
    second = install(inputs, "6.2", "--root", str(root), "--source", str(ROOT), env=env)   # the PIN set before stays
    assert second.returncode == 0, second.stdout + second.stderr
    assert "done: 0 change(s)" in second.stdout, second.stdout
    again = [line.split()[0] for line in calls.read_text().splitlines()]
    assert set(again) == {"runuser"}, again             # no user, venv, pip or copy: only the engine checks
    assert "--if-stale" in calls.read_text()            # the engine check always runs: it decides itself


def test_installer_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed here (.ci/run installs it)")
    scripts = [SCRIPT, ROOT / "deploy" / "jetson" / "station-entrypoint.sh", ROOT / ".ci" / "run",
               *sorted((ROOT / "scripts").glob("*.sh"))]
    proc = subprocess.run([shellcheck, "-x", *map(str, scripts)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout


def test_a_python_without_venv_is_refused_with_the_package_to_install(inputs, tmp_path):
    """Ubuntu's python3.X lacks ensurepip until python3-venv is installed, and `python -m venv` then
    fails with several lines: the installer checks it first and names the package."""
    shadow, root = tmp_path / "shadow", tmp_path / "root"
    (shadow / "ensurepip").mkdir(parents=True)            # as on Ubuntu without python3-venv: no ensurepip
    (shadow / "ensurepip" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ensurepip'\")\n")
    (shadow / "tensorrt.py").write_text("__version__ = '10.3.0'\n")       # the system's bindings, from apt
    env, calls = stand_in_env(tmp_path, {**STAND_INS, "python3.10": f'PYTHONPATH={shadow} exec python3 "$@"'})
    proc = install(inputs, "6.2", "--root", str(root), "--source", str(ROOT), "--service", "watch", env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    assert "apt install python3-venv (python3.10-venv)" in proc.stderr
    assert not (root / "opt" / "drtrt" / "venv").exists() and not calls.exists()   # nothing done before it


SERVICES = {   # service → (options, the extras pip installs, ExecStart after drtrt, what it listens on)
    "station": ((), "gpu,convert,station,integration",
                "station --model /var/lib/drtrt/models/model.engine --data-dir /var/lib/drtrt/sessions/station "
                "--camera-dir /srv/fundus-camera --host 127.0.0.1 --port 8080"),
    "watch": ((), "gpu,convert",
              "watch /srv/fundus-camera --model /var/lib/drtrt/models/model.engine "
              "--out /var/lib/drtrt/sessions/station"),
    "receive": (("--host", "0.0.0.0"), "gpu,convert,integration",
                "receive --out /var/lib/drtrt/sessions/station --model /var/lib/drtrt/models/model.engine "
                "--ae-title DRTRT --host 0.0.0.0 --port 11112"),
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_runs_its_own_program_with_the_extras_it_needs(inputs, service, tmp_path):
    options, extras, exec_start = SERVICES[service]
    proc = install(inputs, "7.1", "--dry-run", "--service", service, *options, "--root", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"pip install --quiet {ROOT}[{extras}] cuda-python==13.*" in out
    assert f"systemctl enable --now drtrt-{service}.service" in out
    unit = unit_sections(out[out.index("[Unit]"):out.index("WantedBy=multi-user.target") + 26])
    assert unit["Service"]["ExecStart"] == [f"/opt/drtrt/venv/bin/drtrt {exec_start}"]
    assert unit["Service"].get("EnvironmentFile") == (["/etc/drtrt/station.env"] if service == "station" else None)
    assert ("/srv/fundus-camera" in unit["Unit"]["RequiresMountsFor"][0]) == (service != "receive")
    assert ("operator PIN" in out) == (service == "station")
    assert "torch" not in extras


def test_the_receiver_on_dicoms_own_port_may_bind_it_and_a_station_serves_the_clinic_screen(inputs, tmp_path):
    receive = install(inputs, "6.2", "--dry-run", "--service", "receive", "--host", "192.168.1.20", "--port", "104",
                      "--ae-title", "FUNDUS1")
    assert receive.returncode == 0, receive.stderr
    assert "--ae-title FUNDUS1 --host 192.168.1.20 --port 104" in receive.stdout
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in receive.stdout
    station = install(inputs, "6.2", "--dry-run", "--host", "0.0.0.0", "--port", "8443")
    assert station.returncode == 0, station.stderr
    assert "--host 0.0.0.0 --port 8443" in station.stdout and "AmbientCapabilities" not in station.stdout


@pytest.mark.parametrize("options, message", [
    (("--service", "receive"), "--service receive needs --host ADDR"),
    (("--service", "watch", "--host", "0.0.0.0"), "drtrt watch listens on nothing"),
    (("--service", "watch", "--port", "8080"), "drtrt watch listens on nothing"),
    (("--service", "kiosk"), "--service must be station, watch or receive, found kiosk"),
    (("--port", "70000"), "--port must be 1-65535, found 70000"),
    (("--port", "http"), "--port must be 1-65535, found http"),
    (("--ae-title", "X"), "--ae-title is for --service receive"),
    (("--service", "receive", "--host", "0.0.0.0", "--pin-file", "/dev/null"), "--pin-file is for --service station"),
    (("--pin-file", "/nowhere/pin"), "PIN file not found: /nowhere/pin"),
])
def test_service_options_that_do_not_fit_are_one_line(inputs, options, message):
    proc = install(inputs, "6.2", "--dry-run", *options)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr and proc.stdout == ""


def test_the_station_without_a_pin_and_no_terminal_stops_before_changing_anything(inputs, tmp_path):
    root = tmp_path / "root"
    env, calls = stand_in_env(tmp_path, STAND_INS)
    proc = install(inputs, "6.2", "--root", str(root), "--source", str(ROOT), env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    assert "needs an operator PIN" in proc.stderr and "--pin-file" in proc.stderr
    assert not root.exists() and not calls.exists()
    bad = tmp_path / "bad-pin"
    bad.write_text("12ab\n")
    proc = install(inputs, "6.2", "--root", str(root), "--source", str(ROOT), "--pin-file", str(bad), env=env)
    assert proc.returncode == 2 and "4 to 64 digits" in proc.stderr and not root.exists()


def test_the_pin_is_root_only_and_switching_service_removes_the_old_unit(inputs, tmp_path):
    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    env, calls = stand_in_env(tmp_path, STAND_INS)
    pin = tmp_path / "pin"
    pin.write_text("97531\n")
    station = install(inputs, "6.2", "--root", str(root), "--source", str(ROOT), "--pin-file", str(pin), env=env)
    assert station.returncode == 0, station.stdout + station.stderr
    env_file = root / "etc" / "drtrt" / "station.env"
    assert env_file.read_text() == "DRTRT_STATION_PIN=97531\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "97531" not in station.stdout + station.stderr + calls.read_text()     # never printed, never an argument
    assert "pip install --quiet" in calls.read_text() and "[gpu,convert,station,integration]" in calls.read_text()
    assert [u.name for u in units.iterdir()] == ["drtrt-station.service"]
    watch = install(inputs, "6.2", "--root", str(root), "--source", str(ROOT), "--service", "watch", env=env)
    assert watch.returncode == 0, watch.stdout + watch.stderr
    assert "changed: removed drtrt-station.service" in watch.stdout
    assert [u.name for u in units.iterdir()] == ["drtrt-watch.service"]
    assert "ExecStart=/opt/drtrt/venv/bin/drtrt watch " in (units / "drtrt-watch.service").read_text()


def test_on_a_terminal_the_station_pin_is_asked_and_not_echoed(inputs, tmp_path):
    root = tmp_path / "root"
    env, calls = stand_in_env(tmp_path, STAND_INS)
    master, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(["bash", str(SCRIPT), "--model", str(inputs["model"]), "--golden",
                                 str(inputs["golden"]), "--release-file", str(inputs["6.2"]), "--user",
                                 "drtrt-test-nobody", "--root", str(root), "--source", str(ROOT)],
                                stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        os.write(master, b"8642\n")                  # typed at the prompt (kept by the terminal until read)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(master)
    assert proc.returncode == 0, out + err
    assert "Operator PIN for the station" in err and "8642" not in out + err
    assert (root / "etc" / "drtrt" / "station.env").read_text() == "DRTRT_STATION_PIN=8642\n"


def test_the_validation_record_and_the_programme_key_reach_the_service(inputs, tmp_path):
    root, units = tmp_path / "root", tmp_path / "root" / "etc" / "systemd" / "system"
    private, public = tmp_path / "programme.key", tmp_path / "programme.pub"
    generate(private, public)                          # the real key files `drtrt validate keygen` writes
    record = Path(str(inputs["model"]) + ".validation.json")     # found beside the model without --validation
    record.write_text('{"schema": "drtrt-validation/2"}')
    env, calls = stand_in_env(tmp_path, STAND_INS)
    pin = tmp_path / "pin"
    pin.write_text("97531\n")
    proc = install(inputs, "6.2", "--root", str(root), "--source", str(ROOT), "--pin-file", str(pin),
                   "--validation-key", str(public), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "var/lib/drtrt/models/model.validation.json").read_text() == record.read_text()
    key = root / "etc" / "drtrt" / "validation-key.pem"
    assert key.read_bytes() == public.read_bytes() and stat.S_IMODE(key.stat().st_mode) == 0o644
    unit = unit_sections((units / "drtrt-station.service").read_text())
    assert unit["Service"]["ExecStart"][0].endswith("--validation /var/lib/drtrt/models/model.validation.json")
    assert "DRTRT_VALIDATION_KEY=/etc/drtrt/validation-key.pem" in unit["Service"]["Environment"]
    # the private key is never what a station is given
    bad = install(inputs, "6.2", "--dry-run", "--validation-key", str(private))
    assert bad.returncode == 2 and "public key (PEM" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    # a record without the key is kept, and the installer says the banner stays
    record.unlink()
    other = tmp_path / "record.json"
    other.write_text("{}")
    alone = install(inputs, "6.2", "--dry-run", "--validation", str(other))
    assert alone.returncode == 0 and "stay NOT FOR CLINICAL USE until the programme's key" in alone.stdout
    assert "DRTRT_VALIDATION_KEY" not in alone.stdout
    missing = install(inputs, "6.2", "--dry-run", "--validation", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 2 and "validation record not found" in missing.stderr
