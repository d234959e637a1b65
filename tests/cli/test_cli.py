"""The CLI as a user meets it: JSON output, exit codes, one-line errors without tracebacks, help text."""

import json
import os
import re
import signal

import subprocess
import sys

import pytest
from processes import track
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.cli.common import ExitCode

runner = CliRunner()
COMMANDS = ("synth", "train", "pseudo-label", "ablation", "export", "fp16", "calibrate", "build", "screen", "watch",
            "station", "receive", "sync", "evaluate", "parity", "bench", "doctor", "demo")


def drtrt(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "drtrt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def assert_one_line_error(proc, fragment, code=ExitCode.FAILED):
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]


def test_help_lists_commands_and_the_exit_codes():
    proc = drtrt("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout
    text = " ".join(proc.stdout.split())
    assert "0 done; 1 failed" in text and "2 usage error; 3 not every image graded" in text and "4 a gate failed" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_values_not_python_types(command):
    """No `<bool>` or `<list[Path]>`: values are named (DIR, N, MODEL), flags bare."""
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert not re.search(r"<\w+(\[.*?\])?>|\{\w+\}", result.output), result.output



def test_help_defaults_are_the_real_ones():
    """`train` shows TrainConfig's defaults (its options only override the config when given); `demo` its own."""
    from drtrt.cli.demo import DemoConfig
    from drtrt.train.train_config import TrainConfig

    cfg = TrainConfig()
    train = option_help(runner.invoke(app, ["train", "--help"]).output)
    for option, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size), ("--lr", cfg.lr),
                          ("--image-size", cfg.preprocess.size), ("--width", cfg.model.width), ("--seed", cfg.seed),
                          ("--device", cfg.device), ("--workers", cfg.workers), ("--labels", cfg.labels),
                          ("--model", cfg.model.arch)):
        assert f"[default: {value}" in train[option], (option, train[option])
    demo = option_help(runner.invoke(app, ["demo", "--help"]).output)
    assert f"[default: {DemoConfig().epochs}]" in demo["--epochs"]


def option_help(text: str) -> dict[str, str]:
    """``--option`` → its help text, from click's help layout (an option starts a line, help continues)."""
    options: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"\s{2}(?:-\w, )?(--[\w-]+)", line)
        if match:
            current = match[1]
            options[current] = line
        elif current and line.startswith(" " * 6):
            options[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in options.items()}



def test_screen_json_and_bad_images_do_not_stop_the_run(tiny_onnx, photo_root, tmp_path):
    good = sorted((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))[:2]
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:2000])
    grey = tmp_path / "grey.png"
    import cv2
    import numpy as np
    cv2.imwrite(str(grey), np.full((600, 800, 3), 128, np.uint8))
    proc = drtrt("screen", *good, text, truncated, grey, "--model", tiny_onnx, "--json", "--out", tmp_path / "out")
    assert proc.returncode == ExitCode.NOT_ALL_GRADED, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["graded", "graded", "error", "error", "ungradable"]
    for row in rows:
        assert {"image", "status", "grade", "referable", "probabilities", "lesions", "error"} <= set(row)
    assert rows[0]["lesions"]["MA"].keys() >= {"area_px", "count"}
    assert "notes.jpg" in rows[2]["error"]
    assert rows[4]["grade"] is None and "blank image" in rows[4]["reason"] and "retake" in rows[4]["reason"]
    written = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(written) == 5
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 2


def test_screen_all_graded_exits_zero(tiny_onnx, photo_root):
    folder = photo_root / "A. Segmentation" / "1. Original Images" / "b. Testing Set"
    proc = drtrt("screen", folder, "--model", tiny_onnx)
    assert proc.returncode == 0, proc.stderr
    assert "screening results" in proc.stdout


