"""First real-data figure: U-Net-VGG16 on ``idrid-seg-512`` (54 real IDRiD images at 512²).

Converts the folder to the IDRiD layout with a stratified fifth held out (``drtrt.train.seg512``),
trains on the other four fifths (no validation split: 43 images are few; the last epoch is
kept), and scores per-lesion Dice/IoU/PR-AUC on the held-out fifth through ``evaluate_runner``,
the same code ``drtrt evaluate`` uses. Writes OUT/data, OUT/run and OUT/test_metrics.json.

    python scripts/train_seg512.py --src ../shared/data/idrid-seg-512 --out /tmp/seg512 --epochs 420 --bf16

(docs/results.md: mean Dice 0.46 on the held-out fifth after 50.5 min on a 2-core CPU with
native BF16; leave ``--bf16`` out on CPUs without it.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from drtrt.verify.evaluate import evaluate_runner
from drtrt.data.idrid import read_idrid
from drtrt.fileio import json_ready
from drtrt.preprocess import PreprocessSpec
from drtrt.train.augment import AugmentConfig
from drtrt.train.losses import LossConfig
from drtrt.train.model import ModelConfig
from drtrt.train.seg512 import convert_seg512
from drtrt.train.torch_runner import TorchRunner
from drtrt.train.train_config import TrainConfig
from drtrt.train.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/idrid-seg-512")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=420)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--crop", type=int, default=0, help="training crop side (0 = whole 512² image)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    parser.add_argument("--beta", type=float, default=0.99999)
    parser.add_argument("--dice-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                        help="bfloat16 autocast on the CPU (only where it has native BF16)")
    args = parser.parse_args()

    data = args.out / "data"
    if not (data / "split.json").exists():
        convert_seg512(args.src, data, seed=args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      seed=args.seed, device=args.device, val_fraction=0.0, cpu_bf16=args.bf16,
                      model=ModelConfig(arch="unet-vgg16", width=args.width, batch_norm=True),
                      preprocess=PreprocessSpec(size=512),
                      loss=LossConfig(beta=args.beta, dice_weight=args.dice_weight),
                      augment=AugmentConfig(crop=args.crop))
    start = time.perf_counter()
    train(cfg, data, args.out / "run", log=lambda msg: print(msg, flush=True), cache_dir=args.out / "cache")
    minutes = (time.perf_counter() - start) / 60
    with TorchRunner(args.out / "run" / "best.pt", device=args.device) as runner:
        metrics = evaluate_runner(runner, read_idrid(data).select(split="test"))
    metrics.update(train_minutes=round(minutes, 1), config=cfg.to_dict())
    (args.out / "test_metrics.json").write_text(json.dumps(json_ready(metrics), indent=2))
    print(json.dumps({k: v for k, v in json_ready(metrics).items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
