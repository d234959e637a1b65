"""The Triton server that the tritonclient double talks to, in this process: each model an ONNX file
on ONNX Runtime (one thread, so outputs are the same run to run), described as ``drtrt export-triton``
describes it in ``config.pbtxt`` (its I/O, ``max_batch_size``, the model's ``drtrt.*`` metadata and
the file's name and sha256 in ``parameters``), checked and answered as Triton 2.51 (the
nvidia-pytriton wheel's server) checks and answers: the messages below are the real server's,
recorded against it (tests/runtime/test_tritonclient_double.py compares them where it is installed).

A request reaches a :class:`FakeServer` through its endpoint (``127.0.0.1:PORT``, one port per
protocol); no socket is opened. Nothing here is importable as ``tritonclient``: tests inject the
client modules through ``fake_tritonclient.install()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triton_urls import LocalTritonUrls

# Triton's wire types (the model configuration writes TYPE_ + these, TYPE_STRING for BYTES) ↔ NumPy
WIRE_NUMPY = {"BOOL": bool, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
              "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
              "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}
ONNX_WIRE = {"tensor(bool)": "BOOL", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
             "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
             "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(float16)": "FP16",
             "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(string)": "BYTES"}
# what drtrt export-triton writes into config.pbtxt's parameters beside the drtrt.* metadata
SHA256_PARAMETER, FILE_PARAMETER = "model_file_sha256", "model_file"
REQUEST = "[request id: <id_unknown>] "          # how Triton prefixes what it finds wrong with a request
_BATCH_NOTE = (" NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be "
               "prepended to each input shape. If you want to specify the full shape including the batch dim in "
               "your input dims config, try setting max_batch_size to zero. See the model configuration docs for "
               "more info on max_batch_size.")


def config_type(wire: str) -> str:
    return "TYPE_STRING" if wire == "BYTES" else f"TYPE_{wire}"


class ServerError(Exception):
    """The server answered with an error: ``code`` NOT_FOUND | INVALID_ARGUMENT | UNAVAILABLE and its
    message (each client module turns the code into its protocol's status)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Refused(Exception):
    """Nothing listens at the endpoint (no server there, or it was stopped)."""


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str                 # the wire type: FP32, INT64 …
    dims: tuple[int, ...]         # without the batch dimension; -1 = any

    def config(self) -> dict:
        return {"name": self.name, "data_type": config_type(self.datatype), "dims": list(self.dims)}


@dataclass(frozen=True)
class Request:
    """One inference request as the server receives it: inputs (name, wire type, shape, raw bytes) and
    the outputs asked for (None: all)."""

    inputs: Sequence[tuple[str, str, tuple[int, ...], bytes]]
    outputs: Sequence[str] | None = None


class FakeModel:
    """One model of the repository. ``state`` READY | UNAVAILABLE | LOADING … and ``reason`` are what the
    repository index shows (a model that is not READY answers nothing); ``versions`` those loaded."""

    def __init__(self, name: str, onnx: Path, max_batch: int = 8) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.name, self.path, self.max_batch = name, Path(onnx), max_batch
        self.session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.parameters = {key: value for key, value in metadata.items() if key.startswith("drtrt.")}
        self.parameters[SHA256_PARAMETER] = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.parameters[FILE_PARAMETER] = self.path.name
        self.inputs = tuple(self._tensor(v) for v in self.session.get_inputs())
        self.outputs = tuple(self._tensor(v) for v in self.session.get_outputs())
        self.state, self.reason, self.versions = "READY", "", ("1",)

    @staticmethod
    def _tensor(value) -> Tensor:
        dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in value.shape)
        return Tensor(value.name, ONNX_WIRE[value.type], dims[1:])      # the batch dimension is Triton's

    def ready(self, version: str = "") -> bool:
        return self.state == "READY" and (not version or version in self.versions)

    def config(self) -> dict:
        """The configuration as Triton completes it (HTTP's JSON: every field, dims as numbers)."""
        return {
            "name": self.name, "platform": "", "backend": "python", "runtime": "",
            "version_policy": {"latest": {"num_versions": 1}}, "max_batch_size": self.max_batch,
            "input": [{**t.config(), "format": "FORMAT_NONE", "is_shape_tensor": False, "allow_ragged_batch": False,
                       "optional": False, "is_non_linear_format_io": False} for t in self.inputs],
            "output": [{**t.config(), "label_filename": "", "is_shape_tensor": False, "is_non_linear_format_io": False}
                       for t in self.outputs],
            "dynamic_batching": {"preferred_batch_size": [self.max_batch], "max_queue_delay_microseconds": 0,
                                 "preserve_ordering": False, "priority_levels": 0, "default_priority_level": 0,
                                 "priority_queue_policy": {}},
            "instance_group": [{"name": f"{self.name}_0", "kind": "KIND_CPU", "count": 1, "gpus": [],
                                "secondary_devices": [], "profile": [], "passive": False, "host_policy": ""}],
            "default_model_filename": "model.py",
            "parameters": {key: {"string_value": value} for key, value in self.parameters.items()},
        }

    def infer(self, request: Request) -> list[tuple[str, str, tuple[int, ...], bytes]]:
        """Check the request as Triton does (in its order), run it, return the outputs asked for."""
        known = {t.name: t for t in self.inputs}
        for name in request.outputs or ():
            if name not in {t.name for t in self.outputs}:
                raise ServerError("INVALID_ARGUMENT", f"unexpected inference output '{name}' for model '{self.name}'")
        seen: list[str] = []
        for name, *_ in request.inputs:
            if name not in known:
                raise ServerError("INVALID_ARGUMENT", f"unexpected inference input '{name}' for model '{self.name}'")
            if name in seen:
                raise ServerError("INVALID_ARGUMENT", f"{REQUEST}input '{name}' already exists in request")
            seen.append(name)
        if len(seen) != len(known):
            missing = [name for name in known if name not in seen]
            raise ServerError("INVALID_ARGUMENT", f"{REQUEST}expected {len(known)} inputs but got {len(seen)} inputs "
                              f"for model '{self.name}'. Got input(s) {_names(seen)}, but missing required input(s) "
                              f"{_names(missing)}. Please provide all required input(s).")
        batch = request.inputs[0][2][0] if self.max_batch and request.inputs[0][2] else 1
        if self.max_batch and batch > self.max_batch:
            raise ServerError("INVALID_ARGUMENT", f"{REQUEST}inference request batch-size must be <= {self.max_batch} "
                                                  f"for '{self.name}'")
        feeds = {}
        for name, datatype, shape, data in request.inputs:
            tensor = known[name]
            if datatype != tensor.datatype:
                raise ServerError("INVALID_ARGUMENT", f"{REQUEST}inference input '{name}' data-type is '{datatype}', "
                                                      f"but model '{self.name}' expects '{tensor.datatype}'")
            expected = ((-1,) if self.max_batch else ()) + tensor.dims
            if len(shape) != len(expected) or any(e >= 0 and s != e for s, e in zip(shape, expected)):
                raise ServerError("INVALID_ARGUMENT", f"{REQUEST}unexpected shape for input '{name}' for model "
                                  f"'{self.name}'. Expected {_dims(expected)}, got {_dims(shape)}."
                                  + (_BATCH_NOTE if self.max_batch else ""))
            itemsize = np.dtype(WIRE_NUMPY[datatype]).itemsize
            size = int(np.prod(shape[1:] if self.max_batch else shape)) * itemsize * max(batch, 1)
            if len(data) != size:         # a batch of 0 is counted as 1 here, as Triton does
                raise ServerError("INVALID_ARGUMENT", f"{REQUEST}input byte size mismatch for input '{name}' for "
                                  f"model '{self.name}'. Expected {size}, got {len(data)}")
            feeds[name] = np.frombuffer(data, dtype=WIRE_NUMPY[datatype]).reshape(shape)
        wanted = list(request.outputs) if request.outputs else [t.name for t in self.outputs]
        arrays = dict(zip(wanted, self.session.run(wanted, feeds)))
        types = {t.name: t.datatype for t in self.outputs}
        return [(name, types[name], tuple(arrays[name].shape), np.ascontiguousarray(arrays[name]).tobytes())
                for name in wanted]


