"""The triton:// runner's parts that need no server: URLs (also after ``pathlib.Path`` folded their
``//``), the retry policy and its environment override, which hosts count as this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from drtrt.errors import ConfigError
from drtrt.runtime.registry import is_model_url, model_reference
from drtrt.runtime.backends.triton import RetryPolicy, TritonAddress, _loopback


@pytest.mark.parametrize("typed, expected", [
    ("triton://rc.example.org:8001/drtrt", ("grpc", "rc.example.org", 8001, "drtrt", "", False)),
    ("triton://rc/drtrt/3", ("grpc", "rc", 8001, "drtrt", "3", False)),
    ("triton+grpc://10.0.0.5:9001/grader", ("grpc", "10.0.0.5", 9001, "grader", "", False)),
    ("triton+http://localhost/drtrt", ("http", "localhost", 8000, "drtrt", "", False)),
    ("tritons://rc:443/drtrt", ("grpc", "rc", 443, "drtrt", "", True)),
    ("TRITON://[::1]:8001/drtrt", ("grpc", "::1", 8001, "drtrt", "", False)),
])
def test_urls_parse_also_after_path_folded_them(typed, expected):
    for value in (typed, Path(typed)):                  # typer gives the CLI option as a Path: "triton:/rc…"
        assert is_model_url(value)
        address = TritonAddress.parse(value)
        assert (address.protocol, address.host, address.port, address.model, address.version, address.tls) == expected
    assert TritonAddress.parse(address.url) == address
    assert model_reference(Path(typed)) == model_reference(typed) == typed.replace("TRITON", "triton")


@pytest.mark.parametrize("bad, message", [
    ("triton://rc:80a/drtrt", "the port must be a number"),
    ("triton://rc:8001/", "expected triton://HOST:PORT/MODEL"),
    ("triton://rc:8001/drtrt/latest", "expected triton://HOST:PORT/MODEL"),
    ("triton:///drtrt", "expected triton://HOST:PORT/MODEL"),
])
def test_bad_urls_are_usage_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        TritonAddress.parse(bad)


def test_files_are_not_urls():
    for value in ("model.onnx", Path("runs/triton/model.onnx"), "tritonmodel.onnx", Path("/models/triton:x.onnx")):
        assert not is_model_url(value)
        assert model_reference(value) == Path(value)


def test_retry_policy_and_its_override(monkeypatch):
    assert list(RetryPolicy().waits()) == [0.5, 1.0, 2.0, 4.0, 8.0]          # 6 tries, 15.5 s of waiting
    assert list(RetryPolicy(attempts=8).waits())[-2:] == [8.0, 8.0]           # capped at max_wait_s
    monkeypatch.setenv("DRTRT_TRITON_RETRIES", "1")
    assert RetryPolicy.from_env().attempts == 1 and not list(RetryPolicy.from_env().waits())
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("DRTRT_TRITON_RETRIES", bad)
        with pytest.raises(ConfigError, match="DRTRT_TRITON_RETRIES"):
            RetryPolicy.from_env()


def test_which_hosts_are_this_machine():
    assert _loopback("localhost") and _loopback("127.0.0.1") and _loopback("127.3.2.1") and _loopback("::1")
    assert not _loopback("10.0.0.5") and not _loopback("rc.example.org") and not _loopback("192.168.1.20")


def test_a_failed_model_s_traceback_becomes_one_line():
    from drtrt.runtime.backends.triton import server_reason

    traceback = ('Traceback (most recent call last):\n  File "/models/drtrt/1/model.py", line 40, in initialize\n'
                 '    import onnxruntime\nModuleNotFoundError: No module named \'onnxruntime\'\n')
    assert server_reason(traceback) == "ModuleNotFoundError: No module named 'onnxruntime'"
    triton = ("ArtefactError: cannot load model.onnx as an ONNX model: protobuf parsing failed\n\nAt:\n"
              "  /models/drtrt/1/model.py(58): initialize\n")            # the Python backend's own format
    assert server_reason(triton) == "ArtefactError: cannot load model.onnx as an ONNX model: protobuf parsing failed"
    assert server_reason("") == "" and server_reason("unloaded") == "unloaded"
