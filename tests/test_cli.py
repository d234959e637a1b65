"""The CLI as a user meets it: JSON output, exit codes, one-line errors without tracebacks."""

import json
import subprocess
import sys

import pytest


def drtrt(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "drtrt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]


def test_help_lists_commands():
    proc = drtrt("--help")
    assert proc.returncode == 0
    for command in ("synth", "train", "export", "screen", "evaluate", "demo", "calibrate", "fp16", "build",
                    "parity", "bench", "doctor", "watch", "pseudo-label", "ablation"):
        assert command in proc.stdout


def test_screen_json_and_bad_images_do_not_stop_the_run(tiny_onnx, synth_root, tmp_path):
    good = sorted((synth_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))[:2]
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:2000])
    grey = tmp_path / "grey.png"
    import cv2
    import numpy as np
    cv2.imwrite(str(grey), np.full((600, 800, 3), 128, np.uint8))
    proc = drtrt("screen", *good, text, truncated, grey, "--model", tiny_onnx, "--json", "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
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


def test_screen_all_graded_exits_zero(tiny_onnx, synth_root):
    folder = synth_root / "A. Segmentation" / "1. Original Images" / "b. Testing Set"
    proc = drtrt("screen", folder, "--model", tiny_onnx)
    assert proc.returncode == 0, proc.stderr
    assert "screening results" in proc.stdout


@pytest.mark.parametrize("case", ["missing_file", "empty_dir", "missing_model", "bad_model", "model_not_onnx"])
def test_one_line_errors(case, tiny_onnx, synth_root, tmp_path):
    image = next((synth_root / "A. Segmentation" / "1. Original Images" / "a. Training Set").glob("*.jpg"))
    if case == "missing_file":
        proc, fragment = drtrt("screen", tmp_path / "nope.jpg", "--model", tiny_onnx), "no such file"
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        proc, fragment = drtrt("screen", tmp_path / "empty", "--model", tiny_onnx), "no images"
    elif case == "missing_model":
        proc, fragment = drtrt("screen", image, "--model", tmp_path / "none.onnx"), "model file not found"
    elif case == "bad_model":
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"\x00garbage" * 10)
        proc, fragment = drtrt("screen", image, "--model", bad), "cannot load"
    else:
        proc, fragment = drtrt("screen", image, "--model", image), "backend"
    assert_one_line_error(proc, fragment)


def test_train_and_export_errors_are_one_line(tmp_path):
    assert_one_line_error(drtrt("train", "--data", tmp_path / "nothing", "--out", tmp_path / "run"), "nothing")
    assert_one_line_error(drtrt("train", "--data", tmp_path, "--out", tmp_path / "r", "--model", "resnet"), "resnet")
    assert_one_line_error(drtrt("export", "--checkpoint", tmp_path / "x.pt", "--out", tmp_path / "m.onnx"),
                          "checkpoint not found")
    pickle = tmp_path / "evil.pt"
    pickle.write_bytes(b"\x80\x04\x95not a checkpoint")
    assert_one_line_error(drtrt("export", "--checkpoint", pickle, "--out", tmp_path / "m.onnx"), "not a loadable")
