"""``drtrt export-triton``: a Triton model repository for one drtrt model.

::

    REPO/
      drtrt-repository.json         what was written, from what, and every file's sha256
      NAME/                         the model: onnxruntime_onnx, tensorrt_plan, or python (ONNX Runtime
        config.pbtxt                inside Triton's Python backend, for a server without the ORT backend)
        1/model.onnx | model.plan   (+ model.py for python)
        model.engine.json           an engine's drtrt manifest (TensorRT version, GPU, profile)
      NAME_preprocess/              Python backend: photo bytes → drtrt's preprocessing and quality gate
        config.pbtxt, 1/model.py
      NAME_photo/                   ensemble: photo bytes → NAME_preprocess → NAME → quality + outputs
        config.pbtxt, 1/

Every ``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf (shipped in tritonclient)
and written with protobuf's text format, so it is well formed by construction. Names, dims and
types come from the model: an ONNX file's graph (read by ONNX Runtime), an engine's manifest. The
model's drtrt metadata and its file's sha256 travel in the configuration's ``parameters``: that
is how ``triton://`` clients know the preprocessing, the task and the model identity.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from drtrt import __version__
from drtrt.errors import ArtefactError, ConfigError
from drtrt.fileio import atomic_write, sha256_file
from drtrt.model_info import ModelInfo, require_checked
from drtrt.runtime.base import TensorSpec
from drtrt.runtime.backends.dtypes import from_numpy
from drtrt.runtime.backends.triton import FILE_PARAMETER, SHA256_PARAMETER
from drtrt.serving.triton_python import PHOTO_INPUT, QUALITY_OUTPUT

SCHEMA = "drtrt-triton-repository/1"
MANIFEST = "drtrt-repository.json"
SERVE_WITH = ("onnxruntime", "python", "tensorrt")
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
_MODEL_PY = '''"""Written by `drtrt export-triton` (drtrt {version}): {what}."""
from drtrt.serving.triton_python import {cls} as TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class RepositorySpec:
    """What to write. One of ``onnx`` / ``engine``. ``serve_with``: onnxruntime | python (an ONNX
    model) or tensorrt (an engine); default onnxruntime / tensorrt. ``max_batch``: Triton's
    max_batch_size (an engine: its profile's largest batch, which is also the default; an ONNX
    model: default 8). ``preferred`` and ``queue_delay_us``: the dynamic batcher's preferred sizes
    and longest wait to fill one (default: none and 0, where Triton advises to start: requests that
    queue while the model is busy are batched, a lone request is never held back; on this CPU a
    2 ms delay cost a lone request 2–3 ms, docs/benchmarks.md). ``kind``: auto | cpu | gpu;
    ``gpus``: which GPUs get ``instances`` instances each. ``warmup``: Triton warms the model up
    before it is ready. ``ensemble``: also write the preprocessing model and the photo ensemble,
    with ``preprocess_instances`` CPU instances (a 12-MP JPEG takes ~30 ms of a core).
    ``allow_unchecked_model``: serve a model whose accuracy check failed or never ran (refused otherwise,
    :func:`drtrt.model_info.require_checked`); its ``drtrt.gate`` travels in the config's parameters, so a
    ``triton://`` client refuses it in turn without the same flag."""

    out: Path
    onnx: Path | None = None
    engine: Path | None = None
    name: str = "drtrt"
    serve_with: str | None = None
    max_batch: int | None = None
    preferred: tuple[int, ...] = ()
    queue_delay_us: int = 0
    instances: int = 1
    kind: str = "auto"
    gpus: tuple[int, ...] = ()
    warmup: bool = False
    ensemble: bool = True
    preprocess_instances: int = 2
    command: str = ""
    allow_unchecked_model: bool = False

    def validate(self) -> None:
        if (self.onnx is None) == (self.engine is None):
            raise ConfigError("give one model: --onnx MODEL.onnx or --engine MODEL.engine")
        if not self.name.replace("_", "").replace("-", "").isalnum() or self.name[0] in "-_":
            raise ConfigError(f"--name must be letters, digits, '-' and '_' (a folder of the repository), "
                              f"found {self.name!r}")
        allowed = ("tensorrt",) if self.engine else ("onnxruntime", "python")
        if self.serve_with is not None and self.serve_with not in allowed:
            raise ConfigError(f"--serve-with {self.serve_with} does not apply to "
                              f"{'an engine' if self.engine else 'an ONNX model'}; use {' or '.join(allowed)}")
        if self.kind not in KINDS:
            raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, found {self.kind}")
        if self.instances < 1 or self.preprocess_instances < 1:
            raise ConfigError(f"--instances and --preprocess-instances must be at least 1, found "
                              f"{self.instances} and {self.preprocess_instances}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, found {self.max_batch}")
        if self.queue_delay_us < 0:
            raise ConfigError(f"--queue-delay-us must be 0 or more, found {self.queue_delay_us}")
        if any(p < 1 for p in self.preferred):
            raise ConfigError(f"--preferred batch sizes must be at least 1, found {list(self.preferred)}")

    @property
    def backend(self) -> str:
        return self.serve_with or ("tensorrt" if self.engine else "onnxruntime")


