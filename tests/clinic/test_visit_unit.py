"""The visit is the unit, and nothing the kit says is less safe than the truth (issue 22, defects 1, 2, 4, 6).

Each test here fails on 35c20eb: a retake there erased a referral, a returning patient's visits were
judged together, a negative printed a recall interval while the model had no validation record, and an
exudate on the fovea at grade 0 said "rescreen in 12 months".
"""

from __future__ import annotations

import csv

import pytest

from drtrt.clinic.pathways import ICDR, NHS, keep_pathway
from drtrt.clinic.reports import visit_verdicts, write_session_reports
from drtrt.clinic.store import FileEntry, SessionRow, SessionStore
from drtrt.clinic.verdicts import (HUMAN_READ, NO_DR_SEEN, NO_REFERABLE_DR_SEEN, PROVISIONAL, REFER, RESCREEN,
                                   UNGRADABLE, eye_verdict, patient_verdicts, tone)
from drtrt.clinic.visits import Protocol, VisitBook
from drtrt.task import TaskSpec


def record(grade: int | None, m: str | None = "M0", exudate_pct: float = 0.0) -> dict:
    macula = {"m": m, "fovea": [900, 700] if m else None, "disc_diameter": 180.0,
              "reason": "test", "exudate_distance_dd": None}
    return {"status": "graded", "grade": grade, "grade_name": TaskSpec().grade_names[grade or 0],
            "referable": None if grade is None else grade >= 2, "probabilities": None, "macula": macula,
            "lesions": {"EX": {"count": 1, "area_px": 10, "area_fov_pct": exudate_pct}}}


def row(eye: str, status: str, grade: int | None = None, replaced: bool = False, m: str | None = "M0",
        visit: int | None = 1, patient: str = "P") -> SessionRow:
    rec = record(grade, m) if status == "graded" else {}
    return SessionRow(f"/c/{eye}{grade}{status}{replaced}.jpg", "a" * 64, patient, eye, status, None, rec,
                      visit=visit, replaced=replaced)


# -- defect 1: a retake never erases a referral --------------------------------------------------------
@pytest.mark.parametrize("rows, expected", [
    ([row("right", "graded", 2, replaced=True), row("right", "graded", 0)], REFER),          # the referral stands
    ([row("right", "graded", 4, replaced=True), row("right", "ungradable")], "refer_urgent"),
    ([row("right", "ungradable", replaced=True), row("right", "graded", 0)], RESCREEN),      # a refusal retaken
    ([row("right", "graded", 0, replaced=True), row("right", "ungradable")], UNGRADABLE),    # a calm one never calms
    ([row("right", "graded", 0, m="M1", replaced=True), row("right", "graded", 0)], REFER),  # maculopathy stands
])
def test_a_retaken_photo_whose_result_asks_for_a_person_stands(rows, expected):
    eye = eye_verdict("right", rows, ICDR, provisional=False)
    assert eye.verdict == expected
    stood = [r for r in rows if r.replaced and r in eye.images]
    assert all(r not in eye.replaced for r in stood) and len(eye.images) + len(eye.replaced) == len(rows)


def test_a_retaken_human_read_stands():
    disagreeing = row("right", "graded", 0, replaced=True)
    disagreeing.record["lesions"]["EX"]["area_fov_pct"] = 5.0       # exudates over 5 % at grade 0: a person reads it
    assert eye_verdict("right", [disagreeing, row("right", "graded", 0)], ICDR).verdict == HUMAN_READ


def _screened(store: SessionStore, path: str, rec: dict, patient: str, eye: str, visit: int) -> None:
    sha = f"{abs(hash(path)):064x}"[:64]
    store.record_image(sha, rec, FileEntry(path, sha, 1, 1, patient, eye, "screened", visit=visit), store.begin_run("t"))


def test_a_grade_2_photo_retaken_until_it_reads_grade_0_still_refers_the_visit(tmp_path):
    with SessionStore(tmp_path / "session.db") as store:
        book = VisitBook(store)
        book.register("P-1")
        visit = book.open_visit("P-1", Protocol(1))
        for slot, path, grade in (("right/any", "/p/r1.jpg", 2), ("left/any", "/p/l1.jpg", 0),
                                  ("right/any", "/p/r2.jpg", 0), ("right/any", "/p/r3.jpg", 0)):
            book.add_capture(visit, path, path.encode().hex().ljust(64, "0")[:64], "camera", slot)
            _screened(store, path, record(grade), "P-1", slot.split("/")[0], visit)
        seen = book.visit(visit)
        assert seen.eyes["right"].verdict == REFER and seen.verdict == REFER
        assert [s.state for s in seen.slots] == ["graded", "graded"] and len(seen.slots[0].replaced) == 2
        assert book.close_visit(visit).closed_verdict == REFER
        # the record and the reports agree: the retaken grade-2 photo is in the visit's result, marked
        (verdict,) = visit_verdicts(store.rows(), store.meta())
        assert verdict.verdict == REFER
        assert sorted(r.path for r in verdict.eyes["right"].images) == ["/p/r1.jpg", "/p/r3.jpg"]   # stands + current
        assert [r.path for r in verdict.eyes["right"].replaced] == ["/p/r2.jpg"]                  # a calm retake


