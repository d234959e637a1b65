"""A real Triton Inference Server for the tests: the ``tritonserver`` binary and Python backend that the
``nvidia-pytriton`` wheel ships, on free localhost ports, serving a repository ``drtrt export-triton`` wrote.

Two things the wheel's server needs on these machines (scripts/test.sh installs both):

- The Python backend's stub loads ``libpython3.X`` by name; the system's copy does not match this
  interpreter's standard library (``'_thread.RLock' object has no attribute '_recursion_count'``), so
  ``LD_LIBRARY_PATH`` starts with this interpreter's ``LIBDIR``; ``PATH`` starts with its ``bin`` so the
  stub runs in this environment (drtrt, ONNX Runtime, OpenCV).
- The stub is built against NumPy 1: under NumPy 2 every output tensor arrives empty. The stub ignores
  ``PYTHONPATH`` and takes its environment from the ``python`` first on ``PATH``, so the server gets a
  venv of its own whose site-packages read NumPy 1 (``.venv/triton-numpy1``) first and then this
  environment's packages (drtrt, ONNX Runtime, OpenCV).

Skips, saying what to install, where the wheel or that NumPy is missing (:func:`server_missing` says
why without skipping). The session's server is the ``triton`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from processes import track
from triton_urls import LocalTritonUrls

NUMPY1 = Path(os.environ.get("DRTRT_TRITON_NUMPY1", Path(sys.prefix) / "triton-numpy1"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wheel_folder() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    folder = Path(spec.origin).parent / "tritonserver" if spec and spec.origin else None
    return folder if folder is not None and (folder / "bin" / "tritonserver").is_file() else None


def server_missing() -> str:
    """Why the real server cannot run here ("" where it can): what a skip, or a test double, stands in for."""
    if importlib.util.find_spec("tritonclient") is None:
        return "tritonclient is not installed (pip install 'drtrt[triton]')"
    if _wheel_folder() is None:
        return "Triton's server is not installed (pip install --no-deps nvidia-pytriton; scripts/test.sh does)"
    if not (NUMPY1 / "numpy").is_dir():
        return (f"NumPy 1 for Triton's Python backend is not in {NUMPY1} "
                f"(pip install --target {NUMPY1} 'numpy<2'; scripts/test.sh does)")
    return ""


def wheel_server() -> Path:
    """The wheel's ``tritonserver`` folder (bin/, backends/, caches/, python_backend_stubs/)."""
    missing = server_missing()
    if missing:
        pytest.skip(missing)
    return _wheel_folder()


def server_folder(target: Path) -> Path:
    """A copy of the wheel's server with the Python backend stub for this interpreter in place, and
    the server's Python environment in ``target/python``."""
    source = wheel_server()
    if not (target / "bin" / "tritonserver").is_file():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy(source / "python_backend_stubs" / version / "triton_python_backend_stub",
                    target / "backends" / "python" / "triton_python_backend_stub")
        env = target / "python"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
        site = sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)})
        ours = sysconfig.get_path("purelib")
        Path(site, "drtrt-server.pth").write_text(f"{NUMPY1}\nimport site; site.addsitedir({ours!r})\n")
    return target


def server_env(server: Path, python_bin: Path | None = None) -> dict[str, str]:
    """The server's environment; ``python_bin``: the Python its Python backend runs in (default: the
    server's own, with NumPy 1 first)."""
    env = dict(os.environ)
    libs = [str(Path(importlib.util.find_spec("pytriton").origin).parents[1] / "nvidia_pytriton.libs"),
            sysconfig.get_config_var("LIBDIR")]
    env["LD_LIBRARY_PATH"] = ":".join(libs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
    env["PATH"] = f"{python_bin or server / 'python' / 'bin'}:{env.get('PATH', '')}"
    env.pop("DRTRT_DEBUG", None)
    return env


class TritonServer(LocalTritonUrls):
    """One tritonserver on 127.0.0.1: ``start()``, ``kill()`` (SIGKILL), ``stop()`` (SIGTERM)."""

    def __init__(self, server: Path, repository: Path, log: Path, *extra: str, python_bin: Path | None = None) -> None:
        self.server, self.repository, self.log, self.extra = server, repository, log, extra
        self.python_bin = python_bin
        self.http_port, self.grpc_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0, ready: bool = True, tracked: bool = True) -> None:
        """Start and wait until the server (``ready``: and every model) is ready. ``tracked``: killed
        after the test (a session-wide server is stopped by its fixture instead)."""
        command = [str(self.server / "bin" / "tritonserver"), "--model-repository", str(self.repository),
                   "--backend-directory", str(self.server / "backends"),
                   "--cache-directory", str(self.server / "caches"),
                   "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
                   "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                   "--allow-metrics", "false", "--exit-timeout-secs", "5", *self.extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         env=server_env(self.server, self.python_bin), start_new_session=True)
        if tracked:
            track(self.proc)
        deadline = time.monotonic() + timeout
        path = "/v2/health/ready" if ready else "/v2/health/live"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"tritonserver was not ready within {timeout:.0f} s: {self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server and its Python backend stubs (its process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
