"""Staged vs zero-copy for one TensorRT engine on this device: the row that decides ``zero_copy="auto"``.

    python tests/hardware/zero_copy_bench.py --engine model.engine [--batch 1,4] [--runs 50] [--date D]

For each batch: the same random input through ``TrtRunner(zero_copy=False)`` (pinned staging + device
buffers, copies in and out) and ``TrtRunner(zero_copy=True)`` (mapped host memory, no copies; on a
Jetson uncached for the GPU), after 5 warm-up runs; ``infer()`` wall time (it synchronises), median
and 90th percentile of ``--runs``. One row per batch (``| date | device | check | result | figure |``):
``pass`` when both modes give identical outputs — the figure says which was faster, the verdict is
the reader's (deploy/README.md, "On paper") — ``FAIL`` when the outputs differ. Exit 1 on a FAIL.
Needs TensorRT (scripts/hardware-check.sh runs it on the FP16 engine it built); on CPU the tests run
it on the TensorRT double.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WARMUP = 5


def _time(runner, feeds: dict, runs: int) -> tuple[dict, list[float]]:
    for _ in range(WARMUP):
        outputs = runner.infer(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        outputs = runner.infer(feeds)
        times.append((time.perf_counter() - start) * 1000)
    return outputs, times


def compare(engine: Path, batch: int, runs: int) -> tuple[str, str, str]:
    """(device, result, figure) for ``engine`` at ``batch``."""
    from drtrt.runtime.backends.trt import TrtRunner

    results, device = {}, "?"
    for zero_copy in (False, True):
        runner = TrtRunner(engine, zero_copy=zero_copy)
        runner.activate()
        try:
            spec = runner.input_specs[0]
            shape = (batch, *spec.shape[1:])
            feeds = {spec.name: np.random.default_rng(batch).standard_normal(shape).astype(spec.dtype)}
            results[zero_copy] = (*_time(runner, feeds, runs), runner.zero_copy)
            device = runner.gpu.model
        finally:
            runner.deactivate()
    (staged, staged_ms, _), (mapped, mapped_ms, bound) = results[False], results[True]
    if not bound:
        return device, "skipped", "this CUDA binding has no mapped memory in drtrt (pycuda): nothing to compare"
    same = all(np.array_equal(staged[name], mapped[name]) for name in staged)
    med_s, med_z = float(np.median(staged_ms)), float(np.median(mapped_ms))
    figure = (f"staged median {med_s:.2f} ms (p90 {np.percentile(staged_ms, 90):.2f}), zero-copy median {med_z:.2f} ms "
              f"(p90 {np.percentile(mapped_ms, 90):.2f}), {runs} runs; zero-copy {med_s / med_z:.2f}x staged's speed; "
              f"outputs {'identical' if same else 'DIFFER'}")
    return device, "pass" if same else "FAIL", figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zero_copy_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", type=Path, required=True)
    parser.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--date", default=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"))
    args = parser.parse_args(argv)
    from drtrt.errors import DrtrtError

    failed = False
    for batch in (int(b) for b in args.batch.split(",")):
        try:
            device, result, figure = compare(args.engine, batch, args.runs)
        except DrtrtError as exc:
            print(f"zero_copy_bench: {exc}", file=sys.stderr)
            return 1
        failed |= result == "FAIL"
        cells = (args.date, device, f"zero-copy vs staged, batch {batch}, {args.engine.name}", result, figure)
        print("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
