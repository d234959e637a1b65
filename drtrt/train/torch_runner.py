"""PyTorch backend: a drtrt checkpoint behind the same :class:`~drtrt.runtime.base.Runner` interface.

``drtrt evaluate --model RUN/best.pt`` and parity checks use it, so a checkpoint is scored by
exactly the code that scores ONNX models and engines (``evaluate_runner``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from drtrt.errors import ConfigError
from drtrt.manifest import INPUT_NAME, ModelInfo, sha256_file
from drtrt.preprocess import PreprocessSpec
from drtrt.runtime.base import Runner
from drtrt.train.model import OUTPUT_NAMES
from drtrt.train.trainer import load_checkpoint, model_from_checkpoint, resolve_device


class TorchRunner(Runner):
    """Runs a checkpoint in eval mode, FP32, no autograd. ``device``: auto | cpu | cuda[:N]."""

    backend = "torch"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        super().__init__(path)
        self.device = resolve_device(device)
        self._model: torch.nn.Module | None = None
        self._info: ModelInfo | None = None
        self._outputs: tuple[str, ...] = ()

    def activate(self) -> None:
        ckpt = load_checkpoint(self.path)
        self._model = model_from_checkpoint(ckpt).to(self.device)
        arch = ckpt["model_config"].get("arch", "multitask")
        self._outputs = tuple(n for n in OUTPUT_NAMES
                              if not (arch == "vgg16" and n == "lesion_logits")
                              and not (arch == "unet-vgg16" and n == "grade_logits"))
        self._info = ModelInfo(preprocess=PreprocessSpec.from_dict(ckpt["preprocess"]),
                               checkpoint_sha256=sha256_file(self.path),
                               model_config=json.dumps(ckpt["model_config"], sort_keys=True))
        self.active = True

    @torch.no_grad()
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._model is None:
            raise RuntimeError("TorchRunner.infer() called before activate()")
        if INPUT_NAME not in feeds:
            raise ConfigError(f"TorchRunner expects the input '{INPUT_NAME}', got {', '.join(feeds) or 'nothing'}")
        x = torch.from_numpy(np.ascontiguousarray(feeds[INPUT_NAME], dtype=np.float32)).to(self.device)
        outputs = self._model(x)
        return {name: outputs[name].float().cpu().numpy() for name in self._outputs}

    def deactivate(self) -> None:
        self._model = None
        self.active = False

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("TorchRunner.info read before activate()")
        return self._info

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._outputs
