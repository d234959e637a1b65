"""End-to-end screening benchmark on this CPU: real-size JPEGs → session folder, stage by stage.

    PYTHONPATH=. .venv/bin/python benchmarks/screening_e2e.py [--images DIR] [--work DIR] [--json OUT]

What it measures (medians; the machine may be shared, so quote them with that caveat):

1. preprocessing of one 4288x2848 JPEG on one core (OpenCV limited to one thread): decode at
   reduced scale + field of view + crop/resize + normalise, exactly the runtime's path, then the
   quality gate on its own;
2. a screening session (``ScreeningSession``: hashing, decode, preprocessing, quality gate,
   ONNX Runtime inference, post-processing, overlay + mask + database writes, reports) over
   the images, images/s and the share of time per stage, for each model and batch size, with
   the runner alone on a ready tensor as the baseline measured in the same run;
3. start-up to first result: ``python -m drtrt.cli screen ONE.jpg --model M --json`` wall time.

Images: the eight real IDRiD samples (4288x2848) when ../shared/data is present, else eight
synthetic fundus photos rendered at 4288x2848. Model: the full network (width 1.0, VGG16
widths, 512x512 input) with random weights (timing does not depend on the weights), exported
to ONNX once into --work, and its INT8 Q/DQ version from ``drtrt.calibration.calibrate_int8``
(min-max ranges over the benchmark images; skipped, and said so, without that package).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drtrt.preprocess import PreprocessSpec, decode_image, preprocess_rgb  # noqa: E402
from drtrt.runtime.quality import assess_quality, decode_side  # noqa: E402

STAGES = ("decode", "preprocess", "quality", "inference", "postprocess", "write")


def real_size_images(work: Path, images: Path | None) -> list[Path]:
    if images is not None:
        return sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    samples = ROOT.parent / "shared" / "data" / "idrid-samples" / "A. Segmentation" / "1. Original Images"
    if samples.is_dir():
        return sorted(samples.glob("*/*.jpg"))
    from drtrt.data.fundus import render_fundus
    from drtrt.data.synth import IDRID_HEIGHT, IDRID_WIDTH

    out = work / "synthetic-4288"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(8):
        path = out / f"synthetic_{i}.jpg"
        if not path.exists():
            rgb, _ = render_fundus(np.random.default_rng(i), IDRID_WIDTH, IDRID_HEIGHT, grade=i % 5)
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        files.append(path)
    return files


def full_model(work: Path) -> Path:
    """The full network (width 1.0) with random weights, exported once (torch needed for this step only)."""
    out = work / "full-width1-random.onnx"
    if out.exists():
        return out
    import torch

    from drtrt.train.checkpoint import export_checkpoint
    from drtrt.train.model import ModelConfig, build_model
    from drtrt.train.checkpoint import make_checkpoint
    from drtrt.train.train_config import TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(width=1.0), preprocess=PreprocessSpec(size=512), device="cpu")
    ckpt = work / "full-width1-random.pt"
    torch.save(make_checkpoint(build_model(cfg.model).eval(), cfg, 0, {}), ckpt)
    export_checkpoint(ckpt, out, check_batch=1)
    return out


def int8_model(fp32: Path, images: list[Path], work: Path) -> Path | None:
    """The INT8 (Q/DQ) model from ``drtrt.calibration`` (min-max, calibrated on the benchmark images:
    the weights are random, only the timing matters); None when that package is not there."""
    try:
        from drtrt.calibration.quantize import calibrate_int8
        from drtrt.calibration.source import CalibrationSet
    except ImportError:
        return None
    out = work / "full-width1-random.int8.onnx"
    if not out.exists():
        calib = CalibrationSet(tuple(images), (None,) * len(images), "benchmark images")
        print(calibrate_int8(fp32, out, calib, images=len(images)).summary(), flush=True)
    return out


def preprocessing_one_core(images: list[Path], repeats: int = 5) -> dict:
    """Medians in ms: wall time, and this thread's CPU time (less sensitive to other jobs on the machine)."""
    cv2.setNumThreads(1)
    spec = PreprocessSpec(size=512)
    wall: dict[str, list[float]] = {"decode": [], "decode+preprocess": [], "quality gate": [], "full decode": []}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    for path in images:
        data = path.read_bytes()
        for _ in range(repeats):
            t = [(time.perf_counter(), time.thread_time())]
            rgb, size, _ = decode_image(data, decode_side(spec.size))
            t.append((time.perf_counter(), time.thread_time()))
            pre = preprocess_rgb(rgb, spec, size)
            t.append((time.perf_counter(), time.thread_time()))
            assess_quality(rgb, pre)
            t.append((time.perf_counter(), time.thread_time()))
            for key, (a, b) in (("decode", (0, 1)), ("decode+preprocess", (0, 2)), ("quality gate", (2, 3))):
                wall[key].append((t[b][0] - t[a][0]) * 1e3)
                cpu[key].append((t[b][1] - t[a][1]) * 1e3)
        for _ in range(2):
            w, c = time.perf_counter(), time.thread_time()
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            wall["full decode"].append((time.perf_counter() - w) * 1e3)
            cpu["full decode"].append((time.thread_time() - c) * 1e3)
    cv2.setNumThreads(-1)
    return {"wall_ms": {k: statistics.median(v) for k, v in wall.items()},
            "cpu_ms": {k: statistics.median(v) for k, v in cpu.items()},
            "samples": len(wall["decode"]), "load_average": __import__("os").getloadavg()}


