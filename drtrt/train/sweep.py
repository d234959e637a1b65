"""Repeated runs and the thesis ablation (Tables 7–8): train, score on held-out images, tabulate.

Every run is scored on the held-out split (IDRiD's test parts) by ``evaluate_runner`` through
:class:`~drtrt.train.torch_runner.TorchRunner`, the same code ``drtrt evaluate`` uses. Tables
give mean ± sample standard deviation over seeds, in percent, like the thesis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from drtrt.errors import DataError
from drtrt.data.idrid import IdridIndex, read_idrid
from drtrt.fileio import json_ready
from drtrt.train.train_config import TrainConfig

COLUMNS: tuple[tuple[str, str], ...] = (("accuracy", "Acc"), ("macro_f1", "macro-F1"), ("auc", "AUC"),
                                        ("mean_dice", "mDice"), ("mean_iou", "mIoU"), ("mean_pr_auc", "mPR-AUC"))
THESIS_TABLE: dict[str, tuple[float, ...]] = {   # SPEC §2, thesis Tables 7–8 (IDRiD test sets, %)
    "baseline (VGG16 / U-Net-VGG16)": (61.94, 57.31, 66.67, 49.83, 35.16, 57.11),
    "multi-task, no fusion": (64.27, 60.64, 68.62, 51.11, 36.28, 60.71),
    "+ deep fusion": (65.53, 61.90, 69.45, 51.01, 36.41, 61.27),
    "+ shallow fusion (full model)": (67.18, 64.76, 71.24, 51.45, 36.92, 61.82),
}
ABLATION: dict[str, tuple[dict, ...]] = {   # variant -> model overrides of its run(s); the baseline is two models
    "baseline (VGG16 / U-Net-VGG16)": ({"arch": "vgg16"}, {"arch": "unet-vgg16"}),
    "multi-task, no fusion": ({"arch": "multitask", "deep_fusion": False, "shallow_fusion": False},),
    "+ deep fusion": ({"arch": "multitask", "deep_fusion": True, "shallow_fusion": False},),
    "+ shallow fusion (full model)": ({"arch": "multitask", "deep_fusion": True, "shallow_fusion": True},),
}

BASELINE_SUBSETS = {"vgg16": ("grading",), "unet-vgg16": ("segmentation",)}   # each baseline on its own IDRiD set


def train_and_score(cfg: TrainConfig, index: IdridIndex, run_dir: Path, split: str = "test",
                    log: Callable[[str], None] = print, cache_dir: str | Path | None = None) -> dict:
    """Train one run into ``run_dir`` and return the metrics of its ``best.pt`` on ``split``."""
    from drtrt.verify.evaluate import evaluate_runner
    from drtrt.train.torch_runner import TorchRunner
    from drtrt.train.trainer import train

    samples = index.select(split=split)
    if not samples:
        raise DataError(f"no {split} images under {index.root} to score the runs on")
    train(cfg, index, run_dir, log=log, cache_dir=cache_dir)
    with TorchRunner(run_dir / "best.pt", device=cfg.device) as runner:
        metrics = evaluate_runner(runner, samples)
    (run_dir / f"{split}_metrics.json").write_text(json.dumps(json_ready(metrics), indent=2))
    return metrics


def run_seeds(cfg: TrainConfig, data: str | Path | IdridIndex, out: str | Path, seeds: Sequence[int],
              log: Callable[[str], None] = print, cache_dir: str | Path | None = None) -> str:
    """Train ``cfg`` once per seed into ``out/seed-N``; write and return ``out/table.md``."""
    out = Path(out)
    index = data if isinstance(data, IdridIndex) else read_idrid(data)
    runs = []
    for seed in seeds:
        log(f"seed {seed}")
        runs.append(train_and_score(replace(cfg, seed=seed), index, out / f"seed-{seed}", log=log, cache_dir=cache_dir))
    rows = {f"seed {s}": [m] for s, m in zip(seeds, runs)}
    rows[f"mean ± std ({len(seeds)} seeds)"] = runs
    table = markdown_table(rows, title=f"{cfg.model.arch} on {index.root.name}, held-out test split")
    _write(out, table, {str(s): m for s, m in zip(seeds, runs)})
    return table


def run_ablation(cfg: TrainConfig, data: str | Path | IdridIndex, out: str | Path, seeds: Sequence[int],
                 log: Callable[[str], None] = print, cache_dir: str | Path | None = None) -> str:
    """Thesis Tables 7–8: each :data:`ABLATION` variant × seed; writes ``out/table.md`` (with the thesis rows)."""
    out = Path(out)
    index = data if isinstance(data, IdridIndex) else read_idrid(data)
    rows: dict[str, list[dict]] = {}
    for variant, models in ABLATION.items():
        rows[variant] = []
        for seed in seeds:
            merged: dict = {}
            for overrides in models:
                run_cfg = replace(cfg, seed=seed, model=replace(cfg.model, **overrides),
                                  subsets=BASELINE_SUBSETS.get(overrides["arch"], cfg.subsets))
                name = f"{_slug(variant)}-{overrides['arch']}-seed-{seed}"
                log(f"{variant}: {overrides['arch']} seed {seed}")
                merged.update(train_and_score(run_cfg, index, out / name, log=log, cache_dir=cache_dir))
            rows[variant].append(merged)
    table = markdown_table(rows, title=f"ablation on {index.root.name}, held-out test split, "
                                       f"{len(seeds)} seed(s), width {cfg.model.width}, {cfg.epochs} epochs")
    thesis = {k: [dict(zip((c for c, _ in COLUMNS), (v / 100 for v in vals)))] for k, vals in THESIS_TABLE.items()}
    table += "\n" + markdown_table(thesis, title="thesis (IDRiD, full width, ImageNet start)")
    _write(out, table, {k: v for k, v in rows.items()})
    return table


def markdown_table(rows: dict[str, list[dict]], title: str = "") -> str:
    """One line per row name: each column as mean ± std (percent) over the row's runs; "–" if undefined."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| model | " + " | ".join(label for _, label in COLUMNS) + " |",
              "|---|" + "---|" * len(COLUMNS)]
    for name, runs in rows.items():
        cells = []
        for key, _ in COLUMNS:
            values = np.array([r[key] for r in runs if isinstance(r.get(key), float) and not np.isnan(r[key])]) * 100
            if not len(values):
                cells.append("–")
            elif len(values) == 1:
                cells.append(f"{values[0]:.2f}")
            else:
                cells.append(f"{values.mean():.2f} ± {values.std(ddof=1):.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def _write(out: Path, table: str, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(json_ready(results), indent=2))
