"""The TensorRT double executing on a real GPU's memory: drtrt's runner end to end without TensorRT.

``fake_tensorrt.install_on_cuda`` fakes TensorRT alone; CUDA stays the real runtime module, so
``drtrt build`` and ``TrtRunner`` allocate, bind, copy and synchronise on the real device, and the
double's ``execute_async_v3`` copies its inputs from the addresses drtrt bound, runs ONNX Runtime
and copies the outputs back (fake_tensorrt/realmem.py). Rows (see cuda_check.py):

- staged = zero-copy: the same batch through pinned staging + device buffers and through mapped
  host memory gives identical outputs, equal to ONNX Runtime on the ONNX;
- two threads: activated on this thread, inferring and released on a worker (the station);
- missing device: ``TrtRunner(device=<count>)`` is one line.

The model is a tiny two-head ONNX made here with ``onnx.helper`` (no torch), carrying drtrt's metadata.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

SIDE = 64


def tiny_onnx(path: Path) -> Path:
    """image [N,3,64,64] → lesion_logits [N,L+1,64,64] (a 3x3 conv) and grade_logits [N,5] (pool + Gemm)."""
    from onnx import TensorProto, helper, numpy_helper

    from drtrt.model_info import ModelInfo
    from drtrt.preprocess import PreprocessSpec
    from drtrt.task import TaskSpec

    task, rng = TaskSpec(), np.random.default_rng(23)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in (
        ("w_lesion", (task.n_lesion_classes, 3, 3, 3)), ("w_grade", (3, task.n_grades)))]
    nodes = [helper.make_node("Conv", [task.input_name, "w_lesion"], [task.lesion_output], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", [task.input_name], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w_grade"], [task.grade_output])]
    graph = helper.make_graph(
        nodes, "drtrt-cuda-check",
        [helper.make_tensor_value_info(task.input_name, TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info(task.lesion_output, TensorProto.FLOAT, ["N", task.n_lesion_classes, SIDE, SIDE]),
         helper.make_tensor_value_info(task.grade_output, TensorProto.FLOAT, ["N", task.n_grades])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8                                    # readable by every ONNX Runtime drtrt supports
    helper.set_model_props(model, ModelInfo(preprocess=PreprocessSpec(size=SIDE)).to_metadata())
    path.write_bytes(model.SerializeToString())
    return path


def _needs(*modules: str) -> None:
    from cuda_check import Skip

    for name in modules:
        try:
            __import__(name)
        except ImportError:
            raise Skip(f"needs {name} (pip install 'drtrt[export]' without torch: onnx, onnxruntime)") from None


class DoubleOnGpu:
    """An engine built by drtrt with the double on ``gpu`` (a cuda_check.Gpu), and what the rows check."""

    def __init__(self, gpu: Any, work: Path, trt_version: str) -> None:
        self.gpu, self.work, self.trt_version = gpu, work, trt_version
        self.engine: Path | None = None
        self.batch = np.random.default_rng(7).standard_normal((2, 3, SIDE, SIDE)).astype(np.float32)

    def build(self, monkeypatch: Any) -> Path:
        from fake_tensorrt import install_on_cuda

        from drtrt.export.build_config import BuildConfig
        from drtrt.export.trt_build import build_engine

        monkeypatch.setenv("DRTRT_CACHE_DIR", str(self.work / "cache"))
        self.device = install_on_cuda(monkeypatch, self.gpu.rt, self.trt_version, self.gpu.ordinal).device
        onnx = tiny_onnx(self.work / "model.onnx")
        config = BuildConfig(onnx=onnx, out=self.work / "model.engine", max_batch=2, device=self.gpu.ordinal,
                             cuda="cuda-python")
        self.engine = build_engine(config).engine
        return self.engine

    def runner(self, zero_copy: bool, device: int | None = None) -> Any:
        from drtrt.runtime.backends.trt import TrtRunner

        return TrtRunner(self.engine, device=self.gpu.ordinal if device is None else device, cuda="cuda-python",
                         zero_copy=zero_copy)

    def staged_equals_zero_copy(self) -> str:
        from drtrt.runtime.backends.ort import open_session
        from drtrt.task import TaskSpec

        feeds = {TaskSpec().input_name: self.batch}
        results = {}
        copies = self.device.copies
        for zero_copy in (False, True):
            runner = self.runner(zero_copy)
            runner.activate()
            try:
                assert runner.zero_copy is zero_copy, f"zero_copy={zero_copy} asked, the runner bound {runner.zero_copy}"
                results[zero_copy] = runner.infer(feeds)
            finally:
                runner.deactivate()
        assert self.device.copies > copies, "the double never read the device memory"
        session = open_session(str(self.work / "model.onnx"), threads=1)
        reference = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        worst = 0.0
        for name, expected in reference.items():
            staged, mapped = results[False][name], results[True][name]
            assert np.array_equal(staged, mapped), f"'{name}': staged and zero-copy outputs differ"
            worst = max(worst, float(np.max(np.abs(staged - expected))))
        assert worst <= 1e-5, f"outputs differ from ONNX Runtime by {worst:.3g}"
        return (f"batch 2, {len(reference)} outputs bit-identical staged vs zero-copy; max abs diff vs ONNX Runtime "
                f"{worst:.1e}; TensorRT double {self.trt_version}")

    def two_threads(self) -> str:
        from drtrt.task import TaskSpec

        feeds = {TaskSpec().input_name: self.batch[:1]}
        runner = self.runner(False)
        runner.activate()
        try:
            here = runner.infer(feeds)
            with ThreadPoolExecutor(1) as worker:
                there, device = worker.submit(lambda: (runner.infer(feeds), self.device.current_device)).result()
                worker.submit(runner.deactivate).result()
        except BaseException:
            runner.deactivate()
            raise
        assert device == self.gpu.ordinal, f"the worker inferred on device {device}, the runner is on {self.gpu.ordinal}"
        for name in here:
            assert np.array_equal(here[name], there[name]), f"'{name}' differs between the threads"
        return f"activated on the main thread; inferred and released on a worker on device {device}; outputs identical"

    def missing_device(self) -> str:
        from drtrt.errors import BackendUnavailable

        count = self.device.gpu.count
        try:
            self.runner(False, device=count).activate()
        except BackendUnavailable as exc:
            message = str(exc)
        else:
            raise AssertionError(f"TrtRunner(device={count}) activated with {count} GPU(s) visible")
        assert "\n" not in message and f"CUDA device {count} requested" in message, message
        return f"TrtRunner(device={count}): one line: {message[:70]}..."


def double_checks(gpu: Any, label: str, trt_version: str, run_check: Callable[..., Any]) -> list:
    """The rows for the double on ``gpu``; one ``skipped`` row when onnx, onnxruntime or pytest is missing."""
    name = f"{label}: TensorRT double on device memory"
    try:
        _needs("onnx", "onnxruntime", "pytest")
    except Exception as why:  # noqa: BLE001 - cuda_check.Skip
        return [run_check(name, _raise, why)]
    import pytest

    with tempfile.TemporaryDirectory(prefix="drtrt-cuda-check-") as work, pytest.MonkeyPatch.context() as patch:
        double = DoubleOnGpu(gpu, Path(work), trt_version)
        built = run_check(f"{name}: build", lambda: f"{double.build(patch).name} built by drtrt build, TensorRT "
                                                    f"double {trt_version}, on the real device's CUDA")
        if built.result != "pass":
            return [built]
        return [built, run_check(f"{name}: staged = zero-copy", double.staged_equals_zero_copy),
                run_check(f"{name}: two threads", double.two_threads),
                run_check(f"{name}: missing device", double.missing_device)]


def _raise(exc: BaseException) -> str:
    raise exc
