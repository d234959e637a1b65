"""``drtrt export-triton``: every config.pbtxt parsed back with Triton's own ModelConfig protobuf and held
against the model (its ONNX graph read by ONNX Runtime, or its engine manifest), the ensemble's wiring,
the repository manifest, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="export-triton needs tritonclient (pip install 'drtrt[triton]')")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from drtrt.cli import app  # noqa: E402
from drtrt.fileio import sha256_file  # noqa: E402
from drtrt.model_info import ModelInfo  # noqa: E402

runner = CliRunner()


def parse(path: Path) -> pb.ModelConfig:
    return text_format.Parse(path.read_text(), pb.ModelConfig())


def onnx_io(path: Path) -> tuple[dict, dict, dict]:
    """The ONNX's inputs and outputs (name → (dims without batch, Triton type)) and metadata, by ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    types = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}

    def table(values):
        return {v.name: ([d if isinstance(d, int) else -1 for d in v.shape[1:]], types[v.type]) for v in values}

    return table(session.get_inputs()), table(session.get_outputs()), session.get_modelmeta().custom_metadata_map


def tensors(values) -> dict:
    return {t.name: (list(t.dims), pb.DataType.Name(t.data_type)) for t in values}


def export(*args: str):
    result = runner.invoke(app, ["export-triton", *args])
    return result


def test_onnx_repository_configs_match_the_model(tiny_onnx, tmp_path):
    out = tmp_path / "repo"
    result = export("--onnx", str(tiny_onnx), "--out", str(out), "--warmup", "--instances", "2", "--gpus", "0,1",
                    "--preferred", "2,4", "--max-batch", "4", "--queue-delay-us", "500")
    assert result.exit_code == 0, result.output
    inputs, outputs, meta = onnx_io(tiny_onnx)

    model = parse(out / "drtrt" / "config.pbtxt")
    assert model.name == "drtrt" and model.platform == "onnxruntime_onnx"
    assert model.default_model_filename == "model.onnx" and (out / "drtrt" / "1" / "model.onnx").read_bytes() == \
        tiny_onnx.read_bytes()
    assert tensors(model.input) == inputs and tensors(model.output) == outputs
    assert model.max_batch_size == 4
    assert list(model.dynamic_batching.preferred_batch_size) == [2, 4]
    assert model.dynamic_batching.max_queue_delay_microseconds == 500
    group, = model.instance_group
    assert group.count == 2 and group.kind == pb.ModelInstanceGroup.KIND_AUTO and list(group.gpus) == [0, 1]
    parameters = {k: v.string_value for k, v in model.parameters.items()}
    assert parameters["model_file_sha256"] == sha256_file(tiny_onnx)
    assert ModelInfo.from_metadata(parameters) == ModelInfo.from_metadata(dict(meta))
    # warm-up: zeros of every input, at batch 1 and at the largest batch
    assert sorted(w.batch_size for w in model.model_warmup) == [1, 4]
    for warm in model.model_warmup:
        assert {name: (list(data.dims), pb.DataType.Name(data.data_type)) for name, data in warm.inputs.items()} \
            == inputs and all(data.zero_data for data in warm.inputs.values())

    info = ModelInfo.from_metadata(dict(meta))
    pre = parse(out / "drtrt_preprocess" / "config.pbtxt")
    assert pre.backend == "python" and pre.max_batch_size == 4
    assert tensors(pre.input) == {"photo": ([1], "TYPE_STRING")}
    assert tensors(pre.output) == {info.task.input_name: inputs[info.task.input_name], "quality": ([1], "TYPE_STRING")}
    assert ModelInfo.from_metadata({k: v.string_value for k, v in pre.parameters.items()}) == info
    assert "PreprocessModel as TritonPythonModel" in (out / "drtrt_preprocess" / "1" / "model.py").read_text()

    ensemble = parse(out / "drtrt_photo" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and (out / "drtrt_photo" / "1").is_dir()
    assert tensors(ensemble.input) == {"photo": ([1], "TYPE_STRING")}
    assert tensors(ensemble.output) == {**outputs, "quality": ([1], "TYPE_STRING")}
    # the wiring: every step reads what the ensemble or an earlier step produced, the outputs are all made
    configs = {"drtrt": model, "drtrt_preprocess": pre}
    available = {"photo"}
    for step in ensemble.ensemble_scheduling.step:
        used = configs[step.model_name]
        assert set(step.input_map) == {t.name for t in used.input} and set(step.input_map.values()) <= available
        assert set(step.output_map) <= {t.name for t in used.output}
        available |= set(step.output_map.values())
    assert {t.name for t in ensemble.output} <= available

    manifest = json.loads((out / "drtrt-repository.json").read_text())
    assert manifest["model"]["sha256"] == sha256_file(tiny_onnx) and manifest["model"]["backend"] == "onnxruntime"
    assert manifest["models"] == ["drtrt", "drtrt_preprocess", "drtrt_photo"]
    assert manifest["command"].startswith("drtrt ")       # sys.argv: the command as typed
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"drtrt-repository.json"}
    assert set(manifest["files"]) == files
    assert all(sha256_file(out / name) == entry["sha256"] for name, entry in manifest["files"].items())


