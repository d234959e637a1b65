"""A study's report: JSON for machines, one offline HTML page for the people who answer for it."""

from __future__ import annotations

import html
from dataclasses import asdict

from drtrt.verify.study.stats import CELLS, StudyFigures


def report_data(study: dict, figures: StudyFigures, record: str | None, why_no_record: list[str]) -> dict:
    """Everything the study found: ``study`` (protocol, its sha256, registration, plan, model), the figures
    against their endpoints, the confusion table with the patients behind each cell, who was left out and
    why, and the record written (its file name) or why none was."""
    return {**study, "n_patients": figures.n_patients, "n_referable": figures.n_referable,
            "figures": {k: {**asdict(f), "passed": f.passed} for k, f in figures.figures.items()},
            "confusion": {c: {"n": len(ids), "patients": ids} for c, ids in figures.cells.items()},
            "excluded": figures.excluded, "passed": figures.passed and not why_no_record,
            "failures": figures.failures, "record": record, "why_no_record": why_no_record}


def _e(value) -> str:
    return html.escape(str(value))


def _row(f: dict) -> str:
    endpoint = "" if f["endpoint"] is None else f"{100 * f['endpoint']:.1f}%"
    judged = "—" if f["endpoint"] is None else "clears" if f["passed"] else "FAILS"
    return (f"<tr><td>{_e(f['name'])}</td><td>{f['k']}/{f['n']}</td><td>{100 * f['value']:.1f}%</td>"
            f"<td>{100 * f['low']:.1f}–{100 * f['high']:.1f}%</td><td>{endpoint}</td>"
            f"<td class=\"{'' if f['endpoint'] is None else 'ok' if f['passed'] else 'bad'}\">{judged}</td></tr>")


def report_html(data: dict) -> str:
    """The report as one self-contained page (no scripts, no remote files)."""
    rows = "".join(_row(f) for f in data["figures"].values())
    c = data["confusion"]
    cell = {k: f"{c[k]['n']}<br><small>{_e(', '.join(c[k]['patients']))}</small>" for k in CELLS}
    confusion = ("<table><tr><th></th><th>referable (reference)</th><th>not referable (reference)</th></tr>"
                 f"<tr><th>model: refer / a person</th><td>{cell['true_positive']}</td><td>{cell['false_positive']}</td></tr>"
                 f"<tr><th>model: rescreen</th><td>{cell['false_negative']}</td><td>{cell['true_negative']}</td></tr>"
                 "</table>")
    excluded = "".join(f"<li>{_e(k.replace('_', ' '))}: {len(v)} {_e(', '.join(v))}</li>"
                       for k, v in data["excluded"].items())
    verdict = (f"<p class=\"ok\" id=\"outcome\">Every endpoint cleared; validation record {_e(data['record'])} written "
               "and signed.</p>" if data["record"] else
               "<p class=\"bad\" id=\"outcome\">No validation record: " +
               _e("; ".join(data["failures"] + data["why_no_record"])) + "</p>")
    p = data["protocol"]
    plan = "".join(f"<li>{_e(line)}</li>" for line in data["plan"])
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Validation study "
            f"{_e(p['study'])}</title><style>body{{font-family:sans-serif;max-width:60rem;margin:1rem auto}}"
            "td,th{border:1px solid #999;padding:.3rem;vertical-align:top}table{border-collapse:collapse}"
            ".ok{color:#075e07}.bad{color:#a00000;font-weight:bold}</style></head><body>"
            f"<h1>Validation study {_e(p['study'])}</h1>"
            f"<p>{_e(p['population'])}, {_e(p['start'])} to {_e(p['end'])}. Model {_e(data['model_name'])} "
            f"(sha256 {_e(data['model_sha256'])}). Protocol sha256 {_e(data['protocol_sha256'])}, registered "
            f"{_e(data['registered'])}. Intervals: {_e(p['ci_method'])}, 95%. Ungradable by the model: "
            f"{_e(p['ungradable'])}.</p>{verdict}"
            f"<h2>Per patient ({data['n_patients']} patients, {data['n_referable']} with referable DR)</h2>"
            "<table><tr><th>figure</th><th>k/n</th><th>estimate</th><th>95% CI</th><th>endpoint (lower bound)</th>"
            f"<th></th></tr>{rows}</table><h2>Confusion table</h2>{confusion}"
            f"<h2>Left out of sensitivity and specificity</h2><ul>{excluded}</ul>"
            f"<h2>Sample size (pre-registered)</h2><ul>{plan}</ul></body></html>")
