"""The programme's numbers (:mod:`.programme`) in pictures: each table drawn as a chart a manager reads at a
glance (trend lines by week, bars by reason), the table below it; one self-contained HTML file that
prints, and one CSV per table.

Why matplotlib: it is the well-kept plotting library the kit already uses (training plots), it draws on
the server into static SVG — no JavaScript, no fonts or scripts to fetch (the text is drawn as paths),
the same picture on screen, on paper and in a PDF — and it runs on the Jetson from the distribution's
packages or PyPI's aarch64 wheels. Each SVG is embedded as a ``data:`` image with words for screen
readers, so the report is one file that opens on a machine with no network and the station's page
needs nothing beyond its own content-security policy (``img-src 'self' data:``). A JavaScript chart
library would need vendoring, its licence, and a browser to draw anything at all.

``tr`` translates the report's words (the station passes the operator's language; the CLI English).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Callable

from drtrt.clinic.programme import DEFINITIONS, Chart, Programme, Table
from drtrt.errors import DataError
from drtrt.fileio import atomic_write, to_csv
from drtrt.messages import Message, message

# Okabe–Ito: told apart by people with colour-vision deficiency, and in grey on paper.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
Translate = Callable[[str], str]
NONE_IN_RANGE = message("none in this range")
DEFINITIONS_TITLE = message("Definitions")


def _english(text: str) -> str:
    return str(text)


def _cell(value, tr: Translate) -> str:
    if isinstance(value, Message):
        return tr(value)
    return "" if value is None else str(value)


def chart_svg(chart: Chart, tr: Translate = _english) -> bytes:
    """``chart`` as an SVG picture (deterministic: no date, fixed ids); its title is the section's heading."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context({"svg.hashsalt": "drtrt", "svg.fonttype": "path", "font.size": 9,
                     "text.parse_math": False}):
        labels = [tr(label) if isinstance(label, Message) else label for label in chart.labels]
        horizontal = chart.kind == "bar" and len(chart.series) == 1
        height = max(2.4, 0.35 * len(labels) + 1.2) if horizontal else 2.8
        figure = Figure(figsize=(6.4, height), layout="constrained")
        axes = figure.subplots()
        positions = list(range(len(labels)))
        for i, (name, values) in enumerate(chart.series):
            colour = COLOURS[i % len(COLOURS)]
            if chart.kind == "line":
                axes.plot(positions, values, marker="o", color=colour, label=tr(name))
            elif horizontal:
                bars = axes.barh(positions, values, color=colour, label=tr(name))
                axes.bar_label(bars, fmt="%g", padding=3)
            else:
                width = 0.8 / len(chart.series)
                bars = axes.bar([p + (i - (len(chart.series) - 1) / 2) * width for p in positions], values, width,
                                color=colour, label=tr(name))
                axes.bar_label(bars, fmt="%g", padding=2)
        if horizontal:
            axes.set_yticks(positions, labels)
            axes.invert_yaxis()
            axes.set_xlabel(tr(chart.series[0][0]))
            axes.xaxis.get_major_locator().set_params(integer=True)
        else:
            axes.set_xticks(positions, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6
                            else "center")
            axes.yaxis.get_major_locator().set_params(integer=True)
            highest = max([v for _, vs in chart.series for v in vs if not math.isnan(v)] + [1])
            axes.set_ylim(bottom=0, top=highest * 1.15)
            if len(chart.series) > 1:
                axes.legend(frameon=False, loc="upper left", fontsize=8, ncols=len(chart.series))
            else:
                axes.set_ylabel(tr(chart.series[0][0]))
        axes.spines[["top", "right"]].set_visible(False)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def chart_words(chart: Chart, tr: Translate = _english) -> str:
    """What the chart shows, in words (its ``alt`` text): each series' values by label."""
    def number(v: float) -> str:
        return "–" if math.isnan(v) else f"{v:g}"

    labels = [_cell(label, tr) for label in chart.labels]
    return "; ".join(f"{tr(name)}: " + ", ".join(f"{label} {number(v)}" for label, v in zip(labels, values))
                     for name, values in chart.series)


def chart_img(table: Table, tr: Translate = _english) -> str:
    """An ``<img>`` of ``table``'s chart, the SVG inside it as a ``data:`` URL."""
    svg = chart_svg(table.chart, tr)
    alt = f"{tr(table.title)} — {chart_words(table.chart, tr)}"
    return (f'<img class="chart" src="data:image/svg+xml;base64,{base64.b64encode(svg).decode()}" '
            f'alt="{html.escape(alt)}">')


def table_html(table: Table, tr: Translate = _english) -> str:
    head = "".join(f'<th scope="col">{html.escape(tr(c))}</th>' for c in table.columns)
    if not table.rows:
        body = f'<tr><td colspan="{len(table.columns)}">{html.escape(tr(NONE_IN_RANGE))}</td></tr>'
    else:
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v, tr))}</td>" for v in row) + "</tr>"
                       for row in table.rows)
    return f'<table class="list numbers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def report_body(prog: Programme, tr: Translate = _english, charts: bool = True) -> str:
    """The report's sections (HTML, no script, no style attribute): heading, chart, table, note;
    ``charts`` False: the tables only (where matplotlib is not installed)."""
    parts = []
    for table in prog.tables:
        parts.append(f'<section class="card programme" id="{table.key}"><h2>{html.escape(tr(table.title))}</h2>')
        if table.chart is not None and charts:
            parts.append(f"<figure>{chart_img(table, tr)}</figure>")
        parts.append(table_html(table, tr))
        if table.note:
            parts.append(f"<p>{html.escape(tr(table.note))}</p>")
        parts.append("</section>")
    items = "".join(f"<li>{html.escape(tr(d))}</li>" for d in DEFINITIONS)
    parts.append(f'<section class="card programme" id="definitions"><h2>{html.escape(tr(DEFINITIONS_TITLE))}'
                 f"</h2><ul>{items}</ul></section>")
    return "\n".join(parts)


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#111;max-width:52rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-bottom:.3rem}section{break-inside:avoid;margin-bottom:1.5rem}
img.chart{max-width:100%;height:auto}figure{margin:0}
table{border-collapse:collapse;margin:.4rem 0}th,td{border:1px solid #999;padding:.15rem .5rem;text-align:left}
@media print{body{margin:0}section{page-break-inside:avoid}}"""


def report_html(prog: Programme, tr: Translate = _english, language: str = "en") -> str:
    """The whole report as one HTML document: no script, no request for anything (every chart inside it)."""
    title = tr(message("Screening programme report, %(start)s to %(end)s", start=prog.start.isoformat(),
                       end=prog.end.isoformat()))
    made = tr(message("Sessions: %(sessions)s. Made %(now)s (UTC).",
                      sessions=", ".join(prog.sessions), now=prog.now.strftime("%Y-%m-%d %H:%M")))
    return (f'<!DOCTYPE html>\n<html lang="{language}"><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{_STYLE}</style></head><body><main><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(made)}</p>\n{report_body(prog, tr)}\n</main></body></html>\n")


def report_csvs(prog: Programme) -> dict[str, str]:
    """One CSV per table (English headers), by file name."""
    return {f"{t.key}.csv": to_csv([str(c) for c in t.columns], t.rows) for t in prog.tables}


def write_report(prog: Programme, out: Path) -> list[Path]:
    """``out``/programme.html and one CSV per table; the files written."""
    files = {"programme.html": report_html(prog), **report_csvs(prog)}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            atomic_write(out / name, text)
    except OSError as exc:
        raise DataError(f"cannot write the report to {out} ({exc.strerror or exc})") from None
    return [out / name for name in files]