@dataclass(frozen=True)
class _Model:
    """What the repository needs to know about the model file."""

    path: Path
    info: ModelInfo
    metadata: dict[str, str]
    inputs: tuple[TensorSpec, ...]      # batch dimension first (-1)
    outputs: tuple[TensorSpec, ...]
    max_batch: int | None               # an engine's profile limit; None: any
    manifest: Path | None = None        # an engine's drtrt manifest
    sha256: str = ""                    # the file's, hashed once

    @property
    def identity(self) -> dict[str, str]:
        """The config parameters naming the served file (what a triton:// client records)."""
        return {SHA256_PARAMETER: self.sha256, FILE_PARAMETER: self.path.name}


@dataclass(frozen=True)
class Repository:
    """What :func:`write_repository` wrote: the folder, the model names, the manifest."""

    path: Path
    models: tuple[str, ...]
    manifest: dict

    def summary(self) -> str:
        return f"wrote {self.path}: {', '.join(self.models)} ({self.manifest['model']['backend']})"


def _config_module():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ModuleNotFoundError("this command needs tritonclient", name="tritonclient") from None
    return model_config_pb2


def read_model(spec: RepositorySpec) -> _Model:
    """The model's metadata and I/O: from the ONNX graph (ONNX Runtime) or the engine's manifest."""
    if spec.engine is not None:
        from drtrt.runtime.backends.trt_manifest import manifest_path, read_engine_manifest

        manifest = read_engine_manifest(spec.engine)
        maxima = {shapes["max"][0] for shapes in manifest.profile.values()}
        minima = {shapes["min"][0] for shapes in manifest.profile.values()}
        if minima != {1}:
            raise ArtefactError(f"{spec.engine.name} takes only batches of {sorted(minima)[0]} (a static-batch "
                                "engine, as for DLA); Triton batches 1 … max_batch_size: build it with a dynamic "
                                "batch (drtrt build without --dla-core)")
        info = ModelInfo.from_metadata(manifest.metadata, source=str(manifest_path(spec.engine)))
        return _Model(spec.engine, info, dict(manifest.metadata), manifest.io.inputs, manifest.io.outputs,
                      max(maxima), manifest_path(spec.engine), sha256_file(spec.engine))
    from drtrt.runtime.backends.ort import open_session, tensor_specs

    session = open_session(spec.onnx, threads=1)   # reads the model's I/O and metadata, runs nothing
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    info = ModelInfo.from_metadata(metadata, source=str(spec.onnx))
    inputs, outputs = tensor_specs(session.get_inputs()), tensor_specs(session.get_outputs())
    for tensor in inputs + outputs:
        if not tensor.shape or tensor.shape[0] != -1:
            raise ArtefactError(f"{spec.onnx.name}: '{tensor.name}' has no dynamic batch dimension "
                                f"({list(tensor.shape)}); Triton batches requests: export with a dynamic batch")
    return _Model(spec.onnx, info, {k: v for k, v in metadata.items() if k.startswith("drtrt.")}, inputs, outputs,
                  None, sha256=sha256_file(spec.onnx))


def _tensor(pb, message, spec: TensorSpec) -> None:
    """Fill a ModelInput/ModelOutput from ``spec`` (the batch dimension left to max_batch_size)."""
    data_type = from_numpy(spec.dtype, "triton", f"tensor '{spec.name}'")
    message.name = spec.name
    message.data_type = pb.DataType.Value(data_type)
    message.dims.extend(spec.shape[1:])


