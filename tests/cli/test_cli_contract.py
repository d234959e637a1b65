"""README's exit-status table, "the same for every command", held against every command of the app.

Every command (enumerated from the typer app, so a new one fails here until it has its cases): ``--help``
exits 0; a missing input path is one line on stderr and exit 1, no traceback. Then the cases where one
command broke the table: a busy port, Ctrl-C (a real SIGINT to a real process: 130 after a clean stop),
a damaged model or session store (1, not 70, with or without DRTRT_DEBUG), a run folder already in use
(2), waits and refusals that must say what they wait for or refuse, messages that must not leak object
reprs or name options that do not exist, and result tables at 80 columns. In-process (CliRunner) where
the behaviour does not depend on a process of its own; subprocesses for signals and terminal width.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from processes import track
from rich.cells import cell_len
from test_cli import assert_one_line_error
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.cli.common import ExitCode

runner = CliRunner()


def commands(group=None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the app (``("bundle", "verify")`` for a subcommand)."""
    group = group or typer.main.get_command(app)
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if hasattr(command, "commands"):
            found += commands(command, (*prefix, name))
    return found


COMMANDS = commands()

# Each command's arguments with a missing input path ({missing}), and a fragment of its one line. The exit
# status is 1 for all of them: a missing file is a failed command, not a usage error.
MISSING_PATH = {
    ("train",): (["--data", "{missing}", "--out", "{tmp}/run"], "does not exist"),
    ("pseudo-label",): (["--data", "{missing}", "--out", "{tmp}/labels"], "does not exist"),
    ("ablation",): (["--data", "{missing}", "--out", "{tmp}/ablation"], "does not exist"),
    ("export",): (["--checkpoint", "{missing}.pt", "--out", "{tmp}/m.onnx"], "checkpoint not found"),
    ("fp16",): (["--onnx", "{missing}.onnx", "--out", "{tmp}/m.fp16.onnx"], "not found"),
    ("calibrate",): (["--onnx", "{model}", "--out", "{tmp}/m.int8.onnx", "--images-dir", "{missing}"],
                     "no such file or folder"),
    ("build",): (["--onnx", "{missing}.onnx", "--out", "{tmp}/m.engine"], "not found"),
    ("bundle",): (["--model", "{missing}.onnx", "--golden", "{tmp}", "--out", "{tmp}/bundle"], "model not found"),
    ("bundle", "verify"): (["{missing}"], "bundle not found"),
    ("export-triton",): (["--onnx", "{missing}.onnx", "--out", "{tmp}/repo"], "not found"),
    ("screen",): (["{missing}.jpg", "--model", "{model}"], "no such file"),
    ("watch",): (["{missing}", "--model", "{model}", "--out", "{tmp}/session"], "no such folder to watch"),
    ("station",): (["--model", "{missing}.onnx", "--data-dir", "{tmp}/station"], "not found"),
    ("receive",): (["--model", "{missing}.onnx", "--out", "{tmp}/session"], "not found"),
    ("sync",): (["{missing}"], "not a session folder"),
    ("actions",): (["{missing}"], "not a session folder"),
    ("recall",): (["{missing}"], "not a session folder"),
    ("export-visits",): (["{missing}", "--from", "2026-01-01", "--to", "2026-01-31", "--out", "{tmp}/v.csv"],
                         "not a session folder"),
    ("letter",): (["{missing}", "--patient", "P", "--out", "{tmp}/l.html"], "not a session folder"),
    ("programme-report",): (["{missing}", "--from", "2026-01-01", "--to", "2026-01-31", "--out", "{tmp}/report"],
                            "not a session folder"),
    ("evaluate",): (["--model", "{missing}.onnx", "--data", "{data}"], "not found"),
    ("parity",): (["--reference", "{missing}.pt", "--candidate", "{model}", "--data", "{data}"], "not found"),
    ("bench",): (["--model", "{missing}.onnx"], "not found"),
    ("validate", "plan"): (["{missing}.yaml"], "cannot read the protocol"),
    ("validate", "register"): (["{missing}.yaml", "--key", "{tmp}/programme.key"], "cannot read the protocol"),
    ("validate", "run"): (["{missing}.yaml", "--sessions", "{tmp}", "--reads", "{tmp}/reads.csv", "--out", "{tmp}/out"],
                          "cannot read the protocol"),
    ("accounts", "list"): (["--data-dir", "{missing}"], "no station folder"),
    ("accounts", "disable"): (["Ana", "--data-dir", "{missing}"], "no station folder"),
    ("accounts", "passwd"): (["Ana", "--data-dir", "{missing}"], "no station folder"),
    ("audit", "verify"): (["{missing}"], "not a session folder"),
    ("audit", "show"): (["{missing}"], "not a session folder"),
    ("centre", "read"): (["{missing}", "--study", "1.2.3", "--right", "R0M0", "--left", "R0M0", "--reader", "Ana",
                          "--organisation", "Centro"], "not a centre session folder"),
    ("centre", "list"): (["{missing}"], "not a centre session folder"),
    ("centre", "push"): (["{missing}", "--dicomweb", "http://127.0.0.1:9/dicom-web"], "not a centre session folder"),
    ("centre", "serve"): (["{missing}", "--organisation", "Centro"], "not a centre session folder"),
}
NO_INPUT_PATH = {("synth",): "writes a new folder", ("doctor",): "reads nothing", ("demo",): "makes its own data",
                 ("validate",): "a group of commands", ("validate", "keygen"): "writes a new key pair",
                 ("accounts",): "a group", ("audit",): "a group", ("accounts", "add"): "makes the station folder",
                 ("centre",): "a group", ("centre", "pull"): "makes the centre's folder"}

