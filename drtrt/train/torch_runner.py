"""PyTorch backend: a drtrt checkpoint behind the same :class:`~drtrt.runtime.base.Runner` contract.

``drtrt evaluate --model RUN/best.pt`` and parity checks use it, so a checkpoint is scored by
exactly the code that scores ONNX models and engines (``evaluate_runner``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from drtrt.runtime.base import Runner, Signature, TensorSpec
from drtrt.train.checkpoint import checkpoint_info, load_checkpoint, model_from_checkpoint
from drtrt.train.distributed import limit_cpu_threads
from drtrt.train.train_config import resolve_device


class TorchRunner(Runner):
    """Runs a checkpoint in eval mode, FP32, no autograd. ``device``: auto | cpu | cuda[:N]."""

    backend = "torch"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        super().__init__(path)
        self.device = resolve_device(device)
        self._model: torch.nn.Module | None = None

    def _activate(self) -> Signature:
        ckpt = load_checkpoint(self.path)
        info = checkpoint_info(ckpt, self.path)
        self._model = model_from_checkpoint(ckpt).to(self.device)
        if self.device.type == "cpu":
            limit_cpu_threads()
        size = info.preprocess.size
        return Signature(info, (TensorSpec(info.task.input_name, (-1, 3, size, size), "float32"),), info.task.outputs)

    @torch.no_grad()
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(feeds[self.info.task.input_name])).to(self.device)
        outputs = self._model(x)
        return {name: outputs[name].float().cpu().numpy() for name in self.output_names}

    def _deactivate(self) -> None:
        self._model = None
