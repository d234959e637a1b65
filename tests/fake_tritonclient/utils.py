"""``tritonclient.utils`` as the double serves it: the one exception type both clients raise and the
dtype names (tritonclient 2.x; BF16, which needs ml_dtypes, is left out)."""

from __future__ import annotations

import numpy as np

from fake_tritonclient.server import WIRE_NUMPY


class InferenceServerException(Exception):
    """As tritonclient's: ``str()`` is ``[STATUS] message`` when there is a status (a gRPC status code
    such as ``StatusCode.NOT_FOUND``, an HTTP status such as ``404``)."""

    def __init__(self, msg, status=None, debug_details=None):
        self._msg = msg
        self._status = status
        self._debug_details = debug_details

    def __str__(self):
        msg = super().__str__() if self._msg is None else self._msg
        if self._status is not None:
            msg = "[" + self._status + "] " + msg
        return msg

    def message(self):
        return self._msg

    def status(self):
        return self._status

    def debug_details(self):
        return self._debug_details


def raise_error(msg):
    raise InferenceServerException(msg=msg) from None


def np_to_triton_dtype(np_dtype):
    if np_dtype == bool:
        return "BOOL"
    for wire, numpy in WIRE_NUMPY.items():
        if wire not in ("BOOL", "BYTES") and np_dtype == numpy:
            return wire
    if np_dtype == np.object_ or np.dtype(np_dtype).type == np.bytes_:
        return "BYTES"
    return None


def triton_to_np_dtype(dtype):
    return WIRE_NUMPY.get(dtype)
