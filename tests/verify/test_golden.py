"""Golden files: written beside the data set and PyTorch, checked where neither exists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.errors import ArtefactError
from drtrt.verify.golden import INDEX, GoldenSet
from test_parity import perturb_onnx   # pytest puts this folder on sys.path (no __init__ files)

pytestmark = pytest.mark.numeric

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def golden(tiny_run, synth_root, tmp_path_factory) -> Path:
    """Golden files from the checkpoint, copied away from where they were written."""
    written = tmp_path_factory.mktemp("written") / "golden"
    result = runner.invoke(app, ["parity", "--reference", str(tiny_run / "best.pt"), "--data", str(synth_root),
                                 "--split", "all", "--save-golden", str(written)])
    assert result.exit_code == 0, result.output
    moved = tmp_path_factory.mktemp("device") / "golden"
    shutil.copytree(written, moved)
    return moved


# sys.modules[name] = None makes ``import name`` fail. SciPy (under scikit-learn) reads a None
# sys.modules["torch"] as "torch is loaded" and crashes, which no real install does; where
# scikit-learn stays importable, an import hook that refuses the names blocks them instead.
_HOOK = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)', name=name)
sys.meta_path.insert(0, _Block())
"""


def _device_parity(args: list[str], blocked: tuple[str, ...], hook: bool = False) -> subprocess.CompletedProcess:
    """`drtrt parity ...` in a fresh interpreter where the ``blocked`` packages cannot be imported."""
    block = f"BLOCKED = {blocked!r}\n" + (_HOOK if hook else "import sys\nfor name in BLOCKED: sys.modules[name] = None\n")
    code = block + "import sys\nfrom drtrt.cli import main\nsys.argv = ['drtrt', 'parity', *sys.argv[1:]]\nmain()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_golden_folder_holds_inputs_outputs_and_its_index(golden, tiny_run):
    index = json.loads((golden / INDEX).read_text())
    assert index["reference"]["backend"] == "torch" and len(index["images"]) == 18
    assert index["preprocess"]["size"] == 64 and index["outputs"] == ["grade_logits", "lesion_logits"]
    assert index["task"]["lesion_codes"] == ["EX", "SE", "MA", "HE"]      # the device names lesions as training did
    assert sum(e["has_target"] for e in index["images"]) == 6
    with np.load(golden / index["images"][0]["file"]) as arrays:
        assert arrays["image"].shape == (3, 64, 64) and arrays["image"].dtype == np.float32
        assert arrays["lesion_logits"].shape == (5, 64, 64) and arrays["rgb"].dtype == np.uint8


def test_golden_parity_runs_without_torch_or_data(golden, tiny_onnx, tmp_path):
    proc = _device_parity(["--golden", str(golden), "--candidate", str(tiny_onnx), "--json"], ("torch",), hook=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    cand = data["candidates"][0]
    assert data["passed"] and data["source"] == {"golden": str(golden), "n_images": 18}
    assert cand["agreement"]["grade_agreement"] == 1.0 and cand["metric_deltas"]["accuracy"]["drop"] == 0.0


def test_runtime_only_device_checks_agreement_and_says_metrics_were_skipped(golden, tiny_onnx, tmp_path):
    broken = perturb_onnx(tiny_onnx, tmp_path / "broken.onnx")
    proc = _device_parity(["--golden", str(golden), "--candidate", str(tiny_onnx), "--candidate", str(broken),
                           "--json"], ("torch", "torchvision", "sklearn", "onnx", "onnxslim"))
    assert proc.returncode == 4, proc.stdout + proc.stderr                  # a gate failed
    good, bad = json.loads(proc.stdout)["candidates"]
    assert good["passed"] and not bad["passed"]
    assert any("scikit-learn is not installed" in c["note"] for c in good["checks"])


def test_tampered_golden_file_is_refused(golden, tiny_onnx, tmp_path):
    copy = tmp_path / "golden"
    shutil.copytree(golden, copy)
    first = json.loads((copy / INDEX).read_text())["images"][0]["file"]
    with np.load(copy / first) as arrays:
        data = dict(arrays)
    data["grade_logits"] = data["grade_logits"] + 1
    np.savez_compressed(copy / first, **data)
    result = runner.invoke(app, ["parity", "--golden", str(copy), "--candidate", str(tiny_onnx)])
    assert result.exit_code == 1 and "does not match its sha256" in result.output
    with pytest.raises(ArtefactError, match="no golden.json"):
        GoldenSet(tmp_path / "nowhere")


def test_golden_folder_is_never_overwritten(golden, tiny_run, synth_root):
    result = runner.invoke(app, ["parity", "--reference", str(tiny_run / "best.pt"), "--data", str(synth_root),
                                 "--save-golden", str(golden)])
    assert result.exit_code == 1 and "already holds golden files" in result.output


def test_every_verify_module_imports_without_torch_or_onnx():
    modules = ["compare", "evaluate", "golden", "items", "metrics", "parity", "parity_report", "thresholds", "bench",
               "sysinfo"]
    code = ("import sys\nfor name in ('torch', 'torchvision', 'onnx', 'sklearn'): sys.modules[name] = None\n"
            + "".join(f"import drtrt.verify.{m}\n" for m in modules))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


def test_golden_check_of_a_tensorrt_engine(golden, tiny_onnx, tmp_path, monkeypatch, tensorrt):
    """The device flow, engine included (TensorRT's double computes with ONNX Runtime; --real-trt: TensorRT)."""
    from drtrt.export.build_config import BuildConfig
    from drtrt.export.trt_build import build_engine

    monkeypatch.setenv("DRTRT_CACHE_DIR", str(tmp_path / "cache"))
    engine = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", max_batch=4)).engine
    result = runner.invoke(app, ["parity", "--golden", str(golden), "--candidate", str(engine), "--json"])
    assert result.exit_code == 0, result.output
    cand = json.loads(result.stdout)["candidates"][0]
    assert cand["backend"] == "trt" and cand["precision"] == "fp32" and cand["passed"]
    bound = 1e-4 if tensorrt is not None else 1e-2     # the double computes with ONNX Runtime; a GPU differs a little
    assert cand["agreement"]["grade_agreement"] == 1.0 and cand["agreement"]["logits"]["lesion_logits"]["max"] < bound
