"""ONNX Runtime backend: CPU everywhere, CUDA/TensorRT execution providers when present."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from drtrt.errors import ArtefactError, BackendUnavailable, ConfigError
from drtrt.manifest import ModelInfo
from drtrt.runtime.base import Runner

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}


class OrtRunner(Runner):
    """Runs an ONNX model with the providers asked for (default: CPU only, never silently another)."""

    backend = "ort"

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cpu",), threads: int | None = None) -> None:
        super().__init__(path)
        self.providers = [PROVIDER_ALIASES.get(p, p) for p in providers]
        self.threads = threads
        self._session = None
        self._info: ModelInfo | None = None

    def activate(self) -> None:
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
        meta = self._session.get_modelmeta().custom_metadata_map
        self._info = ModelInfo.from_metadata(meta, source=str(self.path))
        self.active = True

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise RuntimeError("OrtRunner.infer() called before activate()")
        outputs = self._session.run(None, dict(feeds))
        return dict(zip(self.output_names, outputs))

    def deactivate(self) -> None:
        self._session = None
        self.active = False

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("OrtRunner.info read before activate()")
        return self._info

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self._session.get_outputs())
