"""`drtrt bench`: latency, throughput, memory and (optionally) task metrics per model and batch size.

Every timed iteration runs the whole screening path on ``batch`` images and times its three
parts separately: preprocessing (decode + field of view + crop/resize + normalise, per
image), inference (``runner.infer`` on the batch; it returns host arrays, so GPU work has
finished when it returns) and postprocessing (grade, label map, lesion findings, per
image). ``warmup`` iterations run first and are discarded. Latencies are per batch, medians
and percentiles over ``iters`` iterations; throughput is batch / median inference time.

Without ``--data`` the images are one synthetic fundus photograph at IDRiD's 4288 x 2848,
JPEG-encoded in memory (decode cost included, disk I/O not).
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
from drtrt.errors import ConfigError
from drtrt.manifest import INPUT_NAME
from drtrt.postprocess import decode_grade, lesion_findings, lesion_label_map
from drtrt.preprocess import preprocess
from drtrt.runtime.base import Runner
from drtrt.verify import sysinfo
from drtrt.runtime.predictor import load_runner


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
    log: Path | None = Path("drtrt-bench.jsonl")
    json: Path | None = None

    def __post_init__(self) -> None:
        """Usage errors surface here, before anything is loaded or timed."""
        if not self.models:
            raise ConfigError("bench needs at least one --model")
        if not self.batches or min(self.batches) < 1 or self.iters < 1 or self.warmup < 0:
            raise ConfigError(f"batch sizes and --iters must be >= 1 and --warmup >= 0; found batches "
                              f"{self.batches}, iters {self.iters}, warmup {self.warmup}")
        missing = [str(m) for m in self.models if not Path(m).is_file()]
        if missing:
            raise ConfigError(f"model file not found: {', '.join(missing)}")


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
    preprocess_ms_per_image: float        # median
    postprocess_ms_per_image: float       # median
    end_to_end_ms_per_image: float        # median of (pre + infer + post) / batch
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
        from drtrt.metrics import json_ready

        return json_ready({"context": self.context, "floor": self.floor, "passed": not self.failures,
                           "rows": [asdict(r) for r in self.rows]})


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1e3
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99))}


def time_pipeline(runner: Runner, images: Sequence[str | Path | bytes], batch: int, warmup: int,
                  iters: int) -> dict[str, list[float]]:
    """Seconds per iteration of each part: {"preprocess", "infer", "postprocess"} (whole batch each)."""
    spec = runner.info.preprocess
    times: dict[str, list[float]] = {"preprocess": [], "infer": [], "postprocess": []}
    for it in range(warmup + iters):
        chosen = [images[(it * batch + k) % len(images)] for k in range(batch)]
        t0 = time.perf_counter()
        pres = [preprocess(image, spec) for image in chosen]
        t1 = time.perf_counter()
        outputs = runner.infer({INPUT_NAME: np.stack([p.tensor for p in pres])})
        t2 = time.perf_counter()
        for i, pre in enumerate(pres):
            if "grade_logits" in outputs:
                decode_grade(outputs["grade_logits"][i])
            if "lesion_logits" in outputs:
                lesion_findings(lesion_label_map(outputs["lesion_logits"][i], pre.geometry), pre.geometry)
        t3 = time.perf_counter()
        if it >= warmup:
            for key, (a, b) in zip(times, ((t0, t1), (t1, t2), (t2, t3))):
                times[key].append(b - a)
    return times


def synthetic_jpeg(width: int = 4288, height: int = 2848, seed: int = 0) -> bytes:
    """One synthetic fundus photograph (grade 2) as JPEG bytes, IDRiD's size by default."""
    import cv2

    from drtrt.synth import render_fundus

    rgb, _ = render_fundus(np.random.default_rng(seed), width, height, 2)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return data.tobytes()