# Each command that screens, serves or bundles a model, with a model whose accuracy check against its
# reference failed ({model}): refused before anything is screened, served or written — one line, exit 4
# (a gate failed) — unless --allow-unchecked-model. The commands that only measure a model (evaluate,
# parity, bench) and those that make one are not here: checking a model is what they are for.
REFUSES_A_FAILED_MODEL = {
    ("screen",): ["{image}", "--model", "{model}"],
    ("watch",): ["{tmp}", "--model", "{model}", "--out", "{tmp}/session"],
    ("receive",): ["--model", "{model}", "--out", "{tmp}/session", "--port", "0"],
    ("station",): ["--model", "{model}", "--data-dir", "{tmp}/station", "--port", "{port}"],
    ("export-triton",): ["--onnx", "{model}", "--out", "{tmp}/repo"],
    ("bundle",): ["--model", "{model}", "--golden", "{tmp}", "--out", "{tmp}/bundle", "--wheels", "none"],
}


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """The cases set DRTRT_DEBUG themselves where they compare with it."""
    monkeypatch.delenv("DRTRT_DEBUG", raising=False)


def invoke(*args, env: dict[str, str] | None = None) -> SimpleNamespace:
    """``drtrt ARGS`` in-process, as :func:`test_cli.assert_one_line_error` reads a process."""
    result = runner.invoke(app, [str(a) for a in args], env=env)
    return SimpleNamespace(returncode=result.exit_code, stdout="", stderr=result.output, exception=result.exception)


