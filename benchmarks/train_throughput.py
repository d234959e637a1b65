"""Training throughput (images/s) of the full model at 512², with and without the preprocessed-image cache.

Images are the real full-resolution IDRiD samples (``../shared/data/idrid-samples``, 4288×2848
JPEGs) unless ``--data`` names another IDRiD-layout folder. Two input paths are timed:

* ``no cache``: every sample is decoded, field-of-view-cropped and resized on every access;
* ``cache``: the preprocessed 512² image and label map come from the cache (what
  ``train(..., cache_dir=...)`` does after the first epoch).

For each, ``data`` is the loader alone (images/s the input path can feed) and ``train`` is
loader + forward + backward + SGD step of the full model (width 1.0, both fusions), in
``train``'s default set-up: channels-last, and on CUDA FP16 mixed precision. With the cache,
the step is also timed in the NCHW layout and, with ``--bf16``, in BF16 autocast on the CPU
(``cpu_bf16`` in the training config; only worth it on CPUs with native BF16), so the table
shows what each option buys. A fresh model per row; medians of ``--steps`` timed steps after
one warm-up step. Prints a markdown table and writes JSON.

    python benchmarks/train_throughput.py --steps 3 --batch 1 --bf16 --json train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from drtrt.data.idrid import read_idrid
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


def time_training(ds: FundusDataset, width: float, device, batch: int, steps: int, amp: bool,
                  channels_last: bool) -> float:
    """Median seconds per optimizer step (loader included) of a fresh model, after one warm-up step."""
    model = build_model(ModelConfig(width=width)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
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
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            outputs = model(x)
        outputs = {k: v.float() for k, v in outputs.items()}
        loss = multitask_loss(outputs, b["grade"].to(device), b["mask"].to(device), LossConfig(), model.task)["total"]
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
    parser.add_argument("--bf16", action="store_true", help="also time BF16 autocast on the CPU")
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
    cuda = device.type == "cuda"
    # (input path, dataset, channels-last, mixed precision); the first row of each input path is
    # the training default (channels-last; FP16 autocast on CUDA, FP32 on the CPU)
    variants = [("no cache", uncached, True, cuda), ("cache", cached, True, cuda)]
    if not cuda:
        variants.append(("cache", cached, False, False))
        if args.bf16:
            variants.append(("cache", cached, True, True))
    rows = []
    for name, ds, channels_last, amp in variants:
        data_s = time_loader(ds, args.batch, args.steps)
        step_s = time_training(ds, args.width, device, args.batch, args.steps, amp, channels_last)
        rows.append({"input": name, "layout": "NHWC" if channels_last else "NCHW",
                     "precision": ("FP16 autocast" if cuda else "BF16 autocast") if amp else "FP32",
                     "data_images_per_s": args.batch / data_s, "train_images_per_s": args.batch / step_s,
                     "step_s": step_s})
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    report = {"device": gpu or f"cpu ({torch.get_num_threads()} threads)", "size": args.size, "width": args.width,
              "batch": args.batch, "steps": args.steps, "images": len(items), "data": str(args.data), "rows": rows}
    print(f"train throughput, full model width {args.width} at {args.size}², batch {args.batch}, "
          f"{report['device']}, median of {args.steps} steps")
    print("| input | layout | precision | loader images/s | training images/s | s/step |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['layout']} | {r['precision']} | {r['data_images_per_s']:.2f} | "
              f"{r['train_images_per_s']:.3f} | {r['step_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
