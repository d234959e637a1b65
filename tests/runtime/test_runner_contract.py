"""One contract, every backend: ONNX Runtime, PyTorch, TensorRT (the test double, or the real
library with --real-trt) and Triton over gRPC and HTTP (the real server where the nvidia-pytriton
wheel is installed, else, or with --fake-triton, the tritonclient double) go through the same
cases: lifecycle and its guards, what an active runner serves, dynamic batch, feed validation with
one error type, the same outputs, and a model that is not there.

A backend joins by naming itself: ``@joins("name")`` on a setup that takes the test's ``request``
and returns a :class:`Backend` (how to make its runners, which of them find no model, how close
its outputs come to ONNX Runtime's), as segmentation_models_pytorch's shared model tests do; the
``backend`` fixture runs every case once per name in :data:`BACKENDS`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from drtrt.errors import ArtefactError, RunnerStateError, ShapeError
from drtrt.runtime.base import Runner
from drtrt.runtime.backends.ort import OrtRunner
from drtrt.task import TaskSpec

pytestmark = pytest.mark.numeric

TASK = TaskSpec()


@dataclass(frozen=True)
class Backend:
    """How one backend meets the contract. ``runner()``: a fresh, inactive runner over the tiny model;
    ``missing``: (runner whose model is not there, the start of its ArtefactError's message) pairs;
    ``atol``: how far its outputs may be from ONNX Runtime's."""

    runner: Callable[[], Runner]
    missing: tuple[tuple[Callable[[], Runner], str], ...]
    atol: float = 1e-4


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {}


def joins(name: str, **options):
    """Enter a backend's setup in the contract under ``name`` (``options``: passed to the setup)."""
    def register(setup: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKENDS[name] = functools.partial(setup, **options)
        return setup

    return register


@joins("ort")
def ort_backend(request) -> Backend:
    onnx, tmp = request.getfixturevalue("tiny_onnx"), request.getfixturevalue("tmp_path")
    return Backend(lambda: OrtRunner(onnx), ((lambda: OrtRunner(tmp / "missing.onnx"), "model file not found"),))


@joins("torch")
def torch_backend(request) -> Backend:
    from drtrt.train.torch_runner import TorchRunner

    run, tmp = request.getfixturevalue("tiny_run"), request.getfixturevalue("tmp_path")
    return Backend(lambda: TorchRunner(run / "best.pt"), ((lambda: TorchRunner(tmp / "missing.pt"),
                                                            "checkpoint not found"),))


@joins("trt")
def trt_backend(request) -> Backend:
    request.getfixturevalue("tensorrt")
    from drtrt.export.build_config import BuildConfig
    from drtrt.export.trt_build import build_engine
    from drtrt.runtime.backends.trt import TrtRunner

    onnx, tmp = request.getfixturevalue("tiny_onnx"), request.getfixturevalue("tmp_path")
    request.getfixturevalue("monkeypatch").setenv("DRTRT_CACHE_DIR", str(tmp / "cache"))
    engine = functools.cache(lambda: build_engine(BuildConfig(onnx=onnx, out=tmp / "model.engine", max_batch=2)).engine)
    # The double computes with ONNX Runtime; real TensorRT picks its own FP32 kernels (the build clears TF32,
    # but the kernels' order of summation is TensorRT's), so its outputs are close to ONNX Runtime's, not equal.
    return Backend(lambda: TrtRunner(engine()), ((lambda: TrtRunner(tmp / "missing.engine"), "engine file not found"),),
                   atol=1e-2 if request.config.getoption("--real-trt") else 1e-4)


@joins("triton+http", protocol="http")
@joins("triton", protocol="grpc")                       # (the lower decorator enters first)
def triton_backend(request, protocol: str) -> Backend:
    """The tiny model served as ``drtrt export-triton --max-batch 8`` serves it: by the session's real
    server (tests/conftest.py, its Python backend running the model on ONNX Runtime) where it runs,
    else (or with --fake-triton) by the tritonclient double, which runs it on ONNX Runtime here. What
    is "not there" on a server: a model it does not have, and a version of the model it does not have.
    Outputs: ONNX Runtime's either way (the server's on other threads: equal to float rounding)."""
    from triton_helpers import server_missing

    from drtrt.runtime.backends.triton import RetryPolicy, TritonRunner

    if request.config.getoption("--fake-triton") or server_missing():
        from fake_tritonclient import install

        fake = install(request.getfixturevalue("monkeypatch"))
        server = fake.serve({"drtrt": request.getfixturevalue("tiny_onnx")}, max_batch=8)
    else:
        server = request.getfixturevalue("triton")
    retry = RetryPolicy(attempts=2, backoff_s=0.1)       # a case that fails does not wait out the default 15 s

    def runner(model: str = "drtrt") -> TritonRunner:              # MODEL or MODEL/VERSION
        return TritonRunner(server.model_url(model, protocol), retry=retry)

    return Backend(runner, ((lambda: runner("grader"), "the server has no model 'grader'"),
                            (lambda: runner("drtrt/2"), "the server has no version 2 of model 'drtrt'")))


@pytest.fixture(params=list(BACKENDS))
def backend(request) -> Backend:
    """One backend over the tiny model, once per name in BACKENDS."""
    return BACKENDS[request.param](request)


def feed(batch: int, size: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    return {TASK.input_name: x}


def test_lifecycle_and_its_guards(backend):
    runner: Runner = backend.runner()
    assert not runner.active
    with pytest.raises(RunnerStateError, match=r"infer\(\) used before activate\(\)"):
        runner.infer(feed(1))
    with pytest.raises(RunnerStateError, match="info used before activate"):
        runner.info
    runner.activate()
    signature = runner._signature
    runner.activate()                                         # a second activate is a no-op
    assert runner.active and runner._signature is signature
    runner.deactivate()
    runner.deactivate()                                       # and so is a second deactivate
    assert not runner.active
    with pytest.raises(RunnerStateError):
        runner.infer(feed(1))
    with backend.runner() as again:                           # the context manager is activate/deactivate
        assert again.active
    assert not again.active


def test_an_active_runner_serves_the_models_vocabulary(backend):
    with backend.runner() as runner:
        assert runner.info.task == TASK and runner.output_names == TASK.outputs
        (spec,) = runner.input_specs
        assert (spec.name, spec.shape, spec.dtype) == (TASK.input_name, (-1, 3, 64, 64), "float32")
        assert runner.max_batch is None or runner.max_batch >= 1


def test_dynamic_batch_up_to_the_limit(backend):
    with backend.runner() as runner:
        for batch in (1, runner.max_batch or 3):
            out = runner.infer(feed(batch))
            assert list(out) == list(TASK.outputs)
            assert out[TASK.grade_output].shape == (batch, 5) and out[TASK.lesion_output].shape == (batch, 5, 64, 64)
            assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("case, message", [
    ("name", r"expected inputs \['image'\], found \['images'\]"),
    ("dtype", "input 'image' must be float32, found float64"),
    ("rank", r"must have shape \[N, 3, 64, 64\], found \[3, 64, 64\]"),
    ("size", r"must have shape \[N, 3, 64, 64\], found \[1, 3, 32, 32\]"),
    ("empty", "batch 0 is outside"),
])
def test_a_bad_feed_is_one_shape_error_on_every_backend(backend, case, message):
    x = feed(1)[TASK.input_name]
    bad = {"name": {"images": x}, "dtype": {TASK.input_name: x.astype(np.float64)},
           "rank": {TASK.input_name: x[0]}, "size": {TASK.input_name: x[:, :, :32, :32]},
           "empty": {TASK.input_name: x[:0]}}[case]
    with backend.runner() as runner, pytest.raises(ShapeError, match=message):
        runner.infer(bad)


def test_a_batch_beyond_the_limit_is_refused_with_the_limit(backend):
    with backend.runner() as runner:
        if runner.max_batch is None:
            runner.infer(feed(5))                             # no profile: any batch runs
            return
        with pytest.raises(ShapeError, match=rf"batch {runner.max_batch + 1} is outside .*1…{runner.max_batch}"):
            runner.infer(feed(runner.max_batch + 1))


def test_every_backend_computes_the_same_outputs(backend, tiny_onnx):
    reference = OrtRunner(tiny_onnx)
    with reference, backend.runner() as runner:
        x = feed(2, seed=3)
        expected, got = reference.infer(x), runner.infer(x)
    for name in TASK.outputs:
        np.testing.assert_allclose(got[name], expected[name], atol=backend.atol, rtol=1e-4)


def test_a_model_that_is_not_there_is_an_artefact_error_and_leaves_nothing_active(backend):
    for make, message in backend.missing:
        runner = make()
        with pytest.raises(ArtefactError, match=message):
            runner.activate()
        assert not runner.active
        runner.deactivate()                                   # safe after a failed activation