def test_python_backend_repository_runs_onnx_runtime_on_cpu(tiny_onnx, tmp_path):
    out = tmp_path / "repo"
    result = export("--onnx", str(tiny_onnx), "--out", str(out), "--serve-with", "python", "--no-ensemble",
                    "--name", "grader")
    assert result.exit_code == 0, result.output
    model = parse(out / "grader" / "config.pbtxt")
    assert model.backend == "python" and not model.platform and model.max_batch_size == 8
    assert model.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert model.HasField("dynamic_batching") and not model.dynamic_batching.preferred_batch_size
    assert model.dynamic_batching.max_queue_delay_microseconds == 0
    assert "OnnxModel as TritonPythonModel" in (out / "grader" / "1" / "model.py").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["drtrt-repository.json", "grader"]


def test_engine_repository_takes_the_profile_and_carries_the_manifest(tensorrt, tiny_onnx, tmp_path, monkeypatch):
    from drtrt.export.build_config import BuildConfig
    from drtrt.export.trt_build import build_engine

    monkeypatch.setenv("DRTRT_CACHE_DIR", str(tmp_path / "cache"))
    engine = tmp_path / "model.engine"
    build_engine(BuildConfig(onnx=tiny_onnx, out=engine, precision="fp16", max_batch=4))
    manifest = json.loads((tmp_path / "model.engine.json").read_text())
    out = tmp_path / "repo"
    # the build converted the FP32 ONNX to FP16 without checking it against FP32: the engine says so
    refused = export("--engine", str(engine), "--out", str(out))
    assert refused.exit_code == 4 and "was not checked against its FP32 reference" in refused.output
    assert not out.exists()
    result = export("--engine", str(engine), "--out", str(out), "--allow-unchecked-model")
    assert result.exit_code == 0, result.output
    model = parse(out / "drtrt" / "config.pbtxt")
    assert model.platform == "tensorrt_plan" and model.default_model_filename == "model.plan"
    assert model.max_batch_size == 4                                  # the engine's profile
    assert model.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    expected = {t["name"]: ([d for d in t["shape"][1:]], {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}[t["dtype"]])
                for t in manifest["io"]["inputs"]}
    assert tensors(model.input) == expected
    assert [t.name for t in model.output] == [t["name"] for t in manifest["io"]["outputs"]]
    assert (out / "drtrt" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert json.loads((out / "drtrt" / "model.engine.json").read_text()) == manifest
    repo = json.loads((out / "drtrt-repository.json").read_text())
    assert repo["model"]["engine_manifest"]["tensorrt"] == manifest["tensorrt"]
    assert repo["model"]["precision"] == "fp16" and repo["model"]["gate"]["status"] == "unchecked"

    result = export("--engine", str(engine), "--out", str(tmp_path / "big"), "--max-batch", "8",
                    "--allow-unchecked-model")
    assert result.exit_code == 2 and "exceeds the engine's profile (4)" in result.output
    assert not (tmp_path / "big").exists()


def test_refusals_are_one_line(tiny_onnx, tmp_path):
    cases = [
        ([], "give one model"),
        (["--onnx", str(tiny_onnx), "--engine", str(tiny_onnx)], "give one model"),
        (["--onnx", str(tiny_onnx), "--serve-with", "tensorrt"], "--serve-with tensorrt does not apply"),
        (["--onnx", str(tiny_onnx), "--name", "../up"], "--name must be"),
        (["--onnx", str(tiny_onnx), "--kind", "tpu"], "--kind must be"),
        (["--onnx", str(tiny_onnx), "--preferred", "4,x"], "--preferred takes numbers"),
        (["--onnx", str(tiny_onnx), "--preferred", "16"], "exceeds the largest batch"),
        (["--onnx", str(tmp_path / "missing.onnx")], "model file not found"),
        (["--engine", str(tiny_onnx)], "no manifest"),
    ]
    for args, message in cases:
        result = export(*args, "--out", str(tmp_path / "r"))
        assert result.exit_code in (1, 2), (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
        assert result.output.count("error:") == 1
        assert not (tmp_path / "r").exists()
    assert not list(tmp_path.glob(".r.tmp-*"))                       # nothing half-written left beside it


def test_an_existing_folder_is_replaced_only_when_it_is_a_drtrt_repository(tiny_onnx, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    result = export("--onnx", str(tiny_onnx), "--out", str(other), "--force")
    assert result.exit_code == 2 and "exists and is not empty" in result.output
    assert (other / "notes.txt").read_text() == "keep me"

    out = tmp_path / "repo"
    assert export("--onnx", str(tiny_onnx), "--out", str(out)).exit_code == 0
    result = export("--onnx", str(tiny_onnx), "--out", str(out), "--no-ensemble")
    assert result.exit_code == 2 and "--force" in result.output
    result = export("--onnx", str(tiny_onnx), "--out", str(out), "--no-ensemble", "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["drtrt", "drtrt-repository.json"]


def test_without_tritonclient_both_commands_say_what_to_install(tiny_onnx, tmp_path, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "tritonclient" or m.startswith("tritonclient.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tritonclient", None)
    result = export("--onnx", str(tiny_onnx), "--out", str(tmp_path / "repo"))
    assert result.exit_code == 1 and "install -e" in result.output and "[triton]'" in result.output, result.output
    result = runner.invoke(app, ["screen", str(tiny_onnx), "--model", "triton://127.0.0.1:8001/drtrt"])
    assert result.exit_code == 1 and "install -e" in result.output and "[triton]'" in result.output, result.output
    assert "Traceback" not in result.output
