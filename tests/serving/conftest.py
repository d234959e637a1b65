"""A Triton server for the session (the nvidia-pytriton wheel's, see triton_helpers), serving the tiny
model's repository as ``drtrt export-triton --serve-with python --warmup`` writes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from triton_helpers import TritonServer, server_folder


@pytest.fixture(scope="session")
def triton_root(tmp_path_factory) -> Path:
    """The server's binaries, its Python backend and its Python environment (copied once)."""
    return server_folder(tmp_path_factory.mktemp("tritonserver") / "server")


@pytest.fixture(scope="session")
def served_repo(tiny_onnx, tmp_path_factory) -> Path:
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (pip install 'drtrt[triton]')")
    from drtrt.serving.repository import RepositorySpec, write_repository

    out = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(RepositorySpec(out=out, onnx=tiny_onnx, serve_with="python", warmup=True, max_batch=8))
    return out


@pytest.fixture(scope="session")
def triton(triton_root, served_repo, tmp_path_factory) -> TritonServer:
    server = TritonServer(triton_root, served_repo, tmp_path_factory.mktemp("triton-log") / "tritonserver.log")
    server.start(tracked=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def archive(photo_root) -> list[Path]:
    """Gradable synthetic photos (512 px fields), sorted."""
    return sorted(photo_root.rglob("*.jpg"))
