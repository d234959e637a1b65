"""One contract, every backend: ONNX Runtime, PyTorch and TensorRT (the test double, or the real
library with --real-trt) go through the same cases: lifecycle and its guards, what an active
runner serves, dynamic batch, feed validation with one error type, and the same outputs."""

from __future__ import annotations

import numpy as np
import pytest

from drtrt.errors import ArtefactError, RunnerStateError, ShapeError
from drtrt.runtime.base import Runner
from drtrt.runtime.ort import OrtRunner
from drtrt.task import TaskSpec

pytestmark = pytest.mark.numeric

BACKENDS = ("ort", "torch", "trt")
TASK = TaskSpec()


@pytest.fixture(params=BACKENDS)
def make_runner(request, tiny_run, tiny_onnx, tmp_path, monkeypatch):
    """A factory of fresh, inactive runners of one backend over the tiny model."""
    if request.param == "ort":
        return lambda: OrtRunner(tiny_onnx)
    if request.param == "torch":
        from drtrt.train.torch_runner import TorchRunner

        return lambda: TorchRunner(tiny_run / "best.pt")
    request.getfixturevalue("tensorrt")
    from drtrt.export.build_config import BuildConfig
    from drtrt.export.trt_build import build_engine
    from drtrt.runtime.trt import TrtRunner

    monkeypatch.setenv("DRTRT_CACHE_DIR", str(tmp_path / "cache"))
    engine = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", max_batch=2)).engine
    return lambda: TrtRunner(engine)


def feed(batch: int, size: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    return {TASK.input_name: x}


def test_lifecycle_and_its_guards(make_runner):
    runner: Runner = make_runner()
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
    with make_runner() as again:                              # the context manager is activate/deactivate
        assert again.active
    assert not again.active


def test_an_active_runner_serves_the_models_vocabulary(make_runner):
    with make_runner() as runner:
        assert runner.info.task == TASK and runner.output_names == TASK.outputs
        (spec,) = runner.input_specs
        assert (spec.name, spec.shape, spec.dtype) == (TASK.input_name, (-1, 3, 64, 64), "float32")
        assert runner.max_batch is None or runner.max_batch >= 1


def test_dynamic_batch_up_to_the_limit(make_runner):
    with make_runner() as runner:
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
def test_a_bad_feed_is_one_shape_error_on_every_backend(make_runner, case, message):
    x = feed(1)[TASK.input_name]
    bad = {"name": {"images": x}, "dtype": {TASK.input_name: x.astype(np.float64)},
           "rank": {TASK.input_name: x[0]}, "size": {TASK.input_name: x[:, :, :32, :32]},
           "empty": {TASK.input_name: x[:0]}}[case]
    with make_runner() as runner, pytest.raises(ShapeError, match=message):
        runner.infer(bad)


def test_a_batch_beyond_the_limit_is_refused_with_the_limit(make_runner):
    with make_runner() as runner:
        if runner.max_batch is None:
            runner.infer(feed(5))                             # no profile: any batch runs
            return
        with pytest.raises(ShapeError, match=rf"batch {runner.max_batch + 1} is outside .*1…{runner.max_batch}"):
            runner.infer(feed(runner.max_batch + 1))


def test_every_backend_computes_the_same_outputs(make_runner, tiny_onnx, request):
    reference = OrtRunner(tiny_onnx)
    with reference, make_runner() as runner:
        x = feed(2, seed=3)
        expected, got = reference.infer(x), runner.infer(x)
    exact = runner.backend != "trt" or not request.config.getoption("--real-trt")
    for name in TASK.outputs:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4 if exact else 1e-2, rtol=1e-4)


def test_a_failed_activation_leaves_nothing_active(tmp_path):
    runner = OrtRunner(tmp_path / "missing.onnx")
    with pytest.raises(ArtefactError, match="model file not found"):
        runner.activate()
    assert not runner.active
    runner.deactivate()                                       # safe after a failed activation
