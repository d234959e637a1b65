"""The parity report for people: one self-contained HTML file (the terminal table is the CLI's).

The HTML embeds every picture (base64 JPEG), so it can be mailed or archived alone. Worst
cases are shown side by side: the model-space image, the reference's lesion overlay and
the candidate's, drawn with :func:`drtrt.runtime.postprocess.overlay`.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import cv2
import numpy as np

from drtrt.preprocess import FieldOfView, Geometry
from drtrt.runtime.postprocess import LESION_COLOURS, overlay
from drtrt.task import TaskSpec
from drtrt.verify.compare import NEAR_TIE

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
.pass{color:#0a0;font-weight:bold}.fail{color:#c00;font-weight:bold}figure{display:inline-block;margin:.3em}
figcaption{font-size:.85em;text-align:center}img{width:256px;image-rendering:pixelated}.case{margin-bottom:1em}"""


def fmt(value, percent: bool = False) -> str:
    """Numbers for tables: '—' for missing/NaN, percentages with one decimal, else 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if percent:
        return f"{100 * value:.1f} %"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _identity_geometry(size: int) -> Geometry:
    return Geometry((size, size), (0, 0, size, size), size, FieldOfView.whole(size, size))


def _img(rgb: np.ndarray, caption: str) -> str:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    src = "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode() if ok else ""
    return f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _worst_html(case, task: TaskSpec) -> str:
    if case.ref_labels is None and case.rgb is None:
        return ""
    size = (case.ref_labels if case.ref_labels is not None else case.rgb).shape[0]
    rgb = case.rgb if case.rgb is not None else np.zeros((size, size, 3), np.uint8)
    figures = [_img(rgb, "input (model space)")]
    if case.ref_labels is not None:
        geometry = _identity_geometry(size)
        figures += [_img(overlay(rgb, case.ref_labels, geometry, task), "reference lesions"),
                    _img(overlay(rgb, case.cand_labels, geometry, task), "candidate lesions")]
    title = (f"{case.name}: grade {fmt(case.ref_grade)} → {fmt(case.cand_grade)}, mask Dice {fmt(case.mask_dice)}, "
             f"max |Δ| {fmt(case.max_abs_delta)}")
    return f'<div class="case"><h4>{html.escape(title)}</h4>{"".join(figures)}</div>'


def _candidate_html(c, task: TaskSpec) -> str:
    a = c.agreement
    verdict = '<span class="pass">PASS</span>' if c.passed else '<span class="fail">FAIL</span>'
    parts = [f"<h2>{html.escape(c.model)} ({html.escape(c.precision)}, {html.escape(c.backend)}): {verdict}</h2>"]
    parts.append(_table(["check", "value", "limit", "result", "note"], [
        [html.escape(k.name), fmt(k.value), f"{k.op} {k.limit:g}",
         '<span class="pass">pass</span>' if k.passed else '<span class="fail">FAIL</span>', html.escape(k.note)]
        for k in c.checks]))
    parts.append("<h3>Logits |Δ| (candidate − reference)</h3>" + _table(
        ["output", "max", "mean", "p99", "max / max|ref|", "non-finite"],
        [[html.escape(k), fmt(s["max"]), fmt(s["mean"]), fmt(s["p99"]), fmt(s["max_rel"]), str(s["nonfinite"])]
         for k, s in a.logits.items()]))
    if a.lesions:
        parts.append(f"<h3>Lesion masks vs reference (pixel agreement {fmt(a.pixel_agreement, True)})</h3>" + _table(
            ["lesion", "Dice", "IoU", "reference pixels", "candidate pixels"],
            [[html.escape(n), fmt(a.lesions.get(f"dice_{n}")), fmt(a.lesions.get(f"iou_{n}")),
              str(a.lesion_pixels.get(n, {}).get("reference", "—")), str(a.lesion_pixels.get(n, {}).get("candidate", "—"))]
             for n in task.lesion_codes]
            + [["mean", fmt(a.lesions.get("mean_dice")), fmt(a.lesions.get("mean_iou")), "", ""]]))
    if a.confusion:
        n = len(a.confusion)
        parts.append("<h3>Grades: reference (rows) × candidate (columns)</h3>" + _table(
            ["ref \\ cand", *map(str, range(n))], [[str(i), *map(str, row)] for i, row in enumerate(a.confusion)]))
    if a.grade_flips:
        parts.append(f"<h3>Grade flips ({a.near_tie_flips} of {len(a.grade_flips)} at a near-tie of the reference: "
                     f"its top-two grade probabilities within {NEAR_TIE:g})</h3>" + _table(
                         ["image", "reference grade", "candidate grade", "reference top-two probability gap"],
                         [[html.escape(f["image"]), str(f["reference_grade"]), str(f["candidate_grade"]),
                           fmt(f["reference_top2_gap"])] for f in a.grade_flips]))
    if c.deltas:
        parts.append("<h3>Task metrics against ground truth</h3>" + _table(
            ["metric", "reference", "candidate", "drop (points)"],
            [[html.escape(k), fmt(d["reference"]), fmt(d["candidate"]), fmt(100 * d["drop"])]
             for k, d in c.deltas.items()]))
    if a.worst:
        parts.append("<h3>Worst cases</h3>" + "".join(_worst_html(w, task) for w in a.worst))
    return "\n".join(parts)


def write_html(result, path: str | Path) -> Path:
    """Write the parity report of ``result`` (a ParityResult) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verdict = '<span class="pass">PASS</span>' if result.passed else '<span class="fail">FAIL</span>'
    ref = result.reference
    task = result.task
    legend = " ".join(f'<span style="background:rgb{tuple(int(v) for v in LESION_COLOURS[task.label(code)])}">'
                      f"&nbsp;&nbsp;&nbsp;</span> {html.escape(code)}" for code in task.lesion_codes)
    head = (f"<h1>drtrt parity: {verdict}</h1><p>reference <b>{html.escape(str(ref.get('model')))}</b> "
            f"({html.escape(str(ref.get('precision')))}, {html.escape(str(ref.get('backend')))}, sha256 "
            f"{html.escape(str(ref.get('sha256', ''))[:12])}…); source {html.escape(str(result.source))}</p>"
            f"<p>lesion colours: {legend}</p>")
    body = head + "\n".join(_candidate_html(c, task) for c in result.candidates)

    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>drtrt parity</title>"
                    f"<style>{_CSS}</style></head><body>{body}</body></html>", encoding="utf-8")
    return path
