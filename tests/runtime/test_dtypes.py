"""The one element-type table: each row read both ways in every spelling, each spelling checked
against the backend's own names, and the one error for a type a backend cannot carry."""

from __future__ import annotations

import numpy as np
import pytest

from fake_tensorrt import VERSIONS, install, load_surface
from drtrt.errors import ArtefactError, ConfigError
from drtrt.runtime.backends.dtypes import TYPES, UnsupportedDtype, from_numpy, to_numpy
from drtrt.runtime.backends.ort import open_session, tensor_specs
from drtrt.runtime.backends.trt_compat import numpy_dtype

SPELLINGS = ("ort", "triton", "wire", "tensorrt")


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_row_round_trips(spelling):
    for row in TYPES:
        name = getattr(row, spelling)
        if name is None:
            continue
        assert from_numpy(row.numpy, spelling) == name
        assert to_numpy(name, spelling) == row.numpy


@pytest.mark.parametrize("spelling", ("numpy", *SPELLINGS))
def test_a_name_means_one_type(spelling):
    names = [getattr(row, spelling) for row in TYPES if getattr(row, spelling) is not None]
    assert len(names) == len(set(names))


def test_numpy_names_are_numpy_s():
    assert [np.dtype(row.numpy).name for row in TYPES] == [row.numpy for row in TYPES]


def _identity(tensor_type: int) -> bytes:
    from onnx import helper

    value = [helper.make_tensor_value_info(n, tensor_type, [1]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", value[:1], value[1:])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("row", TYPES, ids=lambda row: row.numpy)
def test_onnx_runtime_names_each_type_as_the_table_does(row):
    from onnx import helper

    session = open_session(_identity(helper.np_dtype_to_tensor_dtype(np.dtype(row.numpy))))
    assert session.get_inputs()[0].type == row.ort
    assert tensor_specs(session.get_inputs())[0].dtype == row.numpy


def test_an_onnx_runtime_type_outside_the_table_keeps_its_name():
    """As before the table: the runner's feed check (or Triton's configuration) names it then."""
    from onnx import TensorProto

    (spec,) = tensor_specs(open_session(_identity(TensorProto.STRING)).get_inputs())
    assert spec.dtype == "tensor(string)"


def test_triton_names_are_model_config_s_and_the_client_s():
    config = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient")
    utils = pytest.importorskip("tritonclient.utils", reason="needs tritonclient")
    for row in TYPES:
        assert row.triton in config.DataType.keys()
        assert utils.np_to_triton_dtype(np.dtype(row.numpy)) == row.wire


def test_tensorrt_names_are_data_type_members():
    members = set().union(*(load_surface(f"trt-{v}")["enums"]["DataType"] for v in VERSIONS))
    assert {row.tensorrt for row in TYPES if row.tensorrt} <= members


@pytest.mark.parametrize("version", VERSIONS)
def test_tensorrt_numpy_dtype_reads_the_table_by_name(version, monkeypatch):
    install(monkeypatch, version)
    import tensorrt as trt

    for member in trt.DataType:
        row = next((row for row in TYPES if row.tensorrt == member.name), None)
        if row is None:     # BF16, FP8, INT4, ...: no drtrt model has them at its inputs or outputs
            with pytest.raises(ConfigError, match=f"{member.name} is a type drtrt does not carry through TensorRT"):
                numpy_dtype(trt, member)
        else:
            assert numpy_dtype(trt, member) == np.dtype(row.numpy)


def test_a_type_a_backend_cannot_carry_is_one_artefact_error_naming_it():
    with pytest.raises(UnsupportedDtype) as caught:
        to_numpy("TYPE_STRING", "triton", "input 'photo'")
    assert isinstance(caught.value, ArtefactError)
    assert str(caught.value) == ("input 'photo' is TYPE_STRING, a type drtrt does not carry through Triton's model "
                                 "configuration (it carries TYPE_FP32, TYPE_FP16, TYPE_FP64, TYPE_INT8, TYPE_UINT8, "
                                 "TYPE_INT32, TYPE_INT64, TYPE_BOOL)")
    with pytest.raises(UnsupportedDtype, match=r"^float64 is a type drtrt does not carry through TensorRT "
                                               r"\(it carries float32, float16, int8, "):
        from_numpy("float64", "tensorrt")
    with pytest.raises(UnsupportedDtype, match="tensor 'x' is tensor\\(string\\), a type"):
        from_numpy("tensor(string)", "triton", "tensor 'x'")
