"""End-to-end screening benchmark on this CPU: real-size JPEGs → session folder, stage by stage.

    PYTHONPATH=. .venv/bin/python benchmarks/screening_e2e.py [--images DIR] [--work DIR] [--json OUT]
        [--batches 1,4] [--precisions fp32,int8] [--repeats N] [--sessions-only]

What it measures (medians; the machine may be shared, so quote them with that caveat):

1. preprocessing of one 4288x2848 JPEG on one core (OpenCV limited to one thread): decode at
   reduced scale + field of view + crop/resize + normalise, exactly the runtime's path, then the
   quality gate on its own;
2. a screening session (``ScreeningSession``: hashing, decode, preprocessing, quality gate,
   ONNX Runtime inference, post-processing, overlay + mask + database writes, reports) over
   the images, images/s and the time per stage, for each model and batch size, with the runner
   alone on a ready tensor as the baseline measured in the same run, right after each session
   (``--repeats`` pairs, medians; the overhead is the session's CPU time of all threads over the
   bare runner's, minus one), and the CPU time per image of the session's helper threads
   (preparing, writing) apart from the rest (Linux). Decoding/preprocessing and writing run
   beside inference in those threads, so the stage times overlap and do not add up to the wall;
3. start-up to first result: ``python -m drtrt.cli screen ONE.jpg --model M --json`` wall time;
4. the writes of one graded image on one core (CPU ms): the overlay PNG with OpenCV's default
   filters against the session's (Up filter, run-length deflate), and the full-resolution mask
   PNG as Pillow wrote it from the upsampled label map against ``lesion_mask_png``, on the
   model's labels and on a label map with 25 blobs of each lesion type (the random weights find
   little), with the file sizes.

Images: the eight real IDRiD samples (4288x2848) when ../shared/data is present, else eight
synthetic fundus photos rendered at 4288x2848. Model: the full network (width 1.0, VGG16
widths, 512x512 input) with random weights (timing does not depend on the weights), exported
to ONNX once into --work, and its INT8 Q/DQ version from ``drtrt.calibration.calibrate_int8``
(min-max ranges over the benchmark images; skipped, and said so, without that package).

``PYTHONPATH=OTHER_TREE`` benchmarks another copy of the ``drtrt`` package (an older commit's,
say) with this script: the checkout is only appended to the import path.
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
sys.path.append(str(ROOT))            # after PYTHONPATH, so another drtrt tree can be measured

from drtrt.preprocess import PreprocessSpec, decode_image, preprocess_rgb  # noqa: E402
from drtrt.runtime.quality import assess_quality, decode_side  # noqa: E402

STAGES = ("decode", "preprocess", "quality", "inference", "postprocess", "write")


def real_size_images(work: Path, images: Path | None) -> list[Path]:
    if images is not None:
        return sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    samples = ROOT.parent / "shared" / "data" / "idrid-samples" / "A. Segmentation" / "1. Original Images"
    if samples.is_dir():
        return sorted(samples.glob("*/*.jpg"))
    from drtrt.data.synthetic_fundus import render_fundus
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
    return random_model(work, 1.0, 512)


def random_model(work: Path, width: float, size: int) -> Path:
    """The thesis network at ``width`` and ``size`` with random weights (seed 0), exported once."""
    name = "full-width1-random" if (width, size) == (1.0, 512) else f"width{width:g}-{size}px-random"
    out = work / f"{name}.onnx"
    if out.exists():
        return out
    import torch

    from drtrt.train.checkpoint import export_checkpoint
    from drtrt.train.model import ModelConfig, build_model
    from drtrt.train.checkpoint import make_checkpoint
    from drtrt.train.train_config import TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(width=width), preprocess=PreprocessSpec(size=size), device="cpu")
    ckpt = work / f"{name}.pt"
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
    from drtrt.clinic.session import ScreeningSession, SessionConfig

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = ScreeningSession(model, Path(tmp) / "session",            # random weights: no gate to pass
                             SessionConfig(batch_size=batch, allow_unchecked_model=True))
        load = time.perf_counter() - t0
        s.screen(images[:1])                                  # warm-up image (ORT's first run allocates)
        runner, side = s.predictor.runner, s.predictor.spec.size
        for n in {batch, (len(images) - 1) % batch} - {0, 1}:   # ... and so does its first run at each batch shape
            runner.infer({runner.info.task.input_name: np.zeros((n, 3, side, side), np.float32)})
        before = thread_cpu()
        warm, cpu = time.perf_counter(), time.process_time()
        rows = s.screen(images[1:])
        s.write_reports()
        wall, cpu = time.perf_counter() - warm, time.process_time() - cpu
        after = thread_cpu()
        s.close()
    by_thread: dict[str, float] = {}
    for (tid, name), seconds in after.items():
        kind = name if name in ("drtrt-prepare", "drtrt-write") else "caller + ONNX Runtime"
        by_thread[kind] = by_thread.get(kind, 0.0) + (seconds - before.get((tid, name), 0.0)) * 1e3 / (len(images) - 1)
    per_stage = {k: sum(r.record["timings_ms"].get(k, 0.0) for r in rows) for k in STAGES}
    per_stage["wall not in a stage (hash, database, reports, waits)"] = wall * 1e3 - sum(per_stage.values())
    return {"batch": batch, "images": len(rows), "model_load_s": load, "wall_s": wall,
            "cpu_s_per_image": cpu / len(rows),          # all threads' CPU time: robust to other jobs
            "images_per_s": len(rows) / wall, "statuses": sorted({r.status for r in rows}),
            "cpu_ms_per_image_by_thread": by_thread,     # Linux only (/proc); empty elsewhere
            "ms_per_image": {k: v / len(rows) for k, v in per_stage.items()}}   # stages overlap (threads)


def thread_cpu() -> dict[tuple[int, str], float]:
    """CPU seconds of each thread of this process, keyed by (native id, the session's helper-thread
    name or ""), from /proc (Linux; {} elsewhere)."""
    import os
    import threading

    tck = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name.split("_")[0] for t in threading.enumerate() if t.name.startswith("drtrt-")}
    found = {}
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[(int(tid), names.get(int(tid), ""))] = (int(fields[11]) + int(fields[12])) / tck
    return found


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


def writes_one_core(model: Path, images: list[Path], repeats: int = 5) -> dict:
    """Medians over the images of CPU ms (one thread, OpenCV limited to one) and KB per written file."""
    import io

    from PIL import Image

    from drtrt.clinic import result_files
    from drtrt.runtime.postprocess import LESION_COLOURS, lesion_mask_original, overlay
    from drtrt.runtime.predictor import Predictor

    def pillow_png(mask: np.ndarray) -> bytes:       # what the session wrote before issue 13
        image = Image.fromarray(mask, mode="P")
        image.putpalette(np.pad(LESION_COLOURS, ((0, 256 - len(LESION_COLOURS)), (0, 0))).ravel().tolist())
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=1)
        return out.getvalue()

    def cpu_ms(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.thread_time()
            fn()
            times.append((time.thread_time() - t0) * 1e3)
        return statistics.median(times)

    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    found: dict[str, list[float]] = {}
    with Predictor(model) as predictor:
        for path in images:
            result = predictor.screen(path, keep_arrays=True)
            if result.labels is None:
                continue
            blobs = result.labels.copy()
            for label in range(1, 5):
                for x, y in rng.integers(100, 400, (25, 2)):
                    cv2.circle(blobs, (int(x), int(y)), int(rng.integers(1, 7)), label, -1)
            blobs[~result.geometry.fov_mask("model")] = 0
            for case, labels in (("model labels", result.labels), ("blobs", blobs)):
                bgr = cv2.cvtColor(overlay(result.rgb, labels, result.geometry, predictor.task, findings=result.lesions,
                                           legend=True, disc=result.disc), cv2.COLOR_RGB2BGR)
                old = [cv2.IMWRITE_PNG_COMPRESSION, 1]
                new = getattr(result_files, "_OVERLAY_PNG", old)
                figures = {
                    "overlay PNG, OpenCV default": cpu_ms(lambda: cv2.imencode(".png", bgr, old)),
                    "overlay PNG, session": cpu_ms(lambda: cv2.imencode(".png", bgr, new)),
                    "mask PNG, Pillow on the upsampled map": cpu_ms(
                        lambda: pillow_png(lesion_mask_original(labels, result.geometry)[0])),
                    "overlay KB, OpenCV default": len(cv2.imencode(".png", bgr, old)[1]) / 1e3,
                    "overlay KB, session": len(cv2.imencode(".png", bgr, new)[1]) / 1e3,
                    "mask KB, Pillow": len(pillow_png(lesion_mask_original(labels, result.geometry)[0])) / 1e3}
                try:
                    from drtrt.runtime.postprocess import lesion_mask_png
                except ImportError:                          # an older drtrt
                    pass
                else:
                    figures["mask PNG, lesion_mask_png"] = cpu_ms(lambda: lesion_mask_png(labels, result.geometry))
                    figures["mask KB, lesion_mask_png"] = len(lesion_mask_png(labels, result.geometry)[0]) / 1e3
                for key, value in figures.items():
                    found.setdefault(f"{case}: {key}", []).append(value)
    cv2.setNumThreads(-1)
    return {k: statistics.median(v) for k, v in found.items()} | {"load_average": __import__("os").getloadavg()}


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
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--repeats", type=int, default=1, help="session + bare-inference pairs per configuration")
    parser.add_argument("--sessions-only", action="store_true", help="skip the one-core preprocessing and start-up")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    images = real_size_images(args.work, args.images)
    sizes = {cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape for p in images}
    report = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "cpus": __import__("os").cpu_count(), "images": [p.name for p in images],
              "image_reduced_8_shapes": sorted(sizes)}
    import drtrt

    report["drtrt"] = str(Path(drtrt.__file__).parent)
    if not args.sessions_only:
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
        if precision not in args.precisions.split(","):
            continue
        for batch in (int(b) for b in args.batches.split(",")):
            runs = []
            for _ in range(args.repeats):
                run = session(model, images, batch)
                run["raw_inference_s_per_image"], run["raw_inference_cpu_s_per_image"] = raw_inference(model, batch)
                run["e2e_over_raw"] = 1 / run["images_per_s"] / run["raw_inference_s_per_image"]
                run["e2e_over_raw_cpu"] = run["cpu_s_per_image"] / run["raw_inference_cpu_s_per_image"]
                run["load_average"] = __import__("os").getloadavg()
                runs.append(run)
            result = runs[-1] if len(runs) == 1 else {"runs": runs, **{
                key: statistics.median(r[key] for r in runs)
                for key in ("images_per_s", "cpu_s_per_image", "raw_inference_s_per_image",
                            "raw_inference_cpu_s_per_image", "e2e_over_raw", "e2e_over_raw_cpu")}}
            result["overhead_cpu_pct"] = 100 * (result["e2e_over_raw_cpu"] - 1)   # on top of bare inference
            report["sessions"][f"{precision} batch {batch}"] = result
            print(precision, json.dumps(result, indent=1), flush=True)
        if not args.sessions_only:
            report.setdefault("startup_to_first_result_s", {})[precision] = startup(model, images[0])
    if not args.sessions_only:
        report["writes_one_core"] = writes_one_core(models.get("int8", fp32), images)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
