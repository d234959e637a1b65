"""ONNX Runtime precision on this CPU: the full model at 512x512, batch 1.

    PYTHONPATH=. .venv/bin/python benchmarks/precision_cpu.py [--runs 7] [--warmup 2] [--threads 2]
        [--ablation] [--data ROOT] [--work DIR] [--json OUT]

Times, interleaved round-robin so that load from other processes falls on every path alike
(medians of ``--runs`` after ``--warmup`` runs each):

* PyTorch eager FP32 (``torch.inference_mode``) with 1 and ``threads`` threads; ratios are
  against the faster of the two (on a shared machine, extra threads can slow PyTorch down);
* ONNX Runtime CPU: FP32, INT8 (the Q/DQ model ``drtrt calibrate`` writes), FP16 (correctness
  only: this CPU has no fast FP16 path), intra-op threads = ``--threads``;
* with ``--ablation``: INT8 models made without each :class:`GraphPrep` rewrite, one with the
  first conv quantised too, and the default INT8 model with 1 thread, without spin-waiting
  threads, and under lower session optimisation levels.

Model: the full network (width 1.0, VGG16 widths, shared depth 3, deep and shallow fusion)
with **random weights** (seeded); timing does not depend on the weights, agreement figures
between precisions do (a random model's outputs are near ties), so those are printed for
correctness only. Calibration: the training split of ``--data`` (default: the real IDRiD
samples in ../shared/data when present, else a small synthetic set), min-max.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drtrt.calibration.gate import judge, summary  # noqa: E402
from drtrt.calibration.source import idrid_samples  # noqa: E402
from drtrt.calibration.quantize import DEFAULT_EXCLUDE, GraphPrep, calibrate_int8  # noqa: E402
from drtrt.calibration.fp16 import convert_fp16  # noqa: E402

ABLATIONS = {   # name -> (GraphPrep, nodes kept in FP32) of the INT8 variants timed with --ablation
    "INT8, no graph rewrites (ONNX Runtime's default QDQ placement)": (GraphPrep(False, False, False), DEFAULT_EXCLUDE),
    "INT8, + unshared weights": (GraphPrep(True, False, False), DEFAULT_EXCLUDE),
    "INT8, + Relu as LeakyRelu(0)": (GraphPrep(True, True, False), DEFAULT_EXCLUDE),
    "INT8, all rewrites, first conv quantised too": (GraphPrep(), ("heads", "softmax")),
}


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f} " in flags]
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.machine()}, ISA: {' '.join(isa) or 'n/a'}"


def export_full_model(work: Path, width: float, size: int) -> tuple[object, Path]:
    """Random-init full model (seed 0) -> checkpoint -> ONNX FP32 via the project's exporter."""
    import torch

    from drtrt.train.checkpoint import export_checkpoint
    from drtrt.preprocess import PreprocessSpec
    from drtrt.train.model import ModelConfig, build_model
    from drtrt.train.checkpoint import make_checkpoint
    from drtrt.train.train_config import TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(width=width), preprocess=PreprocessSpec(size=size))
    model = build_model(cfg.model).eval()
    onnx_path = work / "model.onnx"
    if not onnx_path.exists():
        torch.save(make_checkpoint(model, cfg, 0, {}), work / "model.pt")
        export_checkpoint(work / "model.pt", onnx_path, check_batch=1)
    return model, onnx_path


def calibration_root(work: Path, data: Path | None) -> Path:
    if data is not None:
        return data
    real = ROOT.parent / "shared" / "data" / "idrid-samples"
    if real.is_dir():
        return real
    from drtrt.data.synth import write_synthetic_idrid

    synth = work / "synth"
    if not synth.exists():
        write_synthetic_idrid(synth, grading=10, segmentation=6, size=1024, seed=0)
    return synth


