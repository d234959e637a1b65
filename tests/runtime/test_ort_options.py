"""ONNX Runtime sessions drtrt makes (open_session): as many threads as usable CPUs, no spin-waiting unless
asked for, graph optimisation off only on request, one line for a file ONNX Runtime cannot load."""

from __future__ import annotations

import pytest

from drtrt import cpu
from drtrt.errors import ArtefactError, ConfigError, DrtrtError
from drtrt.runtime.backends import ort as drtrt_ort
from drtrt.runtime.backends.ort import INTER_OP_SPINNING, INTRA_OP_SPINNING, OrtRunner, open_session, session_options


def spinning(options) -> tuple[str, str]:
    return options.get_session_config_entry(INTRA_OP_SPINNING), options.get_session_config_entry(INTER_OP_SPINNING)


def test_default_options_use_the_usable_cpus_and_never_spin(monkeypatch):
    monkeypatch.delenv(cpu.SPIN_ENV, raising=False)
    monkeypatch.setattr(drtrt_ort, "usable_cpus", lambda: 3)
    options = session_options()
    assert options.intra_op_num_threads == 3
    assert spinning(options) == ("0", "0")
    assert options.log_severity_level == 3


def test_threads_and_spinning_can_be_chosen(monkeypatch):
    monkeypatch.delenv(cpu.SPIN_ENV, raising=False)
    options = session_options(threads=1, spin=True)
    assert options.intra_op_num_threads == 1 and spinning(options) == ("1", "1")
    monkeypatch.setenv(cpu.SPIN_ENV, "1")                   # a dedicated machine
    assert spinning(session_options()) == ("1", "1")
    assert spinning(session_options(spin=False)) == ("0", "0")


@pytest.mark.parametrize("env, kwargs, threads, spins", [
    (None, {}, None, "0"),
    ("1", {}, None, "1"),
    (None, {"threads": 1, "spin": True}, 1, "1"),
])
def test_the_runner_session_carries_the_options(tiny_onnx, monkeypatch, env, kwargs, threads, spins):
    if env is None:
        monkeypatch.delenv(cpu.SPIN_ENV, raising=False)
    else:
        monkeypatch.setenv(cpu.SPIN_ENV, env)
    with OrtRunner(tiny_onnx, **kwargs) as runner:
        options = runner._session.get_session_options()   # what the live session was made with
        assert options.intra_op_num_threads == (threads or cpu.usable_cpus())
        assert spinning(options) == (spins, spins)


def test_open_session_takes_the_options_and_turns_optimisation_off_on_request(tiny_onnx, monkeypatch):
    monkeypatch.delenv(cpu.SPIN_ENV, raising=False)
    import onnxruntime as ort

    default = open_session(tiny_onnx).get_session_options()
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert default.intra_op_num_threads == cpu.usable_cpus() and spinning(default) == ("0", "0")
    plain = open_session(tiny_onnx.read_bytes(), threads=1, optimize=False).get_session_options()
    assert plain.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert plain.intra_op_num_threads == 1 and plain.log_severity_level == 3


def test_a_file_onnx_runtime_cannot_load_is_one_line_bytes_keep_its_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ArtefactError, match="model file not found"):
        open_session(tmp_path / "none.onnx")
    with pytest.raises(ArtefactError, match=r"^cannot load .*bad\.onnx as an ONNX model: [^\n]+$"):
        open_session(bad)
    with pytest.raises(Exception) as caught:          # drtrt's own graph: ONNX Runtime's error, whole
        open_session(b"not a model")
    assert not isinstance(caught.value, DrtrtError)


def test_open_session_refuses_a_provider_this_install_lacks(tiny_onnx):
    with pytest.raises(ConfigError, match="provider NoSuchExecutionProvider is not available here"):
        open_session(tiny_onnx, providers=("NoSuchExecutionProvider",))
