"""One predictor API over several backends: chosen by file type or --backend, same result type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drtrt.errors import BackendUnavailable, ConfigError
from drtrt.runtime import registry
from drtrt.runtime.backends.ort import OrtRunner
from drtrt.runtime.predictor import Predictor
from drtrt.runtime.registry import BACKENDS, load_runner, RUNNERS
from drtrt.clinic.session import SessionConfig
from drtrt.clinic.session import screen_images


def some_images(photo_root: Path, n: int = 3) -> list[Path]:
    return sorted((photo_root / "B. Disease Grading" / "1. Original Images").glob("*/*.jpg"))[:n]


def test_backend_by_suffix_and_by_name(tiny_onnx, tmp_path):
    assert BACKENDS[".onnx"] == "ort" and BACKENDS[".engine"] == "trt" and BACKENDS[".pt"] == "torch"
    assert set(BACKENDS.values()) <= set(RUNNERS)
    runner = load_runner(tiny_onnx)
    assert isinstance(runner, OrtRunner) and runner.active and runner.providers == ["CPUExecutionProvider"]
    runner.deactivate()
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(tiny_onnx.read_bytes())
    with pytest.raises(ConfigError, match="cannot tell the backend for 'model.bin'"):
        load_runner(renamed)
    load_runner(renamed, backend="ort").deactivate()                     # --backend overrides the suffix
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; available: ort, trt, torch"):
        load_runner(tiny_onnx, backend="tensorrt")


def test_providers_are_never_silently_replaced(tiny_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(ConfigError, match="CUDAExecutionProvider is not available here"):
        load_runner(tiny_onnx, providers=("cuda", "cpu"))
    with pytest.raises(ConfigError, match="apply to ONNX Runtime only"):
        load_runner(tiny_onnx, backend="trt", providers=("cpu",))


def test_missing_backend_dependency_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "needs_missing.py").write_text("import drtrt_no_such_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(RUNNERS, "torch", "needs_missing:Runner")
    with pytest.raises(BackendUnavailable, match="needs drtrt_no_such_package_xyz, which is not installed"):
        registry.runner_class("torch")
    monkeypatch.setitem(RUNNERS, "torch", "drtrt.train.no_such_runner:TorchRunner")
    with pytest.raises(BackendUnavailable, match="not part of this drtrt build"):
        registry.runner_class("torch")


def test_torch_backend_only_imported_when_asked(tiny_onnx, photo_root):
    """drtrt.runtime refers to the torch and TensorRT runners by import path: neither is imported."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None\n"
            "import drtrt.runtime.predictor, drtrt.clinic.session, drtrt.clinic.watch, drtrt.clinic.reports\n"
            "from drtrt.clinic.session import screen_images\n"
            f"rows = screen_images([{str(some_images(photo_root, 1)[0])!r}], {str(tiny_onnx)!r}).rows\n"
            "assert rows[0].status == 'graded', rows[0].reason\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt', 'onnx') "
            "and sys.modules[m] is not None]\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_pytorch_checkpoint_backend(tiny_run, tiny_onnx, photo_root):
    """Parity work: the .pt checkpoint screens through the same API as its ONNX export."""
    try:
        cls = registry.runner_class("torch")
    except BackendUnavailable as exc:
        pytest.skip(f"PyTorch runner not available: {exc}")
    assert cls.__name__ == "TorchRunner"
    images = some_images(photo_root)
    with Predictor(tiny_run / "best.pt") as torch_predictor, Predictor(tiny_onnx) as ort_predictor:
        for a, b in zip(torch_predictor.screen_batch(images), ort_predictor.screen_batch(images)):
            assert a.status == b.status == "graded" and a.grade == b.grade
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)


def test_tensorrt_engine_screens_like_its_onnx(tiny_onnx, photo_root, tmp_path, monkeypatch, tensorrt):
    """A .engine screens like its ONNX (TensorRT's double computes with ONNX Runtime; --real-trt: TensorRT)."""
    monkeypatch.setenv("DRTRT_CACHE_DIR", str(tmp_path / "cache"))
    from drtrt.export.build_config import BuildConfig
    from drtrt.export.trt_build import build_engine

    engine = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", max_batch=2)).engine
    images = some_images(photo_root, 3)
    cfg = SessionConfig(batch_size=2)
    trt_rows = screen_images(images, engine, tmp_path / "trt-session", cfg=cfg).rows
    ort_rows = screen_images(images, tiny_onnx, tmp_path / "ort-session", cfg=cfg).rows
    exact = tensorrt is not None      # the double computes with ONNX Runtime; a GPU's kernels differ a little
    for a, b in zip(trt_rows, ort_rows):
        assert a.status == b.status == "graded" and a.record["grade"] == b.record["grade"]
        np.testing.assert_allclose(a.record["probabilities"], b.record["probabilities"], atol=1e-5 if exact else 2e-3)
        if exact:
            assert a.record["lesions"] == b.record["lesions"]
    # a batch larger than the engine's profile is fitted to it, and the predictor says so
    with Predictor(engine, batch_size=3) as fitted:
        assert fitted.batch_size == 2 and "lowered to 2" in fitted.notes[0]
        results = fitted.screen_batch(images)
    assert [r.status for r in results] == ["graded"] * 3 and [r.batch_size for r in results] == [2, 2, 1]