def _parameters(config, values: dict[str, str]) -> None:
    for key, value in sorted(values.items()):
        config.parameters[key].string_value = value


def _instance_group(pb, config, spec: RepositorySpec, kind: str) -> None:
    group = config.instance_group.add()
    group.count = spec.instances
    group.kind = pb.ModelInstanceGroup.Kind.Value(kind)
    if spec.gpus and kind != "KIND_CPU":
        group.gpus.extend(spec.gpus)


def _dynamic_batching(config, spec: RepositorySpec, max_batch: int) -> None:
    too_large = [p for p in spec.preferred if p > max_batch]
    if too_large:
        raise ConfigError(f"--preferred {too_large} exceeds the largest batch ({max_batch})")
    config.dynamic_batching.SetInParent()                 # present even when empty: dynamic batching on
    config.dynamic_batching.preferred_batch_size.extend(spec.preferred)
    config.dynamic_batching.max_queue_delay_microseconds = spec.queue_delay_us


def model_config(spec: RepositorySpec, model: _Model, max_batch: int):
    """The served model's ModelConfig: backend, I/O, batching, instances, parameters, warm-up."""
    pb = _config_module()
    config = pb.ModelConfig(name=spec.name, max_batch_size=max_batch)
    if spec.backend == "onnxruntime":
        config.platform, config.default_model_filename = "onnxruntime_onnx", "model.onnx"
    elif spec.backend == "tensorrt":
        config.platform, config.default_model_filename = "tensorrt_plan", "model.plan"
    else:
        config.backend = "python"
    for tensor in model.inputs:
        _tensor(pb, config.input.add(), tensor)
    for tensor in model.outputs:
        _tensor(pb, config.output.add(), tensor)
    _dynamic_batching(config, spec, max_batch)
    # TensorRT runs on a GPU only; drtrt's Python-backend model runs ONNX Runtime's CPU provider
    _instance_group(pb, config, spec, {"tensorrt": "KIND_GPU", "python": "KIND_CPU"}.get(spec.backend,
                                                                                         KINDS[spec.kind]))
    _parameters(config, {**model.metadata, **model.identity})
    if spec.warmup:
        for batch in sorted({1, max_batch}):
            warm = config.model_warmup.add(name=f"zeros_batch_{batch}", batch_size=batch)
            for tensor in model.inputs:
                data = warm.inputs[tensor.name]
                data.data_type = pb.DataType.Value(from_numpy(tensor.dtype, "triton", f"tensor '{tensor.name}'"))
                data.dims.extend(tensor.shape[1:])
                data.zero_data = True
    return config


def preprocess_config(spec: RepositorySpec, model: _Model, max_batch: int):
    """The ensemble's first step: photo bytes → the model's input and the quality verdict."""
    pb = _config_module()
    name = model.info.task.input_name
    image = next(t for t in model.inputs if t.name == name)
    config = pb.ModelConfig(name=f"{spec.name}_preprocess", backend="python", max_batch_size=max_batch)
    photo = config.input.add(name=PHOTO_INPUT, data_type=pb.TYPE_STRING)
    photo.dims.append(1)
    _tensor(pb, config.output.add(), TensorSpec(name, image.shape, "float32"))
    quality = config.output.add(name=QUALITY_OUTPUT, data_type=pb.TYPE_STRING)
    quality.dims.append(1)
    group = config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU)
    group.count = spec.preprocess_instances
    # No model_warmup here: Triton 2.51 (the nvidia-pytriton wheel's) crashed warming a TYPE_STRING
    # input from a file (the stub got the file's first byte repeated as the element's length). The
    # step imports and sets up everything it needs in initialize(), before the server is ready.
    _parameters(config, model.metadata)
    return config


