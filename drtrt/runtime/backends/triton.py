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
With a server on this host the batch and the outputs go through system shared memory
(``triton_shm.py``; ``?shm=off`` for the wire, ``?shm=on`` to insist). A server that cannot be
reached, a model that is not ready and a request the server drops are retried with backoff (:class:`RetryPolicy`); then :class:`~drtrt.errors.ServerUnavailable` stops
the run with one line, and a session keeps what it had committed (the same command resumes it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from drtrt.errors import ArtefactError, BackendUnavailable, ConfigError, DrtrtError, ServerUnavailable
from drtrt.model_info import ModelInfo
from drtrt.runtime.backends.dtypes import from_numpy, to_numpy
from drtrt.runtime.backends.triton_address import TLS_FILES, RetryPolicy, TritonAddress
from drtrt.runtime.backends.triton_address import loopback as _loopback
from drtrt.runtime.backends.triton_shm import PerThread, choose, no_shm
from drtrt.runtime.base import Runner, Signature, TensorSpec

_log = logging.getLogger("drtrt.triton")     # the CLI prints its warnings on stderr
# config.pbtxt parameters beside the drtrt.* metadata (outside it: they are not the model's own metadata)
SHA256_PARAMETER = "model_file_sha256"       # the served model file's sha256
FILE_PARAMETER = "model_file"                # and its name


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
        self._shm: PerThread | None = None       # each client thread's shared-memory regions, while used
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
        shm = self._call(self._shared_memory, "ask the server about shared memory")
        self._shm = PerThread(shm) if shm is not None else None
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
        return choose(self.address, _loopback(self.address.host), client, self._output_specs,
                      lambda exc: isinstance(exc, (_Transient, OSError)) or _is_transient(exc, _status(exc)))

    def _shm_request(self, client: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The request through this thread's regions, or None where the server refused them (auto: the wire
        from now on, said once)."""
        wire = {name: from_numpy(np.dtype(a.dtype).name, "wire", f"input '{name}'") for name, a in feeds.items()}
        lead = (len(next(iter(feeds.values()))),) if self.max_batch else ()
        specs = [(name, lead + self._output_specs[name][0], self._output_specs[name][1]) for name in self.output_names]
        try:
            regions = self._shm.regions(client)
            inputs, wanted, where = regions.request(self._module, feeds, wire, specs) if regions else ([], [], [])
        except Exception as exc:  # noqa: BLE001 - tritonclient's InferenceServerException, SharedMemoryException
            if _is_transient(exc, _status(exc)) or self.address.shm == "on":
                raise
            self._shm.refused()
            no_shm(self.address, f"it refused this client's region ({_first_line(exc)})")
            return None
        if regions is None:
            return None
        result = client.infer(self.address.model, inputs, model_version=self.address.version, outputs=wanted,
                              **self._timeout())
        return regions.outputs_of(result, where, self.address.url)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._call(lambda client: self._request(client, feeds), "run the model")

    def _request(self, client: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        answer = self._shm_request(client, feeds) if self._shm is not None else None
        if answer is not None:
            return answer
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
        if self._shm is not None:                 # unregistered and unlinked before the connections close
            self._shm.close()
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
        if self._shm is not None:
            self._shm.forget()
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


def _declared_size(result: Any, name: str) -> bool:
    """Whether the response declares a non-empty shape for output ``name`` (it then should carry data)."""
    try:
        output = result.get_output(name, as_json=True) if hasattr(result, "get_output") else None
    except TypeError:
        output = result.get_output(name)
    shape = (output or {}).get("shape", [])
    return bool(shape) and all(int(d) > 0 for d in shape)