def session(model: Path, images: list[Path], batch: int) -> dict:
    from drtrt.runtime.session import ScreeningSession, SessionConfig

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = ScreeningSession(model, Path(tmp) / "session", SessionConfig(batch_size=batch))
        load = time.perf_counter() - t0
        s.screen(images[:1])                                  # warm-up image (ORT's first run allocates)
        warm, cpu = time.perf_counter(), time.process_time()
        rows = s.screen(images[1:])
        s.write_reports()
        wall, cpu = time.perf_counter() - warm, time.process_time() - cpu
        s.close()
    per_stage = {k: sum(r.record["timings_ms"].get(k, 0.0) for r in rows) for k in STAGES}
    accounted = sum(per_stage.values())
    per_stage["session overhead (hash, database, reports)"] = max(0.0, wall * 1e3 - accounted)
    total = sum(per_stage.values())
    return {"batch": batch, "images": len(rows), "model_load_s": load, "wall_s": wall,
            "cpu_s_per_image": cpu / len(rows),          # all threads' CPU time: robust to other jobs
            "images_per_s": len(rows) / wall, "statuses": sorted({r.status for r in rows}),
            "share": {k: v / total for k, v in per_stage.items()},
            "ms_per_image": {k: v / len(rows) for k, v in per_stage.items()}}


def raw_inference(model: Path, batch: int, repeats: int = 3) -> tuple[float, float]:
    """Baseline in the same run: medians of (wall s, CPU s of all threads) per image of the runner
    alone on a ready tensor."""
    from drtrt.runtime.registry import load_runner

    runner = load_runner(model)
    x = {runner.info.task.input_name: np.zeros((batch, 3, 512, 512), np.float32)}
    runner.infer(x)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        runner.infer(x)
        wall.append((time.perf_counter() - t0) / batch)
        cpu.append((time.process_time() - c0) / batch)
    runner.deactivate()
    return statistics.median(wall), statistics.median(cpu)


def startup(model: Path, image: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "drtrt.cli", "screen", str(image), "--model", str(model), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 2):
        raise RuntimeError(proc.stderr)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="folder of real-size JPEGs (default: IDRiD samples)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "drtrt-bench-e2e")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    images = real_size_images(args.work, args.images)
    sizes = {cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape for p in images}
    report = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "cpus": __import__("os").cpu_count(), "images": [p.name for p in images],
              "image_reduced_8_shapes": sorted(sizes)}
    report["preprocessing_one_core"] = preprocessing_one_core(images)
    print(json.dumps(report["preprocessing_one_core"], indent=1), flush=True)
    fp32 = full_model(args.work)
    models = {"fp32": fp32}
    int8 = int8_model(fp32, images, args.work)
    if int8 is not None:
        models["int8"] = int8
    else:
        report["int8"] = "skipped: drtrt.calibration is not installed"
    report["sessions"] = {}
    for precision, model in models.items():
        for batch in (int(b) for b in args.batches.split(",")):
            result = session(model, images, batch)
            result["raw_inference_s_per_image"], result["raw_inference_cpu_s_per_image"] = raw_inference(model, batch)
            result["e2e_over_raw"] = 1 / result["images_per_s"] / result["raw_inference_s_per_image"]
            result["e2e_over_raw_cpu"] = result["cpu_s_per_image"] / result["raw_inference_cpu_s_per_image"]
            result["load_average"] = __import__("os").getloadavg()
            report["sessions"][f"{precision} batch {batch}"] = result
            print(precision, json.dumps(result, indent=1), flush=True)
        report.setdefault("startup_to_first_result_s", {})[precision] = startup(model, images[0])
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
