"""The referral letter: one printable page per referral, in the operator's language.

Self-contained HTML (A4 print CSS, pictures embedded small as JPEG data URIs, no scripts, nothing
fetched), written with the standard library as the patient report is (:mod:`.reports`). It says where
the patient goes and by when (the pathway's destination and timescale, :mod:`.referrals`), the findings
in words (R and M per eye, the lesions the model counted), the pictures, the model's provenance (its
sha256, the *not for clinical use* warning unless the session keeps a validation record, its
accuracy-check status, exactly as the patient report and the station warn) and who read the photos
(nobody yet: the kit keeps no human reads; the letter says so).

Every phrase is made with :func:`~drtrt.messages.message`, so the station's catalogue carries it
(``scripts/station_messages.py``) and ``tr`` — the caller's translator, :func:`letter_translator` —
puts it in the operator's language; pathway words, grade and lesion names are looked up by their
English text as the station does. Writing a letter records nothing: *letter sent* is an outcome a
named person records (:func:`~drtrt.clinic.failsafe.record_outcome`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path

from drtrt import __version__
from drtrt.clinic.patients import safe_patient_id
from drtrt.clinic.referrals import Referral
from drtrt.clinic.reports import embed_image, unchecked_model
from drtrt.clinic.store import now
from drtrt.clinic.verdicts import PROVISIONAL, EyeVerdict
from drtrt.messages import message
from drtrt.task import TaskSpec
from drtrt.validation_record import validation_of

Translate = Callable[[str], str]
CSS = """
@page { size: A4; margin: 14mm; }
* { box-sizing: border-box; }
body { font: 10.5pt/1.4 "DejaVu Sans", Arial, sans-serif; color: #111; margin: 0 auto; max-width: 182mm; }
h1 { font-size: 15pt; margin: 0 0 2mm; } h2 { font-size: 11.5pt; margin: 4mm 0 1.5mm; }
.banner { background: #b71c1c; color: #fff; font-weight: bold; font-size: 9.5pt; padding: 1.5mm 3mm; margin: 0 0 2mm; }
.meta td { padding: 0.4mm 3mm 0.4mm 0; vertical-align: top; } .meta th { text-align: left; padding-right: 3mm; }
.urgency { padding: 2.5mm 4mm; border: 0.7mm solid #c62828; background: #fde2e1; font-size: 13pt; font-weight: bold;
  margin: 3mm 0; }
.urgency.routine { border-color: #b8860b; background: #fff3cd; }
.caveat { font-weight: bold; color: #34568b; }
.eyes { display: flex; gap: 4mm; } .eye { flex: 1 1 0; min-width: 0; break-inside: avoid; }
.eye p { margin: 0 0 1mm; }
img { display: block; max-width: 100%; max-height: 42mm; margin: 1mm 0; border: 1px solid #999; }
.prov { font-size: 8.5pt; color: #333; border-top: 1px solid #bbb; margin-top: 4mm; padding-top: 1.5mm; }
.prov p { margin: 0 0 0.8mm; word-break: break-all; }
.sign { margin-top: 6mm; } .toolbar { background: #eef; padding: 2mm; margin-bottom: 3mm; }
@media print { .toolbar { display: none; } }
"""
_EYES = {"right": message("Right eye (OD)"), "left": message("Left eye (OS)"),
         "unspecified": message("Eye not recorded")}
_GATE_STATUS = {"passed": message("passed"), "failed": message("failed"), "unchecked": message("not checked"),
                "never_checked": message("never checked"), "not_recorded": message("not recorded"),
                "unreadable": message("unreadable")}
_WORDS = {"not_clinical": message("NOT FOR CLINICAL USE"), "title": message("Referral: diabetic eye screening"),
          "findings": message("Findings"), "sent_by": message("Sent by (name, signature, date):"),
          "not_diagnosis": message("Automated screening result: not a diagnosis; a clinician confirms every referral.")}
_GATE = {"failed": message("THIS MODEL FAILED ITS ACCURACY CHECK"),
         "unchecked": message("THIS MODEL WAS NEVER CHECKED"),
         "never_checked": message("THIS MODEL WAS NEVER CHECKED")}


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _lesions(eye: EyeVerdict, task: TaskSpec, tr: Translate) -> str:
    """The lesions the model counted on the eye's gradable photos, in words (the most any photo shows:
    photos of one eye overlap, so counts are not added up)."""
    counts: dict[str, int] = {}
    for row in eye.images:
        if row.status == "graded":
            for code, found in (row.record.get("lesions") or {}).items():
                counts[code] = max(counts.get(code, 0), int(found.get("count", 0)))
    seen = [f"{tr(task.long_name(c))} ({c}): {n}" for c, n in counts.items() if n]
    return "; ".join(seen) if seen else tr(message("no lesions counted by the model"))


def _eye(eye: EyeVerdict, folder: Path, task: TaskSpec, tr: Translate) -> str:
    parts = [f"<h2>{_esc(tr(_EYES.get(eye.eye, eye.eye)))}</h2><p><b>{_esc(tr(eye.words))}</b></p>"]
    if eye.gradable:
        said = []
        if eye.r or eye.grade is not None:
            said.append(message("Retinopathy (R): %(grade)s", grade=eye.r or task.grade_names[eye.grade]))
        said.append(message("Maculopathy (M): %(words)s", words=eye.m_words or eye.m or ""))
        said.append(message("Lesions: %(list)s", list=_lesions(eye, task, tr)))
        parts += [f"<p>{_esc(tr(text))}</p>" for text in said]
    for row in eye.images:
        source = row.record.get("overlay") or row.record.get("thumbnail")
        uri = embed_image(folder / source, max_side=420) if source else None
        if uri:
            parts.append(f'<img src="{uri}" alt="{_esc(row.name)}">')
    return f'<div class="eye">{"".join(parts)}</div>'


def _provenance(referral: Referral, meta: dict[str, str], tr: Translate) -> str:
    name, sha = meta.get("model_name", "?"), meta.get("model_sha256", "")
    try:
        gate = json.loads(meta.get("model_gate") or "{}").get("status") or "not_recorded"
    except (ValueError, AttributeError):
        gate = "unreadable"
    gate = _GATE_STATUS.get(gate, gate)
    record = validation_of(meta)
    lines = [tr(message("Model: %(name)s, sha256 %(sha)s", name=name, sha=sha)),
             tr(message("Accuracy check against its reference: %(status)s", status=gate)),
             tr(message("Clinical validation: %(statement)s",
                        statement=record.statement if record else tr(message("none — not for clinical use")))),
             tr(message("Written by drtrt %(version)s on %(when)s", version=__version__, when=now()))]
    if referral.readers:
        lines += [tr(message("Read by %(name)s on %(when)s: %(words)s", name=r.name, when=r.read_at, words=r.words))
                  for r in referral.readers]
    else:
        lines.append(tr(message("Human reads: none recorded — every photo must be read by a clinician")))
    return '<div class="prov">' + "".join(f"<p>{_esc(line)}</p>" for line in lines) + "</div>"


def _banners(meta: dict[str, str], tr: Translate) -> str:
    name = meta.get("model_name", "?")
    out = []
    if status := unchecked_model(meta):
        why = message("model %(name)s was not shown to agree with its reference: results are not reliable.", name=name)
        out.append(f"{tr(_GATE[status])} — {tr(why)}")
    if validation_of(meta) is None:
        why = message("model %(name)s is not a validated clinical model: a clinician must read every photo.", name=name)
        out.append(f"{tr(_WORDS['not_clinical'])} — {tr(why)}")
    return "".join(f'<div class="banner">{_esc(text)}</div>' for text in out)


def letter_html(referral: Referral, meta: dict[str, str], folder: Path, task: TaskSpec,
                tr: Translate = str, language: str = "en", toolbar: str = "") -> str:
    """The referral letter as a self-contained HTML page (``toolbar``: HTML shown on screen, never printed)."""
    v = referral.verdict
    patient = v.patient + (f" · {referral.name}" if referral.name else "")
    visit = "" if v.visit is None else str(v.visit)
    urgency = tr(message("URGENT referral") if referral.urgent else message("Routine referral"))
    due = tr(message("to be seen by %(date)s (within %(days)s days of the screening)",
                     date=referral.due.isoformat(), days=referral.days))
    caveat = f'<p class="caveat">{_esc(tr(PROVISIONAL))}</p>' if v.provisional else ""
    note = f"<p>{_esc(tr(v.note))}</p>" if v.note else ""
    rows = [(message("Patient"), patient), (message("Visit"), visit),
            (message("Screened"), referral.opened[:10]), (message("Refer to"), tr(referral.destination)),
            (message("Letter written"), now()[:10])]
    table = "".join(f"<tr><th>{_esc(tr(k))}</th><td>{_esc(val)}</td></tr>" for k, val in rows)
    w = {key: _esc(tr(text)) for key, text in _WORDS.items()}
    body = (f'{toolbar}<main>{_banners(meta, tr)}<h1>{w["title"]}</h1>'
            f'<table class="meta">{table}</table>'
            f'<div class="urgency{"" if referral.urgent else " routine"}">{_esc(urgency)} — {_esc(due)}</div>'
            f'<h2>{w["findings"]}</h2><p><b>{_esc(tr(v.words))}</b></p>{note}{caveat}'
            f'<div class="eyes">{"".join(_eye(e, folder, task, tr) for e in v.eyes.values())}</div>'
            f'{_provenance(referral, meta, tr)}'
            f'<p class="sign">{w["not_diagnosis"]}</p>'
            f'<p class="sign">{w["sent_by"]} ____________________________</p></main>')
    title = tr(message("Referral letter — patient %(patient)s", patient=v.patient))
    return (f'<!DOCTYPE html>\n<html lang="{_esc(language)}"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{body}</body></html>\n")


def letter_name(referral: Referral, suffix: str = ".html") -> str:
    """``referral-<patient>-visit-<N>.html`` (the file-name-safe patient ID of the reports)."""
    visit = "" if referral.visit is None else f"-visit-{referral.visit}"
    return f"referral-{safe_patient_id(referral.patient)}{visit}{suffix}"
