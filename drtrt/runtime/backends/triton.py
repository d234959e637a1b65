"""Triton Inference Server as a backend: ``triton://HOST:PORT/MODEL[/VERSION]`` behind the runner contract.

The server holds the model (``drtrt export-triton`` writes its repository); the runner sends the
preprocessed batch and gets the raw outputs back, so decoding, the quality gate, preprocessing and
the task decoding stay in :class:`~drtrt.runtime.predictor.Predictor`, the same code for every
backend. What the model is comes from the model's configuration on the server: the repository
writes drtrt's model metadata and the model file's sha256 into ``config.pbtxt``'s ``parameters``,
so a session screened through Triton records the same model identity as one screened locally.

URLs: ``triton://`` and ``triton+grpc://`` speak gRPC (default port 8001), ``tritons://`` gRPC over
TLS (the server's certificate checked against ``DRTRT_TRITON_CA``; with ``DRTRT_TRITON_CERT`` and
``DRTRT_TRITON_KEY`` the station shows its own, for a server that requires client certificates),
``triton+http://`` HTTP/REST (default port 8000), for a server on the same machine or network.
A server that cannot be reached, a model that is not ready and a request the server drops are
retried with backoff (:class:`RetryPolicy`); then :class:`~drtrt.errors.ServerUnavailable` stops
the run with one line, and a session keeps what it had committed (the same command resumes it).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from drtrt.errors import ArtefactError, BackendUnavailable, ConfigError, DrtrtError, ServerUnavailable
from drtrt.model_info import ModelInfo
from drtrt.runtime.backends.dtypes import from_numpy, to_numpy
from drtrt.runtime.backends.triton_shm import Regions, load_module, server_supports, shm_mode
from drtrt.runtime.base import Runner, Signature, TensorSpec
from drtrt.runtime.registry import is_model_url, model_reference

_log = logging.getLogger("drtrt.triton")     # the CLI prints its warnings on stderr
SCHEMES = {"triton": "grpc", "triton+grpc": "grpc", "tritons": "grpc", "triton+http": "http"}
TLS_FILES = {"root_certificates": "DRTRT_TRITON_CA", "certificate_chain": "DRTRT_TRITON_CERT",
             "private_key": "DRTRT_TRITON_KEY"}
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
# config.pbtxt parameters beside the drtrt.* metadata (outside it: they are not the model's own metadata)
SHA256_PARAMETER = "model_file_sha256"       # the served model file's sha256
FILE_PARAMETER = "model_file"                # and its name


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


class _Transient(Exception):
    """A failure worth retrying: the server cannot be reached, is shutting down, or is not ready."""


class TritonRunner(Runner):
    """A model served by Triton. ``retry``: :class:`RetryPolicy` (default: :meth:`RetryPolicy.from_env`).
    Thread-safe: each thread that calls :meth:`infer` gets its own client (connection), so
    ``--workers N`` keeps N requests in flight."""

    backend = "triton"
    batch_range_name = "the server's max_batch_size"

    def __init__(self, path: str | Path, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.address = TritonAddress.parse(path)
        super().__init__(Path(self.address.model))
        self.retry = retry or RetryPolicy.from_env()
        self._sleep = sleep
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._module: Any = None
        self._sha256 = ""
        self._shm: Any = None                    # tritonclient's shared-memory helpers while they are used
        self._regions: list[Regions] = []
        self._output_specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.notes: list[str] = []               # what a user should know (the predictor shows them)

    @property
    def name(self) -> str:
        return self.address.url

    def model_sha256(self) -> str:
        return self._sha256

    # -- lifecycle ---------------------------------------------------------------------------------
    def _activate(self) -> Signature:
        try:
            if self.address.protocol == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
        except ImportError:
            raise BackendUnavailable("a triton:// model needs tritonclient, which is not installed; "
                                     "pip install 'drtrt[triton]'") from None
        self._module = module
        config = self._call(self._load_config, "read the model's configuration")
        signature = self._signature_from(config)
        self._shm = self._call(self._shared_memory, "ask the server about shared memory")
        if not self.address.tls and not _loopback(self.address.host):
            self.notes.append(f"images go to {self.address.host} unencrypted ({self.address.url}); on a network "
                              "that is not the reading centre's own, use tritons:// with client certificates "
                              "(deploy/serving.md)")
        return signature

    def _load_config(self, client: Any) -> dict:
        name, version = self.address.model, self.address.version
        if not client.is_server_live(**self._timeout()):
            raise _Transient("the server is not live")
        if not client.is_model_ready(name, version):
            self._not_ready(client)
        if self.address.protocol == "grpc":
            return client.get_model_config(name, version, as_json=True).get("config", {})
        return client.get_model_config(name, version)

    def _not_ready(self, client: Any) -> None:
        """Why the model is not ready, from the server's repository index: a model the server does not
        have, or a version of it that the URL names and the server does not have, is an error at once
        (no retry helps); one loading, unloading or failed is retried."""
        grpc = self.address.protocol == "grpc"
        try:
            index = client.get_model_repository_index(as_json=True) if grpc else client.get_model_repository_index()
        except Exception:  # noqa: BLE001 - the reason is a courtesy; not ready is the message either way
            raise _Transient(f"model '{self.address.model}' is not ready") from None
        models = (index.get("models", []) if isinstance(index, dict) else index) or []
        named = [model for model in models if model.get("name") == self.address.model]
        version = self.address.version
        for model in named:
            if not version or model.get("version", version) == version:
                state, reason = model.get("state", "UNKNOWN"), server_reason(model.get("reason", ""))
                raise _Transient(f"model '{self.address.model}' is {state}" + (f" ({reason})" if reason else ""))
        if named:                                        # the model, but not the version the URL names
            versions = ", ".join(sorted({str(m["version"]) for m in named if m.get("version")})) or "none"
            raise ArtefactError(f"{self.address.url}: the server has no version {version} of model "
                                f"'{self.address.model}' (it serves version(s): {versions}); name one of those, "
                                f"or leave the version out for the latest")
        served = ", ".join(sorted(m.get("name", "?") for m in models)) or "none"
        raise ArtefactError(f"{self.address.url}: the server has no model '{self.address.model}' (it serves: "
                            f"{served}); name one of those, or add it with drtrt export-triton")

    def _signature_from(self, config: Mapping[str, Any]) -> Signature:
        parameters = {key: value.get("string_value", "") for key, value in (config.get("parameters") or {}).items()}
        source = f"{self.address.url} (its config.pbtxt)"
        info = ModelInfo.from_metadata(parameters, source=source)
        self._sha256 = parameters.get(SHA256_PARAMETER, "")
        if not self._sha256:
            raise ArtefactError(f"{source} does not name the model file's sha256 ({SHA256_PARAMETER}); "
                                "write the repository with `drtrt export-triton`")
        max_batch = int(config.get("max_batch_size") or 0)
        lead = (-1,) if max_batch > 0 else ()
        inputs = []
        for tensor in config.get("input", []):
            if tensor.get("data_type") == "TYPE_STRING":
                raise ArtefactError(f"{self.address.url} takes photo bytes (the ensemble drtrt export-triton writes, "
                                    "for other clients); drtrt sends the preprocessed image: name the model "
                                    "itself, e.g. triton://HOST:PORT/drtrt")
            dtype = to_numpy(tensor.get("data_type", ""), "triton", f"{source}: input '{tensor.get('name')}'")
            inputs.append(TensorSpec(tensor["name"], lead + tuple(int(d) for d in tensor.get("dims", [])), dtype))
        outputs = tuple(tensor["name"] for tensor in config.get("output", []))
        self._output_specs = {}
        for tensor in config.get("output", []):
            dims = tuple(int(d) for d in tensor.get("dims", []))
            dtype = to_numpy(tensor.get("data_type", ""), "triton", f"{source}: output '{tensor.get('name')}'")
            self._output_specs[tensor["name"]] = (dims, np.dtype(dtype))
        return Signature(info, tuple(inputs), outputs, 1, max_batch or None)

    # -- shared memory ---------------------------------------------------------------------------------
    def _shared_memory(self, client: Any) -> Any:
        """tritonclient's shared-memory helpers where requests should go through system shared memory
        (``?shm=on``; ``auto``: a server on this host that lists the extension), else None (the wire)."""
        mode = self.address.shm
        if mode == "off" or (mode == "auto" and not _loopback(self.address.host)):
            return None
        if any(d < 0 for dims, _ in self._output_specs.values() for d in dims):
            return self._no_shm("the model's outputs have dynamic dimensions")
        try:
            supported = server_supports(client, self.address.protocol == "grpc")
        except Exception as exc:  # noqa: BLE001 - an old server or a proxy that does not answer metadata
            if isinstance(exc, (_Transient, OSError)) or _is_transient(exc, _status(exc)):
                raise
            supported = False
        if not supported:
            return self._no_shm("the server does not list system shared memory")
        try:
            return load_module()
        except (ImportError, OSError) as exc:
            return self._no_shm(f"tritonclient's shared-memory library cannot load ({exc})")

    def _no_shm(self, reason: str) -> None:
        if self.address.shm == "on":
            raise ConfigError(f"{self.address.url}: shared memory was asked for (?shm=on) but {reason}; "
                              "use ?shm=off or leave it out")
        _log.warning(f"{self.address.url}: requests go over the wire, not shared memory: {reason}")
        return None

    def _thread_regions(self, client: Any) -> Regions | None:
        """This thread's regions, registered through its connection on first use; a server that refuses
        them (in another container, /dev/shm not shared) sends every later request over the wire."""
        regions = getattr(self._local, "regions", None)
        if regions is None and self._shm is not None:
            regions = Regions(self._shm, client)
            self._local.regions = regions
            with self._lock:
                self._regions.append(regions)
        return regions

    def _shm_request(self, client: Any, regions: Regions, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        module = self._module
        wire = {name: from_numpy(np.dtype(a.dtype).name, "wire", f"input '{name}'") for name, a in feeds.items()}
        lead = (len(next(iter(feeds.values()))),) if self.max_batch else ()
        specs = [(name, lead + self._output_specs[name][0], self._output_specs[name][1]) for name in self.output_names]
        try:
            inputs, wanted, where = regions.request(module, feeds, wire, specs)
        except Exception as exc:  # noqa: BLE001 - tritonclient's InferenceServerException, SharedMemoryException
            if _is_transient(exc, _status(exc)) or self.address.shm == "on":
                raise
            self._shm = None
            self._forget_regions(regions)
            self._no_shm(f"it refused this client's region ({_first_line(exc)})")
            return self._request(client, feeds)
        result = client.infer(self.address.model, inputs, model_version=self.address.version, outputs=wanted,
                              **self._timeout())
        outputs = {}
        for name, offset, dtype, expected in where:
            shape = _output_shape(result, name)
            if tuple(shape) != tuple(expected) or not regions.written(name):   # never what an earlier answer left
                raise DrtrtError(f"{self.address.url} did not write output '{name}' {tuple(expected)} into this "
                                 f"client's shared memory (it answered {tuple(shape)}); use ?shm=off")
            outputs[name] = regions.read(name, shape, dtype, offset)
        return outputs

    def _forget_regions(self, regions: Regions | None) -> None:
        if regions is None:
            return
        self._local.regions = None
        with self._lock:
            if regions in self._regions:
                self._regions.remove(regions)
        regions.close()

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._call(lambda client: self._request(client, feeds), "run the model")

    def _request(self, client: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        regions = self._thread_regions(client)
        if regions is not None:
            return self._shm_request(client, regions, feeds)
        module = self._module
        inputs = []
        for name, array in feeds.items():
            wire = from_numpy(np.dtype(array.dtype).name, "wire", f"input '{name}'")
            tensor = module.InferInput(name, list(array.shape), wire)
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        wanted = [module.InferRequestedOutput(name) for name in self.output_names]
        result = client.infer(self.address.model, inputs, model_version=self.address.version, outputs=wanted,
                              **self._timeout())
        outputs = {}
        for name in self.output_names:
            try:
                array = result.as_numpy(name)
            except ValueError:
                array = None
            if array is None or (array.size == 0 and _declared_size(result, name)):
                raise DrtrtError(
                    f"{self.address.url} returned no data for output '{name}': Triton's Python backend stub "
                    "(built against NumPy 1) is running under NumPy 2 on the server; install numpy<2 in the "
                    "server's Python (deploy/serving.md)")
            outputs[name] = array
        return outputs

    def _deactivate(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
            regions, self._regions = self._regions, []
        for one in regions:                       # unregistered and unlinked before the connections close
            one.close()
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a connection to a server that went away
                pass
        self._local = threading.local()

    # -- connections and retries -------------------------------------------------------------------
    def _tls(self) -> dict:
        """tritonclient's TLS options for ``tritons://``: file paths from the environment, checked here so
        a missing file is one line, not a gRPC handshake failure."""
        if not self.address.tls:
            return {}
        options: dict[str, Any] = {"ssl": True}
        for option, variable in TLS_FILES.items():
            value = os.environ.get(variable, "")
            if value and not Path(value).is_file():
                raise ConfigError(f"{variable}={value}: no such file (the PEM file for {self.address.url})")
            if value:
                options[option] = value
        if ("private_key" in options) != ("certificate_chain" in options):
            raise ConfigError("set both DRTRT_TRITON_CERT and DRTRT_TRITON_KEY (the station's certificate and key), "
                              "or neither")
        return options

    def _timeout(self) -> dict:
        """gRPC takes a deadline per call; the HTTP client takes its timeouts when it is made."""
        return {"client_timeout": self.retry.timeout_s} if self.address.protocol == "grpc" else {}

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            options = self._tls() if self.address.protocol == "grpc" else {"connection_timeout": 10.0,
                                                                           "network_timeout": self.retry.timeout_s}
            client = self._module.InferenceServerClient(self.address.endpoint, **options)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _drop_client(self) -> None:
        """Forget this thread's connection after a failure: the next try opens a fresh one."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        self._forget_regions(getattr(self._local, "regions", None))
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    def _call(self, work: Callable[[Any], Any], what: str) -> Any:
        """``work(client)`` with the retry policy; a failure that is not transient is raised at once."""
        waits, told = self.retry.waits(), False
        while True:
            try:
                return work(self._client())
            except DrtrtError:
                raise
            except (_Transient, OSError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - tritonclient's InferenceServerException and gevent's errors
                status = _status(exc)
                if not _is_transient(exc, status):
                    first = _first_line(exc)
                    raise DrtrtError(f"{self.address.url} could not {what}: {first}") from None
                reason = _first_line(exc)
            self._drop_client()
            wait = next(waits, None)
            if wait is None:
                raise ServerUnavailable(f"cannot {what} on {self.address.url} after {self.retry.attempts} tries: "
                                        f"{reason}; start tritonserver with this model (deploy/serving.md) "
                                        "and run the same command again") from None
            if not told:                          # say what the run waits for, not ~16 s of silence
                told = True
                _log.warning(f"waiting for {self.address.url} ({reason}): trying again for up to "
                             f"{sum(self.retry.waits()):g} s (DRTRT_TRITON_RETRIES sets the tries)")
            self._sleep(wait)


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _status(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return str(status() if callable(status) else status or "")


# gRPC statuses (and HTTP answers) that mean "try again": the server is down, restarting, overloaded or
# the model is (re)loading. Anything else (a bad input, an unknown model) is the caller's to fix.
_TRANSIENT_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED", "503", "502",
                     "504")
_TRANSIENT_TEXT = ("connection refused", "failed to connect", "connection reset", "broken pipe", "not ready",
                   "socket closed", "timed out", "unavailable", "server disconnected", "connect failed")


def _is_transient(exc: Exception, status: str) -> bool:
    text = str(exc).lower()
    return any(s in status for s in _TRANSIENT_STATUS) or any(t in text for t in _TRANSIENT_TEXT)


def server_reason(reason: str) -> str:
    """The server's reason for a model's state, in one line. A Python-backend model that failed to load
    comes with its stack: Triton writes the error first and the frames after ("At:"); a bare Python
    traceback has the error last."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    if not lines:
        return ""
    return (lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0])[:240]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:240] if text else type(exc).__name__


def _output_shape(result: Any, name: str) -> list[int]:
    """An output's shape as the response gives it (an output in shared memory has no data of its own):
    gRPC's protobuf message (its ``as_json=True`` returns None in tritonclient 2.x), HTTP's dict."""
    output = result.get_output(name)
    if output is None:
        raise DrtrtError(f"the server's answer has no output '{name}'")
    return [int(d) for d in (output.get("shape", []) if isinstance(output, dict) else output.shape)]


def _declared_size(result: Any, name: str) -> bool:
    """Whether the response declares a non-empty shape for output ``name`` (it then should carry data)."""
    try:
        output = result.get_output(name, as_json=True) if hasattr(result, "get_output") else None
    except TypeError:
        output = result.get_output(name)
    shape = (output or {}).get("shape", [])
    return bool(shape) and all(int(d) > 0 for d in shape)
