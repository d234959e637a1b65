"""Referral pathways: built-in ICDR and NHS wording, pathway files, and the session keeping its own."""

from __future__ import annotations

import csv

import pytest

from drtrt.errors import ConfigError
from drtrt.clinic.pathways import ICDR, NHS, keep_pathway, load_pathway, stored_pathway
from drtrt.clinic.verdicts import INCOMPLETE, REFER, REFER_URGENT, RESCREEN, UNGRADABLE, patient_verdicts
from drtrt.clinic.store import SessionRow, SessionStore


def row(eye, status, grade=None):
    record = {} if grade is None else {"grade": grade, "referable": grade >= 2, "lesions": {}}
    return SessionRow(f"/c/{eye}{grade}.jpg", "a" * 64, "P", eye, status, None, record)


@pytest.mark.parametrize("rows, verdict, icdr, nhs, recall", [
    ([row("right", "graded", 0), row("left", "graded", 1)], RESCREEN, "no referable DR — rescreen in 12 months",
     "R1 background retinopathy — rescreen in 12 months", 12),
    ([row("right", "graded", 0), row("left", "graded", 2)], REFER, "refer",
     "R2 pre-proliferative retinopathy — refer (routine)", None),
    ([row("right", "graded", 3), row("left", "graded", 0)], REFER_URGENT, "refer urgently", None, None),
    ([row("right", "graded", 4), row("left", "graded", 3)], REFER_URGENT, "refer urgently",
     "R3 proliferative retinopathy — refer urgently", None),
    ([row("right", "ungradable"), row("left", "graded", 0)], UNGRADABLE, "ungradable — retake or refer",
     "U ungradable — retake, then refer", None),
    ([row("left", "graded", 0)], INCOMPLETE, "incomplete — photograph the missing eye",
     "incomplete — photograph the missing eye", None),
])
def test_one_outcome_two_vocabularies(rows, verdict, icdr, nhs, recall):
    (under_icdr,) = patient_verdicts(rows, ICDR, provisional=False)
    assert (under_icdr.verdict, under_icdr.words, under_icdr.recall_months) == (verdict, icdr, recall)
    (under_nhs,) = patient_verdicts(rows, NHS, provisional=False)
    if nhs is None:                           # NHS: severe NPDR is R2, a routine referral, not an urgent one
        assert (under_nhs.verdict, under_nhs.words) == (REFER, "R2 pre-proliferative retinopathy — refer (routine)")
    else:
        assert under_nhs.words == nhs


