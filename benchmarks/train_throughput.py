"""Training throughput (images/s) of the full model at 512², with and without the preprocessed-image cache.

Images are the real full-resolution IDRiD samples (``../shared/data/idrid-samples``, 4288×2848
JPEGs) unless ``--data`` names another IDRiD-layout folder. Two input paths are timed:

* ``no cache``: every sample is decoded, field-of-view-cropped and resized on every access;
* ``cache``: the preprocessed 512² image and label map come from the cache (what
  ``train(..., cache_dir=...)`` does after the first epoch).

For each, ``data`` is the loader alone (images/s the input path can feed) and ``train`` is
loader + forward + backward + SGD step of the full model (width 1.0, both fusions). On CUDA
the step uses mixed precision and channels-last, as ``train`` does by default. Medians of
``--steps`` timed steps after one warm-up step. Prints a markdown table and writes JSON.

    python benchmarks/train_throughput.py --steps 3 --batch 1 --json train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from drtrt.idrid import read_idrid
from drtrt.preprocess import PreprocessSpec
from drtrt.train.data import FundusDataset, LabelledSample
from drtrt.train.losses import LossConfig, multitask_loss
from drtrt.train.model import ModelConfig, build_model
from drtrt.train.train_config import resolve_device

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "idrid-samples"


def time_loader(ds: FundusDataset, batch: int, steps: int) -> float:
    """Median seconds per batch of the input path alone."""
    times = []
    loader = iter(DataLoader(ds, batch_size=batch, shuffle=False))
    for _ in range(steps):
        start = time.perf_counter()
        next(loader)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_training(ds: FundusDataset, model, device, batch: int, steps: int, amp: bool, channels_last: bool) -> float:
    """Median seconds per optimizer step (loader included), after one warm-up step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loader = DataLoader(ds, batch_size=batch, shuffle=False)
    times = []
    batches = iter(loader)
    for i in range(steps + 1):
        start = time.perf_counter()
        try:
            b = next(batches)
        except StopIteration:
            batches = iter(loader)
            b = next(batches)
        x = b["image"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = multitask_loss(model(x), b["grade"].to(device), b["mask"].to(device), LossConfig())["total"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step is warm-up (allocator, cuDNN autotune)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/drtrt-train-throughput-cache"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    device = resolve_device(args.device)
    spec = PreprocessSpec(size=args.size)
    items = [LabelledSample.from_sample(s) for s in read_idrid(args.data).samples]
    cached = FundusDataset(items, spec, None, args.cache_dir)
    for i in range(len(items)):      # fill the disk + memory cache once, as the first epoch does
        cached.prepared(i)
    uncached = FundusDataset(items, spec, None, None, memory_cache=False)
    amp = channels_last = device.type == "cuda"
    model = build_model(ModelConfig(width=args.width)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    rows = []
    for name, ds in (("no cache", uncached), ("cache", cached)):
        data_s = time_loader(ds, args.batch, args.steps)
        step_s = time_training(ds, model, device, args.batch, args.steps, amp, channels_last)
        rows.append({"input": name, "data_images_per_s": args.batch / data_s, "train_images_per_s": args.batch / step_s,
                     "step_s": step_s})
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    report = {"device": gpu or f"cpu ({torch.get_num_threads()} threads)", "size": args.size, "width": args.width,
              "batch": args.batch, "steps": args.steps, "amp": amp, "channels_last": channels_last,
              "images": len(items), "data": str(args.data), "rows": rows}
    print(f"train throughput, full model width {args.width} at {args.size}², batch {args.batch}, "
          f"{report['device']}, median of {args.steps} steps")
    print("| input | loader images/s | training images/s | s/step |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['data_images_per_s']:.2f} | {r['train_images_per_s']:.3f} | {r['step_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
