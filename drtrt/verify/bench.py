"""`drtrt bench`: latency, throughput, memory and (optionally) task metrics per model and batch size.

Every timed iteration runs exactly what ``drtrt screen`` runs — :meth:`Predictor.screen_batch
<drtrt.runtime.predictor.Predictor.screen_batch>` on ``batch`` images — and reads the stage
timings the predictor records for each image: intake (decode + field of view + crop/resize +
normalise + quality gate, per image), inference (one forward pass of the batch; runners return
host arrays, so GPU work has finished when it returns) and postprocessing (grade, label map,
lesion findings, per image). ``warmup`` iterations run first and are discarded. Latencies are
per batch, medians and percentiles over ``iters`` iterations; throughput is batch / median
inference time; end to end is the wall time of ``screen_batch`` per image.

Without ``--data`` the images are one synthetic fundus photograph at IDRiD's 4288 x 2848,
JPEG-encoded in memory (decode cost included, disk I/O not). Images the quality gate refuses
are left out (a refused image never reaches the model), and the report counts them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from drtrt import __version__
from drtrt.errors import ArtefactError, ConfigError, DataError
from drtrt.runtime.doctor import jetson_power, jetson_release
from drtrt.runtime.predictor import Predictor
from drtrt.runtime.registry import is_model_url, model_reference
from drtrt.verify import sysinfo


@dataclass(frozen=True)
class BenchConfig:
    """models: files to time; batches: batch sizes; floor: minimum images/s every row must reach."""

    models: tuple[Path, ...]
    batches: tuple[int, ...] = (1,)
    warmup: int = 3
    iters: int = 20
    data: Path | None = None
    split: str = "test"
    floor: float | None = None
    gemm_peak: bool = True
    log: Path | None = None

    def __post_init__(self) -> None:
        """Usage errors surface here, before anything is loaded or timed."""
        if not self.models:
            raise ConfigError("bench needs at least one --model")
        if not self.batches or min(self.batches) < 1 or self.iters < 1 or self.warmup < 0:
            raise ConfigError(f"batch sizes and --iters must be >= 1 and --warmup >= 0; found batches "
                              f"{self.batches}, iters {self.iters}, warmup {self.warmup}")
        missing = [str(m) for m in self.models if not is_model_url(m) and not Path(m).is_file()]
        if missing:
            raise ArtefactError(f"model file not found: {', '.join(missing)}")


@dataclass
class BenchRow:
    """One model at one batch size. Times in ms; ``*_ms_per_image`` divide a batch's time by its size."""

    model: str
    backend: str
    precision: str
    batch: int
    size_mb: float
    load_s: float
    infer_ms: dict[str, float]            # per batch: p50, p90, p99
    images_per_s: float
    intake_ms_per_image: float            # median: decode, preprocessing and the quality gate
    postprocess_ms_per_image: float       # median
    end_to_end_ms_per_image: float        # median wall time of screen_batch / batch
    peak_rss_mb: float
    peak_rss_scope: str                   # "model" (reset before loading) or "process"
    gpu_memory_mb: float | None
    gflop_per_image: float | None
    peak_fraction: float | None           # achieved GFLOP/s over the measured GEMM peak
    metrics: dict = field(default_factory=dict)


@dataclass
class BenchReport:
    rows: list[BenchRow]
    context: dict
    floor: float | None = None

    @property
    def failures(self) -> list[BenchRow]:
        return [] if self.floor is None else [r for r in self.rows if r.images_per_s < self.floor]

    def to_dict(self) -> dict:
        from drtrt.fileio import json_ready

        return json_ready({"context": self.context, "floor": self.floor, "passed": not self.failures,
                           "rows": [asdict(r) for r in self.rows]})


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1e3
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99))}


INTAKE = ("decode", "preprocess", "quality")
Progress = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``: a stage per model and batch size (its warm-up and timed iterations),
the quality gate's pass, the metrics pass and the GEMM peak measurements, so a run of a minute is never silent."""


