"""Evidence commands: ``evaluate`` (task metrics), ``parity`` (models against a reference),
``bench`` (the screening path's speed), ``doctor`` (what this machine can do)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from drtrt.cli.common import ExitCode, Flag, Opt, command, console, print_json, progress, stage_progress

JsonOpt = Annotated[bool, Flag("Print the result as JSON on stdout (instead of tables).", "--json")]
SplitOpt = Annotated[str, Opt("test | train | all", "SPLIT")]
BackendOpt = Annotated[str, Opt("auto (by file suffix) | ort | trt | torch", "BACKEND")]


@command()
def evaluate(model: Annotated[Path, Opt("Model: .onnx, .pt checkpoint, or .engine (TensorRT).", "MODEL",
                                        show_default=False)],
             data: Annotated[Path, Opt("IDRiD-layout folder.", "DIR", show_default=False)],
             split: SplitOpt = "test",
             subset: Annotated[Optional[str], Opt("grading | segmentation (default both).", "SUBSET")] = None,
             backend: BackendOpt = "auto",
             batch_size: Annotated[int, Opt("Images per forward pass.", "N")] = 4,
             as_json: JsonOpt = False) -> None:
    """Grade (accuracy, macro-F1, AUC, referable-DR sensitivity/specificity, confusion matrix) and lesion
    (Dice, IoU, PR-AUC) metrics of a model on an IDRiD-layout folder."""
    from drtrt.runtime.registry import load_runner
    from drtrt.verify.evaluate import evaluate_runner, select_samples

    samples = select_samples(data, split, subset)
    with load_runner(model, backend=backend) as runner, progress(transient=as_json) as bars:
        task = bars.add_task("evaluating", total=len(samples), info="")
        metrics = evaluate_runner(runner, samples, batch_size=batch_size,
                                  on_progress=lambda d, t: bars.update(task, completed=d))
        vocabulary = runner.info.task
    if as_json:
        print_json(metrics)
        return
    from drtrt.cli.tables import metrics_tables

    for table in metrics_tables(metrics, vocabulary, title=f"{model.name} on {data.name} ({split}, {len(samples)} images)"):
        console.print(table)


@command()
def parity(candidate: Annotated[Optional[list[Path]], Opt("Model to check (.onnx, .engine, .pt, "
                                                             "triton://HOST:PORT/NAME); repeatable.", "MODEL")] = None,
           reference: Annotated[Optional[Path], Opt("Reference model, usually the checkpoint.", "MODEL")] = None,
           data: Annotated[Optional[Path], Opt("IDRiD-layout folder.", "DIR")] = None,
           split: SplitOpt = "test",
           golden: Annotated[Optional[Path], Opt("Golden folder instead of --reference/--data.", "DIR")] = None,
           save_golden: Annotated[Optional[Path], Opt("Write inputs + reference outputs here.", "DIR")] = None,
           threshold: Annotated[Optional[list[str]], Opt("Gate override KEY=VALUE; repeatable.", "KEY=VALUE")] = None,
           limit: Annotated[Optional[int], Opt("Compare the first N images only.", "N")] = None,
           report: Annotated[Optional[Path], Opt("Write an HTML report with the worst cases.", "FILE")] = None,
           as_json: JsonOpt = False) -> None:
    """Check models against a reference: agreement, logit |Δ|, mask Dice, task metrics. Exit 4 if one fails."""
    from drtrt.verify.parity import ParityConfig, run_parity
    from drtrt.verify.parity_report import fmt
    from drtrt.verify.thresholds import parse_overrides

    cfg = ParityConfig(tuple(candidate or ()), reference, data, split, golden, save_golden,
                       tuple(parse_overrides(threshold or []).items()), limit=limit, report=report)
    with progress(transient=as_json) as bars:
        task = bars.add_task("comparing", total=None, info="")
        result = run_parity(cfg, on_progress=lambda done, total: bars.update(task, completed=done, total=total))
    if as_json:
        print_json(result.to_dict())
    else:
        from drtrt.cli.tables import parity_table

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
        raise typer.Exit(int(ExitCode.GATE_FAILED))


@command()
def bench(model: Annotated[list[Path], Opt("Model file (.onnx, .engine, .pt) or triton://HOST:PORT/NAME; "
                                           "repeatable.", "MODEL", show_default=False)],
          batch: Annotated[str, Opt("Batch sizes, comma-separated, e.g. 1,4.", "N[,N…]")] = "1",
          warmup: Annotated[int, Opt("Untimed iterations first.", "N")] = 3,
          iters: Annotated[int, Opt("Timed iterations per model and batch.", "N")] = 20,
          data: Annotated[Optional[Path], Opt("IDRiD-layout folder: its images, plus task metrics.", "DIR")] = None,
          split: SplitOpt = "test",
          floor: Annotated[Optional[float], Opt("CI gate: minimum images/s for every row (exit 4 below it).",
                                                "IMAGES_PER_S")] = None,
          peak: Annotated[bool, Flag("Measure the FP32 GEMM peak (~2 s per model).", "--peak/--no-peak")] = True,
          log: Annotated[Optional[Path], Opt("JSON-lines file to append every row to.", "FILE")] = None,
          as_json: JsonOpt = False) -> None:
    """Time what `drtrt screen` runs: latency p50/p90/p99, throughput, intake and post-processing, peak memory."""
    from drtrt.errors import ConfigError
    from drtrt.verify.bench import BenchConfig, run_bench

    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise ConfigError(f"--batch expects comma-separated integers such as 1,4; found {batch!r}") from None
    cfg = BenchConfig(tuple(model), batches, warmup, iters, data, split, floor, peak, log)
    with progress(transient=as_json) as bars:
        report = run_bench(cfg, on_progress=stage_progress(bars))
    if as_json:
        print_json(report.to_dict())
    else:
        from drtrt.cli.tables import bench_table

        console.print(bench_table(report))
        for row in report.failures:
            console.print(f"[red]FAIL[/] {Path(row.model).name} batch {row.batch}: {row.images_per_s:.2f} images/s "
                          f"< floor {floor:g}", highlight=False)
    if report.failures:
        raise typer.Exit(int(ExitCode.GATE_FAILED))


@command()
def doctor(as_json: JsonOpt = False) -> None:
    """What this machine has (Python, JetPack, GPU, CUDA, TensorRT, ONNX Runtime) and what drtrt can do on it."""
    from drtrt.runtime.doctor import diagnose

    report = diagnose()
    if as_json:
        print_json(report.to_dict())
        return
    from drtrt.cli.tables import doctor_tables

    for table in doctor_tables(report):
        console.print(table)
