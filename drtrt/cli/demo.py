"""``drtrt demo``: the whole kit on an embedded default, offline, on a laptop CPU.

Synthesise an IDRiD-layout data set → train a tiny multi-task model (its grade probabilities
temperature-scaled on the validation split, ``drtrt.calibration``) → export ONNX → evaluate it
with ONNX Runtime on the held-out split → screen a handful of images.
The model is a demonstration of the pipeline, not a clinical model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

from rich.console import Console

from drtrt.cli.common import Opt, command, console, progress
from drtrt.preprocess import PreprocessSpec


@dataclass(frozen=True)
class DemoConfig:
    grading: int = 180
    segmentation: int = 54
    test_fraction: float = 0.55   # ~105 training images, ~129 held out: a gate that can tolerate a flip (>= 100)
    synth_size: int = 640
    image_size: int = 256
    width: float = 0.125
    epochs: int = 30
    batch_size: int = 8
    lr: float = 0.02
    beta: float = 0.99999
    dice_weight: float = 1.0
    screen_count: int = 6
    seed: int = 0


@command()
def demo(out: Annotated[Path, Opt("Folder for the demo's data, model and results.", "DIR")] = Path("demo-out"),
         epochs: Annotated[Optional[int], Opt(f"Training epochs [default: {DemoConfig.epochs}].", "N")] = None,
         seed: Annotated[int, Opt("Random seed.", "N")] = 0) -> None:
    """Synthesise data, train a tiny model, export ONNX, screen images: the whole kit in minutes, offline."""
    run_demo(out, console=console, progress_factory=progress, epochs=epochs, seed=seed)


def run_demo(out: str | Path, console: Console, progress_factory, epochs: int | None = None, seed: int = 0,
             cfg: DemoConfig = DemoConfig()) -> dict:
    """Run every stage into ``out``; returns the held-out metrics (also in ``out/metrics.json``)."""
    from drtrt.cli.tables import results_table
    from drtrt.data.idrid import read_idrid
    from drtrt.data.synth import write_synthetic_idrid
    from drtrt.fileio import json_ready
    from drtrt.runtime.registry import load_runner
    from drtrt.clinic.session import screen_images
    from drtrt.train.checkpoint import export_checkpoint
    from drtrt.train.losses import LossConfig
    from drtrt.train.model import ModelConfig
    from drtrt.train.train_config import TrainConfig
    from drtrt.train.trainer import train
    from drtrt.verify.evaluate import evaluate_runner

    cfg = replace(cfg, epochs=epochs or cfg.epochs, seed=seed)
    out = Path(out)
    data, run, model_path = out / "data", out / "run", out / "model.onnx"
    started = time.perf_counter()
    stages: dict[str, float] = {}

    def lap(stage: str) -> None:
        stages[stage] = round(time.perf_counter() - started - sum(stages.values()), 1)

    console.rule("[bold]drtrt demo[/] — synthetic data, tiny model, not for clinical use")

    with progress_factory() as bars:
        task = bars.add_task("1/4 synthesising fundus images", total=cfg.grading + cfg.segmentation, info="")
        write_synthetic_idrid(data, cfg.grading, cfg.segmentation, size=cfg.synth_size, seed=cfg.seed,
                              test_fraction=cfg.test_fraction,
                              progress=lambda done, total: bars.update(task, completed=done))
    lap("synthesis")

    train_cfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device="cpu",
        model=ModelConfig(width=cfg.width, batch_norm=True),
        preprocess=PreprocessSpec(size=cfg.image_size),
        loss=LossConfig(beta=cfg.beta, dice_weight=cfg.dice_weight))
    with progress_factory() as bars:
        task = bars.add_task("2/4 training", total=None, info="")

        def on_progress(p: dict) -> None:
            bars.update(task, description=f"2/4 training epoch {p['epoch']}/{cfg.epochs}",
                        completed=p["step"], total=p["steps"], info=f"loss {p['loss']:.3f}")

        train(train_cfg, data, run, on_progress=on_progress, log=lambda msg: None, cache_dir=out / "cache")
    lap("training")

    with console.status("3/4 exporting ONNX and checking it against PyTorch"):
        exported = export_checkpoint(run / "best.pt", model_path)
    console.print(f"3/4 {exported.summary()}")
    lap("export")

    index = read_idrid(data)
    test = index.select(split="test")
    with load_runner(model_path) as runner, progress_factory() as bars:
        console.print(f"3/4 {calibration_line(runner.info)}")
        task = bars.add_task("4/4 evaluating on held-out images", total=len(test), info="")
        metrics = evaluate_runner(runner, test, on_progress=lambda d, t: bars.update(task, completed=d))
    lap("evaluation")
    to_screen = [s.image for s in index.select(subset="grading", split="test")][: cfg.screen_count]
    screened = screen_images(to_screen, model_path, out / "screening")
    lap("screening")
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    metrics["stage_seconds"] = stages
    (out / "metrics.json").write_text(json.dumps(json_ready(metrics), indent=2))
    console.print(results_table(screened.rows, screened.task))
    console.print(
        f"held-out: grade accuracy {metrics.get('accuracy', float('nan')):.2f} "
        f"(majority class {metrics.get('majority_rate', float('nan')):.2f}), "
        f"mean lesion Dice {metrics.get('mean_dice', float('nan')):.2f}; {metrics['seconds']:.0f} s in all "
        f"({', '.join(f'{stage} {seconds:.0f} s' for stage, seconds in stages.items())})")
    console.print(f"outputs: {run / 'best.pt'}, {model_path}, {out / 'screening'}, {out / 'metrics.json'}")
    return metrics


def calibration_line(info) -> str:
    """What the model's grade calibration (``drtrt.calibration``) is, in one line."""
    from drtrt.model_info import grade_calibration

    found = grade_calibration(info)
    if found is None:
        return "grade probabilities not calibrated (too few graded validation images): reports show none"
    return (f"grade probabilities calibrated on {found.n} validation images: temperature {found.temperature:.2f}, "
            f"ECE {found.ece_before:.3f} → {found.ece_after:.3f}")