def test_a_pathway_file_and_the_session_keeping_it(tmp_path):
    path = tmp_path / "clinic.yaml"
    path.write_text("""
name: clinic
grades:
  - {grade: 0, action: rescreen, recall_months: 24, words: "no DR — see you in two years"}
  - {grade: 1, action: rescreen, recall_months: 6, words: "mild DR — back in six months"}
  - {grade: 2, action: refer, words: "refer to the eye clinic"}
  - {grade: 3, action: refer_urgent, words: "refer this week"}
  - {grade: 4, action: refer_urgent, words: "refer today"}
outcomes:
  ungradable: "photo not usable — retake, then refer"
  human_read: "a grader must look at this"
  not_photographed: "take this eye"
  incomplete: "finish the photos"
""")
    clinic = load_pathway(path)
    (v,) = patient_verdicts([row("right", "graded", 0), row("left", "graded", 1)], clinic, provisional=False)
    assert (v.verdict, v.words, v.recall_months) == (RESCREEN, "mild DR — back in six months", 6)
    store = SessionStore(tmp_path / "session.db")
    assert stored_pathway(store.meta()) == ICDR
    keep_pathway(store, clinic)
    assert stored_pathway(store.meta()) == clinic
    store.close()
    assert load_pathway("NHS") is NHS and load_pathway(None) is ICDR
    for text, match in (("name: x\ngrades: []\noutcomes: {}\n", "not a pathway|grades"),
                        ("name: x\ngrades:\n  - {grade: 0, action: wait, words: w}\n", "action 'wait'"),
                        ("name: x\ngrades:\n  - {grade: 0, action: rescreen, words: w}\n", "recall_months"),
                        ("[unclosed", "cannot be read")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_pathway(path)
    with pytest.raises(ConfigError, match="neither icdr nor nhs"):
        load_pathway(tmp_path / "missing.yaml")


def test_screen_with_the_nhs_pathway_words_the_reports(tiny_onnx, photo_root, tmp_path):
    """`drtrt screen --pathway nhs`: the session keeps the pathway, the reports use its words."""
    import subprocess
    import sys

    images = sorted(photo_root.rglob("*.jpg"))[:2]
    out = tmp_path / "session"
    proc = subprocess.run([sys.executable, "-m", "drtrt.cli", "screen", *map(str, images), "--model", str(tiny_onnx),
                           "--out", str(out), "--patient", "P-NHS", "--eye", "right", "--pathway", "nhs"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 3), proc.stderr
    store = SessionStore(out / "session.db")
    assert stored_pathway(store.meta()) == NHS and store.meta()["validation"] == ""    # the demo: no validation
    store.close()
    patients = list(csv.DictReader((out / "patients.csv").open()))
    assert any(row["right_R"] in ("R0", "R1", "R2", "R3") or row["verdict"] in ("U ungradable — retake, then refer",
               "needs a human read — the grade and the lesion map disagree") for row in patients)
    # R and M apart; unvalidated, so no recall interval and a negative only says what the model saw
    assert all(row["right_M"] in ("M0", "M1", "not assessed", "") and row["provisional"] == "1" for row in patients)
    assert all("rescreen in 12 months" not in row["verdict"] and not row["recall_months"] for row in patients)
    report = next((out / "reports").glob("patient-P-NHS-visit-*.html")).read_text()
    assert "NOT FOR CLINICAL USE" in report
    bad = subprocess.run([sys.executable, "-m", "drtrt.cli", "screen", str(images[0]), "--model", str(tiny_onnx),
                          "--pathway", str(tmp_path / "none.yaml")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "neither icdr nor nhs" in bad.stderr and "Traceback" not in bad.stderr


def test_timescales_and_destinations_from_a_file_and_defaults_for_older_files(tmp_path):
    older = tmp_path / "older.yaml"                 # a file written before timescales: the defaults
    older.write_text("name: clinic\ngrades:\n"
                     + "".join(f"  - {{grade: {g}, action: rescreen, recall_months: 12, words: fine}}\n" for g in (0, 1))
                     + "  - {grade: 2, action: refer, words: refer}\n  - {grade: 3, action: refer_urgent, words: now}\n"
                       "  - {grade: 4, action: refer_urgent, words: now}\n"
                       "outcomes: {ungradable: u, human_read: h, not_photographed: n, incomplete: i}\n")
    pathway = load_pathway(older)
    assert [pathway.due_in(k) for k in ("refer_urgent", "refer", "not_closed")] == [14, 91, 1]
    assert pathway.destination("refer") == "hospital eye service"
    newer = tmp_path / "newer.yaml"
    newer.write_text(older.read_text() + "timescales: {refer_urgent: 1 week, refer: 42, not_closed: 1 day}\n"
                     "destinations: {refer_urgent: \"eye hospital — urgent clinic\"}\n")
    pathway = load_pathway(newer)
    assert [pathway.due_in(k) for k in ("refer_urgent", "refer", "not_closed", "ungradable")] == [7, 42, 1, 28]
    assert (pathway.destination("refer_urgent"), pathway.destination("refer")) == ("eye hospital — urgent clinic",
                                                                                   "hospital eye service")
    assert load_pathway(newer) == type(pathway).from_dict(pathway.to_dict())     # the store keeps it whole
    assert NHS.to_dict()["timescales"]["refer_urgent"] == "2 weeks"


@pytest.mark.parametrize("timescale", ["soon", "0 days", "3 years", "800"])
def test_a_timescale_that_is_not_one_is_one_line(tmp_path, timescale):
    data = ICDR.to_dict()
    data["timescales"] = {"refer": timescale}
    with pytest.raises(ConfigError, match="timescale of refer must be days"):
        type(ICDR).from_dict(data, "clinic.yaml")
