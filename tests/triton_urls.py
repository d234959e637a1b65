"""How tests address a Triton server on 127.0.0.1, written once for the real one
(``triton_helpers.TritonServer``) and the double's (``fake_tritonclient.server.FakeServer``), so a test
can take either."""

from __future__ import annotations


class LocalTritonUrls:
    """``grpc_url`` and ``model_url`` from the instance's ``grpc_port`` and ``http_port``."""

    grpc_port: int
    http_port: int

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def model_url(self, name: str = "drtrt", protocol: str = "grpc") -> str:
        if protocol == "grpc":
            return f"triton://127.0.0.1:{self.grpc_port}/{name}"
        return f"triton+http://127.0.0.1:{self.http_port}/{name}"
