"""drtrt's CUDA memory layer on a real GPU (skipped without one): what only hardware shows. Runs in
scripts/hardware-check.sh; here it skips with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from drtrt.errors import BackendUnavailable


@pytest.fixture(scope="module")
def mem():
    pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python (pip install 'drtrt[gpu]')")
    from drtrt.runtime.backends.cuda import load_cuda

    try:
        memory = load_cuda("cuda-python")
    except BackendUnavailable as exc:
        pytest.skip(f"no CUDA GPU here: {exc}")
    yield memory
    memory.close()


def test_gpu_reports_what_an_engine_is_tied_to(mem):
    info = mem.gpu_info()
    major, minor = (int(v) for v in info.compute_capability.split("."))
    assert info.name and major >= 5 and minor >= 0 and info.total_memory > 2**30
    assert info.multiprocessors > 0 and info.driver_version and info.runtime_version
    if info.integrated:                                      # a Jetson: its board from the device tree
        assert info.board.startswith("NVIDIA Jetson"), info.board


def test_pinned_round_trip_through_the_device_on_a_stream(mem):
    """What TrtRunner does per batch: pinned staging, H2D, D2H, synchronize; bytes come back exact."""
    nbytes = 3 * 512 * 512 * 4 * 4                           # a batch of 4 model inputs
    host_in, host_out = mem.alloc_pinned(nbytes), mem.alloc_pinned(nbytes)
    device, stream = mem.alloc(nbytes), mem.create_stream()
    try:
        host_in[:] = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
        host_out[:] = 0
        for _ in range(3):                                    # buffers and stream reused, as in a session
            mem.copy_to_device(device, host_in, stream)
            mem.copy_to_host(host_out, device, stream)
            mem.synchronize(stream)
            np.testing.assert_array_equal(host_out, host_in)
            host_out[:] = 0
    finally:
        mem.destroy_stream(stream)
        mem.free(device)
        mem.free_pinned(host_in)
        mem.free_pinned(host_out)
