"""Checkpoint → ONNX → ONNX Runtime: parity with PyTorch, metadata, dynamic batch, screening."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from drtrt.export.onnx_export import compare_with_torch
from drtrt.model_info import ModelInfo
from drtrt.preprocess import PreprocessSpec
from drtrt.runtime.backends.ort import OrtRunner
from drtrt.runtime.predictor import Predictor
from drtrt.task import TaskSpec
from drtrt.train.checkpoint import load_checkpoint, model_from_checkpoint

pytestmark = pytest.mark.numeric

INPUT_NAME = TaskSpec().input_name


def test_checkpoint_loads_with_weights_only(tiny_run):
    ckpt = torch.load(tiny_run / "best.pt", weights_only=True)
    assert ckpt["format"] == "drtrt-checkpoint/1"
    assert (tiny_run / "last.pt").exists() and (tiny_run / "history.csv").exists()


def test_onnx_graph_names_opset_and_metadata(tiny_onnx, tiny_run):
    proto = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == ["grade_logits", "lesion_logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    meta = {p.key: p.value for p in proto.metadata_props}
    info = ModelInfo.from_metadata(meta)
    assert info.preprocess == PreprocessSpec(size=64) and info.task == TaskSpec()      # the vocabulary travels
    assert float(dict(info.extra)["gflop_per_image"]) > 0
    assert len(info.checkpoint_sha256) == 64
    assert not any(n.op_type == "ConvTranspose" for n in proto.graph.node)
    producers = {out: n.op_type for n in proto.graph.node for out in n.output}
    assert producers["grade_logits"] != "Softmax" and producers["lesion_logits"] != "Softmax"  # logits exported


def test_onnx_matches_pytorch_within_1e4(tiny_onnx, tiny_run):
    model = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    diffs = compare_with_torch(model, tiny_onnx, size=64, batch=3, seed=7)
    assert set(diffs) == {"grade_logits", "lesion_logits"}
    assert max(diffs.values()) <= 1e-4


def test_ort_runner_dynamic_batch(tiny_onnx):
    with OrtRunner(tiny_onnx) as runner:
        for n in (1, 3):
            out = runner.infer({INPUT_NAME: np.zeros((n, 3, 64, 64), np.float32)})
            assert out["grade_logits"].shape == (n, 5)
            assert out["lesion_logits"].shape == (n, 5, 64, 64)


def test_predictor_screens_a_synthetic_image(tiny_onnx, photo_root):
    image = next((photo_root / "B. Disease Grading" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    with Predictor(tiny_onnx) as predictor:
        result = predictor.screen(image)
    assert result.status == "graded", result.reason
    assert 0 <= result.grade <= 4 and result.referable == (result.grade >= 2)
    assert sum(result.probabilities) == pytest.approx(1.0)
    assert set(result.lesions) == {"EX", "SE", "MA", "HE"}
    json.dumps(result.to_dict())


def test_runtime_imports_and_screens_without_torch(tiny_onnx, photo_root):
    """The Jetson image has no torch: block it and run a real screen."""
    image = next((photo_root / "A. Segmentation" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import drtrt.runtime, drtrt.preprocess, drtrt.runtime.postprocess, drtrt.clinic.session, drtrt.cli\n"
        "from drtrt.runtime.predictor import Predictor\n"
        f"r = Predictor({str(tiny_onnx)!r}).screen({str(image)!r})\n"
        "assert r.status == 'graded', r.reason\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m] is not None)\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
