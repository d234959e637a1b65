"""Reports of a session folder: one HTML page per visit of each patient, a summary (CSV + HTML),
``patients.csv`` (one row per visit), results.jsonl.

The visit is the unit: a page, a ``patients.csv`` row and a verdict cover one visit's photos only
(:mod:`drtrt.clinic.verdicts`), so a returning patient's report never shows last year's result as this
year's. Each eye shows R (the grade, in the pathway's words) and M (maculopathy) apart. While the model
has no validation record every verdict is marked provisional and a negative gives no recall interval.

Pages are self-contained (pictures embedded as JPEG data URIs, no scripts, no external
files), escape everything that came from a user or a file name, and print on A4. Written
with the standard library's string formatting: no template engine on the device. Every file
is written to a temp file and renamed, so a power cut leaves the previous version intact.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from pathlib import Path

import cv2

from drtrt import __version__
from drtrt.clinic.pathways import stored_pathway
from drtrt.clinic.patients import safe_patient_id
from drtrt.clinic.store import SessionRow, now
from drtrt.clinic.verdicts import (PROVISIONAL, VERDICTS, EyeVerdict, PatientVerdict, label,
                                   patient_verdicts, provisional, tone)
from drtrt.fileio import atomic_write, to_csv
from drtrt.runtime.postprocess import LESION_COLOURS
from drtrt.task import TaskSpec
from drtrt.validation_record import validation_of, validation_status

_EYE_TITLES = {"right": "Right eye (OD)", "left": "Left eye (OS)", "unspecified": "Eye not recorded"}
_CSS = """
@page { size: A4; margin: 12mm; }
* { box-sizing: border-box; }
body { font: 10.5pt/1.35 "DejaVu Sans", Arial, sans-serif; color: #111; margin: 0 auto; max-width: 186mm; }
h1 { font-size: 15pt; margin: 0 0 2mm; } h2 { font-size: 12pt; margin: 0 0 2mm; }
.meta { color: #444; font-size: 9pt; margin-bottom: 3mm; }
.verdict { padding: 3mm 4mm; border-radius: 2mm; font-size: 14pt; font-weight: bold; margin: 2mm 0 4mm; }
.refer { background: #fde2e1; border: 0.6mm solid #c62828; } .ok { background: #e3f4e4; border: 0.6mm solid #2e7d32; }
.retake { background: #fff3cd; border: 0.6mm solid #b8860b; }
.provisional { background: #e8eef7; border: 0.6mm solid #34568b; }
.caveat { font-size: 9.5pt; font-weight: bold; color: #34568b; margin: -2mm 0 3mm; }
.rm { font-size: 9pt; margin: 0 0 1mm; } .gone { opacity: 0.75; }
.eyes { display: flex; gap: 4mm; } .eye { flex: 1 1 0; min-width: 0; break-inside: avoid; }
.eye .verdict { font-size: 10.5pt; margin: 1mm 0 2mm; padding: 1.5mm 2mm; }
figure { margin: 0 0 2mm; break-inside: avoid; }
figure img { display: block; max-width: 100%; max-height: 56mm; margin: 0 auto; border: 1px solid #999; }
figcaption { font-size: 8.5pt; color: #333; }
table { border-collapse: collapse; width: 100%; font-size: 8.5pt; margin-bottom: 2mm; }
th, td { border: 1px solid #bbb; padding: 0.6mm 1.2mm; text-align: left; } th { background: #f0f0f0; }
td.n { text-align: right; }
.banner { background: #b71c1c; color: #fff; font-weight: bold; font-size: 9.5pt; padding: 1.5mm 3mm; margin: 0 0 2mm;
  border-radius: 1mm; }
.foot { font-size: 8pt; color: #555; margin-top: 3mm; border-top: 1px solid #ccc; }
.totals td { font-size: 10pt; } .warn { color: #b71c1c; }

.legend { font-size: 8.5pt; margin: 0 0 2mm; } .swatch { display: inline-block; width: 3mm; height: 3mm;
  border: 1px solid #000; margin: 0 1mm 0 3mm; vertical-align: -0.3mm; }
"""


def visit_verdicts(rows: list[SessionRow], meta: dict[str, str]) -> list[PatientVerdict]:
    """Each visit's verdict, in the session's pathway's words, provisional unless the model is validated."""
    return patient_verdicts(rows, stored_pathway(meta), provisional(meta))


def report_name(verdict: PatientVerdict) -> str:
    """``reports/<name>``: patient-<ID>-visit-<N>.html (patient-<ID>.html for rows without a visit)."""
    visit = "" if verdict.visit is None else f"-visit-{verdict.visit}"
    return f"patient-{safe_patient_id(verdict.patient)}{visit}.html"


def write_session_reports(out: Path, rows: list[SessionRow], meta: dict[str, str], task: TaskSpec,
                          visits: Iterable[int] | None = None) -> dict[str, Path]:
    """Write results.jsonl, summary.csv, patients.csv, summary.html and a report per visit (``visits``:
    only those visits' reports; None: every one); grades and lesions are named as ``task`` (the
    session's model) names them."""
    verdicts = visit_verdicts(rows, meta)
    wanted = set(visits) if visits is not None else {v.visit for v in verdicts}
    written = {"results.jsonl": out / "results.jsonl", "summary.csv": out / "summary.csv",
               "patients.csv": out / "patients.csv", "summary.html": out / "summary.html"}
    atomic_write(written["results.jsonl"], "".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    atomic_write(written["summary.csv"], summary_csv(rows, verdicts, task))
    atomic_write(written["patients.csv"], patients_csv(verdicts))
    atomic_write(written["summary.html"], summary_html(rows, verdicts, meta, task))
    for verdict in verdicts:
        if verdict.visit in wanted:
            path = out / "reports" / report_name(verdict)
            atomic_write(path, patient_html(verdict, meta, out, task))
            written[path.name] = path
    return written


def gradable_share(rows: list[SessionRow]) -> tuple[int, int]:
    """(graded, judged): images graded out of distinct images judged (duplicates left out)."""
    judged = [r for r in rows if r.status in ("graded", "ungradable", "error")]
    return sum(r.status == "graded" for r in judged), len(judged)


def summary_csv(rows: list[SessionRow], verdicts: list[PatientVerdict], task: TaskSpec) -> str:
    """One row per file: where it belongs, visit, status, grade, probabilities (raw softmax unless ``calibrated``
    is 1), lesions, maculopathy, its eye's and visit's verdict."""
    eye_of = {(v.patient, v.visit, e.eye): e.words for v in verdicts for e in v.eyes.values()}
    patient_of = {(v.patient, v.visit): v.words for v in verdicts}
    rows_out = []
    columns = ["file", "path", "sha256", "patient", "visit", "eye", "status", "reason", "code", "grade", "grade_name",
               "referable", *[f"p_grade{g}" for g in range(task.n_grades)], "calibrated",
               *[f"{c}_{k}" for c in task.lesion_codes for k in ("count", "area_px", "area_fov_pct")],
               "disc_x", "disc_y", "centred_on", "eye_from_disc", "maculopathy", "fovea_x", "fovea_y",
               "warnings",
               "eye_verdict", "patient_verdict", "overlay", "seen_at"]
    for r in rows:
        d = r.to_dict()
        probs = d.get("probabilities") or [""] * task.n_grades
        lesions = [d["lesions"].get(c, {}).get(k, "") for c in task.lesion_codes for k in ("count", "area_px", "area_fov_pct")]
        disc, macula = d.get("disc") or {}, d.get("macula") or {}
        fovea = macula.get("fovea") or ("", "")
        calibrated = _blank(d.get("calibrated") is True) if d.get("probabilities") else ""
        rows_out.append([r.name, r.path, r.sha256 or "", r.patient or "", _blank(r.visit), r.eye or "", r.status,
                         r.reason or "",
                         d.get("code") or "", _blank(d.get("grade")), d.get("grade_name") or "",
                         _blank(d.get("referable")), *probs, calibrated, *lesions,
                         *(_blank(disc.get(k)) for k in ("x", "y", "centred", "eye")),
                         (macula.get("m") or "not assessed") if r.status == "graded" else "", *fovea,
                         "; ".join(r.warnings), eye_of.get((r.patient, r.visit, r.eye or "unspecified"), ""),
                         patient_of.get((r.patient, r.visit), ""),
                         d.get("overlay", ""), r.seen_at])
    return to_csv(columns, rows_out)


def patients_csv(verdicts: list[PatientVerdict]) -> str:
    """One row per visit: the patient, the visit and its date, the verdict, each eye's words with R and M apart.
    Cells a spreadsheet would run (a name typed as ``=...``) are written as text (:func:`~drtrt.fileio.to_csv`)."""
    rows_out = []
    columns = ["patient", "visit", "date", "verdict", "right_eye", "left_eye", "other_images",
                     "right_R", "right_M", "left_R", "left_M", "note", "report", "outcome", "recall_months",
                     "provisional"]
    for v in verdicts:
        eye = {k: e.words for k, e in v.eyes.items()}
        rm = [x for side in ("right", "left") for x in _r_and_m(v.eyes.get(side))]
        rows_out.append([v.patient, _blank(v.visit), visit_date(v), v.words, eye.get("right", ""),
                         eye.get("left", ""), eye.get("unspecified", ""), *rm, v.note, f"reports/{report_name(v)}",
                         v.verdict, _blank(v.recall_months), int(v.provisional)])
    return to_csv(columns, rows_out)


def visit_date(verdict: PatientVerdict) -> str:
    """The day of the visit's first photo (UTC), YYYY-MM-DD."""
    return min((r.seen_at for e in verdict.eyes.values() for r in e.images + e.replaced), default="")[:10]


def _r_and_m(eye: EyeVerdict | None) -> tuple[str, str]:
    """(R, M) of an eye as reports write them: the pathway's short grade (else "grade N") and M1 / M0 /
    "not assessed" — empty when no photo of it was gradable."""
    if eye is None or not eye.gradable:
        return "", ""
    r = eye.r or ("" if eye.grade is None else f"grade {eye.grade}")
    return r, eye.m or "not assessed"


def shown_probability(record: dict) -> float | None:
    """The probability of the record's grade a person may read: only a calibrated one (temperature-scaled
    on held-out data, ``calibrated: true``); a raw softmax sounds surer than the model is, so it stays in
    the research output (results.jsonl, summary.csv) and no page shows it."""
    probs, grade = record.get("probabilities"), record.get("grade")
    if record.get("calibrated") is not True or not probs or grade is None:
        return None
    return float(probs[grade])


def _blank(value) -> str:
    return "" if value is None else str(int(value)) if isinstance(value, bool) else str(value)


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body>{body}</body></html>\n")


GATE_WARNINGS = {
    "failed": "THIS MODEL FAILED ITS ACCURACY CHECK against its reference — results are not reliable",
    "unchecked": "THIS MODEL WAS NOT CHECKED against its reference — results are not reliable",
    "never_checked": "THIS MODEL WAS NEVER CHECKED against its reference — results are not reliable",
}
"""The banner's first words when the session screened with ``--allow-unchecked-model`` (meta ``model_gate``)."""


def unchecked_model(meta: dict[str, str]) -> str | None:
    """The session model's accuracy-check status (meta ``model_gate``) when it is one to warn about
    (a key of :data:`GATE_WARNINGS`); None when it passed, or for a session from before drtrt kept it."""
    try:
        status = json.loads(meta.get("model_gate") or "{}").get("status")
    except (ValueError, AttributeError):
        status = "unchecked"
    return status if status in GATE_WARNINGS else None


def model_banner(meta: dict[str, str]) -> str | None:
    """The warning every page carries: the model's failed or missing accuracy check (:func:`unchecked_model`,
    whatever its validation), then, unless the session keeps a validation record that counts for its model
    (:func:`~drtrt.validation_record.validation_status`: whole, signed by the configured key, checked against
    the model's sha256 when the session opened), that it is not for clinical use, and why."""
    parts = []
    if status := unchecked_model(meta):
        parts.append(f"{GATE_WARNINGS[status]} (model {meta.get('model_name', '?')})")
    record, why = validation_status(meta)
    if record is None:
        parts.append(f"NOT FOR CLINICAL USE — model {meta.get('model_name', '?')} (sha256 "
                     f"{meta.get('model_sha256', '')[:12]}) is not a validated clinical model: a clinician must read "
                     f"every photo (why: {why})")
    return " · ".join(parts) or None


def validation_figures(meta: dict[str, str]) -> str | None:
    """The validated model's study and figures, as every report carries them (None: no record counts)."""
    record = validation_of(meta)
    return f"{record.statement}. {record.figures}" if record is not None else None


def _banner(meta: dict[str, str]) -> str:
    text, figures = model_banner(meta), validation_figures(meta)
    return (f'<div class="banner">{_esc(text)}</div>' if text else "") + (
        f'<p class="validated" id="validation">{_esc(figures)}</p>' if figures else "")


def _footer(meta: dict[str, str], task: TaskSpec) -> str:
    least = task.grade_names[task.referable_min_grade]
    return (f'<div class="foot">drtrt {__version__} · model {_esc(meta.get("model_name", "?"))} '
            f'(sha256 {_esc(meta.get("model_sha256", "")[:12])}) · written {now()} · Referable DR = '
            f"{_esc(least)} or worse (grade ≥ {task.referable_min_grade}). Automated screening result: not a "
            "diagnosis; a clinician confirms every referral.</div>")


def embed_image(path: Path, max_side: int = 760) -> str | None:
    """A picture from the session folder as a JPEG data URI (None when it cannot be read)."""
    picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if picture is None:
        return None
    h, w = picture.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f < 1:
        picture = cv2.resize(picture, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 82])
    return "data:image/jpeg;base64," + base64.b64encode(jpg.tobytes()).decode() if ok else None


def _figure(row: SessionRow, out: Path, task: TaskSpec, note: str = "") -> str:
    d = row.to_dict()
    source = d.get("overlay") or d.get("thumbnail")
    uri = embed_image(out / source) if source else None
    img = f'<img src="{uri}" alt="{_esc(row.name)}">' if uri else ""
    if row.status == "graded" and d.get("grade") is None:
        text = "lesions only (this model gives no grade)"
    elif row.status == "graded":
        shown = shown_probability(d)
        p = f" (calibrated probability {100 * shown:.0f}%)" if shown is not None else ""
        text = f"grade {d['grade']} — {_esc(d['grade_name'])}{p}; {'referable' if d['referable'] else 'not referable'}"
    else:
        text = f"{_esc(row.status)}: {_esc(row.reason)}"
    text += "".join(f'<br><b class="warn">⚠ {_esc(w)}</b>' for w in [*row.warnings, *filter(None, [note])])
    table = ""
    if row.status == "graded" and d.get("lesions"):
        cells = "".join(f'<tr><td>{_esc(c)} {_esc(task.long_name(c))}</td><td class="n">{f["count"]}</td>'
                        f'<td class="n">{f["area_px"]:,}</td><td class="n">{f["area_fov_pct"]:.3f}</td></tr>'
                        for c, f in d["lesions"].items())
        table = ('<table><tr><th>lesion</th><th>count</th><th>area px</th><th>% of field</th></tr>'
                 f"{cells}</table>")
    return f"<figure>{img}<figcaption>{_esc(row.name)} — {text}</figcaption></figure>{table}"


def _eye_block(eye: EyeVerdict, out: Path, task: TaskSpec) -> str:
    grade = "" if eye.grade is None else f" · worst grade {eye.grade} ({_esc(task.grade_names[eye.grade])})"
    figures = "".join(_figure(r, out, task, _retaken(r)) for r in eye.images) or "<p>No photo of this eye yet.</p>"
    gone = "".join(f'<div class="gone">{_figure(r, out, task, "retaken — replaced by a later photo")}</div>'
                   for r in eye.replaced)
    r, m = _r_and_m(eye)
    rm = (f'<div class="rm"><b>R</b> {_esc(r)} · <b>M</b> {_esc(m)}'
          f"{' — ' + _esc(eye.m_words) if eye.m_words else ''}</div>") if r or m else ""
    return (f'<section class="eye"><h2>{_EYE_TITLES[eye.eye]}</h2>'
            f'<div class="verdict {tone(eye.verdict, eye.provisional)}">{_esc(eye.words)}</div>{rm}'
            f'<div class="meta">{len(eye.images)} image(s), {eye.gradable} gradable{grade}</div>{figures}{gone}'
            "</section>")


def _retaken(row: SessionRow) -> str:
    return "retaken, and its result stands: a retake does not undo it, only a clinician's read" if row.replaced else ""


def _legend(task: TaskSpec) -> str:
    items = "".join(f'<span class="swatch" style="background: rgb{tuple(int(v) for v in LESION_COLOURS[task.label(code)])}">'
                    f"</span>{_esc(code)} {_esc(task.long_name(code))}" for code in task.lesion_codes)
    return f'<div class="legend">Lesion colours on the pictures:{items}</div>'


def _when(stamp: str) -> str:
    """2026-11-25T23:07:41Z → 2026-11-25 23:07 UTC."""
    return f"{stamp[:10]} {stamp[11:16]} UTC" if len(stamp) >= 16 else stamp


def patient_html(verdict: PatientVerdict, meta: dict[str, str], out: Path, task: TaskSpec) -> str:
    """One visit's page: its verdict (marked provisional next to it while the model is not validated),
    then each eye with R and M, its images, overlays and lesion tables, and photos retaken."""
    seen = max((r.seen_at for e in verdict.eyes.values() for r in e.images), default="")
    note = f" — {_esc(verdict.note)}" if verdict.note else ""
    visit = "" if verdict.visit is None else f" · visit {verdict.visit}"
    caveat = f'<div class="caveat">{_esc(PROVISIONAL)}</div>' if verdict.provisional else ""
    body = (f"{_banner(meta)}<h1>Diabetic retinopathy screening</h1>"
            f'<div class="meta">Patient <b>{_esc(verdict.patient)}</b>{visit} · screened {_esc(_when(seen))} · '
            f"session {_esc(out.resolve().name)}</div>"
            f'<div class="verdict {tone(verdict.verdict, verdict.provisional)}">{_esc(verdict.words)}{note}</div>'
            f"{caveat}{_legend(task)}"
            f'<div class="eyes">{"".join(_eye_block(e, out, task) for e in verdict.eyes.values())}</div>'
            f"{_footer(meta, task)}")
    return _page(f"DR screening — patient {verdict.patient}{visit}", body)


def summary_html(rows: list[SessionRow], verdicts: list[PatientVerdict], meta: dict[str, str], task: TaskSpec) -> str:
    """Session totals (with the share of gradable images), one line per patient, one per file."""
    graded, judged = gradable_share(rows)
    share = f"{100 * graded / judged:.0f}%" if judged else "—"
    counts = {s: sum(r.status == s for r in rows) for s in ("graded", "ungradable", "error", "duplicate")}
    by_verdict = {v: sum(p.verdict == v for p in verdicts) for v in VERDICTS}
    totals = (f'<table class="totals"><tr><td>files</td><td class="n">{len(rows)}</td><td>gradable images</td>'
              f'<td class="n"><b>{graded} of {judged} ({share})</b></td></tr>'
              + "".join(f'<tr><td colspan="3">{_esc(k)}</td><td class="n">{v}</td></tr>' for k, v in counts.items())
              + f'<tr><td colspan="3">visits</td><td class="n">{len(verdicts)}</td></tr>'
              + "".join(f'<tr><td colspan="3">visits: {_esc(label(k, provisional(meta)))}</td><td class="n">{v}</td></tr>'
                        for k, v in by_verdict.items()) + "</table>")
    patients = "".join(
        f'<tr><td><a href="reports/{_esc(report_name(v))}">{_esc(v.patient)}</a></td><td>{_esc(visit_date(v))}</td>'
        f'<td class="{tone(v.verdict, v.provisional)}">{_esc(v.words)}</td>'
        + "".join(f"<td>{_esc(v.eyes[e].words) if e in v.eyes else ''}</td>" for e in ("right", "left"))
        + f"<td>{_esc(v.note)}</td></tr>" for v in verdicts)
    files = "".join(
        f"<tr><td>{_esc(r.name)}</td><td>{_esc(r.patient)}</td><td>{_esc(r.eye)}</td><td>{_esc(r.status)}</td>"
        f"<td>{_esc(_grade_text(r))}</td><td>{_esc('; '.join(filter(None, [r.reason, *r.warnings])))}</td></tr>"
        for r in rows)
    body = (f"{_banner(meta)}<h1>Screening session summary</h1>"
            f"<div class=\"meta\">{len(rows)} file(s) · written {now()}</div>"
            f"{totals}<h2>Visits</h2><table><tr><th>patient</th><th>date</th><th>verdict</th><th>right eye</th>"
            f"<th>left eye</th><th>note</th></tr>{patients or '<tr><td colspan=6>no patient IDs given</td></tr>'}"
            f"</table><h2>Images</h2><table><tr><th>file</th><th>patient</th><th>eye</th><th>status</th>"
            f"<th>grade</th><th>reason / warnings</th></tr>{files}</table>{_footer(meta, task)}")
    return _page("DR screening — session summary", body)


def _grade_text(row: SessionRow) -> str:
    d = row.to_dict()
    if d.get("grade") is None:
        return ""
    return f"{d['grade']} {d['grade_name']}" + (" — REFER" if d.get("referable") else "")