def ensemble_config(spec: RepositorySpec, model: _Model, max_batch: int):
    """Photo bytes in; the quality verdict and the model's outputs out."""
    pb = _config_module()
    config = pb.ModelConfig(name=f"{spec.name}_photo", platform="ensemble", max_batch_size=max_batch)
    photo = config.input.add(name=PHOTO_INPUT, data_type=pb.TYPE_STRING)
    photo.dims.append(1)
    quality = config.output.add(name=QUALITY_OUTPUT, data_type=pb.TYPE_STRING)
    quality.dims.append(1)
    for tensor in model.outputs:
        _tensor(pb, config.output.add(), tensor)
    name = model.info.task.input_name
    first = config.ensemble_scheduling.step.add(model_name=f"{spec.name}_preprocess", model_version=-1)
    first.input_map[PHOTO_INPUT] = PHOTO_INPUT
    first.output_map[name] = "preprocessed"
    first.output_map[QUALITY_OUTPUT] = QUALITY_OUTPUT
    second = config.ensemble_scheduling.step.add(model_name=spec.name, model_version=-1)
    second.input_map[name] = "preprocessed"
    for tensor in model.outputs:
        second.output_map[tensor.name] = tensor.name
    _parameters(config, {**model.metadata, **model.identity})
    return config


def write_repository(spec: RepositorySpec, force: bool = False) -> Repository:
    """Write the repository into ``spec.out`` (built beside it, then moved into place)."""
    from google.protobuf import text_format

    spec.validate()
    model = read_model(spec)
    gate = require_checked(model.info, str(model.path), spec.allow_unchecked_model, "serving it")
    max_batch = spec.max_batch or model.max_batch or 8
    if model.max_batch is not None and max_batch > model.max_batch:
        raise ConfigError(f"--max-batch {max_batch} exceeds the engine's profile ({model.max_batch}); rebuild "
                          f"it with drtrt build --max-batch {max_batch}")
    out = Path(spec.out)
    occupied = any(out.iterdir()) if out.is_dir() else out.exists()
    ours = (out / MANIFEST).is_file()
    if occupied and not (force and ours):
        raise ConfigError(f"{out} exists and is not empty; choose a new folder"
                          + (" or pass --force to replace this drtrt repository" if ours else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        configs = {spec.name: model_config(spec, model, max_batch)}
        version = work / spec.name / "1"
        version.mkdir(parents=True)
        if spec.backend == "tensorrt":
            shutil.copyfile(model.path, version / "model.plan")
            shutil.copyfile(model.manifest, work / spec.name / "model.engine.json")
        else:
            shutil.copyfile(model.path, version / "model.onnx")
        if spec.backend == "python":
            _model_py(version, "OnnxModel", "the ONNX model on ONNX Runtime in Triton's Python backend")
        if spec.ensemble:
            configs[f"{spec.name}_preprocess"] = preprocess_config(spec, model, max_batch)
            configs[f"{spec.name}_photo"] = ensemble_config(spec, model, max_batch)
            pre = work / f"{spec.name}_preprocess"
            _model_py(pre / "1", "PreprocessModel", "photo bytes → drtrt's preprocessing and quality gate")
            (work / f"{spec.name}_photo" / "1").mkdir(parents=True)
        for name, config in configs.items():
            (work / name / "config.pbtxt").write_text(text_format.MessageToString(config))
        manifest = _manifest(spec, model, max_batch, work, list(configs))
        manifest["model"]["gate"] = gate.to_dict()
        atomic_write(work / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Repository(out, tuple(configs), manifest)


def _model_py(folder: Path, cls: str, what: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(_MODEL_PY.format(version=__version__, what=what, cls=cls))


def _manifest(spec: RepositorySpec, model: _Model, max_batch: int, root: Path, models: list[str]) -> dict:
    files = {str(p.relative_to(root)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(root.rglob("*")) if p.is_file()}
    engine = json.loads(model.manifest.read_text()) if model.manifest else None
    return {
        "schema": SCHEMA, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "drtrt_version": __version__, "command": spec.command,
        "model": {"name": spec.name, "file": model.path.name, "sha256": model.sha256,
                  "backend": spec.backend, "precision": model.info.precision, "max_batch_size": max_batch,
                  "inputs": [t.to_dict() for t in model.inputs], "outputs": [t.to_dict() for t in model.outputs],
                  "metadata": model.metadata, **({"engine_manifest": engine} if engine else {})},
        "models": models, "ensemble": f"{spec.name}_photo" if spec.ensemble else None,
        "warmup": spec.warmup, "files": files,
    }