def ort_session(path: Path, threads: int, level: str = "all", spin: bool = True):
    """A timed session with options of its own, not drtrt's ``open_session``: this benchmark
    measures the options (threads, spin-waiting, optimisation level), so each path sets them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})


def time_interleaved(paths: dict[str, Callable], x: np.ndarray, warmup: int, runs: int) -> dict[str, list[float]]:
    """Milliseconds per call of each path; run r of every path before run r + 1 of any."""
    for fn in paths.values():
        for _ in range(warmup):
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn(x)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def add_full_model_args(parser: argparse.ArgumentParser) -> None:
    """--work, --width, --size, --json: the options of every benchmark on the full network."""
    parser.add_argument("--work", type=Path, default=None, help="keep models here (default: a temporary folder)")
    parser.add_argument("--width", type=float, default=1.0, help="smoke tests only; the figures are for 1.0")
    parser.add_argument("--size", type=int, default=512, help="smoke tests only; the figures are for 512")
    parser.add_argument("--json", type=Path, default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8, help="calibration images (training split)")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--data", type=Path, default=None, help="IDRiD-layout folder for calibration and agreement")
    add_full_model_args(parser)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        model, fp32 = export_full_model(work, args.width, args.size)
        data = calibration_root(work, args.data)
        int8_models = {"ONNX Runtime INT8 (Q/DQ)": (GraphPrep(), DEFAULT_EXCLUDE, work / "model.int8.onnx")}
        if args.ablation:
            int8_models.update({name: (*variant, work / f"model.int8.{i}.onnx")
                                for i, (name, variant) in enumerate(ABLATIONS.items())})
        calib_s = {}
        for name, (prep, exclude, path) in int8_models.items():
            start = time.perf_counter()
            result = calibrate_int8(fp32, path, data, "minmax", exclude, images=args.images, prep=prep)
            calib_s[name] = time.perf_counter() - start
            log(f"{name}: {result.summary()}")
        fp16 = convert_fp16(fp32, work / "model.fp16.onnx")

        def torch_fp32(threads: int) -> Callable:
            def run(x: np.ndarray):
                torch.set_num_threads(threads)
                with torch.inference_mode():
                    return model(torch.from_numpy(x))
            return run

        paths = {f"PyTorch eager FP32, {t} thread{'s' if t > 1 else ''}": torch_fp32(t)
                 for t in sorted({1, args.threads})}
        paths["ONNX Runtime FP32"] = ort_session(fp32, args.threads)
        paths.update({name: ort_session(path, args.threads) for name, (*_, path) in int8_models.items()})
        paths["ONNX Runtime FP16 (correctness only)"] = ort_session(fp16, args.threads)
        if args.ablation:
            int8 = work / "model.int8.onnx"
            if args.threads != 1:
                paths["INT8, 1 thread"] = ort_session(int8, 1)
            paths[f"INT8, {args.threads} threads, no spin-waiting"] = ort_session(int8, args.threads, spin=False)
            for level in ("extended", "basic"):
                paths[f"INT8, session optimisation level {level}"] = ort_session(work / "model.int8.onnx",
                                                                                 args.threads, level)
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        log(f"timing {len(paths)} paths: {args.warmup} warm-up + {args.runs} interleaved runs each")
        load_before = os.getloadavg()[0]
        times = time_interleaved(paths, x, args.warmup, args.runs)
        load_after = os.getloadavg()[0]

        held = idrid_samples(data, "test", 100)
        agree = {name: summary(judge(fp32, path, held, {}, threads=args.threads))
                 for name, path in (("INT8", work / "model.int8.onnx"), ("FP16", fp16))}

    base = min(statistics.median(ms) for name, ms in times.items() if name.startswith("PyTorch"))
    ort_fp32 = statistics.median(times["ONNX Runtime FP32"])
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {machine()}; onnxruntime {ort.__version__}, "
          f"torch {torch.__version__}; threads {args.threads}; 1-min load average {load_before:.1f} before "
          f"timing, {load_after:.1f} after")
    print(f"command: {' '.join(sys.argv)}\n")
    print("| path | median ms | min–max ms | × vs PyTorch FP32 (faster thread count) | × vs ORT FP32 |")
    print("|---|---|---|---|---|")
    for name, ms in times.items():
        med = statistics.median(ms)
        print(f"| {name} | {med:,.0f} | {min(ms):,.0f}–{max(ms):,.0f} | {base / med:.2f} | {ort_fp32 / med:.2f} |")
    print("\nagreement with ONNX Runtime FP32 on the held-out images (random weights: correctness only):")
    for name, text in agree.items():
        print(f"- {name}: {text}")
    if args.json:
        args.json.write_text(json.dumps({"times_ms": times, "calibration_s": calib_s, "agreement": agree,
                                         "machine": machine(), "threads": args.threads}, indent=2))


if __name__ == "__main__":
    main()
