"""The TensorRT runner used from two threads, as the station does (issue 23, item 4).

The station activates its runner on the main thread and infers on its worker thread
(drtrt/station/worker.py). CUDA keeps the current device (``cudaSetDevice``) and the current
context (pycuda's pushed context) per thread, and so does the double (tests/fake_tensorrt):
without making the GPU current on the inferring thread, pycuda has no context there and
cuda-python works on device 0 against another device's stream and buffers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fake_tensorrt import install
from fake_tensorrt.devmem import FakeDevice, FakeGpu
from drtrt.export.build_config import BuildConfig
from drtrt.export.trt_build import build_engine
from drtrt.runtime.backends.trt import TrtRunner
from drtrt.task import TaskSpec

pytestmark = pytest.mark.emulation


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRTRT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("cuda", ["cuda-python", "pycuda"])
@pytest.mark.parametrize("gpu_index", [0, 1])
def test_activated_on_one_thread_infers_on_another(cuda, gpu_index, tiny_onnx, tmp_path, monkeypatch):
    """Activate on this thread, infer and release on a worker thread (pycuda, cuda-python with --device 1):
    the worker's results equal this thread's, the worker's current device is the runner's, and the
    release leaves nothing allocated."""
    device = FakeDevice(FakeGpu(count=2))
    install(monkeypatch, "10.3.0", device=device)
    engine = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", max_batch=1)).engine
    install(monkeypatch, "10.3.0", cuda=cuda, device=device)
    x = np.random.default_rng(23).standard_normal((1, 3, 64, 64)).astype(np.float32)
    runner = TrtRunner(engine, device=gpu_index)
    runner.activate()
    assert device.current_device == gpu_index
    here = runner.infer({TaskSpec().input_name: x})

    def on_worker():
        outputs = runner.infer({TaskSpec().input_name: x})
        return outputs, device.current_device

    with ThreadPoolExecutor(1) as worker:
        there, worker_device = worker.submit(on_worker).result()
        assert worker_device == gpu_index
        worker.submit(runner.deactivate).result()
    assert set(there) == set(here)
    for name in here:
        np.testing.assert_array_equal(there[name], here[name])
    assert not device.allocations and not device.pinned


def test_double_keeps_the_current_device_per_thread(monkeypatch):
    """The double as the real runtime: cudaSetDevice on one thread leaves another on device 0;
    pycuda's pushed context is current only where it was pushed."""
    device = FakeDevice(FakeGpu(count=2))
    rt = install(monkeypatch, None, device=device).cuda
    assert rt.cudaSetDevice(1) == (rt.cudaError_t.cudaSuccess,)
    with ThreadPoolExecutor(1) as other:
        assert other.submit(lambda: rt.cudaGetDevice()[1]).result() == 0
    assert rt.cudaGetDevice()[1] == 1
    assert rt.cudaSetDevice(2) == (rt.cudaError_t.cudaErrorInvalidDevice,)
    drv = install(monkeypatch, None, cuda="pycuda", device=FakeDevice(FakeGpu(count=2))).cuda
    drv.Device(1).retain_primary_context().push()
    drv.mem_alloc(16)
    with ThreadPoolExecutor(1) as other, pytest.raises(drv.Error, match="invalid device context"):
        other.submit(drv.mem_alloc, 16).result()
