"""System shared memory between ``triton://`` and a server on this host (issue 26): against the real server
(the nvidia-pytriton wheel's, the session's ``triton``) the same outputs bit for bit as over the wire, the
regions registered while in use and unregistered and unlinked after; a server that does not list the
extension (the tritonclient double) gets the wire and one log line, or, with ``?shm=on``, one-line error."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.errors import ConfigError, DrtrtError
from drtrt.runtime.backends.triton import TritonAddress, TritonRunner

OURS = f"drtrt_{os.getpid()}_"                 # the prefix of this process's region names and keys


def our_files() -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"{OURS}*"))


def registered(server) -> list[str]:
    import tritonclient.grpc as grpc

    status = grpc.InferenceServerClient(server.grpc_url).get_system_shared_memory_status(as_json=True)
    return sorted(name for name in (status.get("regions") or {}) if name.startswith(OURS))


def batch(size: int, n: int, seed: int) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).standard_normal((n, 3, size, size), dtype=np.float32)}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_shared_memory_gives_the_wire_outputs_bit_for_bit_and_cleans_up(triton, protocol):
    url = triton.model_url(protocol=protocol)
    wire, shared = TritonRunner(url + "?shm=off"), TritonRunner(url)       # auto: this host, so shared memory
    wire.activate()
    shared.activate()
    try:
        assert wire._shm is None and shared._shm is not None
        size = shared.input_specs[0].shape[-1]
        for n, seed in ((1, 0), (3, 1), (2, 2)):               # the regions grow for 3, are reused for 2
            feeds = batch(size, n, seed)
            a, b = wire.infer(feeds), shared.infer(feeds)
            assert a.keys() == b.keys() == set(shared.output_names)
            for name in a:
                assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
                assert np.array_equal(a[name], b[name]), name
                assert a[name].shape[0] == n
        assert len(our_files()) == 2 and registered(triton) == our_files()   # one input, one output region
    finally:
        wire.deactivate()
        shared.deactivate()
    assert our_files() == [] and registered(triton) == []


def test_every_client_thread_has_its_own_regions(triton):
    from concurrent.futures import ThreadPoolExecutor

    runner = TritonRunner(triton.model_url())
    runner.activate()
    size = runner.input_specs[0].shape[-1]
    feeds = [batch(size, 1, seed) for seed in range(6)]
    try:
        expected = [runner.infer(f) for f in feeds]
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(runner.infer, feeds))
        for a, b in zip(expected, answers):        # Triton may batch them: ONNX Runtime's sums then differ in
            for k in a:                            # the last bits; another request's image would differ wholly
                assert np.abs(a[k] - b[k]).max() < 1e-4, (k, np.abs(a[k] - b[k]).max())
        threads = len(registered(triton)) // 2           # one input and one output region per client thread
        assert registered(triton) == our_files() and len(our_files()) == 2 * threads and threads >= 2
    finally:
        runner.deactivate()
    assert our_files() == [] and registered(triton) == []


def test_an_output_the_server_did_not_put_in_this_client_s_region_is_never_read(triton, monkeypatch):
    """The region still holds the previous answer: an output the server sent in the body instead must stop
    the request, not hand back the previous image's result."""
    from drtrt.runtime.backends import triton_shm

    runner = TritonRunner(triton.model_url())
    runner.activate()
    try:
        feeds = batch(runner.input_specs[0].shape[-1], 1, 0)
        runner.infer(feeds)
        original = triton_shm.Regions.request

        def outputs_in_the_body(self, module, feeds, wire, outputs):
            inputs, _, where = original(self, module, feeds, wire, outputs)    # the answer in the body instead
            return inputs, [module.InferRequestedOutput(name) for name, _, _ in outputs], where

        monkeypatch.setattr(triton_shm.Regions, "request", outputs_in_the_body)
        first = runner.output_names[0]
        with pytest.raises(DrtrtError, match=f"did not write output '{first}' .* into this client's shared memory"):
            runner.infer(feeds)
    finally:
        runner.deactivate()
    assert our_files() == []


