"""Every rich table and live display the CLI prints, in one place (the library returns data)."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from drtrt.cli.common import console
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


def results_table(rows, task: TaskSpec, clinical: str = "Not for clinical use: demo model.", pathway=None,
                  width: int | None = None, provisional: bool = True):
    """One line per image, then one per patient when patient IDs were given (worded by ``pathway``).
    Lesions get a column each where the terminal (``width``) has room for them, else one column that
    lists those found, so that at 80 columns no cell is cut or squeezed to a word per line."""
    from drtrt.clinic.pathways import ICDR

    from drtrt.clinic.verdicts import patient_verdicts
    from drtrt.clinic.reports import gradable_share

    names = display_names([r.path for r in rows])
    table = _results(rows, names, task, lesions_apart=True)
    if cells_width(table) > (width or console.width):
        table = _results(rows, names, task, lesions_apart=False)
    if natural_width(table) > (width or console.width):
        wrap_headers(table)
    graded, judged = gradable_share(rows)
    table.caption = (f"{graded} of {judged} images gradable. Lesion cells: % of field of view (number of lesions). "
                     f"{clinical}")
    verdicts = patient_verdicts(rows, pathway or ICDR, provisional)
    if not verdicts:
        return table
    patients = Table(title="patients")
    for col in ("patient", "verdict", "right eye", "left eye", "note"):
        patients.add_column(col)
    for v in verdicts:
        eyes = (escape(v.eyes[e].words) if e in v.eyes else "" for e in ("right", "left"))
        patients.add_row(escape(v.patient), f"[bold]{escape(v.words)}[/]", *eyes, v.note)
    return Group(table, patients)


def _results(rows, names: list[str], task: TaskSpec, lesions_apart: bool) -> Table:
    table = Table(title="screening results")
    table.add_column("image", overflow="fold")   # a file name is never cut short
    for col in ("patient / eye", "status", "grade", "referable", *(task.lesion_codes if lesions_apart else ["lesions"])):
        table.add_column(col)
    for r, name in zip(rows, names):
        d, who = r.to_dict(), escape(" ".join(x for x in (r.patient, r.eye) if x))
        if r.status != "graded":
            table.add_row(escape(name), who, r.status, escape(r.reason or ""), "",
                          *([""] * (len(task.lesion_codes) if lesions_apart else 1)))
            continue
        areas = {c: f"{d['lesions'][c]['area_fov_pct']:.2f}% ({d['lesions'][c]['count']})" for c in task.lesion_codes
                 if c in d["lesions"]}
        grade = "-" if d["grade"] is None else f"{d['grade']} {d['grade_name']}"
        referable = "-" if d["referable"] is None else "[bold red]REFER[/]" if d["referable"] else "no"
        found = "\n".join(f"{c} {areas[c]}" for c in task.lesion_codes if d["lesions"].get(c, {}).get("count"))
        lesions = [areas.get(c, "-") for c in task.lesion_codes] if lesions_apart else [found or "none"]
        table.add_row(escape(name), who, r.status, grade, referable, *lesions)
    return table


def natural_width(renderable) -> int:
    """Columns ``renderable`` takes when nothing in it wraps."""
    wide = Console(width=10_000)
    return Measurement.get(wide, wide.options, renderable).maximum


def cells_width(table: Table) -> int:
    """Columns ``table`` takes with every cell on one line and its headers wrapped (:func:`wrap_headers`)."""
    headers = [column.header for column in table.columns]
    wrap_headers(table)
    try:
        return natural_width(table)
    finally:
        for column, header in zip(table.columns, headers):
            column.header = header


def wrap_headers(table: Table) -> None:
    """Each header wider than its column's cells on as many lines as it takes (at spaces): rich, short of
    room, would rather narrow every column alike and wrap the cells, a model name included."""
    for column in table.columns:
        header = str(column.header)
        widest = max((Text.from_markup(cell).cell_len for cell in column.cells if isinstance(cell, str)), default=0)
        column.header = "\n".join(textwrap.wrap(header, max(widest, *map(len, header.split() or [""])))) or header


def fitted(table: Table, optional: Sequence[str], where: str, width: int | None = None) -> Table:
    """``table`` without its ``optional`` columns (by header, first named first dropped) until no cell must
    wrap in ``width`` (the terminal's), its headers wrapped where that is needed: a narrow terminal gets fewer
    columns, each readable, instead of every column squeezed to ``mo…``. The caption names what was left out
    and ``where`` it is."""
    width = width or console.width
    dropped = []
    for header in optional:
        if cells_width(table) <= width:
            break
        for column in [c for c in table.columns if c.header == header]:
            table.columns.remove(column)
            dropped.append(header)
    if natural_width(table) > width:
        wrap_headers(table)
    if dropped:
        table.caption = (f"{str(table.caption).rstrip('.')}. " if table.caption else "") + \
            f"Left out at this width: {', '.join(dropped)} ({where})."
    return table


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


def parity_table(result, width: int | None = None) -> Table:
    """One row per candidate: agreements, lesion Dice, logit |Δ| per output, worst metric drop, verdict;
    on a narrow terminal without the |Δ| columns, then the precision (:func:`fitted`)."""
    outputs = result.task.outputs
    table = Table(title=f"parity vs {Path(result.reference.get('model', '?')).name} "
                        f"({result.source.get('n_images', '?')} images)")
    deltas = [f"max |Δ| {name}" for name in outputs]
    for col in ("candidate", "precision", "grade agr.", "referable agr.", "lesion Dice", *deltas, "worst drop",
                "verdict"):
        table.add_column(col, overflow="fold")
    for c in result.candidates:
        a = c.agreement
        drops = [d["drop"] for d in c.deltas.values() if not math.isnan(d["drop"])]
        table.add_row(Path(c.model).name, c.precision, fmt(a.grade_agreement, True), fmt(a.referable_agreement, True),
                      fmt(a.lesions.get("mean_dice")), *(fmt(a.logits.get(name, {}).get("max")) for name in outputs),
                      f"{100 * max(drops):+.1f} pt" if drops else "—",
                      "[green]PASS[/]" if c.passed else "[bold red]FAIL[/]")
    return fitted(table, [*deltas, "precision"], "--json or --report has them", width)


BENCH_METRICS = {"accuracy": "acc.", "macro_f1": "F1", "mean_dice": "Dice"}


def bench_table(report, width: int | None = None) -> Table:
    """A BenchReport as one table (one row per model and batch size); on a narrow terminal the secondary
    columns are left out (:func:`fitted`), --json and --log keep every figure."""
    peak = report.context.get("gemm_fp32_gflops")
    table = Table(title="drtrt bench", caption=f"{report.context['cpu']}, {report.context['cpus']} CPUs; "
                  f"FP32 GEMM peak {fmt(peak['best']) if peak else '—'} GFLOP/s; "
                  f"{report.context['iters']} iterations after {report.context['warmup']} warm-up; "
                  f"load average {report.context.get('loadavg_start')} -> {report.context.get('loadavg_end')}"
                  + (f"; {report.context['jetson']}, power {report.context.get('power') or 'unknown'}"
                     if report.context.get("jetson") else ""))
    columns = ["model", "prec.", "batch", "MB", "p50 ms", "p90 ms", "p99 ms", "img/s", "intake ms/img", "e2e ms/img",
               "RSS MB", "GFLOP/img", "% peak"]
    metric_keys = [k for k in BENCH_METRICS if any(k in r.metrics for r in report.rows)]
    gpu = any(r.gpu_memory_mb for r in report.rows)
    for col in columns + [BENCH_METRICS[k] for k in metric_keys] + (["GPU MB"] if gpu else []):
        table.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
    for r in report.rows:
        slow = report.floor is not None and r.images_per_s < report.floor
        cells = [Path(r.model).name, r.precision, str(r.batch), f"{r.size_mb:.1f}",
                 *(f"{r.infer_ms[q]:.1f}" for q in ("p50", "p90", "p99")),
                 f"[bold red]{r.images_per_s:.2f}[/]" if slow else f"{r.images_per_s:.2f}",
                 f"{r.intake_ms_per_image:.1f}", f"{r.end_to_end_ms_per_image:.1f}", f"{r.peak_rss_mb:.0f}",
                 fmt(r.gflop_per_image), fmt(None if r.peak_fraction is None else r.peak_fraction, percent=True)]
        cells += [fmt(r.metrics.get(k)) for k in metric_keys]
        if gpu:
            cells.append(fmt(r.gpu_memory_mb))
        table.add_row(*cells)
    return fitted(table, ["GFLOP/img", "MB", "RSS MB", "p99 ms", "p90 ms", "intake ms/img", "GPU MB", "% peak",
                          "prec."], "--json or --log has them", width)


def sweep_tables(markdown: str, width: int | None = None) -> list[Table]:
    """The tables of ``drtrt train --seeds`` and ``drtrt ablation`` (their table.md, for pasting into a thesis)
    for the terminal; where a table is wider than ``width`` its ``mean ± std`` cells take two lines, so it fits
    80 columns with only the row names wrapping."""
    found: list[tuple[str | None, list[list[str]]]] = []
    title, rows = None, None
    for line in markdown.splitlines():
        if line.startswith("**"):
            title = line.strip("*")
        elif not line.startswith("|"):
            rows = None
        elif not line.startswith("|---"):
            if rows is None:
                rows = []
                found.append((title, rows))
            rows.append([cell.strip() for cell in line.strip("|").split("|")])

    def table(title: str | None, rows: list[list[str]], split: bool) -> Table:
        made = Table(title=title, title_justify="left")
        for i, header in enumerate(rows[0]):
            made.add_column(header, justify="left" if i == 0 else "right")
        for name, *cells in rows[1:]:
            made.add_row(escape(name), *(cell.replace(" ± ", "\n± ") if split else cell for cell in cells))
        return made

    tables = [table(title, rows, split=False) for title, rows in found]
    return [t if cells_width(t) <= (width or console.width) else table(title, rows, split=True)
            for t, (title, rows) in zip(tables, found)]


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


def actions_table(actions) -> Table:
    """The failsafe's open actions (:func:`drtrt.clinic.failsafe.open_actions`), urgent first."""
    table = Table("due", "visit", "patient", "needs", "verdict", "destination", "last step")
    for a in actions:
        step = f"{a.last.words} ({a.last.person}, {a.last.recorded[:10]})" if a.last else ""
        table.add_row(_due(a.due, a.overdue), str(a.visit),
                      *(Text(v) for v in (a.patient, a.need.replace("_", " "), a.words, a.destination, step)))
    return table


def recall_table(entries) -> Table:
    """Who is due for rescreening (:func:`drtrt.clinic.recall.recall_list`), by due date."""
    table = Table("due", "patient", "name", "last visit", "months", "")
    for r in entries:
        table.add_row(_due(r.due, r.overdue), Text(r.patient), Text(r.name or ""), r.screened.isoformat(),
                      str(r.recall_months), "provisional" if r.provisional else "")
    return table


def _due(day, overdue: bool) -> Text:
    return Text(day.isoformat() + (" OVERDUE" if overdue else ""), style="bold red" if overdue else "")