def test_screen_subfolders_reruns_and_same_names(tiny_onnx, photo_root, tmp_path):
    """Subfolders are screened with --recursive and reported without it; a re-run says what it skipped;
    two files with one name are told apart."""
    import shutil

    images = sorted((photo_root / "B. Disease Grading" / "1. Original Images").glob("*/*.jpg"))
    visit = tmp_path / "visit"
    (visit / "left").mkdir(parents=True)
    (visit / "right").mkdir()
    shutil.copy(images[0], visit / "left" / "photo.jpg")
    shutil.copy(images[1], visit / "right" / "photo.jpg")
    shutil.copy(images[2], visit / "overview.jpg")
    flat = drtrt("screen", visit, "--model", tiny_onnx)
    assert flat.returncode == 0 and "2 image(s) in subfolders were not screened; add --recursive" in flat.stderr
    out = tmp_path / "session"
    deep = drtrt("screen", visit, "--recursive", "--model", tiny_onnx, "--out", out)
    assert deep.returncode == 0, deep.stderr
    table = " ".join(deep.stdout.split())
    assert "left/photo.jpg" in table and "right/photo.jpg" in table and "overview.jpg" in table
    again = drtrt("screen", visit, "-r", "--model", tiny_onnx, "--out", out)
    assert again.returncode == 0
    assert "3 of 3 image(s) were screened by an earlier run" in " ".join(again.stdout.split())
    empty = tmp_path / "only-subfolders"
    (empty / "a").mkdir(parents=True)
    shutil.copy(images[0], empty / "a" / "x.jpg")
    assert_one_line_error(drtrt("screen", empty, "--model", tiny_onnx), "add --recursive")


@pytest.mark.parametrize("case", ["empty_dir", "missing_model", "bad_model", "model_not_onnx",
                                  "unknown_option", "bad_eye"])
def test_one_line_errors_and_their_exit_codes(case, tiny_onnx, photo_root, tmp_path):
    image = next((photo_root / "A. Segmentation" / "1. Original Images" / "a. Training Set").glob("*.jpg"))
    code = ExitCode.FAILED
    if case == "empty_dir":
        (tmp_path / "empty").mkdir()
        proc, fragment = drtrt("screen", tmp_path / "empty", "--model", tiny_onnx), "no images"
    elif case == "missing_model":
        proc, fragment = drtrt("screen", image, "--model", tmp_path / "none.onnx"), "model file not found"
    elif case == "bad_model":
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"\x00garbage" * 10)
        proc, fragment = drtrt("screen", image, "--model", bad), "cannot load"
    elif case == "model_not_onnx":
        proc, fragment, code = drtrt("screen", image, "--model", image), "backend", ExitCode.USAGE
    elif case == "bad_eye":
        proc, fragment, code = drtrt("screen", image, "--model", tiny_onnx, "--eye", "middle"), "eye must be", \
            ExitCode.USAGE
    else:   # typer's own usage errors share the code of drtrt's
        proc = drtrt("screen", image, "--model", tiny_onnx, "--colour")
        assert proc.returncode == ExitCode.USAGE and "No such option: --colour" in proc.stderr
        return
    assert_one_line_error(proc, fragment, code)


def test_train_and_export_errors_are_one_line(tmp_path):
    assert_one_line_error(drtrt("train", "--data", tmp_path, "--out", tmp_path / "r", "--model", "resnet"), "resnet",
                          ExitCode.USAGE)
    pickle = tmp_path / "evil.pt"
    pickle.write_bytes(b"\x80\x04\x95not a checkpoint")
    assert_one_line_error(drtrt("export", "--checkpoint", pickle, "--out", tmp_path / "m.onnx"), "not a loadable")


