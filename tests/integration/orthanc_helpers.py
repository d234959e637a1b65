"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) for the tests: free localhost ports, a storage
folder of the test's own, a generated JSON configuration; started, killed, restarted on the same storage.

Skips (with the package names) where Orthanc or its DICOMweb plugin is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

PLUGINS = Path("/usr/share/orthanc/plugins")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str:
    binary = shutil.which("Orthanc") or (os.path.exists("/usr/sbin/Orthanc") and "/usr/sbin/Orthanc")
    if not binary:
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    if not (PLUGINS / "libOrthancDicomWeb.so").exists():
        pytest.skip(f"Orthanc's DICOMweb plugin is not in {PLUGINS} (apt-get install orthanc-dicomweb)")
    return binary


class Orthanc:
    """One Orthanc server: ``start()``, ``kill()`` (SIGKILL), ``stop()``; storage survives restarts."""

    def __init__(self, root: Path) -> None:
        self.binary = orthanc_binary()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.storage = root / "storage"
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = "ORTHANC"
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "drtrt-test", "StorageDirectory": str(self.storage), "IndexDirectory": str(self.storage),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.aet,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "DicomServerEnabled": True, "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False,
            "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so")],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "OverwriteInstances": False, "StableAge": 1}, indent=1))
        self.proc: subprocess.Popen | None = None
        self.log = root / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                plugins = self.get("/plugins")
                if "dicom-web" in plugins and self._dicom_port_open():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within {timeout} s: {self.log.read_text()[-2000:]}")

    def _dicom_port_open(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.dicom_port)) == 0

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a power cut or the OOM killer would do it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def get_bytes(self, path: str, accept: str | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def sop_uids(self) -> list[str]:
        """The SOP Instance UID of every stored instance (a list: a duplicate would show twice)."""
        return [self.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"] for i in self.instances()]


@pytest.fixture
def orthanc(tmp_path):
    """A real Orthanc (with DICOMweb) on a free localhost port for one test, stopped after."""
    server = Orthanc(tmp_path / "orthanc")
    server.start()
    yield server
    server.stop()