def time_pipeline(predictor: Predictor, images: Sequence[str | Path | bytes], batch: int, warmup: int,
                  iters: int, on_iteration: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """Seconds per iteration of ``predictor.screen_batch`` on ``batch`` images, whole and by stage:
    {"intake", "infer", "postprocess", "total"} (each summed over the batch; "total" is wall time).
    ``on_iteration(done, warmup + iters)`` after each iteration."""
    predictor.set_batch_size(batch)
    if predictor.batch_size != batch:
        raise ConfigError(f"{predictor.model.name} takes at most {predictor.batch_size} images per batch; "
                          f"bench --batch {batch} cannot run on it")
    times: dict[str, list[float]] = {"intake": [], "infer": [], "postprocess": [], "total": []}
    names = [f"image-{k}" for k in range(len(images))]
    for it in range(warmup + iters):
        pick = [(it * batch + k) % len(images) for k in range(batch)]
        tick = time.perf_counter()
        results = predictor.screen_batch([images[k] for k in pick], names=[names[k] for k in pick])
        total = time.perf_counter() - tick
        refused = [r for r in results if r.status != "graded"]
        if refused:
            raise DataError(f"{refused[0].image} was not graded during the benchmark ({refused[0].reason})")
        if it >= warmup:
            ms = [r.timings_ms for r in results]
            times["intake"].append(sum(t[k] for t in ms for k in INTAKE) / 1e3)
            times["infer"].append(sum(t["inference"] for t in ms) / 1e3)
            times["postprocess"].append(sum(t["postprocess"] for t in ms) / 1e3)
            times["total"].append(total)
        if on_iteration:
            on_iteration(it + 1, warmup + iters)
    return times


def gradable_images(predictor: Predictor, images: Sequence[str | Path | bytes],
                    on_progress: Callable[[int, int], None] | None = None) -> list[str | Path | bytes]:
    """The images the quality gate lets through to the model (the others would time nothing)."""
    results = predictor.screen_batch(list(images), names=[f"image-{k}" for k in range(len(images))])
    if on_progress:
        on_progress(len(images), len(images))
    return [image for image, result in zip(images, results) if result.status == "graded"]


def synthetic_jpeg(width: int = 4288, height: int = 2848, seed: int = 0) -> bytes:
    """One synthetic fundus photograph (grade 2) as JPEG bytes, IDRiD's size by default."""
    import cv2

    from drtrt.data.synthetic_fundus import render_fundus

    rgb, _ = render_fundus(np.random.default_rng(seed), width, height, 2)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return data.tobytes()


def bench_model(path: Path | str, cfg: BenchConfig, images: Sequence, samples: Sequence,
                on_progress: Progress | None = None) -> tuple[list[BenchRow], int]:
    """All batch sizes of one model (loaded once; its peak RSS includes loading); also how many
    images the quality gate refused.

    ``peak_fraction`` is left None: :func:`run_bench` sets it once the GEMM peak is known."""
    label = str(path) if is_model_url(path) else Path(path).name

    def stage(name: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: on_progress(f"{label} {name}", done, total)) if on_progress else None

    scope = "model" if sysinfo.reset_peak_rss() else "process"
    tick = time.perf_counter()
    predictor = Predictor(path, batch_size=max(cfg.batches))
    load_s = time.perf_counter() - tick
    served = predictor.runner.backend == "triton"        # a model on a server: no file here to measure
    try:
        info = predictor.info
        usable = gradable_images(predictor, images, stage("quality gate"))
        if not usable:
            raise DataError(f"the quality gate refused every benchmark image for {predictor.runner.name}; "
                            "pass --data with gradable fundus photographs")
        counted = dict(info.extra).get("gflop_per_image")   # recorded at export, where torch can count
        gflop = float(counted) if counted else None


        rows = []
        for batch in cfg.batches:
            t = time_pipeline(predictor, usable, batch, cfg.warmup, cfg.iters, stage(f"batch {batch}"))
            per_image = lambda key: statistics.median(t[key]) * 1e3 / batch  # noqa: E731
            size_mb = 0.0 if served else Path(path).stat().st_size / 2**20
            rows.append(BenchRow(predictor.runner.name if served else str(path), predictor.runner.backend,
                                 info.precision, batch, size_mb, load_s, _percentiles(t["infer"]),
                                 batch / statistics.median(t["infer"]), per_image("intake"), per_image("postprocess"),
                                 per_image("total"), 0.0, scope, sysinfo.gpu_memory_used_mb(), gflop, None))
        rss = sysinfo.peak_rss_mb()   # before the metrics pass, which holds a whole split's outputs
        metrics = {}
        if samples:
            from drtrt.verify.evaluate import evaluate_runner

            metrics = evaluate_runner(predictor.runner, samples, batch_size=max(cfg.batches),
                                      on_progress=stage("metrics"))
        for row in rows:
            row.peak_rss_mb = rss
            row.metrics = {k: v for k, v in metrics.items() if isinstance(v, float)}
        return rows, len(images) - len(usable)
    finally:
        predictor.close()


def run_bench(cfg: BenchConfig, on_progress: Progress | None = None) -> BenchReport:
    """Benchmark every model at every batch size; append each row to ``cfg.log`` (JSON lines) when given."""
    samples: list = []
    if cfg.data is not None:
        from drtrt.data.idrid import read_idrid

        samples = read_idrid(cfg.data).select(split=None if cfg.split == "all" else cfg.split)
        if not samples:
            raise ConfigError(f"no images in {cfg.data} for split {cfg.split!r}")
    images = [s.image for s in samples] or [synthetic_jpeg()]
    # The GEMM peak is measured before every model and after the last, and the highest kept: on a
    # shared machine any one measurement can land in a busy moment and flatter every fraction.
    peaks: list[dict] = []
    context = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpu": sysinfo.cpu_name(),
               "cpus": os.cpu_count(), "python": platform.python_version(), "drtrt": __version__,
               "numpy": np.__version__, "onnxruntime": _version("onnxruntime"), "torch": _version("torch"),
               "jetson": jetson_release(), "power": jetson_power(),     # Jetson latency depends on both
               "warmup": cfg.warmup, "iters": cfg.iters, "loadavg_start": _loadavg(),
               "images": "data:" + str(cfg.data) if samples else "synthetic 4288x2848 JPEG",
               "command": " ".join(sys.argv)}
    rows: list[BenchRow] = []
    refused = 0

    def measure_peak() -> None:
        peaks.append(sysinfo.measure_gemm_peak())
        if on_progress:
            on_progress("FP32 GEMM peak", len(peaks), len(cfg.models) + 1)

    for path in cfg.models:
        if cfg.gemm_peak:
            measure_peak()
        model_rows, refused = bench_model(model_reference(path), cfg, images, samples, on_progress)
        rows += model_rows
    context["loadavg_end"] = _loadavg()
    context["images_refused_by_quality_gate"] = refused
    if cfg.gemm_peak:
        measure_peak()
        peak = max(p["best"] for p in peaks)
        context["gemm_fp32_gflops"] = {"best": peak, "n": peaks[0]["n"], "threads": peaks[0]["threads"],
                                       "measurements": [{"best": round(p["best"], 1), "by": p["by"],
                                                         "libraries": p["libraries"]} for p in peaks]}
        for row in rows:
            row.peak_fraction = row.gflop_per_image * row.images_per_s / peak if row.gflop_per_image else None
    report = BenchReport(rows, context, cfg.floor)
    record = report.to_dict()
    if cfg.log is not None:
        cfg.log.parent.mkdir(parents=True, exist_ok=True)
        with cfg.log.open("a") as fh:
            for row in record["rows"]:
                fh.write(json.dumps({**record["context"], **row}) + "\n")
    return report



def _loadavg() -> list[float] | None:
    """1-, 5- and 15-minute load averages (other work on the machine skews every timing)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None
