"""Where a ``triton://`` model is served (:class:`TritonAddress`, parsed from its URL) and how long to keep
trying a server that does not answer (:class:`RetryPolicy`); the runner is ``triton.py``."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from drtrt.errors import ConfigError
from drtrt.runtime.backends.triton_shm import shm_mode
from drtrt.runtime.registry import is_model_url, model_reference

SCHEMES = {"triton": "grpc", "triton+grpc": "grpc", "tritons": "grpc", "triton+http": "http"}
TLS_FILES = {"root_certificates": "DRTRT_TRITON_CA", "certificate_chain": "DRTRT_TRITON_CERT",
             "private_key": "DRTRT_TRITON_KEY"}
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}


@dataclass(frozen=True)
class TritonAddress:
    """Where a model is served: protocol (grpc | http), host, port, model name, version ('' = latest), TLS."""

    protocol: str
    host: str
    port: int
    model: str
    version: str = ""
    tls: bool = False
    shm: str = "auto"           # system shared memory with a server on this host: auto | on | off

    @classmethod
    def parse(cls, model: object) -> TritonAddress:
        if not is_model_url(model):
            raise ConfigError(f"not a Triton URL: {model} (expected triton://HOST:PORT/MODEL)")
        url = str(model_reference(model))
        parts = urlsplit(url)
        protocol = SCHEMES[parts.scheme]
        path = [p for p in parts.path.split("/") if p]
        try:
            port = parts.port or DEFAULT_PORTS[protocol]
        except ValueError:
            raise ConfigError(f"{url}: the port must be a number") from None
        if not parts.hostname or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ConfigError(f"{url}: expected triton://HOST:PORT/MODEL or triton://HOST:PORT/MODEL/VERSION")
        return cls(protocol, parts.hostname, port, path[0], path[1] if len(path) == 2 else "",
                   tls=parts.scheme == "tritons", shm=shm_mode(parts.query, url))

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        scheme = "tritons" if self.tls else "triton" if self.protocol == "grpc" else "triton+http"
        return (f"{scheme}://{self.endpoint}/{self.model}" + (f"/{self.version}" if self.version else "")
                + (f"?shm={self.shm}" if self.shm != "auto" else ""))


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying a server that does not answer: ``attempts`` tries, waiting
    ``backoff_s`` × 2^n (at most ``max_wait_s``) between them (6 tries: 15.5 s, long enough for a
    restarted server to load its models); ``timeout_s`` per request."""

    attempts: int = 6
    backoff_s: float = 0.5
    max_wait_s: float = 8.0
    timeout_s: float = 120.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The default, with ``DRTRT_TRITON_RETRIES`` tries (1 = no retry) when it is set."""
        value = os.environ.get("DRTRT_TRITON_RETRIES", "")
        if not value:
            return cls()
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"DRTRT_TRITON_RETRIES must be a whole number of tries (1 or more), found {value!r}")
        return cls(attempts=int(value))

    def waits(self):
        for n in range(self.attempts - 1):
            yield min(self.max_wait_s, self.backoff_s * 2 ** n)


def loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
