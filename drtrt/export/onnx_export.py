"""PyTorch model → ONNX (SPEC §5): opset 17, the task's input [N,3,S,S] with dynamic N, logits
outputs, simplified with onnxslim (``docs/onnx-simplifiers.md`` says why not onnxsim), checked,
metadata embedded, parity-checked against PyTorch. The checkpoint side (loading the weights,
building the metadata) is :func:`drtrt.train.checkpoint.export_checkpoint`'s.

The FP32 ONNX is the reference every FP16 and INT8 model is gated against; its own reference is the
PyTorch model, and the parity check here is its gate: the verdict (``drtrt.gate``, against "pytorch",
the checkpoint's sha256 and the max |Δ| against the tolerance) is written into the file, "failed"
when the check fails (the file is kept for inspection, and commands that screen refuse it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drtrt.errors import ArtefactError
from drtrt.model_info import GATE_KEY, ModelInfo, gate_record
from drtrt.runtime.backends.ort import open_session

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


def export_onnx(model: torch.nn.Module, info: ModelInfo, out: str | Path, simplify: bool = True, check_batch: int = 2,
                tolerance: float = 1e-4) -> ExportResult:
    """Export ``model`` (eval mode; its ``output_names`` are the task's outputs) to ``out`` with ``info``
    as its metadata, and verify it against PyTorch on random inputs.

    Raises :class:`ArtefactError` when ONNX Runtime and PyTorch differ by more than
    ``tolerance`` on any output (the file is kept for inspection).
    """
    import onnx

    from drtrt.calibration.graph import write_info

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names, input_name, size = tuple(model.output_names), info.task.input_name, info.preprocess.size
    if names != info.task.outputs:
        raise ArtefactError(f"the model returns {', '.join(names)} but its task names {', '.join(info.task.outputs)}")
    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _TupleOutputs(model).eval(), (dummy,), str(out), dynamo=False, opset_version=OPSET,
            input_names=[input_name], output_names=list(names),
            dynamic_axes={n: {0: "batch"} for n in (input_name, *names)}, do_constant_folding=True)
    proto = onnx.load(str(out))
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    write_info(proto, info.derive(info.precision, **{GATE_KEY: gate_record(
        "unchecked", "pytorch", info.checkpoint_sha256, "not compared with PyTorch yet")}))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    diffs = compare_with_torch(model, out, size, check_batch)
    worst = max(diffs.values())
    if not np.isfinite(worst):     # NaN compares false with any tolerance: say it, or a damaged model ships
        out.unlink(missing_ok=True)
        raise ArtefactError("the checkpoint gives NaN or infinite outputs: its weights are damaged (a corrupt file) "
                            "or its training diverged; nothing was exported — train it again or use another checkpoint")
    checks = (f"ONNX Runtime vs PyTorch max |Δ| {worst:.2e}, tolerance {tolerance:g}, on {check_batch} random "
              "inputs")
    write_info(proto, info.derive(info.precision, **{GATE_KEY: gate_record(
        "passed" if worst <= tolerance else "failed", "pytorch", info.checkpoint_sha256, checks)}))
    onnx.save(proto, str(out))     # the same graph, with the verdict in its metadata
    if worst > tolerance:
        raise ArtefactError(f"exported model differs from PyTorch by {worst:.2e} (> {tolerance:g}); see {out}")
    return ExportResult(out, names, diffs, simplify)


def compare_with_torch(model: torch.nn.Module, onnx_path: Path, size: int, batch: int,
                       seed: int = 0) -> dict[str, float]:
    """Max |Δ| per output between PyTorch and ONNX Runtime (CPU) on a random batch."""
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    model.eval()
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}
    session = open_session(onnx_path)
    (image,) = session.get_inputs()
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {image.name: x})))

    return {k: float(np.max(np.abs(ref[k] - got[k]))) for k in ref}