def test_a_bug_is_one_line_and_exit_70_with_the_traceback_on_request(monkeypatch):
    def broken():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("drtrt.runtime.doctor.diagnose", broken)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == ExitCode.INTERNAL and "Traceback" not in result.output
    assert "internal error (ZeroDivisionError: division by zero); this is a bug in drtrt" in result.output
    monkeypatch.setenv("DRTRT_DEBUG", "1")                  # the traceback too, and the same exit status
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == ExitCode.INTERNAL and "Traceback" in result.output and "ZeroDivisionError" in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: internal error (ZeroDivisionError")


def test_json_is_one_document_on_stdout_for_every_report_command(tiny_onnx, photo_root):
    """`--json` means the same everywhere: machine-readable on stdout, progress and warnings on stderr."""
    for args in (["doctor"], ["evaluate", "--model", tiny_onnx, "--data", photo_root],
                 ["bench", "--model", tiny_onnx, "--iters", "1", "--warmup", "0", "--no-peak"],
                 ["parity", "--reference", tiny_onnx, "--candidate", tiny_onnx, "--data", photo_root, "--limit", "4"]):
        proc = drtrt(*args, "--json")
        assert proc.returncode == 0, (args, proc.stderr)
        json.loads(proc.stdout)


def test_watch_errors_are_one_line(tiny_onnx, tmp_path):
    occupied = tmp_path / "file"
    occupied.write_text("not a folder")
    (tmp_path / "camera").mkdir()
    proc = drtrt("watch", tmp_path / "camera", "--model", tiny_onnx, "--out", occupied)
    assert_one_line_error(proc, "as a session folder")
    assert "object at 0x" not in proc.stderr and "PosixPath(" not in proc.stderr
    busy = drtrt("watch", tmp_path / "camera", "--model", tiny_onnx, "--out", tmp_path / "s", "--poll", "-1")
    assert_one_line_error(busy, "--poll must be above 0", ExitCode.USAGE)
    mode = drtrt("watch", tmp_path / "camera", "--model", tiny_onnx, "--out", tmp_path / "s", "--watch", "inotify")
    assert_one_line_error(mode, "--watch must be one of auto, events, poll, found 'inotify'", ExitCode.USAGE)
    mode = drtrt("station", "--model", tiny_onnx, "--data-dir", tmp_path / "st", "--watch", "inotify")
    assert_one_line_error(mode, "--watch must be one of auto, events, poll", ExitCode.USAGE)


def test_watch_events_without_watchdog_is_one_line_and_auto_polls_saying_why(tiny_onnx, tmp_path):
    blocker = tmp_path / "no-watchdog" / "watchdog"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'watchdog'\", name='watchdog')\n")
    (tmp_path / "camera").mkdir()
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(blocker.parent)}
    args = [sys.executable, "-m", "drtrt.cli", "watch", str(tmp_path / "camera"), "--model", str(tiny_onnx)]
    proc = subprocess.run([*args, "--out", str(tmp_path / "s1"), "--watch", "events"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert_one_line_error(proc, "--watch events: watchdog is not installed (", ExitCode.USAGE)
    assert "[station]'); use --watch poll" in proc.stderr          # the install advice, as fits this install
    watcher = subprocess.Popen([*args, "--out", str(tmp_path / "s2")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    track(watcher)
    first = next((line for line in watcher.stdout if "camera folder" in line or "watching" in line), "")
    watcher.send_signal(signal.SIGINT)
    watcher.communicate(timeout=120)
    assert "polling" in first and "watchdog is not installed" in first, first


def test_json_piped_into_a_reader_that_stops_early_is_not_an_error():
    """`drtrt doctor --json | head`: the reader may close the pipe before drtrt writes (here it never
    reads: `true`); drtrt exits 0 quietly instead of reporting an internal error."""
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m drtrt.cli doctor --json | true; "
                                         "echo exit=${PIPESTATUS[0]} >&2"], capture_output=True, text=True, timeout=120)
    assert "exit=0" in proc.stderr and "internal error" not in proc.stderr and "Broken pipe" not in proc.stderr


def test_missing_extra_advice_fits_a_clone_and_a_published_install(tmp_path, monkeypatch):
    """Issue 20: run from a clone (scripts/demo.sh installs it editable), `pip install 'drtrt[station]'`
    would fetch the published package, not this code: the advice names the clone."""
    from pathlib import Path

    import drtrt.cli.common as common
    from drtrt.cli.common import for_this_install

    checkout = Path(common.__file__).resolve().parents[2]
    advice = for_this_install("this command needs 'starlette', which is not installed; pip install 'drtrt[station]'")
    assert f"install -e '{checkout}[station]'" in advice and "'drtrt[station]'" not in advice
    assert for_this_install("no advice here") == "no advice here"
    wheel = tmp_path / "site-packages" / "drtrt" / "cli" / "common.py"   # a wheel's layout: no pyproject beside it
    monkeypatch.setattr(common, "__file__", str(wheel))
    assert for_this_install("pip install 'drtrt[gpu]'") == "pip install 'drtrt[gpu]'"
