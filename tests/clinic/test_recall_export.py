"""Call and recall against a hand-built clinic, and the visit CSV's columns and cells."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from visit_fixture import at, clinic, make_visit

from drtrt.clinic import audit
from drtrt.clinic.accounts import SHARED_PIN, Actor
from drtrt.clinic.failsafe import record_outcome
from drtrt.clinic.reads import record_read
from drtrt.clinic.recall import add_months, recall_list
from drtrt.clinic.store import SessionStore
from drtrt.clinic.visit_export import COLUMNS, visits_csv
from drtrt.clinic.visits import VisitBook
from drtrt.errors import ConfigError

D = dt.date.fromisoformat


@pytest.fixture
def book(tmp_path):
    store = SessionStore(tmp_path / "session.db")
    yield VisitBook(store)
    store.close()


def test_the_recall_list_of_a_date_range(book):
    clinic(book)
    make_visit(book, "N3", "2025-09-30T08:00", {"right": 0, "left": 1})
    make_visit(book, "N3", "2026-02-01T08:00", {"right": 3, "left": 0})     # their latest visit refers: not recall
    due = [(r.patient, r.due.isoformat(), r.recall_months, r.overdue, r.provisional)
           for r in recall_list(book, D("2026-01-01"), D("2027-12-31"), now=at("2026-03-20T12:00"))]
    assert due == [("N2", "2026-03-10", 12, True, True), ("N1", "2027-03-01", 12, False, True)]
    march = recall_list(book, D("2026-03-01"), D("2026-03-31"), now=at("2026-03-05T00:00"))
    assert [r.patient for r in march] == ["N2"]
    assert recall_list(book, D("2026-03-11"), D("2026-12-31"), now=at("2026-03-20T12:00")) == []
    assert [r.patient for r in recall_list(book, None, None, now=at("2026-03-20T12:00"), overdue_only=True)] == ["N2"]
    with pytest.raises(ConfigError, match="before --from"):
        recall_list(book, D("2026-03-01"), D("2026-02-01"))


def test_months_are_calendar_months():
    assert add_months(D("2025-01-31"), 1) == D("2025-02-28") and add_months(D("2024-02-29"), 12) == D("2025-02-28")
    assert add_months(D("2025-11-15"), 14) == D("2027-01-15")


def test_the_visit_csv_columns_against_the_fixture(book):
    visits = clinic(book)
    record_outcome(book, visits["U1"], "letter_sent", "Ana Pérez", now=at("2026-03-02T09:00"))
    rows = list(csv.DictReader(io.StringIO(visits_csv(book, D("2026-02-27"), D("2026-03-01")))))
    assert list(rows[0]) == list(COLUMNS)
    assert [r["patient"] for r in rows] == ["G1", "U1", "N1", "O1"]          # by opening; R1 and N2 outside
    u1 = rows[1]
    assert {k: u1[k] for k in ("kind", "opened", "closed", "operator", "verdict", "right_verdict", "right_grade",
                               "left_verdict", "left_grade", "right_M", "refused_photos", "retakes", "reader",
                               "outcome", "outcome_by", "outcome_at", "provisional")} == {
        "kind": "station", "opened": "2026-03-01T10:00:00Z", "closed": "2026-03-01T11:00:00Z", "operator": "",
        "verdict": "refer_urgent", "right_verdict": "refer_urgent", "right_grade": "4", "left_verdict": "rescreen",
        "left_grade": "0", "right_M": "not assessed", "refused_photos": "0", "retakes": "0", "reader": "",
        "outcome": "letter sent", "outcome_by": "Ana Pérez", "outcome_at": "2026-03-02T09:00:00Z", "provisional": "1"}
    g1, o1 = rows[0], rows[3]
    assert (g1["verdict"], g1["refused_photos"], g1["right_grade"]) == ("ungradable", "2", "")
    assert (o1["closed"], o1["verdict"], o1["left_verdict"]) == ("", "incomplete", "not_photographed")


def test_the_operator_is_who_the_audit_trail_names_for_the_visit(book):
    visits = clinic(book)
    ana, ben = Actor("Ana", "screener"), Actor("Ben", "lead")
    for actor, action in ((ana, "open_visit"), (ana, "capture"), (ben, "print"), (ben, "retake_chosen"),
                          (ana, "close")):
        audit.append(book.store, actor, action, visit=visits["U1"])
    audit.append(book.store, SHARED_PIN, "open_visit", visit=visits["G1"])
    rows = {r["patient"]: r for r in csv.DictReader(io.StringIO(visits_csv(book, D("2026-02-27"), D("2026-03-01"))))}
    assert rows["U1"]["operator"] == "Ana; Ben"               # in order of first action; printing is not screening
    assert rows["G1"]["operator"] == "shared PIN" and rows["N1"]["operator"] == ""
    assert rows["U1"]["reader"] == ""


def test_the_reader_is_who_read_the_visit(book):
    visits = clinic(book)
    record_read(book, visits["U1"], {"right": "ICDR4", "left": "ICDR0"}, Actor("Dr Ruiz", "reader"))
    rows = {r["patient"]: r for r in csv.DictReader(io.StringIO(visits_csv(book, D("2026-02-27"), D("2026-03-01"))))}
    assert rows["U1"]["reader"] == "Dr Ruiz" and rows["N1"]["reader"] == ""


def test_a_cell_a_spreadsheet_would_run_is_written_as_text(book):
    clinic(book)
    book.register("=HYPERLINK(1)")
    make_visit(book, "=HYPERLINK(1)", "2025-03-10T12:00", {"right": 0, "left": 0})
    text = visits_csv(book, D("2025-03-10"), D("2025-03-10"))
    assert "'=HYPERLINK(1)" in text and "\n=HYPERLINK" not in text


def test_a_visit_retaken_counts_its_refusals_and_retakes(book):
    visit = make_visit(book, "T1", "2026-03-01T10:00", {"right": "ungradable"}, close=False)
    from drtrt.clinic.store import FileEntry
    sha = "f" * 64
    book.add_capture(visit, "/photos/t1-retake.jpg", sha, "upload", slot="right/any")
    book.store.record_image(sha, {"status": "graded", "grade": 0, "referable": False, "lesions": {}},
                            FileEntry("/photos/t1-retake.jpg", sha, 1, 1, "T1", "right", "screened", visit=visit),
                            run_id=1)
    (row,) = csv.DictReader(io.StringIO(visits_csv(book, D("2026-03-01"), D("2026-03-01"))))
    assert (row["refused_photos"], row["retakes"], row["right_verdict"]) == ("1", "1", "rescreen")
