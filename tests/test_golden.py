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
from drtrt.verify.golden import MANIFEST, GoldenSet
from test_parity import perturb_onnx   # pytest puts tests/ on sys.path (rootdir conftest, no __init__)

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


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


def test_golden_folder_holds_inputs_outputs_and_manifest(golden, tiny_run):
    manifest = json.loads((golden / MANIFEST).read_text())
    assert manifest["reference"]["backend"] == "torch" and len(manifest["images"]) == 18
    assert manifest["preprocess"]["size"] == 64 and manifest["outputs"] == ["grade_logits", "lesion_logits"]
    assert sum(e["has_target"] for e in manifest["images"]) == 6
    with np.load(golden / manifest["images"][0]["file"]) as arrays:
        assert arrays["image"].shape == (3, 64, 64) and arrays["image"].dtype == np.float32
        assert arrays["lesion_logits"].shape == (5, 64, 64) and arrays["rgb"].dtype == np.uint8


def test_golden_parity_runs_without_torch_or_data(golden, tiny_onnx, tmp_path):
    out = tmp_path / "device.json"
    proc = _device_parity(["--golden", str(golden), "--candidate", str(tiny_onnx), "--json", str(out)], ("torch",), hook=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    cand = data["candidates"][0]
    assert data["passed"] and data["source"] == {"golden": str(golden), "n_images": 18}
    assert cand["agreement"]["grade_agreement"] == 1.0 and cand["metric_deltas"]["accuracy"]["drop"] == 0.0


def test_runtime_only_device_checks_agreement_and_says_metrics_were_skipped(golden, tiny_onnx, tmp_path):
    broken = perturb_onnx(tiny_onnx, tmp_path / "broken.onnx")
    out = tmp_path / "device.json"
    proc = _device_parity(["--golden", str(golden), "--candidate", str(tiny_onnx), "--candidate", str(broken),
                           "--json", str(out)], ("torch", "torchvision", "sklearn", "onnx", "onnxslim"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    good, bad = json.loads(out.read_text())["candidates"]
    assert good["passed"] and not bad["passed"]
    assert any("scikit-learn is not installed" in c["note"] for c in good["checks"])


def test_tampered_golden_file_is_refused(golden, tiny_onnx, tmp_path):
    copy = tmp_path / "golden"
    shutil.copytree(golden, copy)
    first = json.loads((copy / MANIFEST).read_text())["images"][0]["file"]
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
    modules = ["compare", "golden", "parity", "report", "thresholds", "task_metrics", "bench", "sysinfo",
               "layerwise", "auto_exclude"]
    code = ("import sys\nfor name in ('torch', 'torchvision', 'onnx', 'sklearn'): sys.modules[name] = None\n"
            + "".join(f"import drtrt.verify.{m}\n" for m in modules)
            + "from drtrt.verify.sysinfo import count_gflop\nassert count_gflop('{\"width\": 1.0}', 64) is None\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


def test_golden_check_of_a_tensorrt_engine(golden, tiny_onnx, tmp_path, monkeypatch):
    """The device flow, engine included (TensorRT test double: it computes with ONNX Runtime)."""
    from fake_tensorrt import install

    from drtrt.export.trt_build import BuildConfig, build_engine

    install(monkeypatch, "10.3.0")
    engine = build_engine(BuildConfig(onnx=tiny_onnx, out=tmp_path / "model.engine", max_batch=4)).engine
    out = tmp_path / "engine.json"
    result = runner.invoke(app, ["parity", "--golden", str(golden), "--candidate", str(engine), "--json", str(out)])
    assert result.exit_code == 0, result.output
    cand = json.loads(out.read_text())["candidates"][0]
    assert cand["backend"] == "trt" and cand["precision"] == "fp32" and cand["passed"]
    assert cand["agreement"]["grade_agreement"] == 1.0 and cand["agreement"]["logits"]["lesion_logits"]["max"] < 1e-4