def bench_model(path: Path, cfg: BenchConfig, images: Sequence, samples: Sequence) -> list[BenchRow]:
    """All batch sizes of one model (loaded once; its peak RSS includes loading).

    ``peak_fraction`` is left None: :func:`run_bench` sets it once the GEMM peak is known."""
    scope = "model" if sysinfo.reset_peak_rss() else "process"
    tick = time.perf_counter()
    runner = load_runner(path)
    load_s = time.perf_counter() - tick
    try:
        info = runner.info
        gflop = sysinfo.count_gflop(info.model_config, info.preprocess.size)
        rows = []
        for batch in cfg.batches:
            t = time_pipeline(runner, images, batch, cfg.warmup, cfg.iters)
            per_image = lambda key: statistics.median(t[key]) * 1e3 / batch  # noqa: E731
            e2e = statistics.median(a + b + c for a, b, c in zip(t["preprocess"], t["infer"], t["postprocess"]))
            ips = batch / statistics.median(t["infer"])
            rows.append(BenchRow(str(path), runner.backend, info.precision, batch, path.stat().st_size / 2**20,
                                 load_s, _percentiles(t["infer"]), ips, per_image("preprocess"),
                                 per_image("postprocess"), e2e * 1e3 / batch, 0.0, scope,
                                 sysinfo.gpu_memory_used_mb(), gflop, None))
        rss = sysinfo.peak_rss_mb()   # before the metrics pass, which holds a whole split's outputs
        metrics = {}
        if samples:
            from drtrt.evaluate import evaluate_runner

            metrics = evaluate_runner(runner, samples, batch_size=max(cfg.batches))
        for row in rows:
            row.peak_rss_mb = rss
            row.metrics = {k: v for k, v in metrics.items() if isinstance(v, float)}
        return rows
    finally:
        runner.deactivate()


def run_bench(cfg: BenchConfig, on_model: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark every model at every batch size; append each row to ``cfg.log`` (JSON lines)."""
    samples: list = []
    if cfg.data is not None:
        from drtrt.idrid import read_idrid

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
               "warmup": cfg.warmup, "iters": cfg.iters, "loadavg_start": _loadavg(),
               "images": "data:" + str(cfg.data) if samples else "synthetic 4288x2848 JPEG",
               "command": " ".join(sys.argv)}
    rows: list[BenchRow] = []
    for path in cfg.models:
        if cfg.gemm_peak:
            peaks.append(sysinfo.measure_gemm_peak())
        if on_model:
            on_model(str(path))
        rows += bench_model(Path(path), cfg, images, samples)
    context["loadavg_end"] = _loadavg()
    if cfg.gemm_peak:
        peaks.append(sysinfo.measure_gemm_peak())
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
    if cfg.json is not None:
        cfg.json.parent.mkdir(parents=True, exist_ok=True)
        cfg.json.write_text(json.dumps(record, indent=2))
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


def bench_table(report: BenchReport):
    """The report as one rich table (one row per model and batch size)."""
    from rich.table import Table

    from drtrt.verify.report import fmt

    peak = report.context.get("gemm_fp32_gflops")
    table = Table(title="drtrt bench", caption=f"{report.context['cpu']}, {report.context['cpus']} CPUs; "
                  f"FP32 GEMM peak {fmt(peak['best']) if peak else '—'} GFLOP/s; "
                  f"{report.context['iters']} iterations after {report.context['warmup']} warm-up; "
                  f"load average {report.context.get('loadavg_start')} -> {report.context.get('loadavg_end')}")
    columns = ["model", "prec.", "batch", "MB", "p50 ms", "p90 ms", "p99 ms", "img/s", "pre ms/img", "e2e ms/img",
               "RSS MB", "GFLOP/img", "% peak"]
    metric_keys = [k for k in ("accuracy", "macro_f1", "mean_dice") if any(k in r.metrics for r in report.rows)]
    for col in columns + metric_keys + (["GPU MB"] if any(r.gpu_memory_mb for r in report.rows) else []):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in report.rows:
        slow = report.floor is not None and r.images_per_s < report.floor
        cells = [Path(r.model).name, r.precision, str(r.batch), f"{r.size_mb:.1f}",
                 *(f"{r.infer_ms[q]:.1f}" for q in ("p50", "p90", "p99")),
                 f"[bold red]{r.images_per_s:.2f}[/]" if slow else f"{r.images_per_s:.2f}",
                 f"{r.preprocess_ms_per_image:.1f}", f"{r.end_to_end_ms_per_image:.1f}", f"{r.peak_rss_mb:.0f}",
                 fmt(r.gflop_per_image), fmt(None if r.peak_fraction is None else r.peak_fraction, percent=True)]
        cells += [fmt(r.metrics.get(k)) for k in metric_keys]
        if any(x.gpu_memory_mb for x in report.rows):
            cells.append(fmt(r.gpu_memory_mb))
        table.add_row(*cells)
    return table