def test_every_command_has_its_contract_cases():
    assert set(COMMANDS) == set(MISSING_PATH) | set(NO_INPUT_PATH), "add the new command's cases above"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_exits_0(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output


@pytest.mark.parametrize("command", list(MISSING_PATH), ids=" ".join)
def test_a_missing_path_is_one_line_and_exit_1(command, tiny_onnx, photo_root, tmp_path):
    args, fragment = MISSING_PATH[command]
    filled = [a.format(missing=tmp_path / "missing", tmp=tmp_path, model=tiny_onnx, data=photo_root) for a in args]
    assert_one_line_error(invoke(*command, *filled), fragment, ExitCode.FAILED)


def test_a_busy_port_is_one_line_before_anything_is_served(tiny_onnx, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        station = invoke("station", "--model", tiny_onnx, "--data-dir", tmp_path / "station", "--port", port)
        assert_one_line_error(station, f"port {port} is in use", ExitCode.FAILED)
        assert "serving" not in station.stderr
        receiver = invoke("receive", "--model", tiny_onnx, "--out", tmp_path / "session", "--port", port)
        assert receiver.returncode == ExitCode.FAILED and f"cannot listen on 127.0.0.1:{port}" in receiver.stderr


# -- damaged files: a failed command (1), the same with DRTRT_DEBUG=1 -----------------------------------------

@pytest.fixture
def damaged(tiny_run, tmp_path) -> dict[str, Path]:
    """A .pt of garbage bytes, a checkpoint whose weights are NaN (a bit flip in a float's exponent) and a
    session folder whose session.db is garbage."""
    import torch

    garbage = tmp_path / "odd.pt"
    garbage.write_bytes(bytes(range(256)) * 12)
    checkpoint = torch.load(tiny_run / "best.pt", weights_only=True)
    next(v for v in checkpoint["state_dict"].values() if v.is_floating_point()).fill_(float("nan"))
    nan = tmp_path / "nan.pt"
    torch.save(checkpoint, nan)
    session = tmp_path / "session"
    session.mkdir()
    (session / "session.db").write_bytes(b"\x13garbage, not SQLite" * 200)
    return {"garbage": garbage, "nan": nan, "session": session}


@pytest.mark.parametrize("case", ["garbage .pt", "NaN weights", "export NaN weights", "screen into a garbage session.db",
                                  "sync a garbage session.db"])
def test_damaged_files_are_one_line_exit_1_with_or_without_debug(case, damaged, tiny_onnx, photo_root):
    image = sorted(photo_root.rglob("*.jpg"))[0]
    args, fragment = {
        "garbage .pt": (["evaluate", "--model", damaged["garbage"], "--data", photo_root],
                        "not a loadable drtrt checkpoint"),
        "NaN weights": (["evaluate", "--model", damaged["nan"], "--data", photo_root], "NaN or infinite outputs"),
        "export NaN weights": (["export", "--checkpoint", damaged["nan"], "--out", damaged["nan"].with_suffix(".onnx")],
                               "NaN or infinite outputs"),
        "screen into a garbage session.db": (["screen", image, "--model", tiny_onnx, "--out", damaged["session"]],
                                             "not a session store drtrt can read"),
        "sync a garbage session.db": (["sync", damaged["session"], "--once"], "not a session store drtrt can read"),
    }[case]
    quiet = invoke(*args)
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]   # a progress bar may stand above it
    assert quiet.returncode == ExitCode.FAILED and "Traceback" not in quiet.stderr, quiet.stderr
    assert sum(line.startswith("error:") for line in lines) == 1 and fragment in lines[-1], quiet.stderr
    debug = invoke(*args, env={"DRTRT_DEBUG": "1"})
    assert debug.returncode == quiet.returncode, debug.stderr


def test_train_refuses_a_folder_that_holds_a_run(synth_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("epochs: 1\n")
    proc = invoke("train", "--data", synth_root, "--out", run)
    assert_one_line_error(proc, f"{run} already holds a training run", ExitCode.USAGE)
    assert f"--resume {run}" in proc.stderr and "another --out" in proc.stderr
    (tmp_path / "seeds" / "seed-1").mkdir(parents=True)
    (tmp_path / "seeds" / "seed-1" / "best.pt").write_bytes(b"")
    seeds = invoke("train", "--data", synth_root, "--out", tmp_path / "seeds", "--seeds", "2")
    assert_one_line_error(seeds, "seed-1 already holds a training run", ExitCode.USAGE)


# -- Ctrl-C: a real SIGINT to a real process ------------------------------------------------------------------

class Running:
    """A long-running ``drtrt`` command in its own process; its output lines (both streams) as they come."""

    def __init__(self, *args) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DRTRT_DEBUG"}
        self.proc = subprocess.Popen([sys.executable, "-m", "drtrt.cli", *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env={**env, "COLUMNS": "300"})
        track(self.proc)
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, fragment: str, timeout: float = 90) -> str:
        """The first line from now on that holds ``fragment``."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {fragment!r} in {timeout} s:\n" + "\n".join(self.seen)) from None
            if line is None:
                raise AssertionError(f"exit {self.proc.wait()} before {fragment!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if fragment in line:
                return line

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C; the exit status and everything the process wrote."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        while (line := self._lines.get(timeout=10)) is not None:
            self.seen.append(line)
        return code, "\n".join(self.seen)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_watch_records_a_bad_image_readably_and_ctrl_c_exits_130(tiny_onnx, tmp_path):
    camera = tmp_path / "camera"
    camera.mkdir()
    watch = Running("watch", camera, "--model", tiny_onnx, "--out", tmp_path / "session", "--poll", "0.05",
                    "--settle", "0")
    watch.expect("watching ")
    (tmp_path / "notes.jpg").write_text("not a photo")
    os.replace(tmp_path / "notes.jpg", camera / "notes.jpg")          # whole at once, as a camera's rename
    line = watch.expect("notes.jpg")
    assert "error" in line and "not an image drtrt can read" in line and "object at 0x" not in line
    code, output = watch.interrupt()
    assert code == ExitCode.INTERRUPTED and "stopped; 1 image(s) this run" in output, output


def test_receive_names_a_wrong_called_ae_title_and_ctrl_c_exits_130(tiny_onnx, tmp_path):
    from pynetdicom import AE

    receive = Running("receive", "--model", tiny_onnx, "--out", tmp_path / "session", "--port", "0")
    port = int(re.search(r"on 127\.0\.0\.1:(\d+)", receive.expect("receiving as DRTRT"))[1])
    camera = AE(ae_title="CAMERA")
    camera.add_requested_context("1.2.840.10008.1.1")                 # Verification: the camera's "test"
    assert camera.associate("127.0.0.1", port, ae_title="PACS").is_rejected
    line = receive.expect("refused a push from CAMERA")
    assert "called AE title 'PACS'" in line and "this receiver is 'DRTRT'" in line
    code, output = receive.interrupt()
    assert code == ExitCode.INTERRUPTED and "stopped; 0 image(s)" in output, output


def test_station_serves_then_ctrl_c_exits_130(tiny_onnx, tmp_path):
    port = unused_port()
    station = Running("station", "--model", tiny_onnx, "--data-dir", tmp_path / "station", "--port", port)
    station.expect(f"station serving http://127.0.0.1:{port}/")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:   # bound already: it waits
        assert page.status == 200
    code, output = station.interrupt()
    assert code == ExitCode.INTERRUPTED and "station stopped" in output, output


def test_train_interrupted_says_how_to_resume(synth_root, tmp_path):
    run = tmp_path / "run"
    train = Running("train", "--data", synth_root, "--out", run, "--epochs", "1000", "--width", "0.0625",
                    "--image-size", "64", "--device", "cpu", "--batch-norm")
    train.expect("training multitask on")                             # config.yaml is written by then
    code, output = train.interrupt()
    assert code == ExitCode.INTERRUPTED, output
    assert f"interrupted; continue with: drtrt train --data {synth_root} --resume {run}" in output, output


# -- waits and refusals that say what they are -----------------------------------------------------------------

def test_an_unreachable_triton_server_is_named_at_once(photo_root):
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (pip install 'drtrt[triton]')")
    url = f"triton://127.0.0.1:{unused_port()}/drtrt"
    proc = invoke("screen", sorted(photo_root.rglob("*.jpg"))[0], "--model", url, env={"DRTRT_TRITON_RETRIES": "2"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == ExitCode.FAILED and len(lines) == 2, proc.stderr
    assert lines[0].startswith(f"waiting for {url} (") and lines[1].startswith("error: cannot read the model")


def options_of(command: str) -> set[str]:
    return {opt for param in typer.main.get_command(app).commands[command].params for opt in param.opts}


@pytest.fixture(scope="module")
def failed_onnx(tiny_onnx, tmp_path_factory) -> Path:
    """The tiny model carrying a failed check against its FP32 reference (as `drtrt calibrate` writes it)."""
    import onnx

    from drtrt.calibration.graph import read_info, write_info
    from drtrt.model_info import GATE_KEY, gate_record

    proto = onnx.load(str(tiny_onnx))
    info = read_info(proto)
    write_info(proto, info.derive(info.precision, **{GATE_KEY: gate_record(
        "failed", "fp32", "0" * 64, "grade agreement 90.0% — FAIL: grade agreement 0.9 (needs >= 0.97)")}))
    out = tmp_path_factory.mktemp("failed") / "model.int8.rejected.onnx"
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize("command", list(REFUSES_A_FAILED_MODEL), ids=" ".join)
def test_a_model_that_failed_its_check_is_refused_with_one_line_and_exit_4(command, failed_onnx, photo_root,
                                                                           tmp_path):
    (tmp_path / "golden.json").write_text("{}")
    image = sorted(photo_root.rglob("*.jpg"))[0]
    args = [a.format(model=failed_onnx, tmp=tmp_path, image=image, port=unused_port())
            for a in REFUSES_A_FAILED_MODEL[command]]
    proc = subprocess.run([sys.executable, "-m", "drtrt.cli", *command, *args], capture_output=True, text=True,
                          timeout=120)     # a command that served the model instead would run on: a failure here
    assert_one_line_error(proc, "FAILED its accuracy check against its FP32 reference", ExitCode.GATE_FAILED)
    assert "--allow-unchecked-model" in proc.stderr
    assert "--allow-unchecked-model" in options_of(command[0])
    assert not any((tmp_path / name).exists() for name in ("session", "station", "repo", "bundle"))


def test_calibration_advice_names_real_options_and_not_the_ones_used(tiny_onnx, photo_root, tmp_path):
    from drtrt.calibration.api import int8_hint

    proc = invoke("calibrate", "--onnx", tiny_onnx, "--out", tmp_path / "m.int8.onnx", "--data", photo_root,
                  "--images", "8", "--holdout", "6", "--method", "percentile", "--bias-correction", "0",
                  "--threshold", "logit_rel_delta=0")                  # no INT8 model is that exact: the gate fails
    error = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == ExitCode.GATE_FAILED and error.startswith("error: the INT8 model misses"), proc.stderr
    assert "--method percentile" not in error
    for method in ("minmax", "percentile", "entropy"):
        for searched in (False, True):
            advice = int8_hint(method, searched)
            assert set(re.findall(r"--[a-z-]+", advice)) <= options_of("calibrate"), advice
            assert ("--auto-exclude" in advice) is not searched and (f"--method {method}" not in advice)
    assert set(re.findall(r"--[a-z-]+", error)) <= options_of("calibrate")


# -- result tables at 80 columns -------------------------------------------------------------------------------

def at_80_columns(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DRTRT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "drtrt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**env, "COLUMNS": "80"})


def assert_fits_80(text: str, *words: str) -> None:
    """Every line within 80 cells, no cell cut short (…), and ``words`` (file names, verdicts) whole."""
    assert all(cell_len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text, text
    for word in words:
        assert word in text, (word, text)


def test_the_report_commands_tables_fit_80_columns(tiny_onnx, photo_root, tmp_path):
    images = sorted(photo_root.rglob("*.jpg"))[:2]
    (tmp_path / "notes.jpg").write_text("not a photo")
    screen = at_80_columns("screen", *images, tmp_path / "notes.jpg", "--model", tiny_onnx)
    assert screen.returncode == ExitCode.NOT_ALL_GRADED, screen.stderr
    assert_fits_80(screen.stdout, *(image.name for image in images), "notes.jpg", "graded")
    assert "object at 0x" not in screen.stdout
    parity = at_80_columns("parity", "--reference", tiny_onnx, "--candidate", tiny_onnx, "--data", photo_root,
                           "--limit", "2")
    assert parity.returncode == 0, parity.stderr
    assert_fits_80(parity.stdout, "model.onnx", "PASS", "Left out at this width")
    bench = at_80_columns("bench", "--model", tiny_onnx, "--iters", "1", "--warmup", "0", "--no-peak", "--data",
                          photo_root)                                   # its photos: quicker than a synthetic one
    assert bench.returncode == 0, bench.stderr
    assert_fits_80(bench.stdout, "model.onnx", "img/s")
    assert "model.onnx batch 1" in bench.stderr                         # its progress bar
    evaluate = at_80_columns("evaluate", "--model", tiny_onnx, "--data", photo_root)
    assert evaluate.returncode == 0, evaluate.stderr
    assert_fits_80(evaluate.stdout, "accuracy", "confusion matrix")
    doctor = at_80_columns("doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert_fits_80(doctor.stdout, "what drtrt can do here")


def test_seed_and_ablation_tables_fit_80_columns():
    import io

    from rich.console import Console

    from drtrt.cli.tables import sweep_tables
    from drtrt.train.sweep import ABLATION, COLUMNS, markdown_table

    runs = [{key: 0.6123 + 0.01 * seed for key, _ in COLUMNS} for seed in range(3)]
    text = markdown_table({variant: runs for variant in ABLATION}, title="ablation, 3 seeds")
    out = io.StringIO()
    Console(file=out, width=80).print(*sweep_tables(text, width=80))
    assert_fits_80(out.getvalue(), "62.23", "± 1.00", "mPR-AUC")
    for variant in ABLATION:
        assert all(word in out.getvalue() for word in variant.split()), variant
