"""The models a drtrt repository runs in Triton's Python backend (``model.py`` imports one of these).

- :class:`OnnxModel`: the ONNX model on ONNX Runtime, for a server without Triton's ONNX Runtime
  backend (the ``nvidia-pytriton`` wheel's server ships only the Python backend). Triton's
  dynamic batcher hands it several requests at once: they run as one batch and are split back.
- :class:`PreprocessModel`: the ensemble's first step, raw photo bytes → drtrt's own decode,
  preprocessing and quality gate (the same functions ``drtrt screen`` runs) → the model's input
  tensor and the gate's verdict as JSON, so a client can send photos as the camera wrote them.

``triton_python_backend_utils`` exists only inside Triton's Python backend stub; it is imported
when Triton initialises the model. Nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from drtrt.errors import DrtrtError, ImageError
from drtrt.model_info import ModelInfo
from drtrt.preprocess import decode_image, preprocess_rgb

PHOTO_INPUT = "photo"          # the ensemble's input: the photo's bytes (JPEG, PNG, TIFF, DICOM …)
QUALITY_OUTPUT = "quality"     # the gate's verdict, JSON: gradable, code, reason, measures


def _backend():
    import triton_python_backend_utils as pb_utils   # only inside Triton's Python backend

    return pb_utils


def _config_parameters(config: dict) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in (config.get("parameters") or {}).items()}


def _instances(config: dict) -> int:
    return sum(int(group.get("count", 1) or 1) for group in config.get("instance_group", [])) or 1


def _errors(pb_utils, requests, message: str) -> list:
    return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)) for _ in requests]


class OnnxModel:
    """``model.onnx`` beside ``model.py`` on ONNX Runtime's CPU provider; the CPUs this process may
    use are shared between the instances of the model (``instance_group``)."""

    def initialize(self, args: dict) -> None:
        from drtrt.cpu import usable_cpus
        from drtrt.runtime.backends.ort import OrtRunner

        config = json.loads(args["model_config"])
        path = Path(args["model_repository"]) / str(args["model_version"]) / "model.onnx"
        self.runner = OrtRunner(path, threads=max(1, usable_cpus() // _instances(config)))
        self.runner.activate()
        self.input = self.runner.input_specs[0].name
        self.outputs = [output["name"] for output in config["output"]]

    def execute(self, requests: list) -> list:
        pb_utils = _backend()
        arrays = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        try:
            outputs = self.runner.infer({self.input: np.concatenate(arrays) if len(arrays) > 1 else arrays[0]})
        except DrtrtError as exc:
            return _errors(pb_utils, requests, str(exc))
        responses, start = [], 0
        for array in arrays:
            end = start + len(array)
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(outputs[name][start:end])) for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses

    def finalize(self) -> None:
        self.runner.deactivate()


class PreprocessModel:
    """Photo bytes → (model input, quality verdict); the preprocessing comes from the model's
    metadata in this model's ``config.pbtxt`` parameters, as it does from the ONNX file locally.

    An ungradable photo still gets its tensor (an ensemble runs every step), and its verdict says
    ``"gradable": false`` with the reason: a client must not read a grade from it. A file that
    cannot be decoded fails its request with the reason ``drtrt screen`` gives."""

    def initialize(self, args: dict) -> None:
        from drtrt.runtime.quality import QualityConfig

        config = json.loads(args["model_config"])
        self.info = ModelInfo.from_metadata(_config_parameters(config), source=f"{args['model_name']} config.pbtxt")
        self.spec = self.info.preprocess
        self.quality = QualityConfig()
        self.tensor_name = next(o["name"] for o in config["output"] if o["name"] != QUALITY_OUTPUT)

    def prepare(self, data: bytes) -> tuple[np.ndarray, dict]:
        """One photo's input tensor (3, S, S) and the quality gate's verdict (a dict)."""
        from drtrt.runtime.quality import analysis_view, assess_quality, decode_side

        rgb, original_size, _ = decode_image(data, decode_side(self.spec.size))
        pre = preprocess_rgb(rgb, self.spec, original_size=original_size)
        view = analysis_view(rgb, pre) if pre.geometry.fov.found else None
        verdict = assess_quality(rgb, pre, self.quality, view)
        return pre.tensor, verdict.to_dict()

    def execute(self, requests: list) -> list:
        pb_utils = _backend()
        responses = []
        for request in requests:
            photos = pb_utils.get_input_tensor_by_name(request, PHOTO_INPUT).as_numpy()
            try:
                prepared = [self.prepare(bytes(photo)) for photo in photos.reshape(-1)]
            except (ImageError, MemoryError) as exc:
                text = str(exc) if isinstance(exc, ImageError) else "not enough memory to decode; downscale it"
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(text)))
                continue
            tensor = np.stack([t for t, _ in prepared]).astype(np.float32, copy=False)
            verdicts = np.array([json.dumps(v).encode() for _, v in prepared], dtype=np.object_).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(self.tensor_name, np.ascontiguousarray(tensor)),
                pb_utils.Tensor(QUALITY_OUTPUT, verdicts)]))
        return responses
