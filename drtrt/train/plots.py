"""PNG curves of a run's ``history.csv`` rows: losses per epoch and validation metrics per epoch."""

from __future__ import annotations

import math
from pathlib import Path

LOSS_KEYS = ("loss_total", "loss_grade", "loss_lesion")
METRIC_KEYS = ("val_accuracy", "val_macro_f1", "val_auc", "val_mean_dice", "val_mean_iou")


def plot_history(history: list[dict], run_dir: str | Path) -> list[Path]:
    """Write ``loss.png`` and (when validation ran) ``val_metrics.png``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    written = []
    for name, keys, ylabel in (("loss.png", LOSS_KEYS, "training loss"),
                               ("val_metrics.png", METRIC_KEYS, "validation metric")):
        series = {k: [(row["epoch"], row[k]) for row in history
                      if isinstance(row.get(k), float) and not math.isnan(row[k])] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for key, points in series.items():
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / name)
        plt.close(fig)
        written.append(run_dir / name)
    return written
