"""The tritonclient double (tests/fake_tritonclient) held to the real client: its classes and functions
have the installed tritonclient's signatures, and, where the real server runs (the nvidia-pytriton
wheel's, the session's ``triton``), the double answers every call drtrt's TritonRunner makes as the
real client answers from the real server (values, JSON shapes, exception types, statuses, messages,
outputs), over gRPC and HTTP."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from fake_tritonclient import install

CONSTRUCTED = {"InferenceServerClient", "InferInput", "InferRequestedOutput"}   # by a caller (InferResult is not)


def real_module(name: str):
    return pytest.importorskip(f"tritonclient.{name}", reason="compares with the installed tritonclient "
                                                               "(pip install 'drtrt[triton]')")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_double_has_the_real_clients_signatures(protocol, monkeypatch):
    real, utils = real_module(protocol), real_module("utils")
    fake = getattr(install(monkeypatch), protocol)
    for name in fake.__all__:
        ours, theirs = getattr(fake, name), getattr(real, name)
        if not inspect.isclass(ours):
            assert inspect.signature(ours) == inspect.signature(theirs), name
            continue
        for method, value in vars(ours).items():
            if callable(value) and (not method.startswith("_") or (method == "__init__" and name in CONSTRUCTED)):
                assert inspect.signature(value) == inspect.signature(getattr(theirs, method)), f"{name}.{method}"
    assert fake.InferenceServerException.__name__ == utils.InferenceServerException.__name__
    for method in ("__init__", "__str__", "message", "status", "debug_details"):
        assert (inspect.signature(getattr(fake.InferenceServerException, method))
                == inspect.signature(getattr(utils.InferenceServerException, method))), method
    error = fake.InferenceServerException("gone", status="StatusCode.NOT_FOUND")
    assert str(error) == str(utils.InferenceServerException("gone", status="StatusCode.NOT_FOUND"))
    for dtype in (np.float32, np.float16, np.float64, np.int8, np.uint8, np.int32, np.int64, np.bool_, np.object_):
        wire = utils.np_to_triton_dtype(np.dtype(dtype))
        assert fake.np_to_triton_dtype(np.dtype(dtype)) == wire
        assert fake.triton_to_np_dtype(wire) == utils.triton_to_np_dtype(wire)


def outcome(call) -> tuple:
    """What a call gave: ("answer", value) or (exception type, its text, its status)."""
    try:
        return "answer", call()
    except Exception as exc:  # noqa: BLE001 - the exception is what is compared
        status = exc.status() if callable(getattr(exc, "status", None)) else None
        return type(exc).__name__, str(exc), status


def tensor(module, name: str, array: np.ndarray, datatype: str = "FP32"):
    value = module.InferInput(name, list(array.shape), datatype)
    value.set_data_from_numpy(array)
    return value


def requests(module) -> dict:
    """Inference requests, good and bad (the feeds TritonRunner checks before it sends are sent anyway)."""
    x = np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32)
    one = x[:1]
    return {
        "batch 2": ([tensor(module, "image", x)], None),
        "one output": ([tensor(module, "image", one)], [module.InferRequestedOutput("grade_logits")]),
        "unknown output": ([tensor(module, "image", one)], [module.InferRequestedOutput("nope")]),
        "unknown input": ([tensor(module, "images", one)], None),
        "twice": ([tensor(module, "image", one), tensor(module, "image", one)], None),
        "none": ([], None),
        "batch 9": ([tensor(module, "image", np.zeros((9, 3, 64, 64), np.float32))], None),
        "batch 0": ([tensor(module, "image", x[:0])], None),
        "float64": ([tensor(module, "image", one.astype(np.float64), "FP64")], None),
        "32 px": ([tensor(module, "image", one[:, :, :32, :32])], None),
    }


def answers(module, url: str, protocol: str) -> dict:
    """Every call TritonRunner makes (and a few of its neighbours), as comparable outcomes."""
    client = module.InferenceServerClient(url)
    json = {"as_json": True} if protocol == "grpc" else {}
    one = np.zeros(1, np.float32)
    got = {
        "live": outcome(client.is_server_live),
        "ready": [outcome(lambda: client.is_model_ready(*args)) for args in
                  (("drtrt",), ("drtrt", "1"), ("drtrt", "2"), ("grader",))],
        "metadata": outcome(lambda: client.get_model_metadata("drtrt", **json)),
        "unknown config": outcome(lambda: client.get_model_config("grader", **json)),
        "unknown version": outcome(lambda: client.get_model_config("drtrt", "2", **json)),
        "unknown model": outcome(lambda: client.infer("grader", [])),
        "dtype mismatch": outcome(lambda: tensor(module, "image", one, "FP64")),
        "shape mismatch": outcome(lambda: module.InferInput("image", [2], "FP32").set_data_from_numpy(one)),
    }
    index = client.get_model_repository_index(**json)
    models = index["models"] if protocol == "grpc" else index
    got["index"] = (type(index).__name__, [m for m in models if m["name"] == "drtrt"])
    got["config"] = client.get_model_config("drtrt", **json)
    for name, (inputs, outputs) in requests(module).items():
        result = outcome(lambda: client.infer("drtrt", inputs, outputs=outputs, **(
            {"client_timeout": 60} if protocol == "grpc" else {})))
        if result[0] == "answer":
            answer = result[1]
            arrays = {n: answer.as_numpy(n) for n in ("grade_logits", "lesion_logits", "nope")}
            output = (answer.get_output("grade_logits", as_json=True) if protocol == "grpc"
                      else answer.get_output("grade_logits"))
            result = "answer", arrays, output
        got[f"infer {name}"] = result
    client.close()
    return got


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_double_answers_as_the_real_server_does(protocol, triton, tiny_onnx, monkeypatch):
    from triton_helpers import free_port

    real = real_module(protocol)
    port = triton.grpc_port if protocol == "grpc" else triton.http_port
    theirs = answers(real, f"127.0.0.1:{port}", protocol)
    fake = install(monkeypatch)
    server = fake.serve({"drtrt": tiny_onnx}, max_batch=8)       # as served_repo: --max-batch 8
    module = getattr(fake, protocol)
    ours = answers(module, f"127.0.0.1:{server.grpc_port if protocol == 'grpc' else server.http_port}", protocol)

    config, real_config = ours.pop("config"), theirs.pop("config")
    if protocol == "grpc":
        config, real_config = config["config"], real_config["config"]
    assert {key: real_config.get(key) for key in config} == config        # what the double says, the server says
    for name in [n for n in ours if n.startswith("infer ")]:
        mine, real_one = ours.pop(name), theirs.pop(name)
        if mine[0] != "answer" or real_one[0] != "answer":
            assert mine == real_one, name
            continue
        assert mine[2] == real_one[2], name                               # get_output
        for output, array in mine[1].items():
            expected = real_one[1][output]
            assert (array is None) == (expected is None), (name, output)
            if array is not None:
                assert (array.dtype, array.shape, array.flags.writeable) == \
                    (expected.dtype, expected.shape, expected.flags.writeable), (name, output)
                np.testing.assert_allclose(array, expected, atol=1e-5, rtol=1e-5)   # the server's ORT: other threads
    assert ours == theirs

    gone = free_port()                                                    # nothing listens there, for either
    refused = [outcome(module.InferenceServerClient(f"127.0.0.1:{gone}").is_server_live)
               for module in (real, getattr(fake, protocol))]
    assert refused[0][0] == refused[1][0] and refused[0][2] == refused[1][2], refused
    assert "Connection refused" in refused[0][1] and "Connection refused" in refused[1][1], refused
