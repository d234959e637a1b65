"""Data and training commands: ``synth``, ``train``, ``pseudo-label``, ``ablation``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

from drtrt.cli.common import Arg, Flag, Opt, command, console, interrupted, progress

# Options shared by the training commands. They override the YAML config only when given; the
# defaults in their help are TrainConfig's (tests/cli/test_cli.py holds them against it).
WidthOpt = Annotated[Optional[float], Opt("Channel width multiplier, 1.0 = VGG16 widths [default: 1.0].", "X")]
ImageSizeOpt = Annotated[Optional[int], Opt("Model input side in pixels [default: 512, the thesis's].", "PIXELS")]
DeviceOpt = Annotated[Optional[str], Opt("auto | cpu | cuda | cuda:N [default: auto].", "DEVICE")]
EpochsOpt = Annotated[Optional[int], Opt("Epochs [default: 100, the thesis's classification recipe].", "N")]
SetOpt = Annotated[Optional[list[str]], Opt("Any config key=value, e.g. loss.beta=0.99999; repeatable.", "KEY=VALUE",
                                            "--set")]
ConfigOpt = Annotated[Optional[Path], Opt("YAML training config (see train --print-config); flags override it.",
                                          "FILE")]


@command()
def synth(out: Annotated[Path, Arg("Folder to write the IDRiD-layout data set into.", "DIR")],

          grading: Annotated[int, Opt("Images in the grading set (IDRiD-D).", "N")] = 60,
          segmentation: Annotated[int, Opt("Images in the segmentation set (IDRiD-S).", "N")] = 20,
          size: Annotated[int, Opt("Image width in pixels (height keeps IDRiD's 3:2).", "PIXELS")] = 768,
          seed: Annotated[int, Opt("Random seed (same seed, same files).", "N")] = 0) -> None:
    """Write a synthetic fundus data set in the exact official IDRiD layout."""
    from drtrt.data.synth import write_synthetic_idrid

    with progress() as bars:
        task = bars.add_task("synthesising", total=grading + segmentation, info="")
        summary = write_synthetic_idrid(out, grading, segmentation, size=size, seed=seed,
                                        progress=lambda done, total: bars.update(task, completed=done))
    console.print(f"wrote {grading + segmentation} synthetic images to {summary.root}")


@command()
def train(data: Annotated[Optional[Path], Opt("IDRiD-layout folder (real or `drtrt synth`).", "DIR")] = None,
          out: Annotated[Optional[Path], Opt("Run folder for checkpoints, logs and plots.", "DIR")] = None,
          config: ConfigOpt = None,
          model: Annotated[Optional[str], Opt("multitask | vgg16 | unet-vgg16 [default: multitask].", "ARCH")] = None,
          epochs: EpochsOpt = None,
          batch_size: Annotated[Optional[int], Opt("Batch size per process [default: 4; thesis U-Net: 2].", "N")] = None,
          lr: Annotated[Optional[float], Opt("Initial learning rate [default: 0.001; thesis U-Net: 0.01].", "LR")] = None,
          image_size: ImageSizeOpt = None,
          width: WidthOpt = None,
          batch_norm: Annotated[Optional[bool], Flag("VGG16-BN layout, to train from scratch [default: off].",
                                                     "--batch-norm/--no-batch-norm", show_default=False)] = None,
          labels: Annotated[Optional[str], Opt("partial | pseudo (needs --pseudo-labels) [default: partial].",
                                               "MODE")] = None,
          pseudo_labels: Annotated[Optional[str], Opt("Folder from `drtrt pseudo-label`.", "DIR")] = None,
          seed: Annotated[Optional[int], Opt("Random seed, the first with --seeds [default: 0].", "N")] = None,
          seeds: Annotated[Optional[int], Opt("Train N seeds, score each on the test split, write OUT/table.md "
                                              "(mean ± std).", "N")] = None,
          device: DeviceOpt = None,
          workers: Annotated[Optional[int], Opt("DataLoader worker processes [default: 0].", "N")] = None,
          cache_dir: Annotated[Optional[Path], Opt("Cache of preprocessed images (reused across runs).", "DIR")] = None,
          resume: Annotated[Optional[Path], Opt("Continue the interrupted run in this folder.", "RUN")] = None,
          set_: SetOpt = None,
          print_config: Annotated[bool, Flag("Print the resolved YAML config and exit.", "--print-config")] = False
          ) -> None:
    """Train the multi-task model (or a baseline) on an IDRiD-layout folder; torchrun for several GPUs/processes."""
    from drtrt.data.idrid import read_idrid
    from drtrt.errors import ConfigError
    from drtrt.train.recipe import dump_yaml, resolve_config, train_overrides
    from drtrt.train.sweep import run_seeds
    from drtrt.train.trainer import train as run_training

    flags = train_overrides(model=model, width=width, batch_norm=batch_norm, image_size=image_size, epochs=epochs,
                            batch_size=batch_size, lr=lr, labels=labels, pseudo_labels=pseudo_labels, seed=seed,
                            device=device, workers=workers)
    cfg = resolve_config(resume / "config.yaml" if resume else config, flags, set_)
    if print_config:
        print(dump_yaml(cfg), end="")
        return
    if data is None or (out or resume) is None:
        raise ConfigError("train needs --data ROOT and --out RUN (or --resume RUN); see drtrt train --help")
    if resume is None:
        _refuse_existing_runs([out / f"seed-{s}" for s in range(cfg.seed, cfg.seed + seeds)] if seeds else [out], data)
    index = read_idrid(data)   # layout errors surface before any progress bar
    if seeds:
        from drtrt.cli.tables import sweep_tables

        table = run_seeds(cfg, index, out or resume, range(cfg.seed, cfg.seed + seeds), log=console.print,
                          cache_dir=cache_dir)
        console.print(*sweep_tables(table))
        console.print(f"table written to {(out or resume) / 'table.md'}")
        return
    run = resume or out
    try:
        with progress() as bars:
            task = bars.add_task("epoch 1", total=None, info="")

            def on_progress(p: dict) -> None:
                bars.update(task, description=f"epoch {p['epoch']}/{p['epochs']}", completed=p["step"],
                            total=p["steps"], info=f"loss {p['loss']:.3f}")

            result = run_training(cfg, index, run, on_progress=on_progress, log=bars.console.print,
                                  cache_dir=cache_dir, resume=resume is not None)
    except KeyboardInterrupt:
        raise interrupted(_resume_advice(data, run, cache_dir)) from None
    console.print(f"best epoch {result.best_epoch}; checkpoints, history and plots in {result.run_dir}")


_RUN_FILES = ("config.yaml", "last.pt", "best.pt")   # what `drtrt train` writes into a run folder, config.yaml first


def _refuse_existing_runs(runs: list[Path], data: Path) -> None:
    """``--out`` never replaces a run's checkpoints silently (they may be hours of training), as ``synth``
    and ``export-triton`` never write into a folder in use: a usage error naming ``--resume`` and ``--out``."""
    from drtrt.errors import ConfigError

    for run in runs:
        if any((run / name).is_file() for name in _RUN_FILES):
            raise ConfigError(f"{run} already holds a training run; continue it with drtrt train --data "
                              f"{shlex.quote(str(data))} --resume {shlex.quote(str(run))}, or give another --out")


def _resume_advice(data: Path, run: Path, cache_dir: Path | None) -> str:
    """What to run to go on after Ctrl-C: ``--resume`` once the run has its config.yaml, else the same command."""
    if not (run / "config.yaml").is_file():
        return "nothing was saved yet: run the same command again"
    cache = f" --cache-dir {shlex.quote(str(cache_dir))}" if cache_dir else ""
    return f"continue with: drtrt train --data {shlex.quote(str(data))} --resume {shlex.quote(str(run))}{cache}"


def _baseline_config(config, epochs, width, image_size, device, set_):
    """The training config of pseudo-label and ablation: YAML, then their few flags, then --set."""
    from drtrt.train.recipe import resolve_config, train_overrides

    return resolve_config(config, train_overrides(epochs=epochs, width=width, image_size=image_size, device=device),
                          set_)


@command("pseudo-label")
def pseudo_label(data: Annotated[Path, Opt("IDRiD-layout folder with both sets.", "DIR", show_default=False)],
                 out: Annotated[Path, Opt("Folder for masks/, grades.csv, provenance.json.", "DIR",
                                          show_default=False)],
                 grader: Annotated[Optional[Path], Opt("VGG16 checkpoint (default: train one).", "CHECKPOINT")] = None,
                 segmenter: Annotated[Optional[Path], Opt("U-Net-VGG16 checkpoint (default: train one).",
                                                          "CHECKPOINT")] = None,
                 config: ConfigOpt = None,
                 epochs: EpochsOpt = None,
                 width: WidthOpt = None,
                 image_size: ImageSizeOpt = None,
                 device: DeviceOpt = None,
                 set_: SetOpt = None) -> None:
    """Thesis pseudo-labels: a VGG16 grades IDRiD-S, a U-Net-VGG16 segments IDRiD-D (grade 0 → empty mask)."""
    from drtrt.train.pseudo import make_pseudo_labels

    cfg = _baseline_config(config, epochs, width, image_size, device, set_)
    result = make_pseudo_labels(data, out, cfg, grader=grader, segmenter=segmenter, log=console.print)
    console.print(f"pseudo grades for {result.graded} images, pseudo masks for {result.masked} images in "
                  f"{result.root} (train with --labels pseudo --pseudo-labels {result.root})")


@command()
def ablation(data: Annotated[Path, Opt("IDRiD-layout folder (test split held out for scoring).", "DIR",
                                       show_default=False)],
             out: Annotated[Path, Opt("Folder for every run and table.md.", "DIR", show_default=False)],
             config: ConfigOpt = None,
             seeds: Annotated[int, Opt("Runs per variant (thesis: mean ± std).", "N")] = 3,
             epochs: EpochsOpt = None,
             width: WidthOpt = None,
             image_size: ImageSizeOpt = None,
             device: DeviceOpt = None,
             set_: SetOpt = None) -> None:
    """Thesis Tables 7–8: baselines, multi-task, + deep fusion, + shallow fusion; writes OUT/table.md."""
    from drtrt.cli.tables import sweep_tables
    from drtrt.train.sweep import run_ablation

    cfg = _baseline_config(config, epochs, width, image_size, device, set_)
    table = run_ablation(cfg, data, out, range(cfg.seed, cfg.seed + seeds), log=console.print)
    console.print(*sweep_tables(table))
    console.print(f"table written to {out / 'table.md'}")
