"""The intake of a 4288x2848 JPEG on one core, step by step: the figure of issue 26 (docs/benchmarks.md).

    OMP_NUM_THREADS=1 taskset -c 0 PYTHONPATH=TREE .venv/bin/python benchmarks/intake_speed.py \
        [--repeats R] [--json OUT]

The runtime's intake exactly as ``Predictor`` runs it for the 512-pixel model, on the eight real IDRiD
originals: decode at reduced scale → field of view, crop, resize, normalise → analysis view and quality
gate → optic disc, then the fovea (not in the intake's total, as in issue 26's figure); OpenCV limited to
one thread, with the process's memory policy as the Predictor sets it (``drtrt.cpu.keep_freed_memory``,
where the tree has it). Medians over R passes of the eight photos, after one unrecorded pass: wall and
this thread's CPU time per step and in all, and the minor page faults per photo. ``PYTHONPATH=TREE``
measures another copy of the ``drtrt`` package (the code before a change, say): this checkout is only
appended to the import path. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))              # after PYTHONPATH, so another drtrt tree can be measured
IDRID = ROOT.parent / "shared" / "data" / "idrid-samples" / "A. Segmentation" / "1. Original Images"

import drtrt  # noqa: E402
from drtrt import cpu  # noqa: E402
from drtrt.preprocess import PreprocessSpec, decode_image, locate_disc, preprocess_rgb  # noqa: E402
from drtrt.runtime.macula import locate_fovea  # noqa: E402
from drtrt.runtime.quality import analysis_view, assess_quality, decode_side  # noqa: E402

STEPS = ("decode", "field, crop, resize, normalise", "analysis view + quality gate", "optic disc", "fovea")


def intake(data: bytes, spec: PreprocessSpec) -> list[tuple[float, float]]:
    """(wall, CPU) clock readings around each step of one photo's intake."""
    ticks = [(time.perf_counter(), time.thread_time())]
    rgb, size, _ = decode_image(data, decode_side(spec.size))
    ticks.append((time.perf_counter(), time.thread_time()))
    pre = preprocess_rgb(rgb, spec, size)
    ticks.append((time.perf_counter(), time.thread_time()))
    view = analysis_view(rgb, pre)
    assess_quality(rgb, pre, view=view)
    ticks.append((time.perf_counter(), time.thread_time()))
    disc = locate_disc(view.image, view.geometry)
    ticks.append((time.perf_counter(), time.thread_time()))
    locate_fovea(view.image, view.geometry, disc)
    ticks.append((time.perf_counter(), time.thread_time()))
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    files = sorted(IDRID.glob("*/*.jpg"))
    if not files:
        sys.exit(f"needs the real photos in {IDRID}")
    cv2.setNumThreads(1)
    memory_policy = getattr(cpu, "keep_freed_memory", lambda: False)()
    spec, data = PreprocessSpec(size=512), [f.read_bytes() for f in files]
    wall: dict[str, list[float]] = {k: [] for k in (*STEPS, "intake")}
    cpu_ms: dict[str, list[float]] = {k: [] for k in wall}
    faults = []
    for repeat in range(args.repeats + 1):
        for photo in data:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            ticks = intake(photo, spec)
            if repeat == 0:
                continue                 # warm-up pass
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            for step, (a, b) in zip((*STEPS, "intake"), (*zip(ticks, ticks[1:]), (ticks[0], ticks[-2]))):
                wall[step].append((b[0] - a[0]) * 1e3)
                cpu_ms[step].append((b[1] - a[1]) * 1e3)
    report = {"drtrt": str(Path(drtrt.__file__).parent), "keep_freed_memory": memory_policy,
              "photos": len(files), "repeats": args.repeats, "affinity": sorted(os.sched_getaffinity(0)),
              "wall_ms": {k: statistics.median(v) for k, v in wall.items()},
              "cpu_ms": {k: statistics.median(v) for k, v in cpu_ms.items()},
              "minor_faults_per_photo": statistics.median(faults), "load_average": os.getloadavg()}
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
