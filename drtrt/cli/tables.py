"""Every rich table and live display the CLI prints, in one place (the library returns data)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from drtrt.task import TaskSpec
from drtrt.verify.parity_report import fmt


def display_names(paths: Sequence[str]) -> list[str]:
    """File names for a table; where two files share a name, their paths below the common folder."""
    names = [Path(p).name for p in paths]
    clashing = {n for n in names if names.count(n) > 1}
    if not clashing:
        return names
    shared = [p for p, n in zip(paths, names) if n in clashing]
    root = os.path.commonpath(shared) if len(shared) > 1 else ""
    return [os.path.relpath(p, root) if n in clashing and root else n for p, n in zip(paths, names)]


def results_table(rows, task: TaskSpec, clinical: str = "Not for clinical use: demo model.", pathway=None):
    """One line per image, then one per patient when patient IDs were given (worded by ``pathway``)."""
    from drtrt.clinic.pathways import ICDR

    from drtrt.clinic.verdicts import patient_verdicts
    from drtrt.clinic.reports import gradable_share

    table = Table(title="screening results")
    table.add_column("image", overflow="fold")   # a file name is never cut short
    for col in ("patient / eye", "status", "grade", "referable", *task.lesion_codes):
        table.add_column(col)

    for r, name in zip(rows, display_names([r.path for r in rows])):
        d, who = r.to_dict(), escape(" ".join(x for x in (r.patient, r.eye) if x))
        if r.status != "graded":
            table.add_row(escape(name), who, r.status, escape(r.reason or ""), "", *([""] * len(task.lesion_codes)))
            continue
        areas = [f"{d['lesions'][c]['area_fov_pct']:.2f}% ({d['lesions'][c]['count']})" if c in d["lesions"] else "-"
                 for c in task.lesion_codes]
        grade = "-" if d["grade"] is None else f"{d['grade']} {d['grade_name']}"
        referable = "-" if d["referable"] is None else "[bold red]REFER[/]" if d["referable"] else "no"
        table.add_row(escape(name), who, r.status, grade, referable, *areas)
    graded, judged = gradable_share(rows)
    table.caption = (f"{graded} of {judged} images gradable. Lesion cells: % of field of view (number of lesions). "
                     f"{clinical}")
    verdicts = patient_verdicts(rows, pathway or ICDR)
    if not verdicts:
        return table
    patients = Table(title="patients")
    for col in ("patient", "verdict", "right eye", "left eye", "note"):
        patients.add_column(col)
    for v in verdicts:
        eyes = (escape(v.eyes[e].words) if e in v.eyes else "" for e in ("right", "left"))
        patients.add_row(escape(v.patient), f"[bold]{escape(v.words)}[/]", *eyes, v.note)
    return Group(table, patients)


def metrics_tables(metrics: dict, task: TaskSpec, title: str = "") -> list[Table]:
    """Task metrics (grade, referable DR, per lesion) and the grade confusion matrix."""
    tables = []
    summary = Table(title=title or "metrics")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key in ("accuracy", "macro_f1", "auc", "referable_sensitivity", "referable_specificity", "majority_rate",
                "mean_dice", "mean_iou", "mean_pr_auc"):
        if key in metrics:
            summary.add_row(key, fmt(metrics[key]))
    for key in ("n", "n_segmentation"):
        if key in metrics:
            summary.add_row(key, str(metrics[key]))
    tables.append(summary)
    if "mean_dice" in metrics:
        lesions = Table(title="lesions")
        for col in ("lesion", "Dice", "IoU", "PR-AUC"):
            lesions.add_column(col, justify="right" if col != "lesion" else "left")
        for code in task.lesion_codes:
            lesions.add_row(code, *(fmt(metrics.get(f"{k}_{code}")) for k in ("dice", "iou", "pr_auc")))
        tables.append(lesions)
    if "confusion_matrix" in metrics:
        matrix = Table(title="grade confusion matrix (rows: truth, columns: predicted)")
        matrix.add_column("")
        for g in range(len(metrics["confusion_matrix"])):
            matrix.add_column(str(g), justify="right")
        for g, row in enumerate(metrics["confusion_matrix"]):
            matrix.add_row(str(g), *(str(v) for v in row))
        tables.append(matrix)
    return tables


def doctor_tables(report) -> list[Table]:
    """The machine, and what drtrt can do on it."""
    mark = {True: "[green]ok[/]", False: "[red]missing[/]", None: ""}
    machine = Table(title="this machine")
    for col in ("item", "value", ""):
        machine.add_column(col)
    for f in report.findings:
        machine.add_row(f.item, f.value, mark[f.ok])
    can = Table(title="what drtrt can do here")
    for col in ("command", "", "how / why not"):
        can.add_column(col)
    for c in report.capabilities:
        can.add_row(c.command, "[green]yes[/]" if c.available else "[red]no[/]", c.detail)
    return [machine, can]


def parity_table(result) -> Table:
    """One row per candidate: agreements, lesion Dice, logit |Δ| per output, worst metric drop, verdict."""
    outputs = result.task.outputs
    table = Table(title=f"parity vs {Path(result.reference.get('model', '?')).name} "
                        f"({result.source.get('n_images', '?')} images)")
    for col in ("candidate", "precision", "grade agr.", "referable agr.", "lesion Dice",
                *(f"max |Δ| {name}" for name in outputs), "worst drop", "verdict"):
        table.add_column(col)
    for c in result.candidates:
        a = c.agreement
        drops = [d["drop"] for d in c.deltas.values() if not math.isnan(d["drop"])]
        table.add_row(Path(c.model).name, c.precision, fmt(a.grade_agreement, True), fmt(a.referable_agreement, True),
                      fmt(a.lesions.get("mean_dice")), *(fmt(a.logits.get(name, {}).get("max")) for name in outputs),
                      f"{100 * max(drops):+.1f} pt" if drops else "—",
                      "[green]PASS[/]" if c.passed else "[bold red]FAIL[/]")
    return table


def bench_table(report) -> Table:
    """A BenchReport as one table (one row per model and batch size)."""
    peak = report.context.get("gemm_fp32_gflops")
    table = Table(title="drtrt bench", caption=f"{report.context['cpu']}, {report.context['cpus']} CPUs; "
                  f"FP32 GEMM peak {fmt(peak['best']) if peak else '—'} GFLOP/s; "
                  f"{report.context['iters']} iterations after {report.context['warmup']} warm-up; "
                  f"load average {report.context.get('loadavg_start')} -> {report.context.get('loadavg_end')}"
                  + (f"; {report.context['jetson']}, power {report.context.get('power') or 'unknown'}"
                     if report.context.get("jetson") else ""))
    columns = ["model", "prec.", "batch", "MB", "p50 ms", "p90 ms", "p99 ms", "img/s", "intake ms/img", "e2e ms/img",
               "RSS MB", "GFLOP/img", "% peak"]
    metric_keys = [k for k in ("accuracy", "macro_f1", "mean_dice") if any(k in r.metrics for r in report.rows)]
    for col in columns + metric_keys + (["GPU MB"] if any(r.gpu_memory_mb for r in report.rows) else []):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in report.rows:
        slow = report.floor is not None and r.images_per_s < report.floor
        cells = [Path(r.model).name, r.precision, str(r.batch), f"{r.size_mb:.1f}",
                 *(f"{r.infer_ms[q]:.1f}" for q in ("p50", "p90", "p99")),
                 f"[bold red]{r.images_per_s:.2f}[/]" if slow else f"{r.images_per_s:.2f}",
                 f"{r.intake_ms_per_image:.1f}", f"{r.end_to_end_ms_per_image:.1f}", f"{r.peak_rss_mb:.0f}",
                 fmt(r.gflop_per_image), fmt(None if r.peak_fraction is None else r.peak_fraction, percent=True)]
        cells += [fmt(r.metrics.get(k)) for k in metric_keys]
        if any(x.gpu_memory_mb for x in report.rows):
            cells.append(fmt(r.gpu_memory_mb))
        table.add_row(*cells)
    return table


class RichBuildProgress:
    """:class:`BuildListener` drawing TensorRT's phases into a ``rich.progress.Progress``.

    A spinner from :meth:`begin` (all 8.x gives); each TensorRT phase becomes a bar while it runs.
    """

    def __init__(self, progress: Any) -> None:
        self.progress, self.tasks = progress, {}

    def begin(self, description: str) -> None:
        self.progress.add_task(description, total=None, info="")

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        self.tasks[name] = self.progress.add_task(f"  {name}", total=max(steps, 1), info="")

    def step(self, name: str, step: int) -> bool:
        if name in self.tasks:
            self.progress.update(self.tasks[name], completed=step + 1)
        return True

    def phase_finish(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        if task is not None:
            self.progress.remove_task(task)