# -- defect 2: a returning patient's visits are judged apart -------------------------------------------
def test_a_returning_patients_visits_are_judged_and_reported_apart(tmp_path):
    out = tmp_path / "session"
    with SessionStore(out / "session.db") as store:
        book = VisitBook(store)
        last_year, this_year = book.visit_for("P-7", day="2025-12-01"), book.visit_for("P-7", day="2026-12-07")
        assert last_year != this_year and book.visit_for("P-7", day="2025-12-01") == last_year
        assert book.visit_for("P-7", study_uid="1.2.3") not in (last_year, this_year)    # a DICOM study: its own
        _screened(store, "/p/a-right.jpg", record(2), "P-7", "right", last_year)
        _screened(store, "/p/a-left.jpg", record(0), "P-7", "left", last_year)
        _screened(store, "/p/b-left.jpg", record(0), "P-7", "left", this_year)
        store.record_file(FileEntry("/p/b-right.jpg", None, 1, 1, "P-7", "right", "unreadable",
                                    reason="cannot read", visit=this_year), store.begin_run("t"))
        rows, meta = store.rows(), store.meta()
        verdicts = {v.visit: v for v in visit_verdicts(rows, meta)}
        assert verdicts[last_year].verdict == REFER
        assert verdicts[this_year].verdict == UNGRADABLE        # not last year's referral, not "rescreen" on its photo
        write_session_reports(out, rows, meta, TaskSpec())
    table = {int(r["visit"]): r for r in csv.DictReader((out / "patients.csv").open())}
    assert table[last_year]["outcome"] == REFER and table[this_year]["outcome"] == UNGRADABLE
    pages = sorted(p.name for p in (out / "reports").glob("patient-P-7-visit-*.html"))
    assert pages == sorted(f"patient-P-7-visit-{v}.html" for v in (last_year, this_year))
    page = (out / "reports" / f"patient-P-7-visit-{this_year}.html").read_text()
    assert '<div class="verdict retake">ungradable — retake or refer' in page and "a-right.jpg" not in page


# -- defect 4: provisional, no recall interval, "detected by the model" --------------------------------
def test_while_the_model_is_unvalidated_a_negative_says_only_what_the_model_saw():
    rows = [row("right", "graded", 0), row("left", "graded", 0)]
    (v,) = patient_verdicts(rows, ICDR)                                   # provisional unless told validated
    assert (v.verdict, v.words, v.recall_months, v.provisional) == (RESCREEN, NO_DR_SEEN, None, True)
    assert tone(v.verdict, v.provisional) == "provisional"                # not the all-clear green
    (mild,) = patient_verdicts([row("right", "graded", 1), row("left", "graded", 0)], NHS)
    assert mild.words == NO_REFERABLE_DR_SEEN and mild.recall_months is None
    assert mild.eyes["right"].r == "R1"                                   # R stays the programme's grade
    (validated,) = patient_verdicts(rows, ICDR, provisional=False)
    assert validated.recall_months == 12 and "rescreen in 12 months" in validated.words
    assert tone(validated.verdict, validated.provisional) == "ok"


def test_the_report_puts_provisional_next_to_the_verdict_and_prints_no_recall(tmp_path):
    out = tmp_path / "s"
    with SessionStore(out / "session.db") as store:
        visit = VisitBook(store).visit_for("P-2", day="2026-12-07")
        _screened(store, "/p/r.jpg", record(0), "P-2", "right", visit)
        _screened(store, "/p/l.jpg", record(0), "P-2", "left", visit)
        write_session_reports(out, store.rows(), store.meta(), TaskSpec())
    page = (out / "reports" / f"patient-P-2-visit-{visit}.html").read_text()
    verdict_at, caveat_at = page.index('class="verdict provisional"'), page.index(PROVISIONAL.replace("'", "&#x27;"))
    assert 0 < caveat_at - verdict_at < 400                               # beside the verdict, not in the footer
    assert "rescreen in 12 months" not in page and NO_DR_SEEN in page
    assert "%)" not in page                                               # no uncalibrated probability


# -- defect 6: maculopathy refers, R and M apart --------------------------------------------------------
def test_an_exudate_on_the_fovea_at_grade_0_refers_and_m_is_said_apart():
    rows = [row("right", "graded", 0, m="M1"), row("left", "graded", 1, m=None)]
    (icdr,) = patient_verdicts(rows, ICDR, provisional=False)
    assert icdr.verdict == REFER and icdr.referable is True and icdr.eyes["right"].referable is True
    assert "maculopathy" in icdr.eyes["right"].words
    assert icdr.eyes["left"].verdict == RESCREEN and icdr.eyes["left"].m is None
    assert icdr.eyes["left"].m_words == ICDR.m_words(None) and "not assessed" in icdr.eyes["left"].m_words
    (nhs,) = patient_verdicts(rows, NHS)
    assert nhs.eyes["right"].words == "M1 maculopathy — refer (routine)" and nhs.eyes["right"].r == "R0"
    assert nhs.eyes["left"].r == "R1" and nhs.eyes["left"].m_words == "M not assessed — the fovea was not found"


def test_the_nhs_pathway_prints_r_and_m(tmp_path):
    out = tmp_path / "s"
    with SessionStore(out / "session.db") as store:
        keep_pathway(store, NHS)
        visit = VisitBook(store).visit_for("P-3", day="2026-12-07")
        _screened(store, "/p/r.jpg", record(1, "M1"), "P-3", "right", visit)
        _screened(store, "/p/l.jpg", record(0, None), "P-3", "left", visit)
        write_session_reports(out, store.rows(), store.meta(), TaskSpec())
    (line,) = csv.DictReader((out / "patients.csv").open())
    assert (line["right_R"], line["right_M"], line["left_R"], line["left_M"]) == ("R1", "M1", "R0", "not assessed")
    assert line["outcome"] == REFER and line["verdict"] == "M1 maculopathy — refer (routine)"
    page = (out / "reports" / f"patient-P-3-visit-{visit}.html").read_text()
    assert "<b>R</b> R1 · <b>M</b> M1" in page and "<b>M</b> not assessed" in page
