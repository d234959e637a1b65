"""ONNX Runtime backend: CPU everywhere, CUDA/TensorRT execution providers when present."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from drtrt.errors import ArtefactError, BackendUnavailable, ConfigError, DrtrtError
from drtrt.model_info import ModelInfo
from drtrt.runtime.base import Runner, Signature, TensorSpec

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}
# ONNX Runtime names element types "tensor(float)"; the runner contract speaks NumPy.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
               "tensor(bool)": "bool"}


class OrtRunner(Runner):
    """Runs an ONNX model with the providers asked for (default: CPU only, never silently another)."""

    backend = "ort"

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cpu",), threads: int | None = None) -> None:
        super().__init__(path)
        self.providers = [PROVIDER_ALIASES.get(p, p) for p in providers]
        self.threads = threads
        self._session = None

    def _activate(self) -> Signature:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed; pip install drtrt") from None
        if not self.path.is_file():
            raise ArtefactError(f"model file not found: {self.path}")
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise ConfigError(f"ONNX Runtime provider {missing[0]} is not available here; "
                              f"available: {', '.join(available)}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ArtefactError(f"cannot load {self.path} as an ONNX model: {first}") from None
        info = ModelInfo.from_metadata(self._session.get_modelmeta().custom_metadata_map, source=str(self.path))
        inputs = tuple(TensorSpec(i.name, tuple(d if isinstance(d, int) and d > 0 else -1 for d in i.shape),
                                  _ORT_DTYPES.get(i.type, i.type)) for i in self._session.get_inputs())
        return Signature(info, inputs, tuple(o.name for o in self._session.get_outputs()))

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(None, dict(feeds))
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types (out of memory, a kernel failing)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DrtrtError(f"ONNX Runtime could not run {self.path.name}: {first}") from None
        return dict(zip(self.output_names, outputs))

    def _deactivate(self) -> None:
        self._session = None
