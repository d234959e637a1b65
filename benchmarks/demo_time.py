"""Where `drtrt demo`'s time goes, and what its training loop costs under each CPU setting (issue 26).

The demo's own stages are in its ``metrics.json`` (``stage_seconds``: synthesis, training, export,
evaluation, screening). Training is nearly all of it, so this benchmark times the demo's training
recipe (``DemoConfig``: width 0.125, 256², batch 8, its synthetic data and cache) in fresh child
processes, ``--epochs`` epochs each, under each variant, interleaved over ``--rounds`` rounds:

* ``default``: drtrt's shared-CPU settings (threads = usable CPUs, ``OMP_WAIT_POLICY=PASSIVE``), FP32;
* ``spin``: ``DRTRT_CPU_SPIN=1`` (OpenMP's own wait policy: threads spin ≈ 3 ms before sleeping);
* ``1 thread``: ``OMP_NUM_THREADS=1``;
* ``bf16``: the default with BF16 autocast (``cpu_bf16``; AVX-512 BF16 CPUs) — other numbers, so not
  the demo's metrics;

and reports, per variant, the median seconds per epoch (the first epoch of each run left out), the
whole ``train`` call's wall time per epoch (with each epoch's validation, the first evaluation and the
checkpoints), the process's CPU seconds per epoch, the final loss (the same in every FP32 run with 2 threads: the
settings change speed, not results) and the 1-minute load average before each run. The demo's floor
is then ``epochs × median epoch``: its 30 epochs of training at that rate, before anything else.

    python benchmarks/demo_time.py --rounds 3 --epochs 3 --json benchmarks/demo_time_cpu.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"default": {}, "spin": {"DRTRT_CPU_SPIN": "1"}, "1 thread": {"OMP_NUM_THREADS": "1"},
            "bf16": {"DEMO_TIME_BF16": "1"}}


def child(data: Path, cache: Path, epochs: int) -> dict:
    """Train the demo's recipe for ``epochs`` in this process; seconds per epoch, CPU seconds, the last loss."""
    from drtrt.cli.demo import DemoConfig
    from drtrt.preprocess import PreprocessSpec
    from drtrt.train.losses import LossConfig
    from drtrt.train.model import ModelConfig
    from drtrt.train.train_config import TrainConfig
    from drtrt.train.trainer import train

    cfg = DemoConfig()
    train_cfg = TrainConfig(epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device="cpu",
                            model=ModelConfig(width=cfg.width, batch_norm=True),
                            preprocess=PreprocessSpec(size=cfg.image_size),
                            loss=LossConfig(beta=cfg.beta, dice_weight=cfg.dice_weight),
                            cpu_bf16=os.environ.get("DEMO_TIME_BF16") == "1")
    with tempfile.TemporaryDirectory() as run:
        cpu, wall = time.process_time(), time.perf_counter()
        train(train_cfg, data, Path(run), log=lambda msg: None, cache_dir=cache)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rows = list(csv.DictReader((Path(run) / "history.csv").open()))
    return {"epoch_seconds": [float(r["seconds"]) for r in rows], "cpu_seconds": cpu, "wall_seconds": wall,
            "loss": float(rows[-1]["loss_total"])}


def make_data(folder: Path) -> None:
    """The demo's synthetic data, as `drtrt demo` writes it."""
    from drtrt.cli.demo import DemoConfig
    from drtrt.data.synth import write_synthetic_idrid

    cfg = DemoConfig()
    write_synthetic_idrid(folder, cfg.grading, cfg.segmentation, size=cfg.synth_size, seed=cfg.seed,
                          test_fraction=cfg.test_fraction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a demo's data folder (default: made in a temporary folder)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.data, args.cache, args.epochs)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "data"
        if args.data is None:
            make_data(data)
        cache = Path(tmp) / "cache"                    # filled by the first run, shared by all (as in the demo)
        runs: dict[str, list[dict]] = {name: [] for name in args.variants.split(",")}
        for _ in range(args.rounds):
            for name in runs:
                load = os.getloadavg()[0]
                env = {**os.environ, **VARIANTS[name]}
                out = subprocess.run([sys.executable, __file__, "--child", "--data", str(data), "--cache", str(cache),
                                      "--epochs", str(args.epochs)], env=env, check=True, capture_output=True, text=True)
                runs[name].append({**json.loads(out.stdout.splitlines()[-1]), "load_before": load})
                print(name, runs[name][-1], file=sys.stderr)
    summary = {}
    for name, results in runs.items():
        epochs = [s for r in results for s in r["epoch_seconds"][1:]]
        summary[name] = {"epoch_median": statistics.median(epochs), "epoch_min": min(epochs), "epoch_max": max(epochs),
                         "cpu_per_epoch": statistics.median(r["cpu_seconds"] / len(r["epoch_seconds"]) for r in results),
                         "train_per_epoch": statistics.median(r["wall_seconds"] / len(r["epoch_seconds"]) for r in results),
                         "loss": sorted({round(r["loss"], 6) for r in results}),
                         "load_before": [round(r["load_before"], 2) for r in results]}
    base = summary.get("default", {}).get("epoch_median")
    print("| variant | loop s/epoch median (min–max) | vs default | train() s/epoch | CPU-s/epoch | 30 epochs | "
          "final loss | load before |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        ratio = f"{s['epoch_median'] / base:.2f}×" if base else "—"
        print(f"| {name} | {s['epoch_median']:.2f} ({s['epoch_min']:.2f}–{s['epoch_max']:.2f}) | {ratio} | "
              f"{s['train_per_epoch']:.2f} | {s['cpu_per_epoch']:.2f} | {30 * s['train_per_epoch']:.0f} s | {', '.join(map(str, s['loss']))} | "
              f"{', '.join(map(str, s['load_before']))} |")
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "epochs": args.epochs,
                                         "runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
