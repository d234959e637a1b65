"""Shared fixtures: a small synthetic IDRiD set, a tiny trained checkpoint, its ONNX export, and
TensorRT for the tests that build and run engines, and a real Triton server for those that serve it.

Everything is generated here (nothing downloaded); sizes are tiny so the suite stays fast.
TensorRT is the test double in ``fake_tensorrt/`` unless ``--real-trt`` is given: then the
installed ``tensorrt`` and the GPU run the same tests (a Jetson owner's first check), and the
tests that drive the double's own controls (``emulation``) are skipped. Triton is the
``nvidia-pytriton`` wheel's server (``triton``, started once for the session; skipped where the wheel
is not installed, see triton_helpers); the runner contract falls back to the tritonclient double
(``fake_tritonclient``) there, and uses it anyway with ``--fake-triton``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _private_drtrt_cache(tmp_path_factory):
    """drtrt's caches (TensorRT timing caches, ...) in a folder of this run, not the user's ~/.cache:
    a cache left by an earlier run must not change what a build logs or reuses."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRTRT_CACHE_DIR", str(tmp_path_factory.mktemp("drtrt-cache")))
        yield


def pytest_addoption(parser):
    parser.addoption("--real-trt", action="store_true", default=False,
                     help="run the TensorRT tests on the installed tensorrt and this machine's GPU instead of the "
                          "test double; tests marked emulation are skipped")
    parser.addoption("--fake-triton", action="store_true", default=False,
                     help="run the runner contract's Triton cases on the tritonclient test double "
                          "(tests/fake_tritonclient) even where the real server is installed")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--real-trt"):
        return
    skip = pytest.mark.skip(reason="drives the TensorRT test double's own controls; --real-trt runs real TensorRT")
    for item in items:
        if "emulation" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tensorrt(request, monkeypatch):
    """TensorRT for one test: the double emulating 10.3 on a fake Orin (default), or with --real-trt the
    installed one (the test is skipped where it cannot be imported). Returns the double's handle or None."""
    if request.config.getoption("--real-trt"):
        pytest.importorskip("tensorrt", reason="--real-trt needs TensorRT's Python bindings")
        return None
    from fake_tensorrt import install

    return install(monkeypatch, "10.3.0")


def shared_data(name: str) -> Path:
    """Path to ``../shared/data/NAME``; skips the test when it is not beside the checkout."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not present (it sits beside the developers' checkout only)")
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from drtrt.data.synth import write_synthetic_idrid

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_idrid(root, grading=12, segmentation=6, size=256, seed=1)
    return root


@pytest.fixture(scope="session")
def photo_root(tmp_path_factory) -> Path:
    """Synthetic photos large enough for the quality gate (a field of at least 256 px; those of
    ``synth_root`` are 190 px across, right for training the 64-px model but "too small" to
    screen), in the same IDRiD layout."""
    from drtrt.data.synth import write_synthetic_idrid

    root = tmp_path_factory.mktemp("photos")
    write_synthetic_idrid(root, grading=12, segmentation=6, size=512, seed=1)
    return root


@pytest.fixture(scope="session")
def fundus_photos(photo_root, tmp_path_factory) -> dict[str, Path]:
    """For the station: four gradable photos of ``photo_root`` (the first two show right eyes), a blurred
    copy of the first (the gate refuses it as blurred) and a left eye (the second, mirrored)."""
    import cv2

    found = sorted(photo_root.rglob("*.jpg"))[:4]
    out = tmp_path_factory.mktemp("fundus")
    photos = {f"good{i}": p for i, p in enumerate(found)}
    blurred = out / "blurred.jpg"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(cv2.imread(str(found[0])), (0, 0), 6))
    photos["blurred"] = blurred
    left = out / "left.jpg"
    cv2.imwrite(str(left), cv2.flip(cv2.imread(str(found[1])), 1))
    photos["left"] = left
    return photos


@pytest.fixture(scope="session")
def tiny_run(synth_root, tmp_path_factory) -> Path:
    """Two epochs of a width-1/16 multi-task model at 64×64: enough for shapes and parity."""
    from drtrt.preprocess import PreprocessSpec
    from drtrt.train.model import ModelConfig
    from drtrt.train.train_config import TrainConfig
    from drtrt.train.trainer import train

    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.01, device="cpu",
                      model=ModelConfig(width=0.0625, batch_norm=True), preprocess=PreprocessSpec(size=64))
    with torch_threads(1):   # the same weights whatever the CPUs the suite runs on (docs/reproducibility.md)
        train(cfg, synth_root, run, log=lambda msg: None)
    return run


@contextlib.contextmanager
def torch_threads(count: int):
    """PyTorch's intra-op threads set to ``count`` for the block: training is bit-identical run to run only
    at one thread count (float reductions are split by thread), so fixtures that train fix it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, tmp_path_factory) -> Path:
    from drtrt.train.checkpoint import export_checkpoint

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_checkpoint(tiny_run / "best.pt", out)
    return out


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """Kill what a test started through ``processes.track`` (a failed test must not leave one running)."""
    yield
    from processes import kill_all

    kill_all()


@pytest.fixture(scope="session")
def triton_root(tmp_path_factory) -> Path:
    """The server's binaries, its Python backend and its Python environment (copied once)."""
    from triton_helpers import server_folder

    return server_folder(tmp_path_factory.mktemp("tritonserver") / "server")


@pytest.fixture(scope="session")
def served_repo(tiny_onnx, tmp_path_factory) -> Path:
    """The tiny model's repository as ``drtrt export-triton --serve-with python --warmup --max-batch 8``
    writes it (with the photo ensemble)."""
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (pip install 'drtrt[triton]')")
    from drtrt.serving.repository import RepositorySpec, write_repository

    out = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(RepositorySpec(out=out, onnx=tiny_onnx, serve_with="python", warmup=True, max_batch=8))
    return out


@pytest.fixture(scope="session")
def triton(triton_root, served_repo, tmp_path_factory):
    """A Triton server for the session (the nvidia-pytriton wheel's), serving ``served_repo``: a
    ``triton_helpers.TritonServer``."""
    from triton_helpers import TritonServer

    server = TritonServer(triton_root, served_repo, tmp_path_factory.mktemp("triton-log") / "tritonserver.log")
    server.start(tracked=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def archive(photo_root) -> list[Path]:
    """Gradable synthetic photos (512 px fields), sorted: what the Triton tests screen."""
    return sorted(photo_root.rglob("*.jpg"))
