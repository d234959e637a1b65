"""The training loop: SGD/AdamW + poly schedule, CE + class-balanced CE, validation, checkpoints.

Plain functions over explicit collaborators (torchvision references style). A run folder
holds ``config.yaml`` (resolved; also ``config.json``), ``last.pt``, ``best.pt`` (selected on
the validation split; at the end its grade head's temperature is fitted on that split,
:mod:`drtrt.train.temperature`), ``history.csv``, ``metrics.json`` and ``loss.png`` / ``val_metrics.png``.

Reproducible and resumable: batch order and augmentation are functions of (seed, epoch,
position) (:class:`~drtrt.train.data.EpochSampler`), and ``last.pt`` holds optimizer,
scheduler, scaler, RNG and loop state, so ``train(..., resume=True)`` after a kill continues
to the same weights an uninterrupted run reaches. Under ``torchrun`` the model is wrapped in
DistributedDataParallel, each rank trains on its shard, rank 0 validates, logs and writes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from drtrt.data.idrid import IdridIndex, read_idrid
from drtrt.errors import ConfigError, DataError
from drtrt.fileio import json_ready
from drtrt.model_info import GradeCalibration
from drtrt.train.checkpoint import load_checkpoint, make_checkpoint, restore_rng, save_atomic
from drtrt.train.data import EpochSampler, FundusDataset, training_items
from drtrt.train.distributed import barrier, device_for, init_distributed, limit_cpu_threads, shutdown
from drtrt.train.losses import GRADE_IGNORE, multitask_loss
from drtrt.train.model import build_model, load_imagenet_vgg16, task_spec
from drtrt.train.pseudo_folder import apply_pseudo_labels
from drtrt.train.temperature import calibrate_checkpoint
from drtrt.train.reproducible import deterministic_algorithms, run_environment, seed_everything
from drtrt.train.train_config import TrainConfig, resolve_device
from drtrt.verify.metrics import SegmentationScores, grade_metrics

RESUME_FREE_KEYS = ("device", "workers", "compile", "deterministic")   # may differ between a run and its resumption


@dataclass
class TrainResult:
    run_dir: Path
    best_metrics: dict
    best_epoch: int
    history: list[dict]
    initial_metrics: dict = field(default_factory=dict)


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
    was_training = model.training
    model.eval()
    task = model.task
    grades, probs = [], []
    seg, has_seg = SegmentationScores(task.lesion_names), False
    for batch in loader:
        outputs = model(batch["image"].to(device))
        if task.grade_output in outputs:
            known = batch["grade"] != GRADE_IGNORE
            grades.append(batch["grade"][known].numpy())
            probs.append(outputs[task.grade_output].float().softmax(1)[known.to(device)].cpu().numpy())
        if task.lesion_output in outputs:
            pred = outputs[task.lesion_output].argmax(1).cpu().numpy()
            for t, p in zip(batch["mask"].numpy(), pred):
                if (t != 255).any():
                    seg.update(t, p)
                    has_seg = True
    model.train(was_training)
    metrics: dict = {}
    if grades and sum(len(g) for g in grades):
        metrics.update(grade_metrics(np.concatenate(grades), np.concatenate(probs), task.referable_min_grade))
    if has_seg:
        metrics.update(seg.result())
    return metrics


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train(cfg: TrainConfig, data: str | Path | IdridIndex, run_dir: str | Path,
          on_progress: Callable[[dict], None] | None = None, log: Callable[[str], None] = print,
          cache_dir: str | Path | None = None, resume: bool = False) -> TrainResult:
    """Train on an IDRiD-layout folder (or its already-read index); returns the best validation metrics.

    ``on_progress`` receives ``{"epoch", "epochs", "step", "steps", "loss"}`` after every step
    (rank 0 only). ``resume=True`` continues from ``run_dir/last.pt`` (same config required,
    except :data:`RESUME_FREE_KEYS`).
    """
    with deterministic_algorithms(cfg.deterministic):
        return _train(cfg, data, run_dir, on_progress, log, cache_dir, resume)


def _train(cfg: TrainConfig, data: str | Path | IdridIndex, run_dir: str | Path,
           on_progress: Callable[[dict], None] | None, log: Callable[[str], None],
           cache_dir: str | Path | None, resume: bool) -> TrainResult:
    run_dir = Path(run_dir)
    ctx = init_distributed(resolve_device(cfg.device).type)
    device = device_for(ctx, resolve_device(cfg.device))
    threads = limit_cpu_threads(ctx)
    if not ctx.is_main:
        log, on_progress = (lambda msg: None), None
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and not (run_dir / "last.pt").is_file():
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"nothing to resume in {run_dir}: it holds no config.yaml and no last.pt from "
                              "`drtrt train`; start the run with --out")
        log(f"{run_dir} was stopped before its first checkpoint: starting it again from its config.yaml")
        resume = False
    seed_everything(cfg.seed)
    index = data if isinstance(data, IdridIndex) else read_idrid(data)
    train_items, val_items = training_items(index, cfg.val_fraction, cfg.seed, cfg.subsets)
    if cfg.labels == "pseudo":
        train_items = apply_pseudo_labels(train_items, cfg.pseudo_labels)
    if not train_items:
        raise DataError(f"no training images found under {index.root}")
    task = task_spec(cfg.model)
    train_ds = FundusDataset(train_items, cfg.preprocess, cfg.augment, cache_dir, task=task)
    val_ds = FundusDataset(val_items, cfg.preprocess, None, cache_dir, task=task)

    if cfg.workers and train_ds.memory_cache:
        # Loaders (and their workers) are made per epoch; filling the memory cache first lets the
        # forked workers share it instead of decoding every image again each epoch.
        log(f"preprocessing {len(train_ds) + len(val_ds)} images into the cache")
        train_ds.fill()
        val_ds.fill()
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.workers)
    per_rank = math.ceil(len(train_ds) / ctx.world)
    drop_last = per_rank > cfg.batch_size
    steps = per_rank // cfg.batch_size if drop_last else math.ceil(per_rank / cfg.batch_size)

    model = build_model(cfg.model)
    log(load_imagenet_vgg16(model, cfg.pretrained))
    channels_last = True if cfg.channels_last is None else cfg.channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(cfg.epochs * steps, cfg.poly_power))
    use_amp = cfg.amp and device.type == "cuda"
    autocast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    use_autocast = use_amp or (cfg.cpu_bf16 and device.type == "cpu")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = {"epoch": 1, "step": 0, "losses": [], "history": [], "best_score": -math.inf, "best_epoch": 0,
             "best_metrics": {}, "initial_metrics": {}}
    if resume:
        state = _restore(run_dir / "last.pt", cfg, model, optimizer, scheduler, scaler)
        log(f"resuming {run_dir} at epoch {state['epoch']}, step {state['step']} of {steps}")
    elif ctx.is_main:
        from drtrt.train.recipe import dump_yaml

        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        (run_dir / "environment.json").write_text(json.dumps(run_environment(device, threads, cfg.deterministic),
                                                             indent=2))
        if len(val_ds):
            state["initial_metrics"] = evaluate_model(model, val_loader, device)
    forward = model
    if ctx.enabled:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        forward = torch.compile(forward)
    log(f"training {cfg.model.arch} on {len(train_ds)} images (validation {len(val_ds)}) on {device}"
        f"{f' ({threads} threads)' if device.type == 'cpu' else ''}"
        f"{f' x {ctx.world} processes' if ctx.enabled else ''}; {steps} steps/epoch; "
        f"mixed precision {'FP16' if use_amp else 'BF16' if use_autocast else 'off'}; labels {cfg.labels}")

    def save_last(epoch: int, step: int) -> None:
        if ctx.is_main:
            resume_state = {**state, "epoch": epoch, "step": step, "history": json.dumps(json_ready(state["history"])),
                            "best_metrics": json.dumps(json_ready(state["best_metrics"])),
                            "initial_metrics": json.dumps(json_ready(state["initial_metrics"])),
                            "scaler": scaler.state_dict()}
            save_atomic(make_checkpoint(model, cfg, epoch, {}, optimizer, scheduler, resume_state), run_dir / "last.pt")

    for epoch in range(state["epoch"], cfg.epochs + 1):
        skip = state["step"] if epoch == state["epoch"] else 0
        if skip == 0:
            state["losses"] = []
        sampler = EpochSampler(len(train_ds), cfg.seed, epoch, ctx.rank, ctx.world, skip=skip * cfg.batch_size)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=drop_last,
                            num_workers=cfg.workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        model.train()
        start = time.perf_counter()
        for step, batch in enumerate(loader, skip + 1):
            images = batch["image"].to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
                outputs = forward(images)
            outputs = {k: v.float() for k, v in outputs.items()}   # losses in FP32 whatever the autocast
            loss = multitask_loss(outputs, batch["grade"].to(device), batch["mask"].to(device), cfg.loss, model.task)

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            state["losses"].append({k: float(v.detach()) for k, v in loss.items()})
            if on_progress:
                on_progress({"epoch": epoch, "epochs": cfg.epochs, "step": step, "steps": steps,
                             "loss": state["losses"][-1]["total"]})
            if cfg.checkpoint_every_steps and scheduler.last_epoch % cfg.checkpoint_every_steps == 0 and step < steps:
                save_last(epoch, step)
        if ctx.is_main:
            _end_epoch(state, cfg, model, val_loader, device, epoch, time.perf_counter() - start,
                       optimizer.param_groups[0]["lr"], run_dir, log)
        state["step"] = 0
        save_last(epoch + 1, 0)
    barrier(ctx)
    if ctx.is_main:
        calibration = calibrate_checkpoint(run_dir / "best.pt", val_loader, device, log) if len(val_ds) else None
        _finish(state, run_dir, calibration)
    shutdown(ctx)
    return TrainResult(run_dir, state["best_metrics"], state["best_epoch"], state["history"], state["initial_metrics"])


def _end_epoch(state: dict, cfg: TrainConfig, model, val_loader, device, epoch: int, seconds: float, lr: float,
               run_dir: Path, log: Callable[[str], None]) -> None:
    metrics = evaluate_model(model, val_loader, device) if len(val_loader.dataset) else {}
    losses = state["losses"]
    row = {"epoch": epoch, "seconds": round(seconds, 2), "lr": lr,
           **{f"loss_{k}": float(np.mean([x[k] for x in losses])) if losses else float("nan")
              for k in ("total", "grade", "lesion")},
           **{f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)}}
    state["history"].append(row)
    score = selection_score(metrics)
    if score > state["best_score"] or state["best_epoch"] == 0 or not metrics:
        state.update(best_score=score, best_epoch=epoch, best_metrics=metrics)
        save_atomic(make_checkpoint(model, cfg, epoch, metrics), run_dir / "best.pt")
    _write_history(state["history"], run_dir / "history.csv")
    log(_epoch_line(row))


def _finish(state: dict, run_dir: Path, calibration: GradeCalibration | None) -> None:
    from drtrt.train.plots import plot_history

    summary = {"best_epoch": state["best_epoch"], "validation": state["best_metrics"],
               "calibration": dataclasses.asdict(calibration) if calibration else None,
               "initial_validation": state["initial_metrics"],
               "final_validation": {k[4:]: v for k, v in state["history"][-1].items() if k.startswith("val_")},
               "history": state["history"]}
    (run_dir / "metrics.json").write_text(json.dumps(json_ready(summary), indent=2))
    plot_history(state["history"], run_dir)


def _restore(path: Path, cfg: TrainConfig, model, optimizer, scheduler, scaler) -> dict:
    ckpt = load_checkpoint(path)
    if "resume" not in ckpt:
        raise ConfigError(f"{path} holds no resume state; it was not written by this version's training loop")
    saved = json.loads(ckpt["train_config"])
    differ = sorted(k for k, v in cfg.to_dict().items() if saved.get(k) != v and k not in RESUME_FREE_KEYS)
    if differ:
        raise ConfigError(f"cannot resume {path.parent}: options {', '.join(differ)} differ from the interrupted run; "
                          "resume with the run's own config.yaml (drtrt train --resume RUN)")
    model.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    state = dict(ckpt["resume"])
    scaler.load_state_dict(state.pop("scaler"))
    restore_rng(ckpt)
    for key in ("history", "best_metrics", "initial_metrics"):
        state[key] = _nan_back(json.loads(state[key]))
    return state


def _nan_back(value):
    """Inverse of ``json_ready`` for what the loop stores: ``None`` metric → NaN."""
    if value is None:
        return float("nan")
    if isinstance(value, dict):
        return {k: _nan_back(v) if k != "confusion_matrix" else v for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_back(v) for v in value]
    return value


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