def _names(names: Sequence[str]) -> str:
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


def _dims(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class FakeServer(LocalTritonUrls):
    """A server on 127.0.0.1 with a gRPC and an HTTP port, like ``triton_helpers.TritonServer`` (the
    same ``model_url`` and ``grpc_url``); ``stop()`` / ``start()`` take it away and bring it back."""

    def __init__(self, models: Mapping[str, FakeModel], grpc_port: int, http_port: int) -> None:
        self.models = dict(models)
        self.grpc_port, self.http_port = grpc_port, http_port
        self.live = True

    def start(self) -> None:
        self.live = True

    def stop(self) -> None:
        self.live = False

    # -- what the client modules call -------------------------------------------------------------
    def metadata(self) -> dict:
        """The server's metadata: the double has no shared memory, so it does not list it (the real one does)."""
        return {"name": "triton", "version": "2.51.0",
                "extensions": ["classification", "model_repository", "model_configuration", "statistics"]}

    def model(self, name: str, version: str = "") -> FakeModel:
        """The model a request names, or Triton's NOT_FOUND for it."""
        model = self.models.get(name)
        if model is None:
            raise ServerError("NOT_FOUND", f"Request for unknown model: '{name}' is not found")
        if model.state != "READY":
            raise ServerError("NOT_FOUND", f"Request for unknown model: '{name}' has no available versions")
        if version and version not in model.versions:
            raise ServerError("NOT_FOUND", f"Request for unknown model: '{name}' version {version} is not found")
        return model

    def index(self) -> list[dict]:
        """The repository index (name order): each model's version, state and, when not ready, reason."""
        entries = []
        for name in sorted(self.models):
            model = self.models[name]
            for version in model.versions:
                entry = {"name": name, "version": version, "state": model.state}
                entries.append({**entry, "reason": model.reason} if model.reason else entry)
        return entries


class Registry:
    """The servers of one ``install()``, found by endpoint; ports are made up (nothing listens)."""

    def __init__(self) -> None:
        self.servers: list[FakeServer] = []
        self._next_port = 18000

    def serve(self, models: Mapping[str, Path], max_batch: int = 8) -> FakeServer:
        http_port, grpc_port = self._next_port, self._next_port + 1
        self._next_port += 2
        server = FakeServer({name: FakeModel(name, path, max_batch) for name, path in models.items()},
                            grpc_port, http_port)
        self.servers.append(server)
        return server

    def find(self, url: str, protocol: str) -> FakeServer:
        """The live server at ``HOST:PORT`` for ``protocol``, or :class:`Refused`."""
        host, _, port = url.rpartition(":")
        if host.strip("[]") in ("127.0.0.1", "localhost", "::1") and port.isdigit():
            for server in self.servers:
                if server.live and int(port) == (server.grpc_port if protocol == "grpc" else server.http_port):
                    return server
        raise Refused(url)
