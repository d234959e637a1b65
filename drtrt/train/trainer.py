"""The training loop: SGD + poly schedule, CE + class-balanced CE, validation, checkpoints.

Plain functions over explicit collaborators (torchvision references style). A run folder
holds ``config.json`` (resolved), ``last.pt``, ``best.pt``, ``history.csv`` and
``metrics.json``. Checkpoints hold only tensors and plain containers, so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from drtrt import __version__
from drtrt.config import from_dict, to_dict
from drtrt.errors import ArtefactError, ConfigError, DataError
from drtrt.idrid import IdridIndex, read_idrid
from drtrt.metrics import SegmentationScores, grade_metrics
from drtrt.preprocess import PreprocessSpec
from drtrt.train.augment import AugmentConfig
from drtrt.train.data import FundusDataset, LabelledSample, training_items
from drtrt.train.losses import GRADE_IGNORE, LossConfig, multitask_loss
from drtrt.train.model import ModelConfig, build_model, load_imagenet_vgg16

CHECKPOINT_FORMAT = "drtrt-checkpoint/1"


@dataclass(frozen=True)
class TrainConfig:
    """Every training option; defaults are the thesis classification recipe (§4.3)."""

    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.2
    workers: int = 0
    pretrained: str | None = None      # ImageNet VGG16 file; None = torch hub cache if present
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return from_dict(cls, data)


@dataclass
class TrainResult:
    run_dir: Path
    best_metrics: dict
    best_epoch: int
    history: list[dict]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def poly_lambda(total_steps: int, power: float) -> Callable[[int], float]:
    return lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** power


def selection_score(metrics: dict) -> float:
    """Single number for choosing ``best.pt``: mean of grade macro-F1 and mean lesion Dice
    (whichever the model and the validation split provide)."""
    parts = [metrics[k] for k in ("macro_f1", "mean_dice") if k in metrics and not math.isnan(metrics[k])]
    return float(np.mean(parts)) if parts else float("-inf")


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> dict:
    """Grade metrics on samples with a grade, lesion Dice/IoU on samples with a mask."""
    model.eval()
    grades, probs = [], []
    seg = SegmentationScores()
    has_seg = False
    for batch in loader:
        outputs = model(batch["image"].to(device))
        if "grade_logits" in outputs:
            known = batch["grade"] != GRADE_IGNORE
            grades.append(batch["grade"][known].numpy())
            probs.append(outputs["grade_logits"].softmax(1)[known.to(device)].float().cpu().numpy())
        if "lesion_logits" in outputs:
            pred = outputs["lesion_logits"].argmax(1).cpu().numpy()
            target = batch["mask"].numpy()
            for t, p in zip(target, pred):
                if (t != 255).any():
                    seg.update(t, p)
                    has_seg = True
    metrics: dict = {}
    if grades and sum(len(g) for g in grades):
        metrics.update(grade_metrics(np.concatenate(grades), np.concatenate(probs)))
    if has_seg:
        metrics.update(seg.result())
    return metrics


def make_checkpoint(model, cfg: TrainConfig, epoch: int, metrics: dict, optimizer=None, scheduler=None) -> dict:
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "drtrt_version": __version__,
        "model_config": cfg.model.to_dict(),
        "preprocess": cfg.preprocess.to_dict(),
        "train_config": json.dumps(cfg.to_dict()),
        "epoch": epoch,
        "metrics": json.dumps(metrics),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
        ckpt["scheduler"] = scheduler.state_dict()
        ckpt["rng"] = torch.get_rng_state()  # augmentation and shuffling draw from torch's RNG
    return ckpt


def load_checkpoint(path: str | Path) -> dict:
    """Load a drtrt checkpoint safely (``weights_only=True``: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ArtefactError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unpickler's protocol notice for foreign files
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint we trust"
        raise ArtefactError(f"{path} is not a loadable drtrt checkpoint ({type(exc).__name__}; "
                            "only weights-only checkpoints written by drtrt are accepted)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ArtefactError(f"{path} is not a drtrt checkpoint (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig, data: str | Path | IdridIndex, run_dir: str | Path,
          on_progress: Callable[[dict], None] | None = None, log: Callable[[str], None] = print,
          cache_dir: str | Path | None = None) -> TrainResult:
    """Train on an IDRiD-layout folder (or its already-read index); returns the best validation metrics.

    ``on_progress`` receives ``{"epoch", "step", "steps", "loss"}`` after every step (the CLI
    draws a progress bar from it).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    index = data if isinstance(data, IdridIndex) else read_idrid(data)
    train_items, val_items = training_items(index, cfg.val_fraction, cfg.seed)
    if not train_items:
        raise DataError(f"no training images found under {index.root}")
    train_ds = FundusDataset(train_items, cfg.preprocess, cfg.augment, cache_dir)
    val_ds = FundusDataset(val_items, cfg.preprocess, None, cache_dir)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_ds) > cfg.batch_size,
                              num_workers=cfg.workers, generator=generator, persistent_workers=cfg.workers > 0)
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.workers)

    model = build_model(cfg.model)
    log(load_imagenet_vgg16(model, cfg.pretrained))
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(total, cfg.poly_power))
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log(f"training {cfg.model.arch} on {len(train_ds)} images (validation {len(val_ds)}) on {device}")

    history: list[dict] = []
    best_score, best_epoch, best_metrics = float("-inf"), 0, {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        start, losses = time.perf_counter(), []
        for step, batch in enumerate(train_loader, 1):
            outputs = model(batch["image"].to(device))
            loss = multitask_loss(outputs, batch["grade"].to(device), batch["mask"].to(device), cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            optimizer.step()
            scheduler.step()
            losses.append({k: float(v.detach()) for k, v in loss.items()})
            if on_progress:
                on_progress({"epoch": epoch, "step": step, "steps": len(train_loader), "loss": losses[-1]["total"]})
        metrics = evaluate_model(model, val_loader, device) if len(val_ds) else {}
        row = {"epoch": epoch, "seconds": round(time.perf_counter() - start, 2), "lr": scheduler.get_last_lr()[0],
               **{f"loss_{k}": float(np.mean([l[k] for l in losses])) for k in ("total", "grade", "lesion")},
               **{f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)}}
        history.append(row)
        score = selection_score(metrics)
        if score > best_score or epoch == 1:
            best_score, best_epoch, best_metrics = score, epoch, metrics
            _save(make_checkpoint(model, cfg, epoch, metrics), run_dir / "best.pt")
        _save(make_checkpoint(model, cfg, epoch, metrics, optimizer, scheduler), run_dir / "last.pt")
        _write_history(history, run_dir / "history.csv")
        log(_epoch_line(row))
    (run_dir / "metrics.json").write_text(json.dumps({"best_epoch": best_epoch, "validation": best_metrics,
                                                      "history": history}, indent=2))
    return TrainResult(run_dir, best_metrics, best_epoch, history)


def _epoch_line(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['loss_total']:.3f}"]
    for key, label in (("val_accuracy", "val acc"), ("val_macro_f1", "val F1"), ("val_mean_dice", "val Dice")):
        if key in row and not math.isnan(row[key]):
            parts.append(f"{label} {row[key]:.3f}")
    return "  ".join(parts) + f"  ({row['seconds']:.1f} s)"


def _write_history(history: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def replace_config(cfg: TrainConfig, **overrides) -> TrainConfig:
    """``dataclasses.replace`` for the flat options, skipping ``None`` (flag not given)."""
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
