"""``tritonclient.grpc`` as the double serves it: the client and tensor classes with tritonclient 2.x's
signatures (tests/runtime/test_tritonclient_double.py checks them against the installed package),
answering from a :class:`fake_tritonclient.server.FakeServer` as the real client answers from
Triton over gRPC: JSON as ``MessageToJson`` writes it (int64 fields such as ``dims`` as strings,
fields at their default left out), errors as ``InferenceServerException`` with the gRPC status code
(``StatusCode.NOT_FOUND``); a server that is not there is ``StatusCode.UNAVAILABLE``."""

from __future__ import annotations

import functools
import inspect
import types

from fake_tritonclient.server import Refused, Request, ServerError
from fake_tritonclient.tensors import InferInputBase, InferResultBase
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

_registry = None        # the servers of this install (fake_tritonclient.install sets it)
STATUS = {"NOT_FOUND": "StatusCode.NOT_FOUND", "INVALID_ARGUMENT": "StatusCode.INVALID_ARGUMENT",
          "UNAVAILABLE": "StatusCode.UNAVAILABLE"}

__all__ = ["InferInput", "InferRequestedOutput", "InferResult", "InferenceServerClient", "InferenceServerException",
           "np_to_triton_dtype", "triton_to_np_dtype"]


def _rpc(method):
    """One call to the server: its errors as the real client raises them."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if self._closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        try:
            return method(self, _registry.find(self._url, "grpc"), *args, **kwargs)
        except Refused:
            raise InferenceServerException(
                msg=f"failed to connect to all addresses; last error: UNKNOWN: ipv4:{self._url}: Failed to connect "
                    "to remote host: Connection refused", status=STATUS["UNAVAILABLE"]) from None
        except ServerError as exc:
            raise InferenceServerException(msg=exc.message, status=STATUS[exc.code]) from None

    signature = inspect.signature(method)                      # the caller's: without the server
    self_, _, *rest = signature.parameters.values()
    call.__signature__ = signature.replace(parameters=[self_, *rest])
    return call


def _grpc_json(config: dict) -> dict:
    """The HTTP form of a configuration as gRPC's MessageToJson writes it: int64 dims as strings, fields at
    their default value (False, 0, "", [], {}, enum 0) left out."""
    def strip(value):
        if isinstance(value, dict):
            kept = {k: strip(v) for k, v in value.items()}
            return {k: v for k, v in kept.items() if v not in (False, 0, "", [], {}, "FORMAT_NONE")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out = strip(config)
    for tensor in out.get("input", []) + out.get("output", []):
        tensor["dims"] = [str(d) for d in tensor["dims"]]
    return out


class InferenceServerClient:
    def __init__(self, url, verbose=False, ssl=False, root_certificates=None, private_key=None,
                 certificate_chain=None, creds=None, keepalive_options=None, channel_args=None):
        if ssl and not creds:
            for path in (root_certificates, private_key, certificate_chain):
                if path is not None:
                    with open(path, "rb"):          # the real client reads them here
                        pass
        self._url, self._verbose, self._closed = url, verbose, False

    def close(self):
        self._closed = True

    @_rpc
    def is_server_live(self, server, headers=None, client_timeout=None):
        return True

    @_rpc
    def is_server_ready(self, server, headers=None, client_timeout=None):
        return all(model.ready() for model in server.models.values())

    @_rpc
    def get_server_metadata(self, server, headers=None, as_json=False, client_timeout=None):
        meta = server.metadata()
        return meta if as_json else types.SimpleNamespace(**meta)

    @_rpc
    def is_model_ready(self, server, model_name, model_version="", headers=None, client_timeout=None):
        model = server.models.get(model_name)
        return model is not None and model.ready(model_version)

    @_rpc
    def get_model_config(self, server, model_name, model_version="", headers=None, as_json=False,
                         client_timeout=None):
        config = _grpc_json(server.model(model_name, model_version).config())
        return {"config": config} if as_json else types.SimpleNamespace(config=config)

    @_rpc
    def get_model_metadata(self, server, model_name, model_version="", headers=None, as_json=False,
                           client_timeout=None):
        model = server.model(model_name, model_version)
        lead = [-1] if model.max_batch else []

        def tensors(values) -> list[dict]:
            return [{"name": t.name, "datatype": t.datatype, "shape": [str(d) for d in lead + list(t.dims)]}
                    for t in values]

        meta = {"name": model.name, "versions": list(model.versions), "platform": "python",
                "inputs": tensors(model.inputs), "outputs": tensors(model.outputs)}
        return meta if as_json else types.SimpleNamespace(**meta)

    @_rpc
    def get_model_repository_index(self, server, headers=None, as_json=False, client_timeout=None):
        index = {"models": server.index()}
        if as_json:
            return index
        return types.SimpleNamespace(models=[types.SimpleNamespace(**m) for m in index["models"]])

    @_rpc
    def infer(self, server, model_name, inputs, model_version="", outputs=None, request_id="", sequence_id=0,
              sequence_start=False, sequence_end=False, priority=0, timeout=None, client_timeout=None, headers=None,
              compression_algorithm=None, parameters=None):
        model = server.model(model_name, model_version)
        request = Request([(i.name(), i.datatype(), tuple(i.shape()), i._raw_content) for i in inputs],
                          [o.name() for o in outputs] if outputs else None)
        return InferResult(model.name, model.versions[-1], model.infer(request))


class InferInput(InferInputBase):
    def set_data_from_numpy(self, input_tensor):
        return self._set_data(input_tensor)


class InferRequestedOutput:
    def __init__(self, name, class_count=0):
        self._name, self._class_count = name, class_count

    def name(self):
        return self._name


class InferResult(InferResultBase):
    def get_output(self, name, as_json=False):
        """tritonclient 2.x's gRPC ``get_output(name, as_json=True)`` returns None, found or not (it builds
        the JSON and drops it); the double does the same, so a caller cannot come to rely on it."""
        for output_name, datatype, shape, _ in self._outputs:
            if output_name == name:
                return None if as_json else types.SimpleNamespace(name=name, datatype=datatype, shape=list(shape))
        return None

    def get_response(self, as_json=False):
        response = {"model_name": self._model, "model_version": self._version,
                    "outputs": [{"name": n, "datatype": d, "shape": [str(s) for s in shape]}
                                for n, d, shape, _ in self._outputs]}
        return response if as_json else types.SimpleNamespace(**response)
