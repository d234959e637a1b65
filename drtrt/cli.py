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
from rich.markup import escape
from rich.table import Table

from drtrt import __version__
from drtrt.errors import DrtrtError

app = typer.Typer(name="drtrt", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Diabetic-retinopathy screening kit: synthesise, train, export, screen.")
console = Console()
err = Console(stderr=True)

EXTRAS = {"torch": "train", "torchvision": "train", "sklearn": "train", "yaml": "train", "matplotlib": "train",
          "onnx": "export", "onnxslim": "export"}


# Options shared by the training commands (train, pseudo-label, ablation).
WidthOpt = Annotated[Optional[float], typer.Option(help="Channel width multiplier (1.0 = VGG16 widths).")]
ImageSizeOpt = Annotated[Optional[int], typer.Option(help="Model input side (thesis: 512).")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Any config key=value, e.g. loss.beta=0.99999.")]


def cli_errors(func):
    """One-line messages instead of tracebacks for every error the user can fix."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DrtrtError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in EXTRAS:
                raise
            err.print(f"[red]error:[/red] {escape(missing_extra_message(top))}", highlight=False, soft_wrap=True)
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
def train(data: Annotated[Optional[Path], typer.Option(help="IDRiD-layout folder (real or `drtrt synth`).")] = None,
          out: Annotated[Optional[Path], typer.Option(help="Run folder for checkpoints, logs and plots.")] = None,
          config: Annotated[Optional[Path], typer.Option(help="YAML config (see --print-config); flags override it.")] = None,
          model: Annotated[Optional[str], typer.Option(help="multitask | vgg16 | unet-vgg16")] = None,
          epochs: Annotated[Optional[int], typer.Option(help="Epochs (thesis: 100; unet-vgg16 300).")] = None,
          batch_size: Annotated[Optional[int], typer.Option(help="Batch size per process (thesis: 4; unet 2).")] = None,
          lr: Annotated[Optional[float], typer.Option(help="Initial learning rate (thesis: 1e-3; unet 1e-2).")] = None,
          image_size: ImageSizeOpt = None,
          width: WidthOpt = None,
          batch_norm: Annotated[Optional[bool], typer.Option("--batch-norm/--no-batch-norm",
                                                             help="VGG16-BN layout (train from scratch).")] = None,
          labels: Annotated[Optional[str], typer.Option(help="partial | pseudo (needs --pseudo-labels).")] = None,
          pseudo_labels: Annotated[Optional[str], typer.Option(help="Folder from `drtrt pseudo-label`.")] = None,
          seed: Annotated[Optional[int], typer.Option(help="Random seed (first seed with --seeds).")] = None,
          seeds: Annotated[Optional[int], typer.Option(help="Train N seeds, score each on the test split, "
                                                             "write OUT/table.md (mean ± std).")] = None,
          device: DeviceOpt = None,
          workers: Annotated[Optional[int], typer.Option(help="DataLoader worker processes.")] = None,
          cache_dir: Annotated[Optional[Path], typer.Option(help="Cache of preprocessed images (reused across runs).")] = None,
          resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run in this folder.")] = None,
          set_: SetOpt = None,
          print_config: Annotated[bool, typer.Option(help="Print the resolved YAML config and exit.")] = False) -> None:
    """Train the multi-task model (or a baseline) on an IDRiD-layout folder; torchrun for several GPUs/processes."""
    from drtrt.errors import ConfigError
    from drtrt.idrid import read_idrid
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
    index = read_idrid(data)   # layout errors surface before any progress bar
    if seeds:
        console.print(run_seeds(cfg, index, out or resume, range(cfg.seed, cfg.seed + seeds), log=console.print,
                                cache_dir=cache_dir))
        return
    with _progress() as progress:
        task = progress.add_task("epoch 1", total=None, info="")

        def on_progress(p: dict) -> None:
            progress.update(task, description=f"epoch {p['epoch']}/{p['epochs']}", completed=p["step"],
                            total=p["steps"], info=f"loss {p['loss']:.3f}")

        result = run_training(cfg, index, resume or out, on_progress=on_progress, log=progress.console.print,
                              cache_dir=cache_dir, resume=resume is not None)
    console.print(f"best epoch {result.best_epoch}; checkpoints, history and plots in {result.run_dir}")


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
def screen(images: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders of images.")] = None,
           model: Annotated[Path, typer.Option(help="Model file: .onnx, .engine (TensorRT) or .pt (parity only).")] = ...,
           out: Annotated[Optional[Path], typer.Option(help="Session folder: database, overlays, masks, reports.")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image on stdout.")] = False,
           patient: Annotated[Optional[str], typer.Option(help="Patient ID of these images.")] = None,
           eye: Annotated[Optional[str], typer.Option(help="left | right (also L/R, OS/OD).")] = None,
           manifest: Annotated[Optional[Path], typer.Option(help="CSV with columns file, patient, eye.")] = None,
           backend: Annotated[str, typer.Option(help="auto (by file suffix) | ort | trt | torch")] = "auto",
           providers: Annotated[Optional[str], typer.Option(help="ONNX Runtime providers, e.g. cuda,cpu.")] = None,
           batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 4) -> None:
    """Screen fundus photographs: grade, referable DR, lesions, per-eye and per-patient verdicts.

    With --out, a crash-safe session folder: re-run the same command after a crash to finish it.
    Exit 2 if any image was ungradable or unreadable."""
    from drtrt.runtime.screening import resolve_inputs, screen_images
    from drtrt.runtime.session import SessionConfig

    paths, assignments, default = resolve_inputs(images or [], manifest, patient, eye)
    cfg = SessionConfig(backend=backend, providers=tuple(providers.split(",")) if providers else None,
                        batch_size=batch_size)
    rows = screen_images(paths, model, out, cfg=cfg, assignments=assignments, default=default,
                         on_result=(lambda r: print(json.dumps(r.to_dict()), flush=True)) if as_json else None,
                         command=" ".join(sys.argv[1:]))
    if not as_json:
        console.print(results_table(rows))
        if out:
            console.print(f"results in {out} (summary.html, reports/)")
    if any(r.status in ("ungradable", "error") for r in rows):
        raise typer.Exit(2)


def results_table(rows):
    """Rich renderable: one line per image, then one per patient when patient IDs were given."""
    from rich.console import Group
    from rich.markup import escape

    from drtrt.runtime.patients import patient_verdicts
    from drtrt.runtime.report import gradable_share

    table = Table(title="screening results")
    for col in ("image", "patient / eye", "status", "grade", "referable", "EX", "SE", "MA", "HE"):
        table.add_column(col)
    for r in rows:
        d, who = r.to_dict(), escape(" ".join(x for x in (r.patient, r.eye) if x))
        if r.status != "graded":
            table.add_row(escape(r.name), who, r.status, escape(r.reason or ""), "", "", "", "", "")
            continue
        areas = [f"{d['lesions'][c]['area_fov_pct']:.2f}% ({d['lesions'][c]['count']})" if c in d["lesions"] else "-"
                 for c in ("EX", "SE", "MA", "HE")]
        grade = "-" if d["grade"] is None else f"{d['grade']} {d['grade_name']}"
        referable = "-" if d["referable"] is None else "[bold red]REFER[/]" if d["referable"] else "no"
        table.add_row(escape(r.name), who, r.status, grade, referable, *areas)
    graded, judged = gradable_share(rows)
    table.caption = (f"{graded} of {judged} images gradable. Lesion cells: % of field of view (number of lesions). "
                     "Not for clinical use: demo model.")
    verdicts = patient_verdicts(rows)
    if not verdicts:
        return table
    patients = Table(title="patients")
    for col in ("patient", "verdict", "right eye", "left eye", "note"):
        patients.add_column(col)
    for v in verdicts:
        eyes = (v.eyes[e].verdict if e in v.eyes else "" for e in ("right", "left"))
        patients.add_row(escape(v.patient), f"[bold]{v.verdict}[/]", *eyes, v.note)
    return Group(table, patients)


@app.command()
@cli_errors
def evaluate(model: Annotated[Path, typer.Option(help="Model: .onnx, .pt checkpoint, or .engine (TensorRT).")],
             data: Annotated[Path, typer.Option(help="IDRiD-layout folder.")],
             split: Annotated[str, typer.Option(help="test | train | all")] = "test",
             subset: Annotated[Optional[str], typer.Option(help="grading | segmentation (default both).")] = None,
             backend: Annotated[str, typer.Option(help="auto (by file suffix) | ort | trt | torch")] = "auto",
             batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 4,
             as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False) -> None:
    """Grade (accuracy, macro-F1, AUC, referable-DR sensitivity/specificity, confusion matrix) and lesion
    (Dice, IoU, PR-AUC) metrics of a model on an IDRiD-layout folder."""
    from drtrt.evaluate import evaluate_runner, metrics_tables, select_samples
    from drtrt.metrics import json_ready
    from drtrt.runtime.predictor import load_runner

    samples = select_samples(data, split, subset)
    runner = load_runner(model, backend=backend)
    with _progress() as progress:
        task = progress.add_task("evaluating", total=len(samples), info="")
        metrics = evaluate_runner(runner, samples, batch_size=batch_size,
                                  on_progress=lambda d, t: progress.update(task, completed=d))
    runner.deactivate()
    if as_json:
        print(json.dumps(json_ready(metrics), indent=2))
    else:
        for table in metrics_tables(metrics, title=f"{model.name} on {data.name} ({split}, {len(samples)} images)"):
            console.print(table)


@app.command()
@cli_errors
def demo(out: Annotated[Path, typer.Option(help="Folder for the demo's data, model and results.")] = Path("demo-out"),
         epochs: Annotated[int, typer.Option(help="Training epochs.")] = 0,
         seed: Annotated[int, typer.Option(help="Random seed.")] = 0) -> None:
    """Synthesise data, train a tiny model, export ONNX, screen images: the whole kit in minutes, offline."""
    from drtrt.demo import run_demo

    run_demo(out, console=console, progress_factory=_progress, epochs=epochs or None, seed=seed)


@app.command()
@cli_errors
def parity(candidate: Annotated[Optional[list[Path]], typer.Option(help="Model to check (.onnx, .engine, .pt); repeatable.")] = None,
           reference: Annotated[Optional[Path], typer.Option(help="Reference model, usually the checkpoint.")] = None,
           data: Annotated[Optional[Path], typer.Option(help="IDRiD-layout folder.")] = None,
           split: Annotated[str, typer.Option(help="train | test | all")] = "test",
           golden: Annotated[Optional[Path], typer.Option(help="Golden folder instead of --reference/--data.")] = None,
           save_golden: Annotated[Optional[Path], typer.Option(help="Write inputs + reference outputs here.")] = None,
           threshold: Annotated[Optional[list[str]], typer.Option(help="Gate override KEY=VALUE; repeatable.")] = None,
           limit: Annotated[Optional[int], typer.Option(help="Compare the first N images only.")] = None,
           report: Annotated[Optional[Path], typer.Option(help="Write an HTML report with the worst cases.")] = None,
           json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report.")] = None) -> None:
    """Check models against a reference: agreement, logit |Δ|, mask Dice, task metrics. Exit 2 if one fails."""
    from drtrt.verify.parity import ParityConfig, run_parity
    from drtrt.verify.report import fmt, parity_table
    from drtrt.verify.thresholds import parse_overrides

    cfg = ParityConfig(tuple(candidate or ()), reference, data, split, golden, save_golden,
                       tuple(parse_overrides(threshold or []).items()), limit=limit, report=report, json=json_out)
    with _progress() as progress:
        task = progress.add_task("comparing", total=None, info="")
        result = run_parity(cfg, on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    if result.golden_written:
        console.print(f"golden files written: {result.golden_written}")
    if result.candidates:
        console.print(parity_table(result))
    for c in result.candidates:
        for check in c.failures:
            console.print(f"[red]FAIL[/] {Path(c.model).name}: {check.name} {fmt(check.value)} "
                          f"(needs {check.op} {check.limit:g}){': ' + escape(check.note) if check.note else ''}",
                          highlight=False)
    if not result.passed:
        raise typer.Exit(2)


@app.command()
@cli_errors
def bench(model: Annotated[list[Path], typer.Option(help="Model file (.onnx, .engine, .pt); repeatable.")],
          batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated, e.g. 1,4.")] = "1",
          warmup: Annotated[int, typer.Option(help="Untimed iterations first.")] = 3,
          iters: Annotated[int, typer.Option(help="Timed iterations per model and batch.")] = 20,
          data: Annotated[Optional[Path], typer.Option(help="IDRiD-layout folder: its images, plus task metrics.")] = None,
          split: Annotated[str, typer.Option(help="train | test | all")] = "test",
          floor: Annotated[Optional[float], typer.Option(help="CI gate: minimum images/s for every row.")] = None,
          peak: Annotated[bool, typer.Option("--peak/--no-peak", help="Measure the FP32 GEMM peak (~2 s per model).")] = True,
          log: Annotated[Optional[Path], typer.Option(help="JSON-lines log to append to.")] = Path("drtrt-bench.jsonl"),
          json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON.")] = None) -> None:
    """Latency p50/p90/p99, throughput, pre-/post-processing, peak memory, size. Exit 2 below --floor."""
    from drtrt.errors import ConfigError
    from drtrt.verify.bench import BenchConfig, bench_table, run_bench

    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise ConfigError(f"--batch expects comma-separated integers such as 1,4; found {batch!r}") from None
    cfg = BenchConfig(tuple(model), batches, warmup, iters, data, split, floor, peak, log, json_out)
    report = run_bench(cfg, on_model=lambda name: err.print(f"benchmarking {name}"))
    console.print(bench_table(report))
    for row in report.failures:
        console.print(f"[red]FAIL[/] {Path(row.model).name} batch {row.batch}: {row.images_per_s:.2f} images/s "
                      f"< floor {floor:g}", highlight=False)
    if report.failures:
        raise typer.Exit(2)


@app.command()
@cli_errors
def build(onnx: Annotated[Path, typer.Option(help="ONNX model (FP32, FP16, or INT8 with Q/DQ nodes).")],
          out: Annotated[Path, typer.Option(help="Engine to write (a raw TensorRT plan) plus OUT.json, its manifest.")],
          fp16: Annotated[bool, typer.Option("--fp16", help="Half precision.")] = False,
          int8: Annotated[bool, typer.Option("--int8", help="INT8: a Q/DQ model, or calibrate with --calib-data.")] = False,
          calib_data: Annotated[Optional[Path], typer.Option(help="Images to calibrate INT8 on (ONNX without Q/DQ).")] = None,
          max_batch: Annotated[int, typer.Option(help="Largest batch of the optimisation profile (1…N).")] = 4,
          workspace: Annotated[float, typer.Option(help="Builder workspace limit in GiB.")] = 1.0,
          timing_cache: Annotated[Optional[Path], typer.Option(
              help="Timing cache file or folder (default: one per GPU + TensorRT under ~/.cache/drtrt).")] = None) -> None:
    """Build a TensorRT engine from ONNX (needs TensorRT and an NVIDIA GPU). Precision defaults to the ONNX's own."""
    from drtrt.errors import ConfigError
    from drtrt.export.trt_build import BuildConfig, RichBuildProgress, build_engine

    if fp16 and int8:
        raise ConfigError("choose one of --fp16 and --int8")
    cfg = BuildConfig(onnx=onnx, out=out, precision="fp16" if fp16 else "int8" if int8 else None, calib_data=calib_data,
                      max_batch=max_batch, workspace_gib=workspace, timing_cache=timing_cache)
    with _progress() as progress:
        result = build_engine(cfg, listener=RichBuildProgress(progress), log=progress.console.print)
    console.print(result.summary())


@app.command()
@cli_errors
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False) -> None:
    """What this machine has (Python, JetPack, GPU, CUDA, TensorRT, ONNX Runtime) and what drtrt can do on it."""
    from drtrt.doctor import diagnose, report_tables

    report = diagnose()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    for table in report_tables(report):
        console.print(table)


@app.command()
@cli_errors
def watch(folder: Annotated[Path, typer.Argument(help="Folder the fundus camera writes into.")],
          model: Annotated[Path, typer.Option(help="Model file: .onnx, .engine (TensorRT) or .pt (parity only).")],
          out: Annotated[Path, typer.Option(help="Session folder (resumed when it exists).")],
          patient: Annotated[Optional[str], typer.Option(help="Patient ID of the images.")] = None,
          eye: Annotated[Optional[str], typer.Option(help="left | right (also L/R, OS/OD).")] = None,
          manifest: Annotated[Optional[Path], typer.Option(help="CSV file, patient, eye; re-read when it changes.")] = None,
          backend: Annotated[str, typer.Option(help="auto (by file suffix) | ort | trt | torch")] = "auto",
          providers: Annotated[Optional[str], typer.Option(help="ONNX Runtime providers, e.g. cuda,cpu.")] = None,
          poll: Annotated[float, typer.Option(help="Seconds between folder scans.")] = 0.5,
          settle: Annotated[float, typer.Option(help="Seconds a file must stop growing before it is read.")] = 1.0) -> None:
    """Screen images as the camera writes them; one log line per image. Ctrl-C stops cleanly."""
    from drtrt.runtime.patients import Assignment, normalise_eye, validate_patient_id
    from drtrt.runtime.session import SessionConfig
    from drtrt.runtime.watch import WatchConfig, watch_folder

    cfg = WatchConfig(poll_s=poll, settle_s=settle, manifest=manifest,
                      default=Assignment(validate_patient_id(patient), normalise_eye(eye)),
                      session=SessionConfig(backend=backend, batch_size=1,
                                            providers=tuple(providers.split(",")) if providers else None))
    watch_folder(folder, model, out, cfg, log=lambda line: console.print(line, highlight=False, soft_wrap=True,
                                                                           markup=False))


def _baseline_config(config, epochs, width, image_size, device, set_):
    """The training config of pseudo-label and ablation: YAML, then their few flags, then --set."""
    from drtrt.train.recipe import resolve_config, train_overrides

    return resolve_config(config, train_overrides(epochs=epochs, width=width, image_size=image_size, device=device),
                          set_)


@app.command("pseudo-label")
@cli_errors
def pseudo_label(data: Annotated[Path, typer.Option(help="IDRiD-layout folder with both sets.")],
                 out: Annotated[Path, typer.Option(help="Folder for masks/, grades.csv, provenance.json.")],
                 grader: Annotated[Optional[Path], typer.Option(help="VGG16 checkpoint (default: train one).")] = None,
                 segmenter: Annotated[Optional[Path], typer.Option(help="U-Net-VGG16 checkpoint (default: train one).")] = None,
                 config: Annotated[Optional[Path], typer.Option(help="YAML training config for the two baselines.")] = None,
                 epochs: Annotated[Optional[int], typer.Option(help="Epochs of each baseline.")] = None,
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


@app.command()
@cli_errors
def ablation(data: Annotated[Path, typer.Option(help="IDRiD-layout folder (test split held out for scoring).")],
             out: Annotated[Path, typer.Option(help="Folder for every run and table.md.")],
             config: Annotated[Optional[Path], typer.Option(help="YAML training config shared by all variants.")] = None,
             seeds: Annotated[int, typer.Option(help="Runs per variant (thesis: mean ± std).")] = 3,
             epochs: Annotated[Optional[int], typer.Option(help="Epochs per run.")] = None,
             width: WidthOpt = None,
             image_size: ImageSizeOpt = None,
             device: DeviceOpt = None,
             set_: SetOpt = None) -> None:
    """Thesis Tables 7–8: baselines, multi-task, + deep fusion, + shallow fusion; writes OUT/table.md."""
    from drtrt.train.sweep import run_ablation

    cfg = _baseline_config(config, epochs, width, image_size, device, set_)
    table = run_ablation(cfg, data, out, range(cfg.seed, cfg.seed + seeds), log=console.print)
    console.print(table)
    console.print(f"table written to {out / 'table.md'}")


def _stage_progress(progress):
    """``on_progress(stage, done, total)`` callback drawing one bar per stage (calibrate, fp16)."""
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total, info="")
        progress.update(tasks[stage], completed=done)

    return update


@app.command()
@cli_errors
def calibrate(onnx: Annotated[Path, typer.Option(help="FP32 model from `drtrt export`.")],
              out: Annotated[Path, typer.Option(help="INT8 Q/DQ model to write (e.g. model.int8.onnx).")],
              data: Annotated[Optional[Path], typer.Option(help="IDRiD-layout folder: calibrate on its training split, "
                                                                "check on its test split.")] = None,
              images_dir: Annotated[Optional[Path], typer.Option(help="Plain images (e.g. your camera's) to calibrate on.")] = None,
              images: Annotated[int, typer.Option(help="Calibration images (a warning below 300).")] = 300,
              method: Annotated[str, typer.Option(help="minmax | percentile | entropy (entropy clips the "
                                                               "activation tail where bright lesions live: "
                                                               "check lesion Dice)")] = "minmax",
              exclude: Annotated[Optional[list[str]], typer.Option(help="Node kept in FP32, or first-conv | heads | softmax | "
                                                                        "none; repeatable; replaces the default "
                                                                        "(first-conv, heads, softmax).")] = None,
              holdout: Annotated[int, typer.Option(help="Held-out images for the check against FP32 (0 = none).")] = 100,
              min_agreement: Annotated[Optional[float], typer.Option(help="Fail below this grade agreement with FP32, "
                                                                          "e.g. 0.97.")] = None,
              min_dice: Annotated[Optional[float], typer.Option(help="Fail below this mean lesion Dice vs FP32.")] = None,
              seed: Annotated[int, typer.Option(help="Seed of the image draws.")] = 0,
              auto_exclude: Annotated[bool, typer.Option("--auto-exclude", help="Keep the layers that diverge most "
                                                         "in FP32 until the INT8 parity gate passes (exit 2 if "
                                                         "it cannot).")] = False) -> None:
    """INT8 by calibration: a Q/DQ model for TensorRT and ONNX Runtime, checked against FP32."""
    from drtrt.calibration import DEFAULT_EXCLUDE, CalibrateConfig, calibrate as run_calibration

    cfg = CalibrateConfig(onnx=onnx, out=out, data=data, images_dir=images_dir, images=images, method=method,
                          exclude=tuple(exclude) if exclude else DEFAULT_EXCLUDE, holdout=holdout,
                          min_agreement=min_agreement, min_dice=min_dice, seed=seed)
    if auto_exclude:
        from drtrt.verify.auto_exclude import auto_exclude_calibration

        result = auto_exclude_calibration(cfg, log=lambda line: err.print(line, highlight=False, soft_wrap=True))
        console.print(result.summary(), highlight=False, soft_wrap=True)
        if not result.passed:
            raise typer.Exit(2)
        return
    with _progress() as progress:
        run = run_calibration(cfg, _stage_progress(progress))
    for warning in run.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    console.print(run.summary(), highlight=False, soft_wrap=True)


@app.command()
@cli_errors
def fp16(onnx: Annotated[Path, typer.Option(help="FP32 model from `drtrt export`.")],
         out: Annotated[Path, typer.Option(help="FP16 model to write (e.g. model.fp16.onnx).")],
         data: Annotated[Optional[Path], typer.Option(help="IDRiD-layout folder: check against FP32 on its test split.")] = None,
         holdout: Annotated[int, typer.Option(help="Held-out images for the check (0 = none).")] = 100,
         min_agreement: Annotated[Optional[float], typer.Option(help="Fail below this grade agreement with FP32.")] = None,
         min_dice: Annotated[Optional[float], typer.Option(help="Fail below this mean lesion Dice vs FP32.")] = None) -> None:
    """FP16 by mixed-precision conversion (I/O, softmax, reductions, heads stay FP32), checked against FP32."""
    from drtrt.calibration import convert_fp16_checked

    with _progress() as progress:
        run = convert_fp16_checked(onnx, out, data, holdout, min_agreement, min_dice,
                                   on_progress=_stage_progress(progress))
    console.print(run.summary(), highlight=False, soft_wrap=True)


def main() -> None:
    app(prog_name="drtrt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
