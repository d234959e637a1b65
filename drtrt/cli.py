"""The ``drtrt`` command line: thin commands over the Python API.

Heavy packages (torch, onnx) are imported inside the commands that need them, so
``drtrt screen`` starts without them. Every expected failure is one line on stderr and exit
status 1; ``screen`` exits 2 when some image could not be graded.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from drtrt import __version__
from drtrt.errors import BackendUnavailable, DrtrtError

app = typer.Typer(name="drtrt", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Diabetic-retinopathy screening kit: synthesise, train, export, screen.")
console = Console()
err = Console(stderr=True)

EXTRAS = {"torch": "train", "torchvision": "train", "sklearn": "train", "yaml": "train", "matplotlib": "train",
          "onnx": "export", "onnxslim": "export"}


def cli_errors(func):
    """One-line messages instead of tracebacks for every error the user can fix."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DrtrtError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in EXTRAS:
                raise
            err.print(f"[red]error:[/red] {BackendUnavailable(missing_extra_message(top))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def missing_extra_message(module: str) -> str:
    extra = EXTRAS[module]
    return f"this command needs '{module}', which is not installed; pip install 'drtrt[{extra}]'"


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=err, transient=False)


def _version(value: bool) -> None:
    if value:
        console.print(f"drtrt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    pass


@app.command()
@cli_errors
def synth(out: Annotated[Path, typer.Argument(help="Folder to write the IDRiD-layout data set into.")],
          grading: Annotated[int, typer.Option(help="Images in the grading set (IDRiD-D).")] = 60,
          segmentation: Annotated[int, typer.Option(help="Images in the segmentation set (IDRiD-S).")] = 20,
          size: Annotated[int, typer.Option(help="Image width in pixels (height keeps IDRiD's 3:2).")] = 768,
          seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0) -> None:
    """Write a synthetic fundus data set in the exact official IDRiD layout."""
    from drtrt.synth import write_synthetic_idrid

    with _progress() as progress:
        task = progress.add_task("synthesising", total=grading + segmentation, info="")
        summary = write_synthetic_idrid(out, grading, segmentation, size=size, seed=seed,
                                        progress=lambda done, total: progress.update(task, completed=done))
    console.print(f"wrote {grading + segmentation} synthetic images to {summary.root}")


@app.command()
@cli_errors
def train(data: Annotated[Path, typer.Option(help="IDRiD-layout folder (real or `drtrt synth`).")],
          out: Annotated[Path, typer.Option(help="Run folder for checkpoints and logs.")],
          model: Annotated[str, typer.Option(help="multitask | vgg16 | unet-vgg16")] = "multitask",
          epochs: Annotated[Optional[int], typer.Option(help="Epochs (thesis: 100).")] = None,
          batch_size: Annotated[Optional[int], typer.Option(help="Batch size (thesis: 4).")] = None,
          lr: Annotated[Optional[float], typer.Option(help="Initial learning rate (thesis: 1e-3).")] = None,
          image_size: Annotated[Optional[int], typer.Option(help="Model input side (thesis: 512).")] = None,
          width: Annotated[Optional[float], typer.Option(help="Channel width multiplier (1.0 = VGG16).")] = None,
          batch_norm: Annotated[Optional[bool], typer.Option("--batch-norm/--no-batch-norm",
                                                             help="VGG16-BN layout (train from scratch).")] = None,
          seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
          device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None) -> None:
    """Train the multi-task model (or a baseline) on an IDRiD-layout folder."""
    from dataclasses import replace

    from drtrt.idrid import read_idrid
    from drtrt.train.model import ModelConfig
    from drtrt.train.trainer import TrainConfig, replace_config, train as run_training

    cfg = TrainConfig()
    model_cfg = ModelConfig.from_dict({**cfg.model.to_dict(), "arch": model,
                                       **{k: v for k, v in {"width": width, "batch_norm": batch_norm}.items()
                                          if v is not None}})
    cfg = replace_config(cfg, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
    cfg = replace(cfg, model=model_cfg,
                  preprocess=replace(cfg.preprocess, size=image_size) if image_size else cfg.preprocess)
    index = read_idrid(data)
    with _progress() as progress:
        task = progress.add_task("epoch 1", total=None, info="")

        def on_progress(p: dict) -> None:
            progress.update(task, description=f"epoch {p['epoch']}/{cfg.epochs}", completed=p["step"],
                            total=p["steps"], info=f"loss {p['loss']:.3f}")

        result = run_training(cfg, index, out, on_progress=on_progress, log=progress.console.print)
    console.print(f"best epoch {result.best_epoch}; checkpoints in {result.run_dir}")


@app.command()
@cli_errors
def export(checkpoint: Annotated[Path, typer.Option(help="Checkpoint from `drtrt train` (.pt).")],
           out: Annotated[Path, typer.Option(help="ONNX file to write.")],
           simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxslim.")] = True) -> None:
    """Export a checkpoint to ONNX and check it against PyTorch."""
    from drtrt.export.onnx_export import export_onnx

    with console.status("exporting to ONNX"):
        result = export_onnx(checkpoint, out, simplify=simplify)
    console.print(result.summary())


@app.command()
@cli_errors
def screen(images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
           model: Annotated[Path, typer.Option(help="Model file (.onnx).")],
           out: Annotated[Optional[Path], typer.Option(help="Folder for results.jsonl and overlay PNGs.")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image on stdout.")] = False) -> None:
    """Screen fundus photographs: grade, referable DR, lesion areas. Exit 2 if any image was not graded."""
    from drtrt.runtime.screening import collect_images, screen_images

    paths = collect_images(images)
    results = screen_images(paths, model, out, on_result=(lambda r: print(json.dumps(r.to_dict()), flush=True))
                            if as_json else None)
    if not as_json:
        console.print(results_table(results))
        if out:
            console.print(f"results in {out}")
    if any(r.status != "graded" for r in results):
        raise typer.Exit(2)


def results_table(results) -> Table:
    table = Table(title="screening results")
    for col in ("image", "status", "grade", "referable", "EX", "SE", "MA", "HE"):
        table.add_column(col)
    for r in results:
        if r.status != "graded":
            table.add_row(Path(r.image).name, r.status, r.reason or "", "", "", "", "", "")
            continue
        areas = [f"{r.lesions[c].area_fov_pct:.2f}% ({r.lesions[c].count})" if c in r.lesions else "-"
                 for c in ("EX", "SE", "MA", "HE")]
        referable = "[bold red]REFER[/]" if r.referable else "no"
        table.add_row(Path(r.image).name, r.status, f"{r.grade} {r.grade_name}", referable, *areas)
    table.caption = "lesion cells: % of field of view (number of lesions). Not for clinical use: demo model."
    return table


@app.command()
@cli_errors
def evaluate(model: Annotated[Path, typer.Option(help="Model file (.onnx).")],
             data: Annotated[Path, typer.Option(help="IDRiD-layout folder.")],
             split: Annotated[str, typer.Option(help="train | test")] = "test",
             as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False) -> None:
    """Grade and lesion metrics of a model on an IDRiD-layout folder."""
    from drtrt.evaluate import evaluate_runner
    from drtrt.idrid import read_idrid
    from drtrt.runtime.predictor import load_runner

    samples = read_idrid(data).select(split=split)
    runner = load_runner(model)
    with _progress() as progress:
        task = progress.add_task("evaluating", total=len(samples), info="")
        metrics = evaluate_runner(runner, samples, on_progress=lambda d, t: progress.update(task, completed=d))
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            if isinstance(value, float):
                console.print(f"{key:>24}  {value:.4f}")


@app.command()
@cli_errors
def demo(out: Annotated[Path, typer.Option(help="Folder for the demo's data, model and results.")] = Path("demo-out"),
         epochs: Annotated[int, typer.Option(help="Training epochs.")] = 0,
         seed: Annotated[int, typer.Option(help="Random seed.")] = 0) -> None:
    """Synthesise data, train a tiny model, export ONNX, screen images: the whole kit in minutes, offline."""
    from drtrt.demo import run_demo

    run_demo(out, console=console, progress_factory=_progress, epochs=epochs or None, seed=seed)


def main() -> None:
    app(prog_name="drtrt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
