"""``tritonclient.http`` as the double serves it: the client and tensor classes with tritonclient 2.x's
signatures (tests/runtime/test_tritonclient_double.py checks them against the installed package),
answering from a :class:`fake_tritonclient.server.FakeServer` as the real client answers from
Triton over HTTP/REST: the server's JSON (every field, numbers as numbers; the repository index a
list), errors as ``InferenceServerException`` with the HTTP status (``404``); a server that is not
there is the socket's ``ConnectionRefusedError``."""

from __future__ import annotations

import errno
import functools
import inspect

from fake_tritonclient.server import Refused, Request, ServerError
from fake_tritonclient.tensors import InferInputBase, InferResultBase
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, raise_error, triton_to_np_dtype

_registry = None        # the servers of this install (fake_tritonclient.install sets it)
STATUS = {"NOT_FOUND": "404", "INVALID_ARGUMENT": "400", "UNAVAILABLE": "503"}

__all__ = ["InferInput", "InferRequestedOutput", "InferResult", "InferenceServerClient", "InferenceServerException",
           "np_to_triton_dtype", "triton_to_np_dtype"]


def _request(method):
    """One request to the server: its errors as the real client raises them."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, _registry.find(self._url, "http"), *args, **kwargs)
        except Refused:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused") from None
        except ServerError as exc:
            raise InferenceServerException(msg=exc.message, status=STATUS[exc.code]) from None

    signature = inspect.signature(method)                      # the caller's: without the server
    self_, _, *rest = signature.parameters.values()
    call.__signature__ = signature.replace(parameters=[self_, *rest])
    return call


class InferenceServerClient:
    def __init__(self, url, verbose=False, concurrency=1, connection_timeout=60.0, network_timeout=60.0,
                 max_greenlets=None, ssl=False, ssl_options=None, ssl_context_factory=None, insecure=False):
        if url.startswith("http://") or url.startswith("https://"):
            raise_error("url should not include the scheme")
        self._url, self._verbose = url, verbose

    def close(self):
        pass

    @_request
    def is_server_live(self, server, headers=None, query_params=None):
        return True

    @_request
    def is_server_ready(self, server, headers=None, query_params=None):
        return all(model.ready() for model in server.models.values())

    @_request
    def get_server_metadata(self, server, headers=None, query_params=None):
        return server.metadata()

    @_request
    def is_model_ready(self, server, model_name, model_version="", headers=None, query_params=None):
        model = server.models.get(model_name)
        return model is not None and model.ready(model_version)

    @_request
    def get_model_config(self, server, model_name, model_version="", headers=None, query_params=None):
        return server.model(model_name, model_version).config()

    @_request
    def get_model_metadata(self, server, model_name, model_version="", headers=None, query_params=None):
        model = server.model(model_name, model_version)
        lead = [-1] if model.max_batch else []

        def tensors(values) -> list[dict]:
            return [{"name": t.name, "datatype": t.datatype, "shape": lead + list(t.dims)} for t in values]

        return {"name": model.name, "versions": list(model.versions), "platform": "python",
                "inputs": tensors(model.inputs), "outputs": tensors(model.outputs)}

    @_request
    def get_model_repository_index(self, server, headers=None, query_params=None):
        return server.index()

    @_request
    def infer(self, server, model_name, inputs, model_version="", outputs=None, request_id="", sequence_id=0,
              sequence_start=False, sequence_end=False, priority=0, timeout=None, headers=None, query_params=None,
              request_compression_algorithm=None, response_compression_algorithm=None, parameters=None):
        model = server.model(model_name, model_version)
        request = Request([(i.name(), i.datatype(), tuple(i.shape()), i._raw_content) for i in inputs],
                          [o.name() for o in outputs] if outputs else None)
        return InferResult(model.name, model.versions[-1], model.infer(request))


class InferInput(InferInputBase):
    def set_data_from_numpy(self, input_tensor, binary_data=True):
        return self._set_data(input_tensor)


class InferRequestedOutput:
    def __init__(self, name, binary_data=True, class_count=0):
        self._name, self._binary_data, self._class_count = name, binary_data, class_count

    def name(self):
        return self._name


class InferResult(InferResultBase):
    def get_output(self, name):
        for output in self.get_response()["outputs"]:
            if output["name"] == name:
                return output
        return None

    def get_response(self):
        return {"model_name": self._model, "model_version": self._version,
                "outputs": [{"name": n, "datatype": d, "shape": list(shape), "parameters": {"binary_data_size": len(b)}}
                            for n, d, shape, b in self._outputs]}