def own_shm_server(triton_root: Path, folder: Path) -> Path:
    """The wheel's server started with a /dev/shm of its own (a fresh mount namespace with a tmpfs there),
    as in a container run without the host's IPC: it lists system shared memory, but cannot open a region
    this process makes. Skips where this machine cannot make the namespace."""
    import shutil
    import subprocess

    probe = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /dev/shm"]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("needs unshare and the right to mount a tmpfs in a new mount namespace (root)")
    (folder / "bin").mkdir(parents=True)
    for name in ("backends", "caches", "python"):
        (folder / name).symlink_to(triton_root / name)
    wrapper = folder / "bin" / "tritonserver"
    wrapper.write_text("#!/bin/sh\nexec unshare --mount --propagation private sh -c "
                       "'mount -t tmpfs tmpfs /dev/shm && exec \"$0\" \"$@\"' "
                       f"{triton_root / 'bin' / 'tritonserver'} \"$@\"\n")
    wrapper.chmod(0o755)
    return folder


def test_a_server_that_cannot_open_the_regions_gets_the_wire_and_one_log_line(triton_root, served_repo, triton,
                                                                              tmp_path, caplog):
    from triton_helpers import TritonServer

    server = TritonServer(own_shm_server(triton_root, tmp_path / "server"), served_repo, tmp_path / "log")
    server.start()
    caplog.set_level(logging.WARNING, logger="drtrt.triton")
    elsewhere, here = TritonRunner(server.model_url()), TritonRunner(triton.model_url() + "?shm=off")
    elsewhere.activate()
    here.activate()
    try:
        feeds = batch(here.input_specs[0].shape[-1], 2, 0)
        for _ in range(2):                                  # refused once, then the wire without asking again
            a, b = elsewhere.infer(feeds), here.infer(feeds)
            assert all(np.array_equal(a[k], b[k]) for k in a)
        assert our_files() == []
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "over the wire, not shared memory: it refused this client's region" in lines[0]
        forced = TritonRunner(server.model_url() + "?shm=on")
        forced.activate()
        with pytest.raises(DrtrtError, match="could not run the model"):
            forced.infer(feeds)
        forced.deactivate()
    finally:
        elsewhere.deactivate()
        here.deactivate()
        server.stop()
    assert our_files() == []


@pytest.fixture
def double_server(monkeypatch, tiny_onnx):
    from fake_tritonclient import install

    return install(monkeypatch).serve({"drtrt": tiny_onnx})


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_server_without_shared_memory_gets_the_wire_and_one_log_line(double_server, tiny_onnx, caplog, protocol):
    from drtrt.runtime.backends.ort import OrtRunner

    caplog.set_level(logging.WARNING, logger="drtrt.triton")
    runner = TritonRunner(double_server.model_url(protocol=protocol))
    runner.activate()
    local = OrtRunner(tiny_onnx)
    local.activate()
    try:
        feeds = batch(runner.input_specs[0].shape[-1], 2, 0)
        served, here = runner.infer(feeds), local.infer(feeds)
        assert runner._shm is None and all(np.allclose(served[k], here[k], atol=1e-5) for k in here)
    finally:
        runner.deactivate()
        local.deactivate()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "over the wire, not shared memory: the server does not list" in lines[0]


def test_forcing_shared_memory_on_such_a_server_is_one_line(double_server, tmp_path):
    result = CliRunner().invoke(app, ["bench", "--model", double_server.model_url() + "?shm=on", "--batch", "1"])
    assert result.exit_code != 0
    assert "shared memory was asked for (?shm=on) but the server does not list" in result.output
    assert "Traceback" not in result.output                    # one line (after the progress bar's)
    assert [line for line in result.output.splitlines() if "shm" in line] == [result.output.splitlines()[-1]]


@pytest.mark.parametrize("query", ["shm=yes", "tls=1", "shm=on&x"])
def test_unknown_url_options_are_usage_errors(query):
    with pytest.raises(ConfigError, match="the only one is shm=auto\\|on\\|off"):
        TritonAddress.parse(f"triton://127.0.0.1:8001/drtrt?{query}")


def test_the_mode_round_trips_through_the_url():
    assert TritonAddress.parse("triton://h:1/drtrt?shm=off").shm == "off"
    assert TritonAddress.parse("triton://h:1/drtrt?shm=off").url == "triton://h:1/drtrt?shm=off"
    assert TritonAddress.parse("triton+http://h:1/drtrt/2").url == "triton+http://h:1/drtrt/2"
    assert TritonAddress.parse("triton://h:1/drtrt").shm == "auto"
