"""What the double's gRPC and HTTP clients share: an input tensor (its checks as tritonclient 2.x makes
them) and a result's arrays. The protocol modules keep what differs: signatures and JSON shapes."""

from __future__ import annotations

import numpy as np

from tritonclient.utils import np_to_triton_dtype, raise_error, triton_to_np_dtype


class InferInputBase:
    def __init__(self, name, shape, datatype):
        self._name, self._shape, self._datatype = name, [int(d) for d in shape], datatype
        self._raw_content = None

    def name(self):
        return self._name

    def datatype(self):
        return self._datatype

    def shape(self):
        return list(self._shape)

    def set_shape(self, shape):
        self._shape = [int(d) for d in shape]
        return self

    def _set_data(self, input_tensor):
        if not isinstance(input_tensor, (np.ndarray,)):
            raise_error("input_tensor must be a numpy array")
        dtype = np_to_triton_dtype(input_tensor.dtype)
        if self._datatype != dtype:
            raise_error(f"got unexpected datatype {dtype} from numpy array, expected {self._datatype}.")
        if list(input_tensor.shape) != self._shape:
            raise_error("got unexpected numpy array shape [{}], expected [{}]".format(
                str(input_tensor.shape)[1:-1], str(self._shape)[1:-1]))
        if self._datatype == "BYTES":
            raise NotImplementedError("the tritonclient double sends no BYTES tensors")
        self._raw_content = input_tensor.tobytes()
        return self



class InferResultBase:
    def __init__(self, model_name, model_version, outputs):
        self._model, self._version, self._outputs = model_name, model_version, list(outputs)

    def as_numpy(self, name):
        """The output's array (read-only: it is the response's buffer, as the real client's), None for
        an output the response does not carry."""
        for output_name, datatype, shape, data in self._outputs:
            if output_name == name:
                return np.frombuffer(data, dtype=triton_to_np_dtype(datatype)).reshape(shape)
        return None
