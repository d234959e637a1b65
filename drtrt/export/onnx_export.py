"""Checkpoint → ONNX (SPEC §5): opset 17, input ``image`` [N,3,S,S] with dynamic N, logits
outputs, simplified with onnxslim, checked, metadata embedded, parity-checked against PyTorch.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drtrt.errors import ArtefactError
from drtrt.manifest import INPUT_NAME, ModelInfo, sha256_file
from drtrt.preprocess import PreprocessSpec
from drtrt.train.trainer import load_checkpoint, model_from_checkpoint

OPSET = 17


class _TupleOutputs(torch.nn.Module):
    """ONNX export wants positional outputs; keep the model's names and order.

    Create it in eval mode: the exporter restores the wrapper's training flag afterwards,
    recursively, which would otherwise leave the wrapped model's BatchNorm in training mode.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        outputs = self.model(image)
        return tuple(outputs[name] for name in self.model.output_names)


@dataclass
class ExportResult:
    path: Path
    output_names: tuple[str, ...]
    max_abs_diff: dict[str, float]
    simplified: bool

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        return f"wrote {self.path} (opset {OPSET}); ONNX Runtime vs PyTorch max |Δ|: {diffs}"


def export_onnx(checkpoint: str | Path, out: str | Path, simplify: bool = True, check_batch: int = 2,
                tolerance: float = 1e-4) -> ExportResult:
    """Export ``checkpoint`` to ``out`` and verify it against PyTorch on random inputs.

    Raises :class:`ArtefactError` when ONNX Runtime and PyTorch differ by more than
    ``tolerance`` on any output (the file is kept for inspection).
    """
    import onnx

    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    spec = PreprocessSpec.from_dict(ckpt["preprocess"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = tuple(model.output_names)
    dummy = torch.zeros(1, 3, spec.size, spec.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _TupleOutputs(model).eval(), (dummy,), str(out), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=list(names),
            dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *names)}, do_constant_folding=True)
    proto = onnx.load(str(out))
    simplified = False
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
        simplified = True
    info = ModelInfo(preprocess=spec, checkpoint_sha256=sha256_file(checkpoint),
                     model_config=json.dumps(ckpt["model_config"], sort_keys=True),
                     extra=(("source_epoch", str(ckpt.get("epoch", ""))),))
    set_metadata(proto, info.to_metadata())
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    diffs = compare_with_torch(model, out, spec.size, check_batch)
    worst = max(diffs.values())
    if worst > tolerance:
        raise ArtefactError(f"exported model differs from PyTorch by {worst:.2e} (> {tolerance:g}); see {out}")
    return ExportResult(out, names, diffs, simplified)


def set_metadata(proto, metadata: dict[str, str]) -> None:
    """Replace drtrt's entries in ``metadata_props`` (other tools' entries are kept)."""
    keep = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def compare_with_torch(model: torch.nn.Module, onnx_path: Path, size: int, batch: int, seed: int = 0) -> dict[str, float]:
    """Max |Δ| per output between PyTorch and ONNX Runtime (CPU) on a random batch."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    model.eval()
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT_NAME: x})))
    return {k: float(np.max(np.abs(ref[k] - got[k]))) for k in ref}
